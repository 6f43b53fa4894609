"""Mitigations acting on the optimiser or after the step: weight decay, max-norm constraint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from vanex.engine.mitigation import Mitigation
from vanex.engine.task import ProbedModel
from vanex.registry import MITIGATIONS


@MITIGATIONS.register("weight_decay")
@dataclass
class WeightDecay(Mitigation):
    """L2 weight decay passed to the optimiser (Krogh & Hertz 1992)."""

    coefficient: float  # value in conf/mitigation/weight_decay.yaml

    def __post_init__(self) -> None:
        if self.coefficient < 0:
            raise ValueError(f"weight_decay.coefficient must be >= 0, got {self.coefficient}")

    def optimizer_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, "weight_decay": self.coefficient}


@MITIGATIONS.register("max_norm")
@dataclass
class MaxNorm(Mitigation):
    """Max-norm constraint: after each step, each unit's incoming weight vector has L2 norm
    at most ``max_norm`` (Srivastava et al. 2014, Dropout, section 5.1)."""

    max_norm: float  # value in conf/mitigation/max_norm.yaml

    def __post_init__(self) -> None:
        if not self.max_norm > 0:
            raise ValueError(f"max_norm.max_norm must be > 0, got {self.max_norm}")

    def after_step(self, model: ProbedModel) -> None:
        with torch.no_grad():
            for layer in model.layers():
                w = layer.weight.view(layer.weight.shape[0], -1)  # (out, fan_in)
                norms = torch.linalg.vector_norm(w, dim=1, keepdim=True)
                w.mul_(torch.clamp(self.max_norm / norms.clamp_min(1e-12), max=1.0))
