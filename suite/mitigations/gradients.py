"""Gradient-transforming mitigations: clipping by global norm and by value."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vanex.engine.mitigation import Mitigation
from vanex.registry import MITIGATIONS


@MITIGATIONS.register("clip_norm")
@dataclass
class ClipNorm(Mitigation):
    """Rescale all gradients so their global L2 norm is at most ``max_norm`` (Pascanu et al. 2013)."""

    max_norm: float  # value in conf/mitigation/clip_norm.yaml

    def __post_init__(self) -> None:
        if not self.max_norm > 0:
            raise ValueError(f"clip_norm.max_norm must be > 0, got {self.max_norm}")

    def transform_grads(self, params: list[torch.nn.Parameter]) -> None:
        torch.nn.utils.clip_grad_norm_(params, self.max_norm, foreach=True)


@MITIGATIONS.register("clip_value")
@dataclass
class ClipValue(Mitigation):
    """Clamp every gradient entry to [-clip, clip] (Mikolov 2012, as used in early RNN work)."""

    clip: float  # value in conf/mitigation/clip_value.yaml

    def __post_init__(self) -> None:
        if not self.clip > 0:
            raise ValueError(f"clip_value.clip must be > 0, got {self.clip}")

    def transform_grads(self, params: list[torch.nn.Parameter]) -> None:
        torch.nn.utils.clip_grad_value_(params, self.clip, foreach=True)
