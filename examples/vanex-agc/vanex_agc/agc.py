"""Adaptive gradient clipping, unit-wise (Brock et al. 2021, "High-Performance Large-Scale Image
Recognition Without Normalization", section 4.1).

Each unit's gradient (row of a weight matrix, or the whole of a 1-d parameter) is rescaled so
that ||G_i|| / max(||W_i||, eps) <= clipping. Unlike global-norm clipping, the bound scales with
the weights, so small layers are not starved by large ones. (NFNets exempt the final linear
layer; this plugin clips every parameter, to keep the example short.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vanex.engine.mitigation import Mitigation
from vanex.registry import MITIGATIONS


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm per output unit (dim 0) for matrices/kernels; the whole norm for vectors."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1).view(-1, *([1] * (x.dim() - 1)))


@MITIGATIONS.register("agc")
@dataclass
class AdaptiveGradientClipping(Mitigation):
    """Adaptive gradient clipping, unit-wise (Brock et al. 2021, NFNets)."""

    clipping: float  # values in vanex_agc/conf/mitigation/agc.yaml, the one source of defaults
    eps: float

    def __post_init__(self) -> None:
        if not self.clipping > 0:
            raise ValueError(f"agc.clipping must be > 0, got {self.clipping}")

    @torch.no_grad()
    def transform_grads(self, params: list[torch.nn.Parameter]) -> None:
        for p in params:
            if p.grad is None:
                continue
            max_norm = unitwise_norm(p).clamp_min(self.eps) * self.clipping
            grad_norm = unitwise_norm(p.grad)
            scale = torch.where(grad_norm > max_norm, max_norm / grad_norm.clamp_min(1e-6), torch.ones_like(grad_norm))
            p.grad.mul_(scale)
