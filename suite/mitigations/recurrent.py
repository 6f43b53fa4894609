"""Mitigations for recurrent tasks: gated cells, identity init, an orthogonal recurrence, truncated BPTT."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from vanex.engine.mitigation import KnobMitigation
from vanex.engine.task import Capability, ProbedModel
from vanex.registry import MITIGATIONS


@MITIGATIONS.register("lstm")
@dataclass
class LSTM(KnobMitigation):
    """LSTM cell (Hochreiter & Schmidhuber 1997): the additive cell state carries gradient
    through time wherever the forget gate is open (constant error carousel). The forget-gate bias
    starts at ``forget_bias`` (1, as Gers et al. 2000 and Jozefowicz et al. 2015 advise, so the
    gate starts mostly open); null keeps PyTorch's default init, whose forget bias is ~0."""

    knob, value = "cell", "lstm"
    forget_bias: float | None  # value in conf/mitigation/lstm.yaml

    def adjust_config(self, config: Any) -> Any:
        return dataclasses.replace(super().adjust_config(config), forget_bias=self.forget_bias)


@MITIGATIONS.register("gru")
@dataclass
class GRU(KnobMitigation):
    """GRU cell (Cho et al. 2014): the update gate interpolates h_t with h_{t-1}, an additive path."""

    knob, value = "cell", "gru"


@MITIGATIONS.register("identity_init")
@dataclass
class IdentityInit(KnobMitigation):
    """Recurrent matrix initialised to the identity, biases to zero (IRNN: Le, Jaitly & Hinton 2015;
    combine with ``relu`` for their ReLU IRNN)."""

    knob, value = "init", "identity"


@MITIGATIONS.register("orthogonal_rnn")
@dataclass
class OrthogonalRecurrence(KnobMitigation):
    """The recurrent matrix starts orthogonal and stays so in training (Arjovsky, Shah & Bengio 2016
    keep it unitary; Henaff, Szlam & LeCun 2016; Vorontsov et al. 2017): after each optimiser step it
    is replaced by its nearest orthogonal matrix in Frobenius norm, the polar factor U V^T of its SVD
    (a projection retraction). All its singular values stay 1, so the linear part of the recurrence
    neither shrinks nor grows the gradient through time; only the nonlinearity's slope can."""

    knob, value = "init", "orthogonal"
    needs = frozenset({Capability.RECURRENT})

    def after_step(self, model: ProbedModel) -> None:
        with torch.no_grad():
            w = model.recurrent_matrix()  # a view of the parameter: copy_ writes through
            u, _, vh = torch.linalg.svd(w)
            w.copy_(u @ vh)


@MITIGATIONS.register("tbptt")
@dataclass
class TruncatedBPTT(KnobMitigation):
    """Truncated backpropagation through time with window k (Williams & Peng 1990; Sutskever 2013):
    the hidden state is detached every ``window`` steps, bounding the product of Jacobians."""

    knob, value = "tbptt", None
    window: int  # value in conf/mitigation/tbptt.yaml

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"tbptt.window must be >= 1, got {self.window}")

    def knob_value(self) -> int:
        return self.window
