"""rnn_copy: the copy-memory task of Arjovsky, Shah & Bengio (2016), "Unitary Evolution RNNs".

A sequence of length T+20: 10 symbols drawn uniformly from 8, then T-1 blanks, a delimiter,
then 10 blanks. The target is T+10 blanks followed by the 10 symbols. A memoryless model that
predicts blanks and then guesses uniformly scores the baseline cross-entropy 10 ln 8 / (T+20);
beating it needs the gradient to carry information across T steps (Bengio, Simard & Frasconi
1994; Pascanu, Mikolov & Bengio 2013). Knobs: cell (tanh RNN, LSTM, GRU), activation of the
plain RNN (tanh; relu for the IRNN of Le, Jaitly & Hinton 2015), init of the recurrent matrix,
truncated BPTT window. The LSTM's forget-gate bias starts at 1 (Gers et al. 2000; Jozefowicz
et al. 2015), unless ``forget_bias`` is null (PyTorch's default init, a reproducible variant).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from vanex.engine.nn import Activation
from vanex.engine.schemes import RECURRENT_INITS, init_forget_bias, init_recurrent
from vanex.engine.task import SEED_MAX, Capability, Layer, ProbedModel, Task, within
from vanex.registry import TASKS

BLANK, DELIMITER = 0, 9  # tokens; symbols are 1..8


@dataclass
class RNNCopyConfig:
    """Settings of ``rnn_copy``; values and their comments live in ``conf/task/rnn_copy.yaml``."""

    delay: int
    hidden: int
    cell: str
    activation: str
    init: str
    recurrent_gain: float
    forget_bias: float | None
    tbptt: int
    steps: int
    batch_size: int
    eval_size: int
    eval_seed: int

    def __post_init__(self) -> None:
        within(
            "rnn_copy",
            delay=(self.delay, 1, 10_000),
            hidden=(self.hidden, 1, 8192),
            steps=(self.steps, 1, 10**7),
            batch_size=(self.batch_size, 1, 4096),
            eval_size=(self.eval_size, 1, 100_000),
            eval_seed=(self.eval_seed, 0, SEED_MAX),
            tbptt=(self.tbptt, 0, 10_020),
        )
        if not self.recurrent_gain > 0:
            raise ValueError(f"rnn_copy needs recurrent_gain > 0, got {self.recurrent_gain}")


def copy_batch(n: int, delay: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both (n, delay + 20) int64, exactly as Arjovsky et al. (2016) define them."""
    symbols = torch.randint(1, 9, (n, 10), generator=generator)  # (n, 10) uniform over 8 symbols
    length = delay + 20
    x = torch.full((n, length), BLANK, dtype=torch.int64)
    x[:, :10] = symbols
    x[:, delay + 9] = DELIMITER  # after 10 symbols and T-1 blanks
    y = torch.full((n, length), BLANK, dtype=torch.int64)
    y[:, -10:] = symbols
    return x, y


def baseline_loss(delay: int) -> float:
    """Cross-entropy of the memoryless strategy: blanks, then uniform over 8 symbols."""
    return 10 * math.log(8) / (delay + 20)


