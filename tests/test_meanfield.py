"""Mean-field theory (vanex.science.meanfield) and the backprop probe it is compared with."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import task_config
from hypothesis import given, settings
from hypothesis import strategies as st
from vanex.engine.probes import Backprop, GradThroughTime, ProbeContext, RecurrentSpectrum, Rows
from vanex.science import meanfield
from vanex.tasks.deep_mlp import MLP, DeepMLP
from vanex.tasks.rnn_copy import RNNCopy
from vanex.tasks.rnn_copy_report import rnn_bound_fraction, rnn_bound_points, rnn_bound_section

scales = st.floats(0.2, 4.0)


@given(scales, st.floats(1e-3, 50.0))
def test_relu_chi_is_half_sigma_squared_at_any_length(sigma_w, q):
    assert meanfield.chi(q, "relu", sigma_w) == pytest.approx(sigma_w**2 / 2, rel=1e-12)
    assert meanfield.chi1("relu", sigma_w) == pytest.approx(sigma_w**2 / 2, rel=1e-12)
    assert meanfield.length_map(q, "relu", sigma_w) == pytest.approx(sigma_w**2 * q / 2, rel=1e-12)


@given(st.floats(0.2, 0.95))
def test_tanh_without_bias_is_ordered_below_one_with_chi_sigma_squared(sigma_w):
    assert meanfield.fixed_point("tanh", sigma_w) < 1e-6
    assert meanfield.chi1("tanh", sigma_w) == pytest.approx(sigma_w**2, rel=1e-4)


@given(st.floats(1.1, 4.0), st.floats(0.0, 0.5))
@settings(deadline=None)
def test_tanh_fixed_point_above_one_is_nontrivial_and_fixed(sigma_w, sigma_b):
    q = meanfield.fixed_point("tanh", sigma_w, sigma_b)
    assert q > 0.01
    assert meanfield.length_map(q, "tanh", sigma_w, sigma_b) == pytest.approx(q, rel=1e-8)


@given(st.sampled_from(["tanh", "sigmoid"]), scales, st.floats(0.05, 5.0))
@settings(deadline=None, max_examples=30)
def test_chi_matches_monte_carlo(activation, sigma_w, q):
    phi, dphi = meanfield.ACTIVATIONS[activation]
    z = np.random.default_rng(0).standard_normal(400_000)
    estimate = sigma_w**2 * np.mean(dphi(math.sqrt(q) * z) ** 2)
    assert meanfield.chi(q, activation, sigma_w) == pytest.approx(estimate, rel=0.01)


@given(st.floats(0.3, 1.0), st.floats(1.0, 3.5))
@settings(deadline=None)
def test_tanh_chi1_grows_with_sigma_w_and_crosses_one_at_criticality(low, high):
    assert meanfield.chi1("tanh", low) <= meanfield.chi1("tanh", 1.0) + 1e-9 <= meanfield.chi1("tanh", high) + 2e-9
    assert meanfield.chi1("tanh", 1.0) == pytest.approx(1.0, abs=1e-6)


@given(st.sampled_from(["tanh", "sigmoid", "relu"]), scales, st.integers(2, 30))
@settings(deadline=None, max_examples=30)
def test_profile_from_the_fixed_point_is_chi1_per_layer(activation, sigma_w, depth):
    q_star = meanfield.fixed_point(activation, sigma_w)
    if q_star == math.inf:  # ReLU above sqrt(2): no finite fixed point, but its chi does not depend on q
        q_star = 1.0
    profile = meanfield.profile(activation, sigma_w, q_star / sigma_w**2, depth)
    per_layer = 0.5 * math.log10(meanfield.chi(q_star, activation, sigma_w))
    assert profile[-1] == 0.0
    assert profile == pytest.approx(per_layer * np.arange(depth - 1, -1, -1), abs=1e-6)


def test_depth_scale_is_infinite_at_criticality_and_finite_off_it():
    assert meanfield.depth_scale(1.0) == math.inf
    assert meanfield.depth_scale(0.5) == pytest.approx(1 / math.log(2))
    assert meanfield.depth_scale(2.0) == pytest.approx(1 / math.log(2))


def _mlp(activation: str, sigma_w: float, depth: int, width: int, seed: int) -> MLP:
    torch.manual_seed(seed)
    cfg = task_config("deep_mlp", activation=activation, init="scaled", weight_scale=sigma_w, depth=depth, width=width)
    return MLP(64, 10, cfg).double()


def _backprop_norms(model: MLP, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """(the probe's per-layer ||dL/dh||, the same from autograd on retained pre-activations)."""
    probe, rows = Backprop(), Rows()
    ctx = ProbeContext(task=None, model=model, layers=model.layers(), params=list(model.parameters()), rows=rows)
    preacts = []

    def keep(module, inputs, out):  # returns None, so the output is left alone
        inputs[0].retain_grad()
        preacts.append(inputs[0])

    hooks = [b.act.register_forward_hook(keep) for b in model.blocks]
    probe.before_forward(ctx)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    probe.after_backward(ctx)
    for h in hooks:
        h.remove()
    measured = [v for *_, v in rows.to_records()]
    return measured, [float(p.grad.norm()) for p in preacts]


def test_backprop_probe_measures_the_true_gradient_and_changes_nothing():
    model = _mlp("tanh", 1.5, depth=6, width=16, seed=0)
    x, y = torch.randn(32, 64, dtype=torch.float64), torch.randint(0, 10, (32,))
    measured, truth = _backprop_norms(model, x, y)
    assert measured == pytest.approx(truth, rel=1e-5)
    probed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(probed, model.parameters(), strict=True))


