"""Mitigations for transformer stacks: Pre-LN, DeepNorm, learning-rate warmup."""

from __future__ import annotations

from dataclasses import dataclass

from vanex.engine.mitigation import KnobMitigation, Mitigation
from vanex.registry import MITIGATIONS


@MITIGATIONS.register("pre_ln")
@dataclass
class PreLN(KnobMitigation):
    """Pre-LN blocks, x + F(LN(x)) (Xiong et al. 2020): well-behaved gradients at initialisation,
    trainable without warmup."""

    knob, value = "block_order", "pre"


@MITIGATIONS.register("deepnorm")
@dataclass
class DeepNorm(KnobMitigation):
    """DeepNorm (Wang et al. 2022, DeepNet): Post-LN with the residual up-weighted by
    alpha=(2L)^(1/4) and branch weights initialised with gain beta=(8L)^(-1/4) (encoder-only)."""

    knob, value = "residual", "deepnorm"


@MITIGATIONS.register("warmup")
@dataclass
class Warmup(Mitigation):
    """Linear learning-rate warmup over the first ``steps`` steps (Goyal et al. 2017; Vaswani et al.
    2017), which keeps Adam's early updates small while its second-moment estimates settle."""

    steps: int  # value in conf/mitigation/warmup.yaml

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"warmup.steps must be >= 1, got {self.steps}")

    def lr_factor(self, step: int) -> float:
        return min(1.0, (step + 1) / self.steps)
