"""Property tests of the mathematics the mitigations and probes rely on."""

from __future__ import annotations

import math

import torch
from helpers import task_config
from hypothesis import given
from hypothesis import strategies as st
from strategies import bounds, depths, gradient_sets, seeds, widths
from vanex.engine.probes import GradNorm, ProbeContext, Rows, global_norm
from vanex.mitigations.gradients import ClipNorm, ClipValue
from vanex.tasks.deep_mlp import MLP


def _as_params(grads: list[torch.Tensor]) -> list[torch.nn.Parameter]:
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        params.append(p)
    return params


def _flat(params) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in params])


@given(gradient_sets(), bounds)
def test_clip_norm_bounds_norm_and_keeps_direction(grads, c):
    params = _as_params(grads)
    before = _flat(params)
    ClipNorm(max_norm=c).transform_grads(params)
    after = _flat(params)
    assert torch.linalg.vector_norm(after) <= c * (1 + 1e-6)
    # same direction: after is a positive multiple of before
    scale = torch.linalg.vector_norm(after) / torch.linalg.vector_norm(before)
    assert 0 < scale <= 1
    torch.testing.assert_close(after, before * scale, rtol=1e-12, atol=0)


@given(gradient_sets(), bounds)
def test_clip_norm_leaves_small_gradients_untouched(grads, c):
    norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))
    params = _as_params([g * (0.99 * c / norm) for g in grads])  # strictly under the bound
    before = _flat(params)
    ClipNorm(max_norm=c).transform_grads(params)
    assert torch.equal(_flat(params), before)


@given(gradient_sets(), bounds)
def test_clip_value_bounds_every_entry(grads, c):
    params = _as_params(grads)
    before = _flat(params)
    ClipValue(clip=c).transform_grads(params)
    after = _flat(params)
    assert after.abs().max() <= c
    inside = before.abs() <= c
    assert torch.equal(after[inside], before[inside])  # entries inside the box are untouched


def _second_moments(model: MLP, x: torch.Tensor) -> list[float]:
    """Mean square of each block's pre-activation (output of its linear layer)."""
    out = []
    hooks = [b.linear.register_forward_hook(lambda m, i, o: out.append(float(o.pow(2).mean()))) for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return out


ENSEMBLE = 32  # networks averaged per example: a single finite-width net fluctuates log-normally
TOLERANCE = 1.6  # stated tolerance: ensemble-mean ratio within [1/1.6, 1.6]


def _ensemble_ratio(width: int, depth: int, seed: int, activation: str, init: str, input_std: float) -> float:
    """Ensemble mean of (last block's / first block's) pre-activation second moment."""
    ratios = []
    for k in range(ENSEMBLE):
        torch.manual_seed(seed + k)
        model = MLP(width, 10, task_config("deep_mlp", depth=depth, width=width, activation=activation, init=init))
        m = _second_moments(model, torch.randn(256, width) * input_std)
        ratios.append(m[-1] / m[0])
    return sum(ratios) / len(ratios)


@given(widths, depths, seeds)
def test_he_init_preserves_second_moment_through_relu_stack(width, depth, seed):
    """He et al. (2015): Var(W)=2/fan_in keeps E[z^2] constant across ReLU layers (in
    expectation over the weights; one net deviates by a log-normal factor growing with depth/width)."""
    assert 1 / TOLERANCE < _ensemble_ratio(width, depth, seed, "relu", "he", 1.0) < TOLERANCE


@given(widths, depths, seeds, st.sampled_from(["identity", "tanh"]))
def test_xavier_init_preserves_second_moment_through_linear_and_tanh_stacks(width, depth, seed, activation):
    """Glorot & Bengio (2010): Var(W)=2/(fan_in+fan_out)=1/n keeps E[z^2] constant for a linear
    stack, and for tanh in its near-linear regime (inputs of std 0.1)."""
    assert 1 / TOLERANCE < _ensemble_ratio(width, depth, seed, activation, "xavier", 0.1) < TOLERANCE


def test_default_init_does_not_preserve_second_moment():
    """The contrast that makes the two tests above meaningful: PyTorch's default init shrinks it."""
    assert _ensemble_ratio(64, 12, 0, "relu", "default", 1.0) < 1 / TOLERANCE


@given(st.lists(st.floats(min_value=-1e4, max_value=1e4), min_size=1, max_size=64))
def test_sigmoid_and_tanh_derivative_bounds(values):
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    (d_sigmoid,) = torch.autograd.grad(torch.sigmoid(x).sum(), x)
    (d_tanh,) = torch.autograd.grad(torch.tanh(x).sum(), x)
    assert d_sigmoid.abs().max() <= 0.25
    assert d_tanh.abs().max() <= 1.0


@given(depths, seeds)
def test_per_layer_gradient_norms_square_sum_to_global_norm(depth, seed):
    torch.manual_seed(seed)
    model = MLP(16, 10, task_config("deep_mlp", depth=depth, width=16, activation="tanh"))
    x, y = torch.randn(32, 16), torch.randint(0, 10, (32,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    rows = Rows()
    params = list(model.parameters())
    ctx = ProbeContext(
        task=type("T", (), {"flow_metric": "grad_norm"})(), model=model, layers=model.layers(), params=params, rows=rows
    )
    GradNorm().after_backward(ctx)
    records = rows.to_records()
    per_layer = [v for _, m, _, v in records if m == "grad_norm"]
    total = next(v for _, m, _, v in records if m == "grad_norm_global")
    biases = [float(torch.linalg.vector_norm(p.grad)) ** 2 for n, p in model.named_parameters() if n.endswith("bias")]
    assert len(per_layer) == depth + 1
    assert math.isclose(sum(v * v for v in per_layer) + sum(biases), total**2, rel_tol=1e-4)
    assert math.isclose(
        float(global_norm([p.grad for p in params])), float(torch.linalg.vector_norm(_flat(params))), rel_tol=1e-5
    )
