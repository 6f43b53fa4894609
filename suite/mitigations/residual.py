"""Residual-branch schemes and normalisation switches for deep residual stacks."""

from __future__ import annotations

from dataclasses import dataclass

from vanex.engine.mitigation import KnobMitigation
from vanex.registry import MITIGATIONS


@MITIGATIONS.register("fixup")
@dataclass
class Fixup(KnobMitigation):
    """Fixup initialisation (Zhang, Dauphin & Ma 2019): residual learning without normalisation.
    Each branch's last layer and the classifier start at zero, its first layer is drawn from He's
    fan-out init times L^(-1/2); scalar biases around each layer and after the stem / before the
    classifier, a scalar multiplier per branch, and a 10x lower learning rate for those scalars,
    as in the official code (github.com/hongyi-zhang/Fixup, cifar/). The task builds the scheme
    (``tasks/resnet.py``); this sets its ``residual`` knob."""

    knob, value = "residual", "fixup"


@MITIGATIONS.register("rezero")
@dataclass
class ReZero(KnobMitigation):
    """ReZero (Bachlechner et al. 2020): x + alpha * F(x) with alpha initialised to 0, so every
    block is the identity at initialisation (in transformers, without LayerNorm)."""

    knob, value = "residual", "rezero"


@MITIGATIONS.register("skipinit")
@dataclass
class SkipInit(KnobMitigation):
    """SkipInit (De & Smith 2020): a scalar alpha = 0 at the end of each residual branch, which
    down-weights the branches as batch norm implicitly does, without batch norm."""

    knob, value = "residual", "skipinit"


@MITIGATIONS.register("no_norm")
@dataclass
class NoNorm(KnobMitigation):
    """Remove normalisation layers: the stress variant that shows what normalisation was doing;
    without it, deep residual stacks start with exploding signals (Zhang, Dauphin & Ma 2019, sec. 2)."""

    knob, value = "norm", "none"
