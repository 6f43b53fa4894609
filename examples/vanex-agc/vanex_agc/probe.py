"""The probe AGC's rule reads: per layer, the largest unit-wise ratio ||G_i|| / ||W_i|| of the gradient
as backward left it (before any clipping), the quantity adaptive gradient clipping bounds by lambda."""

from __future__ import annotations

import torch
from vanex.engine.probes import Probe, ProbeContext
from vanex.registry import PROBES

from vanex_agc.agc import unitwise_norm


@PROBES.register("unit_grad_ratio")
class UnitGradRatio(Probe):
    """Per layer, the largest unit-wise ||G_i|| / max(||W_i||, 1e-3) before clipping (what AGC bounds)."""

    metrics = ("unit_grad_ratio",)

    def after_backward(self, ctx: ProbeContext) -> None:
        layers = [layer for layer in ctx.layers if layer.weight.grad is not None]
        ratios = [
            (unitwise_norm(layer.weight.grad) / unitwise_norm(layer.weight).clamp_min(1e-3)).max() for layer in layers
        ]
        if ratios:
            ctx.rows.add(ctx.step, "unit_grad_ratio", [layer.name for layer in layers], torch.stack(ratios))