class RecurrentNet(ProbedModel):
    """One recurrent layer. Training uses PyTorch's fused nn.RNN/LSTM/GRU (in TBPTT windows);
    the gradient-through-time probe unrolls the same parameters step by step to tap each h_t."""

    CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, cfg: Any, vocab: int = 10, n_out: int = 9) -> None:
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        extra = {"nonlinearity": cfg.activation} if cfg.cell == "rnn" else {}
        self.rnn = self.CELLS[cfg.cell](vocab, cfg.hidden, batch_first=True, **extra)  # PyTorch's default init
        # observes the hidden states (B, L, H), which are the tanh/relu outputs of a plain RNN
        self.observe = Activation(cfg.activation, observe_only=True) if cfg.cell == "rnn" else None
        self.readout = nn.Linear(cfg.hidden, n_out)
        r = self.rnn
        init_recurrent(r.weight_hh_l0, (r.bias_hh_l0, r.bias_ih_l0), cfg.init, cfg.hidden, cfg.recurrent_gain)
        if cfg.cell == "lstm" and cfg.forget_bias is not None:
            init_forget_bias(r.bias_ih_l0, r.bias_hh_l0, cfg.forget_bias, cfg.hidden)

    def recurrent_matrix(self) -> torch.Tensor:
        """The square matrix of the candidate path: W_hh (rnn), the g gate (lstm), the n gate (gru)."""
        h = self.cfg.hidden
        w = self.rnn.weight_hh_l0
        return w if self.cfg.cell == "rnn" else w[2 * h : 3 * h]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The input sequence as (B, L, vocab) floats: one-hot tokens here."""
        return F.one_hot(x, self.vocab).to(self.readout.weight.dtype)

    def read(self, states: torch.Tensor) -> torch.Tensor:
        """Outputs from the hidden states (B, L, H): one per step here, (B, L, n_out)."""
        return self.readout(states)

    def forward(self, x: torch.Tensor, taps: list[torch.Tensor] | None = None) -> torch.Tensor:
        inputs = self.encode(x)  # (B, L, vocab)
        states = self._unrolled(inputs, taps) if taps is not None else self._fused(inputs)  # (B, L, H)
        if self.observe is not None:
            states = self.observe(states)
        return self.read(states)

    def _fused(self, inputs: torch.Tensor) -> torch.Tensor:
        window = self.cfg.tbptt or inputs.shape[1]
        outputs, state = [], None
        for start in range(0, inputs.shape[1], window):  # no gradient flows back past a window boundary
            if state is not None:
                state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            out, state = self.rnn(inputs[:, start : start + window], state)
            outputs.append(out)
        return torch.cat(outputs, dim=1)

    def _unrolled(self, inputs: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
        """The same recurrence one step at a time; a zero added to each h_t makes dL/dh_t its grad."""
        cfg, r = self.cfg, self.rnn
        weights = (r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)
        cell = {"lstm": torch._VF.lstm_cell, "gru": torch._VF.gru_cell}.get(cfg.cell) or (
            torch._VF.rnn_tanh_cell if cfg.activation == "tanh" else torch._VF.rnn_relu_cell
        )
        h = inputs.new_zeros(inputs.shape[0], cfg.hidden)  # (B, H)
        c = torch.zeros_like(h)
        states = []
        for t in range(inputs.shape[1]):
            if cfg.tbptt and t and t % cfg.tbptt == 0:
                h, c = h.detach(), c.detach()
            if cfg.cell == "lstm":
                h, c = cell(inputs[:, t], (h, c), *weights)
            else:
                h = cell(inputs[:, t], h, *weights)
            tap = torch.zeros_like(h, requires_grad=True)
            h = h + tap
            taps.append(tap)
            states.append(h)
        return torch.stack(states, dim=1)

    def layers(self) -> list[Layer]:
        return [
            Layer("input", self.rnn.weight_ih_l0, hidden=False, kind="input"),
            Layer("recurrent", self.rnn.weight_hh_l0, activation=self.observe, block=0, kind="recurrent"),
            Layer("readout", self.readout.weight, hidden=False, kind="readout"),
        ]


class Recurrent:
    """What every task of ``RecurrentNet`` declares: its knobs and the probes through time it serves."""

    knobs = ("cell", "activation", "init", "tbptt")
    knob_values = {
        "cell": ("rnn", "lstm", "gru"),
        "activation": ("tanh", "relu"),
        "init": RECURRENT_INITS,
    }
    flow_metric = "grad_through_time"
    capabilities = frozenset({Capability.TIME_FLOW, Capability.RECURRENT})


@TASKS.register("rnn_copy")
class RNNCopy(Recurrent, Task):
    Config = RNNCopyConfig
    headline_metrics = ("loss_ratio_baseline", "copy_accuracy")

    def __init__(self, config: RNNCopyConfig, device: torch.device) -> None:
        super().__init__(config, device)
        g = torch.Generator().manual_seed(config.eval_seed)
        self.eval_x, self.eval_y = (t.to(device) for t in copy_batch(config.eval_size, config.delay, g))

    def constants(self) -> dict[str, float]:
        return {"baseline_loss": baseline_loss(self.config.delay)}

    def eval_cost(self) -> float:
        return self.config.eval_size / (3 * self.config.batch_size)

    def chance_loss(self) -> float:
        """The memoryless strategy's loss (blanks, then uniform over the 8 symbols)."""
        return baseline_loss(self.config.delay)

    def build_model(self) -> RecurrentNet:
        return RecurrentNet(self.config).to(self.device)

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        while True:
            x, y = copy_batch(self.config.batch_size, self.config.delay, generator)
            yield x.to(self.device), y.to(self.device)

    def loss(self, model: ProbedModel, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    def memory_loss(self, model: ProbedModel, batch: Any, taps: list[torch.Tensor]) -> torch.Tensor:
        """Loss on the 10 recall positions only (what needs memory), with every h_t tapped."""
        x, y = batch
        return F.cross_entropy(model(x, taps)[:, -10:].flatten(0, 1), y[:, -10:].flatten())

    @torch.no_grad()
    def evaluate(self, model: ProbedModel) -> dict[str, float]:
        logits = model(self.eval_x)  # (N, L, 9)
        loss = float(F.cross_entropy(logits.flatten(0, 1), self.eval_y.flatten()))
        recall = (logits[:, -10:].argmax(-1) == self.eval_y[:, -10:]).float().mean()
        return {
            "train_loss": loss,
            "loss_ratio_baseline": loss / baseline_loss(self.config.delay),
            "copy_accuracy": float(recall),
        }
