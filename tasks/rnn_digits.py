"""rnn_digits: the digits read pixel by pixel, one of 64 per step, by a recurrent net.

The pixel-by-pixel setting of Le, Jaitly & Hinton (2015, Sec. 4.2), who fed MNIST's 784 pixels one
at a time to an RNN with 100 hidden units, trained by SGD with the gradient norm clipped, and
classified the image from the last hidden state. Here the images are scikit-learn's 8x8 digits
(``vanex.tasks.digits``), so a sequence has 64 steps: the first pixels are 64 steps away from the
readout. Knobs as in ``rnn_copy`` (cell, activation, init of the recurrent matrix, truncated
BPTT); ``identity_init`` with ``relu`` is the IRNN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from vanex.engine.task import ProbedModel, within
from vanex.registry import TASKS
from vanex.tasks.digits import DigitsClassification
from vanex.tasks.rnn_copy import Recurrent, RecurrentNet


@dataclass
class RNNDigitsConfig:
    """Settings of ``rnn_digits``; values and their comments live in ``conf/task/rnn_digits.yaml``."""

    hidden: int
    cell: str
    activation: str
    init: str
    recurrent_gain: float
    forget_bias: float | None
    tbptt: int
    steps: int
    batch_size: int
    test_fraction: float
    split_seed: int

    def __post_init__(self) -> None:
        within("rnn_digits", hidden=(self.hidden, 1, 8192), steps=(self.steps, 1, 10**7), tbptt=(self.tbptt, 0, 64))
        if not self.recurrent_gain > 0:
            raise ValueError(f"rnn_digits needs recurrent_gain > 0, got {self.recurrent_gain}")


class PixelRNN(RecurrentNet):
    """The recurrent net of ``rnn_copy`` on one pixel per step, read out from the last hidden state."""

    def __init__(self, cfg: RNNDigitsConfig, n_classes: int) -> None:
        super().__init__(cfg, vocab=1, n_out=n_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1)  # (B, 64) standardised pixels -> (B, 64, 1)

    def read(self, states: torch.Tensor) -> torch.Tensor:
        return self.readout(states[:, -1])  # (B, n_classes)


@TASKS.register("rnn_digits")
class RNNDigits(Recurrent, DigitsClassification):
    Config = RNNDigitsConfig

    def build_model(self) -> PixelRNN:
        return PixelRNN(self.config, self.data.n_classes).to(self.device)

    def memory_loss(self, model: ProbedModel, batch: Any, taps: list[torch.Tensor]) -> torch.Tensor:
        """The classification loss with every h_t tapped: dL/dh_t is what reaches step t from the readout."""
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x, taps), y)
