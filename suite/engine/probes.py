"""Probes: observers of forward, backward and step that emit tidy rows (step, metric, layer, value).

Probes run only on sampled steps (``log_schedule``); between samples no hook is attached
and nothing is computed. Values stay tensors until the run ends (``Rows.to_records``), so a
sample costs a few fused kernels (``torch._foreach_norm``) and no ``.item()`` per parameter.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from vanex.engine.nn import ACTIVATIONS, RECTIFIERS, SATURATING
from vanex.engine.task import Capability, Layer, ProbedModel, Task
from vanex.registry import PROBES


def log_schedule(steps: int, samples: int, linear: int = 0) -> list[int]:
    """Step 0, the last step, ``samples`` log-spaced steps (dense early, where dynamics change
    fastest) and ``linear`` evenly spaced ones (so the later half is seen too); sorted, unique."""
    if steps <= 0:
        return []
    points = {0, steps - 1}
    for i in range(samples):
        points.add(min(steps - 1, int(round(math.exp(i * math.log(steps) / max(samples - 1, 1)))) - 1))
    for i in range(1, linear + 1):
        points.add(min(steps - 1, round(i * steps / linear) - 1))
    return sorted(points)


def eval_schedule(steps: int, samples: int, cost: float, budget: float) -> list[int]:
    """The steps before which a run evaluates, besides its final evaluation after the last step:
    log-spaced from step 0 (the last step left out: the final evaluation follows it), at most
    ``samples`` of them and at most as many as fit in ``budget`` of the training, ``cost`` being one
    evaluation's cost in training steps (``Task.eval_cost``; 0: cheap, ``samples`` of them)."""
    n = samples if cost <= 0 else min(samples, int(budget * steps / cost))
    if n <= 0:
        return []
    return [s for s in log_schedule(steps, n + 1) if s != steps - 1][:n]


class Rows:
    """Buffer of probe values, kept as tensors until the run ends."""

    def __init__(self) -> None:
        self._chunks: list[tuple[int, str, list[str], torch.Tensor]] = []

    def add(self, step: int, metric: str, layers: list[str], values: torch.Tensor) -> None:
        self._chunks.append((step, metric, layers, values.detach().reshape(-1).float()))

    def to_records(self) -> list[tuple[int, str, str, float]]:
        if not self._chunks:
            return []
        flat = torch.cat([v.cpu() for *_, v in self._chunks]).tolist()  # one transfer for the whole run
        out, i = [], 0
        for step, metric, layers, _values in self._chunks:
            for layer in layers:
                out.append((step, metric, layer, flat[i]))
                i += 1
        return out


@dataclass
class ProbeContext:
    task: Task
    model: ProbedModel
    layers: list[Layer]
    params: list[torch.nn.Parameter]
    rows: Rows
    step: int = 0
    batch: Any = None  # the training batch of the sampled step
    scratch: dict[str, Any] = field(default_factory=dict)


class Probe:
    """Base class; override the hooks you need. ``applies`` decides if a model can serve it."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]] = ()  # metric names this probe may emit

    def applies(self, task: Task, model: ProbedModel) -> bool:
        return True

    def before_forward(self, ctx: ProbeContext) -> None:
        pass

    def after_backward(self, ctx: ProbeContext) -> None:
        """Gradients as backward left them (before clipping)."""

    def after_transform(self, ctx: ProbeContext) -> None:
        """Gradients as the optimiser will see them (after clipping)."""

    def after_step(self, ctx: ProbeContext) -> None:
        pass


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def _grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


def emit_flow(
    ctx: ProbeContext, metric: str, names: list[str], values: torch.Tensor, hidden: list[bool], kinds: list[str]
) -> None:
    """Emit a per-depth (or per-time) series, and ``grad_ratio`` (first/last hidden entry) when
    this series is the task's declared gradient-flow metric."""
    ctx.rows.add(ctx.step, metric, names, values)
    if ctx.task.flow_metric == metric:
        idx = [i for i, h in enumerate(hidden) if h]
        if idx:  # compare like with like: the last hidden entry of the same kind as the first
            last = [i for i in idx if kinds[i] == kinds[idx[0]]][-1]
            ctx.rows.add(ctx.step, "grad_ratio", [""], values[idx[0]] / values[last])


@PROBES.register("grad_norm")
class GradNorm(Probe):
    """Per-layer weight-gradient L2 norm and global gradient norm before/after clipping."""

    metrics = ("grad_norm", "grad_norm_global", "grad_norm_global_clipped", "grad_ratio")

    def after_backward(self, ctx: ProbeContext) -> None:
        layers = [layer for layer in ctx.layers if layer.weight.grad is not None]
        norms = torch.stack(torch._foreach_norm([layer.weight.grad for layer in layers]))
        names, hidden, kinds = ([getattr(x, a) for x in layers] for a in ("name", "hidden", "kind"))
        emit_flow(ctx, "grad_norm", names, norms, hidden, kinds)
        ctx.rows.add(ctx.step, "grad_norm_global", [""], global_norm(_grads(ctx.params)))

    def after_transform(self, ctx: ProbeContext) -> None:
        ctx.rows.add(ctx.step, "grad_norm_global_clipped", [""], global_norm(_grads(ctx.params)))