@pytest.mark.parametrize(("activation", "sigma_w"), [("tanh", 0.7), ("tanh", 2.5), ("relu", 1.8)])
def test_wide_net_at_init_follows_the_mean_field_profile(activation, sigma_w):
    """A 512-wide, 10-layer net: measured log10 ||dL/dh_l|| / ||dL/dh_L|| within 0.15 decades of theory."""
    x = torch.randn(128, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(2))
    curves = []
    for seed in range(2):
        measured, _ = _backprop_norms(_mlp(activation, sigma_w, depth=10, width=512, seed=seed), x, y)
        curves.append(np.log10(measured) - np.log10(measured[-1]))
    predicted = meanfield.profile(activation, sigma_w, float(x.pow(2).mean()), 10)
    assert np.mean(curves, axis=0) == pytest.approx(predicted, abs=0.15)
    assert abs(predicted[0]) > 0.5  # the check is not trivially flat


def test_backprop_probe_skips_observe_only_markers():
    """nn.RNN's hidden states pass through an observe-only marker: its input is no pre-activation."""
    task = RNNCopy(task_config("rnn_copy", delay=3, hidden=8), torch.device("cpu"))
    assert not Backprop().applies(task, task.build_model())


# --- the sigma_max^T bound (Pascanu et al. 2013) in the reporter ---


def _rnn_frames(flows: dict[str, tuple[list[float], float]], **settings) -> tuple[pd.DataFrame, dict[str, dict]]:
    rows, records = [], {}
    for rid, (flow, sigma) in flows.items():
        rows += [(0, "grad_through_time", f"t{t}", v, rid) for t, v in enumerate(flow)]
        rows.append((0, "sigma_max", "recurrent", sigma, rid))
        s = {"task.cell": "rnn", "task.tbptt": 0, **settings}
        records[rid] = {"task": "rnn_copy", "seed": 0, "settings": s}
    probes = pd.DataFrame(rows, columns=["step", "metric", "layer", "value", "run_id"])
    return probes.assign(mitigations="baseline", setting=""), records


def test_rnn_bound_holds_where_the_gradient_decays_and_fails_where_it_outgrows_sigma(tmp_path):
    decays = [0.5**lag for lag in range(5, 0, -1)] + [1.0] * 10  # first recall step s = 5
    outgrows = [3.0**lag for lag in range(5, 0, -1)] + [1.0] * 10
    probes, records = _rnn_frames({"a": (decays, 1.0), "b": (outgrows, 2.0)})
    points = rnn_bound_points(probes, records)
    assert sorted(points["lag"].unique()) == [1, 2, 3, 4, 5]
    assert points.groupby("run_id")["holds"].mean().to_dict() == {"a": 1.0, "b": 0.0}
    assert rnn_bound_fraction(points) == 0.5
    assert points.loc[points["run_id"] == "b", "bound"].to_numpy() == pytest.approx(np.arange(5, 0, -1) * math.log10(2))
    parts = rnn_bound_section("s", probes, records, tmp_path)
    assert "50.0% of 10 (run, lag) pairs" in parts[0] and (tmp_path / "s_sigma_bound.png").is_file()
    for excluded in ({"task.cell": "lstm"}, {"task.tbptt": 35}):
        assert rnn_bound_points(*_rnn_frames({"a": (decays, 1.0)}, **excluded)).empty


