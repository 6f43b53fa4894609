"""deep_linear: a deep linear network y = W_L ... W_1 x learning a linear teacher map.

Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of learning in
deep linear neural networks": without any nonlinearity the gradient still shrinks or grows
geometrically with depth unless the product of the layers' Jacobians keeps its scale, which
orthogonal initialisation does exactly. Inputs are standard normal; the teacher has singular
values 1/k, k = 1..width; the loss is the mean squared error per output.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from vanex.engine.nn import INITS, check_choice, init_linear_stack
from vanex.engine.task import Layer, ProbedModel, Task
from vanex.registry import TASKS


@dataclass
class DeepLinearConfig:
    """Settings of ``deep_linear``; values and their comments live in ``conf/task/deep_linear.yaml``."""

    depth: int
    width: int
    init: str
    steps: int
    batch_size: int
    teacher_seed: int
    eval_size: int

    def __post_init__(self) -> None:
        if min(self.depth, self.width, self.steps, self.batch_size, self.eval_size) < 1:
            raise ValueError("deep_linear needs depth, width, steps, batch_size and eval_size >= 1")
        check_choice("init", self.init, INITS)


class LinearStack(ProbedModel):
    def __init__(self, cfg: DeepLinearConfig) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(cfg.width, cfg.width, bias=False) for _ in range(cfg.depth))
        self.head = nn.Linear(cfg.width, cfg.width, bias=False)
        init_linear_stack([*self.hidden, self.head], cfg.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = layer(x)  # (B, width)
        return self.head(x)

    def layers(self) -> list[Layer]:
        hidden = [Layer(f"linear_{i}", m.weight, block=i, kind="linear") for i, m in enumerate(self.hidden)]
        return [*hidden, Layer("head", self.head.weight, hidden=False, kind="head")]


@TASKS.register("deep_linear")
class DeepLinear(Task):
    Config = DeepLinearConfig
    knobs = ("init",)
    knob_values = {"init": INITS}
    headline_metrics = ("final_train_loss",)

    def __init__(self, config: DeepLinearConfig, device: torch.device) -> None:
        super().__init__(config, device)
        g = torch.Generator().manual_seed(config.teacher_seed)
        u, _ = torch.linalg.qr(torch.randn(config.width, config.width, generator=g))
        v, _ = torch.linalg.qr(torch.randn(config.width, config.width, generator=g))
        singular = 1.0 / torch.arange(1, config.width + 1, dtype=torch.float32)
        self.teacher = (u * singular) @ v.T  # (width, width)
        self.eval_x = torch.randn(config.eval_size, config.width, generator=g)
        self.eval_y = self.eval_x @ self.teacher.T
        self.teacher, self.eval_x, self.eval_y = (t.to(device) for t in (self.teacher, self.eval_x, self.eval_y))

    def build_model(self) -> LinearStack:
        return LinearStack(self.config).to(self.device)

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        while True:
            x = torch.randn(self.config.batch_size, self.config.width, generator=generator).to(self.device)
            yield x, x @ self.teacher.T

    def loss(self, model: ProbedModel, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: ProbedModel) -> dict[str, float]:
        return {"train_loss": float(nn.functional.mse_loss(model(self.eval_x), self.eval_y))}

    def chance_loss(self) -> float:
        """Predicting zero, the best input-blind guess: the mean squared teacher output."""
        return float(self.eval_y.pow(2).mean())