@PROBES.register("activation")
class ActivationStats(Probe):
    """Per-layer activation mean/std plus saturated fraction (sigmoid, tanh: derivative below a
    tenth of its maximum), dead fraction (ReLU: units at zero, so zero gradient, on the whole
    batch) or inactive fraction (leaky ReLU, GELU, SiLU: the same test; their gradient is small
    but never exactly zero there)."""

    metrics = ("act_mean", "act_std", "act_saturated", "act_dead", "act_inactive")

    def applies(self, task: Task, model: ProbedModel) -> bool:
        return any(layer.activation is not None for layer in model.layers())

    def before_forward(self, ctx: ProbeContext) -> None:
        stats: list[tuple[str, torch.Tensor, str]] = []

        def hook(name, module, inputs, out):
            stats.append((name, _activation_stats(module.kind, out.detach()), module.kind))

        ctx.scratch["activation"] = (stats, _hook_activations(ctx, hook, lambda m: m is not None))

    def after_backward(self, ctx: ProbeContext) -> None:
        stats, handles = ctx.scratch.pop("activation")
        for h in handles:
            h.remove()
        if not stats:
            return
        names = [name for name, _, _ in stats]
        values = torch.stack([v for _, v, _ in stats])  # (layers, 3)
        ctx.rows.add(ctx.step, "act_mean", names, values[:, 0])
        ctx.rows.add(ctx.step, "act_std", names, values[:, 1])
        kinds = [kind for *_, kind in stats]
        groups = (("act_saturated", SATURATING), ("act_dead", ("relu",)), ("act_inactive", RECTIFIERS[1:]))
        for metric, group in groups:
            idx = [i for i, k in enumerate(kinds) if k in group]
            if idx:
                ctx.rows.add(ctx.step, metric, [names[i] for i in idx], values[idx, 2])


def _activation_stats(kind: str, out: torch.Tensor) -> torch.Tensor:
    """(mean, std, fraction) of one activation tensor; units on dim 1 for (B, C, H, W), else last."""
    units = out.transpose(1, -1) if out.dim() == 4 else out
    units = units.reshape(-1, units.shape[-1])  # (samples, units)
    if kind == "sigmoid":
        frac = ((units < 0.0257) | (units > 0.9743)).float().mean()  # sigma' < 1/40
    elif kind == "tanh":
        frac = (units.abs() > 0.9487).float().mean()  # tanh' < 1/10
    elif kind in RECTIFIERS:
        frac = (units <= 0).all(dim=0).float().mean()  # dead on this batch
    else:
        frac = torch.zeros((), device=out.device)
    return torch.stack([units.mean(), units.std(), frac])


@PROBES.register("backprop")
class Backprop(Probe):
    """Per-layer ||dL/dh|| for h the input of each layer's activation (its pre-activation): the
    backward signal that mean-field theory predicts, ||dL/dh_l||^2 ~ chi_1 ||dL/dh_(l+1)||^2 with
    chi_1 = sigma_w^2 E[phi'(h)^2] (Poole et al. 2016; Schoenholz et al. 2017). Weight gradients are
    this signal times the layer's input, so with ReLU they stay flat whatever sigma_w (the input
    grows as fast as the signal shrinks): compare chi_1 with this probe, not with ``grad_norm``.
    A tensor hook only reads the gradient; it never changes it."""

    metrics = ("grad_preact",)

    def applies(self, task: Task, model: ProbedModel) -> bool:
        return any(_computes(layer.activation) for layer in model.layers())

    def before_forward(self, ctx: ProbeContext) -> None:
        norms: dict[str, torch.Tensor] = {}

        def hook(name, module, inputs, out):
            if inputs[0].requires_grad:
                inputs[0].register_hook(lambda g: norms.__setitem__(name, torch.linalg.vector_norm(g.detach())))

        ctx.scratch["backprop"] = (norms, _hook_activations(ctx, hook, _computes))

    def after_backward(self, ctx: ProbeContext) -> None:
        norms, handles = ctx.scratch.pop("backprop")
        for h in handles:
            h.remove()
        names = [layer.name for layer in ctx.layers if layer.name in norms]
        if names:
            ctx.rows.add(ctx.step, "grad_preact", names, torch.stack([norms[n] for n in names]))