@given(st.floats(0.5, 3.0), st.integers(0, 2**16))
@settings(deadline=None, max_examples=10)
def test_rnn_bound_holds_on_the_probes_of_a_real_tanh_rnn(gain, seed):
    cfg = task_config("rnn_copy", delay=6, hidden=16, init="scaled", recurrent_gain=gain, batch_size=4)
    task = RNNCopy(cfg, torch.device("cpu"))
    torch.manual_seed(seed)
    model = task.build_model()
    rows = Rows()
    ctx = ProbeContext(task=task, model=model, layers=model.layers(), params=list(model.parameters()), rows=rows)
    ctx.batch = next(task.batches(torch.Generator().manual_seed(seed)))
    for probe in (GradThroughTime(), RecurrentSpectrum()):
        probe.before_forward(ctx)
    probes = pd.DataFrame(rows.to_records(), columns=["step", "metric", "layer", "value"]).assign(run_id="r")
    points = rnn_bound_points(
        probes,
        {
            "r": {
                "task": "rnn_copy",
                "seed": seed,
                "settings": {f"task.{k}": v for k, v in dataclasses.asdict(cfg).items()},
            }
        },
    )
    assert len(points) == 16 and rnn_bound_fraction(points) == 1.0


# --- the correlation map and its depth scale (Schoenholz et al. 2017), drawn on the phase diagram ---


@given(st.sampled_from(["tanh", "sigmoid"]), st.floats(0.3, 3.0), st.floats(0.05, 0.5))
@settings(deadline=None, max_examples=10)
def test_full_correlation_is_a_fixed_point_of_the_correlation_map(activation, sigma_w, sigma_b):
    """c = 1 maps to itself; the 2-D rule is good to ~1e-4 at the largest lengths here (q* ~ 9)."""
    assert meanfield.correlation_map(1.0, activation, sigma_w, sigma_b) == pytest.approx(1.0, abs=2e-4)


@given(st.sampled_from(["tanh", "sigmoid"]), st.floats(0.2, 4.0))
@settings(deadline=None, max_examples=15)
def test_correlation_depth_scale_is_the_gradient_one_on_the_ordered_side(activation, sigma_w):
    chi_1 = meanfield.chi1(activation, sigma_w)
    if chi_1 > 1:  # chaotic tanh: correlations converge to c* < 1 over a longer, finite depth
        assert meanfield.chi_c(activation, sigma_w) < 1
        assert meanfield.correlation_depth_scale(activation, sigma_w) > meanfield.depth_scale(chi_1)
    else:
        assert meanfield.correlation_depth_scale(activation, sigma_w) == pytest.approx(meanfield.depth_scale(chi_1))


@given(st.floats(1.2, 3.0))
@settings(deadline=None, max_examples=4)
def test_chaotic_tanh_chi_c_closed_form_agrees_with_the_correlation_map_root(sigma_w):
    """Without bias the odd tanh map has c* = 0 (closed form); a vanishing bias takes the general
    path (root of the 2-D correlation map), which must land on the same value."""
    assert meanfield.chi_c("tanh", sigma_w, 1e-9) == pytest.approx(meanfield.chi_c("tanh", sigma_w), rel=5e-3)


def test_chaotic_tanh_chi_c_matches_monte_carlo():
    sigma_w = 2.0
    q = meanfield.fixed_point("tanh", sigma_w)
    z = np.random.default_rng(0).standard_normal((2, 400_000))
    estimate = (
        sigma_w**2 * np.mean(1 - np.tanh(math.sqrt(q) * z[0]) ** 2) * np.mean(1 - np.tanh(math.sqrt(q) * z[1]) ** 2)
    )
    assert meanfield.chi_c("tanh", sigma_w) == pytest.approx(estimate, rel=0.01)


def _scaled_record(steps: int, seed: int) -> dict:
    layers = [{"name": f"l{i}", "hidden": True} for i in (1, 2, 3)] + [{"name": "out", "hidden": False}]
    settings = {"task.init": "scaled", "task.norm": "none", "task.residual": "none", "task.activation": "tanh"}
    settings |= {"task.weight_scale": 0.5, "task.depth": 3, "task.steps": steps}
    return {
        "task": "deep_mlp",
        "seed": seed,
        "settings": settings,
        "task_info": {"layers": layers, "constants": {"input_second_moment": 1.0}},
    }


def test_agreement_counts_a_seed_once_when_only_the_training_budget_differs():
    """Runs that differ only in task.steps share their step-0 probes: one seed, not two."""
    from vanex.tasks.deep_mlp_report import agreement

    records = {"a": _scaled_record(100, 0), "b": _scaled_record(300, 0), "c": _scaled_record(100, 1)}
    predicted = meanfield.profile("tanh", 0.5, 1.0, 3)
    rows = [
        (0, "grad_preact", f"l{i + 1}", 10.0 ** (p + shift), rid)
        for rid, shift in (("a", 0.0), ("b", 0.0), ("c", 0.3))
        for i, p in enumerate(predicted)
    ]
    probes = pd.DataFrame(rows, columns=["step", "metric", "layer", "value", "run_id"])
    points = agreement(probes, records)
    assert (points["seeds"] == 2).all() and len(points) == 3
    np.testing.assert_allclose(points["measured"], predicted, atol=1e-9)  # the shift cancels against the last layer
    np.testing.assert_allclose(points["predicted"], predicted)


@pytest.mark.slow
def test_meanfield_study_reports_its_agreement_and_the_chi1_claim_holds(twice):
    from helpers import vanex

    results, out = twice / "a", twice / "report"  # the smoke study and its report (tests/conftest.py)
    text = (out / "summary.md").read_text()
    agreement = text[text.index("Agreement over all") :].split("\n")[0]
    r2 = float(agreement.split("R² = ")[1].split(",")[0])
    assert "220 points" in agreement and r2 > 0.99, agreement  # 11 cells x 20 layers, theory within noise
    assert (out / "figures" / "mlp_meanfield_meanfield.png").is_file()
    claims = vanex("claims", "--results", str(results), "--profile", "smoke", "--claim", "poole2016_chi1")
    assert claims.stdout.startswith("✓"), claims.stdout


def test_phase_diagram_marks_trained_cells_and_draws_the_depth_scale(tmp_path):
    """The full profile's weight scale x depth grid: each point is the share of seeds that trained,
    and the figure carries 6 xi_c (finite off criticality)."""
    from vanex.tasks.deep_mlp_report import phase, section

    records, rows = {}, []
    for sw in (0.5, 1.0, 3.0):
        for depth in (5, 10, 40):
            for seed in (0, 1):
                rid = f"{sw}-{depth}-{seed}"
                record = _scaled_record(3000, seed)
                record["settings"] |= {"task.weight_scale": sw, "task.depth": depth}
                record["task_info"]["layers"] = [{"name": f"l{i}", "hidden": True} for i in range(1, depth + 1)]
                record["task_info"]["chance_loss"] = 2.3
                trained = depth < 40 or sw == 1.0
                record["summary"] = {"final_train_loss": 0.1 if trained else 2.3}
                records[rid] = record
                q_in = record["task_info"]["constants"]["input_second_moment"]
                for i, p in enumerate(meanfield.profile("tanh", sw, q_in, depth)):
                    rows.append((0, "grad_preact", f"l{i + 1}", 10.0**p, rid))
    probes = pd.DataFrame(rows, columns=["step", "metric", "layer", "value", "run_id"])
    grid = phase(records)
    assert len(grid) == 9 and set(grid["trained"]) == {0.0, 1.0}
    assert grid.set_index(["sigma_w", "depth"]).loc[(1.0, 40), "trained"].item() == 1.0
    parts = section("s", probes, records, tmp_path)
    assert any("s_phase_tanh.png" in part for part in parts) and (tmp_path / "s_phase_tanh.png").is_file()
    assert 6 * meanfield.correlation_depth_scale("tanh", 0.5) < 10 < 6 * meanfield.correlation_depth_scale("tanh", 0.95)
    for record in records.values():  # one step, read at init only (mlp_width): no trainability to draw
        record["settings"]["task.steps"] = 1
    assert phase(records).empty and not any("_phase_" in part for part in section("t", probes, records, tmp_path))