def _hook_activations(ctx: ProbeContext, hook: Any, keep: Any) -> list:
    """Forward hooks ``hook(layer_name, module, inputs, out)`` on every layer whose activation
    module passes ``keep``; the handles, to remove after the backward pass."""
    return [
        layer.activation.register_forward_hook(functools.partial(hook, layer.name))
        for layer in ctx.layers
        if keep(layer.activation)
    ]


def _computes(module: torch.nn.Module | None) -> bool:
    """Whether ``module`` applies its nonlinearity (not an ``observe_only`` marker on a tensor that a
    fused kernel already put through it, e.g. nn.RNN's hidden states, whose input is no pre-activation)."""
    return module is not None and getattr(module, "fn", None) is ACTIVATIONS.get(getattr(module, "kind", ""))


@PROBES.register("update_ratio")
class UpdateRatio(Probe):
    """Per-layer ||W_new - W_old|| / ||W_new||, the step's relative size (Karpathy's 1e-3 rule)."""

    metrics = ("update_ratio",)

    def after_transform(self, ctx: ProbeContext) -> None:
        ctx.scratch["weights"] = [layer.weight.detach().clone() for layer in ctx.layers]

    def after_step(self, ctx: ProbeContext) -> None:
        old = ctx.scratch.pop("weights")
        new = [layer.weight.detach() for layer in ctx.layers]
        delta = torch.stack(torch._foreach_norm(torch._foreach_sub(new, old)))
        ratio = delta / torch.stack(torch._foreach_norm(new)).clamp_min(1e-30)
        ctx.rows.add(ctx.step, "update_ratio", [layer.name for layer in ctx.layers], ratio)


@PROBES.register("grad_through_time")
class GradThroughTime(Probe):
    """||dL/dh_t|| for every time step t, L the loss that needs memory (Pascanu et al. 2013):
    the vanishing (or exploding) curve through time. One extra forward/backward per sample,
    on the step's batch, without touching the parameters' gradients."""

    metrics = ("grad_through_time", "grad_ratio")

    def applies(self, task: Task, model: ProbedModel) -> bool:
        return Capability.TIME_FLOW in task.capabilities

    def before_forward(self, ctx: ProbeContext) -> None:
        taps: list[torch.Tensor] = []
        loss = ctx.task.memory_loss(ctx.model, ctx.batch, taps)
        grads = torch.autograd.grad(loss, taps)
        norms = torch.stack(torch._foreach_norm(list(grads)))  # (T,)
        steps = len(taps)
        emit_flow(ctx, "grad_through_time", [f"t{t}" for t in range(steps)], norms, [True] * steps, ["t"] * steps)


@PROBES.register("recurrent_spectrum")
class RecurrentSpectrum(Probe):
    """Spectral radius and largest singular value of the recurrent matrix (Pascanu et al. 2013:
    sigma_max < 1 is sufficient for vanishing, rho > 1 necessary for exploding). Read before the
    sampled step's forward, so step 0 is the initialisation and each value belongs to the same
    weights as that step's ``grad_through_time`` (the sigma_max^T bound compares the two)."""

    metrics = ("spectral_radius", "sigma_max")

    def applies(self, task: Task, model: ProbedModel) -> bool:
        return Capability.RECURRENT in task.capabilities

    def before_forward(self, ctx: ProbeContext) -> None:
        w = ctx.model.recurrent_matrix().detach().float()
        if not bool(torch.isfinite(w).all()):  # LAPACK's eigvals crashes the process on a NaN (MKL SGEBAL)
            nan = torch.tensor(float("nan"))
            ctx.rows.add(ctx.step, "spectral_radius", ["recurrent"], nan)
            ctx.rows.add(ctx.step, "sigma_max", ["recurrent"], nan)
            return
        ctx.rows.add(ctx.step, "spectral_radius", ["recurrent"], torch.linalg.eigvals(w).abs().max())
        ctx.rows.add(ctx.step, "sigma_max", ["recurrent"], torch.linalg.matrix_norm(w, ord=2))


@PROBES.register("attention_entropy")
class AttentionEntropy(Probe):
    """Mean entropy (nats) of each block's attention distributions; collapse towards 0 (one-hot
    attention) is a known companion of transformer training instability (Zhai et al. 2023)."""

    metrics = ("attn_entropy",)

    def applies(self, task: Task, model: ProbedModel) -> bool:
        return Capability.ATTENTION in task.capabilities

    def before_forward(self, ctx: ProbeContext) -> None:
        for module in ctx.model.attention_modules():
            module.capture = True

    def after_backward(self, ctx: ProbeContext) -> None:
        entropies = []
        for module in ctx.model.attention_modules():
            p = module.probs  # (B, H, T, T)
            entropies.append(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())
            module.capture, module.probs = False, None
        names = [f"block{i}" for i in range(len(entropies))]
        ctx.rows.add(ctx.step, "attn_entropy", names, torch.stack(entropies))