def _input_jacobian(model: MLP, x: torch.Tensor) -> tuple[float, float, float]:
    from vanex.engine.input_jacobian import InputJacobian

    rows = Rows()
    ctx = ProbeContext(task=None, model=model, layers=model.layers(), params=list(model.parameters()), rows=rows)
    ctx.batch = (x, None)
    InputJacobian().before_forward(ctx)
    return tuple(v for *_, v in rows.to_records())  # zero fraction, mean, variance


def test_input_jacobian_probe_is_the_log_of_the_true_jacobian_row_and_changes_nothing():
    model = _mlp("relu", 1.414, depth=4, width=16, seed=1)
    x = torch.randn(8, 64, dtype=torch.float64)
    zero, mean, var = _input_jacobian(model, x)
    u = torch.full((10,), 10**-0.5, dtype=torch.float64)
    truth = torch.stack([torch.log((torch.autograd.functional.jacobian(model, xi).T @ u).pow(2).sum()) for xi in x])
    assert zero == 0.0 and mean == pytest.approx(float(truth.mean()), rel=1e-5)
    assert var == pytest.approx(float(truth.var(unbiased=False)), rel=1e-4)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("depth", "width"), [(6, 16), (3, 64)])
def test_relu_jacobian_log_variance_matches_simulated_he_nets(depth, width):
    """The finite-width prediction behind hanin2018_width against 400 He-initialised ReLU nets, each
    at 8 inputs: the pooled variance of ln ||J(x)^T u||^2 within 15% (the sampling error of a
    variance from ~400 nets is ~7%). The inputs come from a generator of their own: drawn from the
    global one, they depended on which tests the worker ran before (a CI run once drew inputs at which
    one of the 400 nets was born dead, Lu et al. 2019, J(x) = 0, which the log leaves out). Such an
    input stays allowed, but rare: at width 16 a layer is all off at an input with probability ~2^-16."""
    x = torch.randn(8, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    values, zeros = [], []
    for seed in range(400):
        zero, mean, var = _input_jacobian(_mlp("relu", 2**0.5, depth=depth, width=width, seed=seed), x)
        zeros.append(zero)
        values.append((mean, var))
    assert np.mean(zeros) < 0.001
    means, variances = np.array(values).T
    pooled = variances.mean() + means.var()
    assert pooled == pytest.approx(meanfield.relu_jacobian_log_variance(depth, width, 64), rel=0.15)


def test_jacobian_spectrum_probe_is_the_spread_of_the_true_jacobian_and_changes_nothing():
    from vanex.engine.jacobian_spectrum import INPUTS, JacobianSpectrum

    model = _mlp("tanh", 1.0, depth=5, width=64, seed=2)
    x = torch.randn(INPUTS + 2, 64, dtype=torch.float64)
    rows = Rows()
    ctx = ProbeContext(task=None, model=model, layers=model.layers(), params=list(model.parameters()), rows=rows)
    ctx.batch = (x, None)
    JacobianSpectrum().before_forward(ctx)
    mean, normvar = (v for *_, v in rows.to_records())

    def last_hidden(xi):
        for block in model.blocks:
            xi = block(xi)
        return xi

    lam = torch.cat(
        [torch.linalg.svdvals(torch.autograd.functional.jacobian(last_hidden, xi)) ** 2 for xi in x[:INPUTS]]
    )
    assert mean == pytest.approx(float(lam.mean()), rel=1e-5)
    assert normvar == pytest.approx(float(lam.pow(2).mean() / lam.mean() ** 2 - 1), rel=1e-4)
    assert all(p.grad is None for p in model.parameters())


def test_jacobian_spectrum_prediction_adds_one_per_gaussian_or_relu_layer_and_nothing_for_linear_orthogonal():
    from vanex.report.claims_builtin import DIGITS_SECOND_MOMENT

    assert meanfield.jacobian_spectrum_variance("identity", 1.0, 1.0, 30, orthogonal=True) == pytest.approx(0.0)
    assert meanfield.jacobian_spectrum_variance("identity", 1.0, 1.0, 30, orthogonal=False) == pytest.approx(30.0)
    assert meanfield.jacobian_spectrum_variance("relu", 2**0.5, 1.0, 30, orthogonal=True) == pytest.approx(30.0)
    assert meanfield.jacobian_spectrum_variance("relu", 2**0.5, 1.0, 30, orthogonal=False) == pytest.approx(60.0)
    tanh = [meanfield.jacobian_spectrum_variance("tanh", 1.0, 1.0, d, orthogonal=True) for d in (10, 80)]
    assert 0 < tanh[0] < tanh[1] < 2 * tanh[0]  # q_l -> 0: the nonlinearity fades, the net nears isometry
    cfg = task_config("deep_mlp")
    constants = DeepMLP(cfg, torch.device("cpu")).constants()
    assert constants["input_second_moment"] == pytest.approx(DIGITS_SECOND_MOMENT, abs=1e-4)


@pytest.mark.parametrize(("depth", "width", "draw"), [(6, 3, "normal"), (12, 4, "uniform"), (3, 2, "uniform")])
def test_relu_dead_probability_matches_simulated_nets(depth, width, draw):
    """The exact chance behind lu2019_born_dead that a ReLU net with zero biases and symmetric weights
    has a hidden layer all at 0 for one input, against 20,000 simulated nets (Gaussian or uniform
    weights): within 4 binomial standard errors."""
    nets, gen = 20_000, torch.Generator().manual_seed(depth * 100 + width)

    def weights(fan_in: int) -> torch.Tensor:
        shape = (nets, width, fan_in)
        if draw == "normal":
            return torch.randn(shape, generator=gen, dtype=torch.float64)
        return torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1

    h = torch.rand(nets, 64, 1, generator=gen, dtype=torch.float64)  # one nonzero input per net, like a digit
    dead = torch.zeros(nets, dtype=torch.bool)
    for _ in range(depth):
        h = torch.relu(weights(h.shape[1]) @ h)  # (nets, width, 1)
        dead |= (h == 0).all(dim=1)[:, 0]  # the layer is all at 0 for the input
    p = meanfield.relu_dead_probability(depth, width)
    assert abs(dead.double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / nets)


def _small_study(tmp_path, monkeypatch, seeds: int, overrides: list[str], grid: list[dict]) -> Any:
    """Run a small deep-MLP study in this process and read it back (every probe row kept)."""
    from vanex.engine import plan, study
    from vanex.records.reader import read_study
    from vanex.records.store import manifest_path, read_manifest

    small = {"task": "deep_mlp", "seeds": list(range(seeds)), "overrides": overrides, "grid": grid}
    monkeypatch.setattr(plan, "load_study", lambda name: small)
    monkeypatch.setenv(study.IN_PROCESS, "1")
    results = tmp_path / "results"
    assert study.run_study("small", "quick", [f"results_dir={results}", "progress=false"], jobs=1) == 0
    return read_study(read_manifest(manifest_path(results, "small", "quick")), results, {"act_dead", "grad_autocorr"})


def test_born_dead_section_reads_the_activation_probe_and_draws_the_bound(tmp_path, monkeypatch):
    """A small mlp_dying (depth 2 and 12 x width 2 and 32, 8 seeds, one step): the share of nets born
    dead (a hidden layer all at 0 on the batch) is 0 for the wide shallow nets and high for the deep
    narrow ones, never above the bound, and the section writes its figure with the data beside it."""
    from vanex.report.figures import pyplot
    from vanex.tasks.deep_mlp_report import BornDeadSection, dying_points

    sweep = {"task.activation": ["relu"], "task.weight_scale": [1.414], "task.depth": [2, 12], "task.width": [2, 32]}
    overrides = ["task.init=scaled", "task.steps=1", "probe.names=[activation]"]
    data = _small_study(tmp_path, monkeypatch, 8, overrides, [{"mitigations": [[]], "sweep": sweep}])
    points = dying_points(data).set_index(["depth", "width"])
    assert list(points.index) == [(2, 2), (2, 32), (12, 2), (12, 32)] and (points["seeds"] == 8).all()
    assert points.loc[(12, 32), "measured"] == 0 and points.loc[(12, 2), "measured"] >= 0.5
    assert (points["ci_low"] <= points["predicted"]).all() and (points["measured"] <= 1).all()
    bound = [meanfield.relu_dead_probability(d, w) for d, w in points.index]
    assert points["predicted"].tolist() == pytest.approx(bound)
    pyplot()  # the figure backend, as the reporter sets it
    assert BornDeadSection().applies(data)
    parts = BornDeadSection().write(data, tmp_path / "report")
    assert (tmp_path / "report/figures/small_born_dead.csv").exists() and any("born_dead.png" in p for p in parts)


def test_shattered_section_reads_the_probe_per_architecture_and_draws_the_rates(tmp_path, monkeypatch):
    """A small mlp_shattered (batch norm, 1 and 12 layers, with and without skips, 3 seeds): the deep
    feed-forward net's neighbouring gradients are less alike than the 1-layer net's and the resnet's,
    and the drawn rates start from the 1-layer value."""
    from vanex.report.figures import pyplot
    from vanex.tasks.deep_mlp_report import ShatteredSection, shattered_points

    overrides = ["task.init=scaled", "task.weight_scale=1.414", "task.activation=relu", "task.width=64"]
    overrides += ["task.steps=1", "probe.names=[gradient_correlation]"]
    grid = [
        {"mitigations": [["batchnorm"]], "sweep": {"task.depth": [1, 12]}},
        {"mitigations": [["batchnorm", "residual"]], "sweep": {"task.depth": [12]}},
    ]
    data = _small_study(tmp_path, monkeypatch, 3, overrides, grid)
    points = shattered_points(data).set_index(["set", "depth"])
    one, plain, res = (
        points.loc[key, "measured"]
        for key in [("feed-forward + batch norm", 1), ("feed-forward + batch norm", 12), ("resnet + batch norm", 12)]
    )
    assert plain < one and plain < res and (points["seeds"] == 3).all()
    assert points.loc[("feed-forward + batch norm", 12), "predicted"] == pytest.approx(one * 2.0**-11)
    assert points.loc[("resnet + batch norm", 12), "predicted"] == pytest.approx(one / 12**0.5)
    pyplot()
    parts = ShatteredSection().write(data, tmp_path / "report")
    assert (tmp_path / "report/figures/small_shattered.csv").exists() and any("shattered.png" in p for p in parts)


@pytest.mark.parametrize("residual", ["none", "identity"])
def test_gradient_correlation_probe_is_the_autocorrelation_of_the_true_gradient_and_changes_nothing(residual):
    """The probe's autocorrelation along the segment between the batch's first two inputs against
    autograd on the same 256 points; parameters' gradients and batch norm's running statistics untouched."""
    from vanex.engine.gradient_correlation import LAGS, POINTS, GradientCorrelation

    torch.manual_seed(3)
    cfg = task_config("deep_mlp", activation="relu", norm="batchnorm", residual=residual, depth=6, width=32)
    model = MLP(64, 10, cfg).double().train()
    x = torch.rand(5, 64, dtype=torch.float64)
    rows = Rows()
    ctx = ProbeContext(task=None, model=model, layers=model.layers(), params=list(model.parameters()), rows=rows)
    ctx.batch = (x, None)
    GradientCorrelation().before_forward(ctx)
    measured = {layer: value for _, metric, layer, value in rows.to_records() if metric == "grad_autocorr"}

    t = torch.linspace(0, 1, POINTS, dtype=torch.float64).unsqueeze(1)
    line = (x[0] + t * (x[1] - x[0])).requires_grad_(True)
    (grad,) = torch.autograd.grad(model(line).sum() / 10**0.5, line)
    d = grad @ (x[1] - x[0])
    d = (d - d.mean()).numpy()
    for k in LAGS:
        assert measured[f"lag{k}"] == pytest.approx(float((d[:-k] * d[k:]).sum() / (d * d).sum()), rel=1e-6, abs=1e-9)
    assert 0 < measured["lag1"] <= 1
    assert all(p.grad is None for p in model.parameters())


def test_gradient_correlation_probe_leaves_running_statistics_as_they_were():
    from vanex.engine.gradient_correlation import GradientCorrelation

    torch.manual_seed(4)
    model = MLP(64, 10, task_config("deep_mlp", activation="relu", norm="batchnorm", depth=3, width=16)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = ProbeContext(task=None, model=model, layers=model.layers(), params=list(model.parameters()), rows=Rows())
    ctx.batch = (torch.rand(4, 64, dtype=torch.float64), None)
    GradientCorrelation().before_forward(ctx)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
