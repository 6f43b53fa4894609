"""Optimisers: one typed schema per ``conf/optim/<name>.yaml`` (the YAML holds the values)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass
class OptimConfig:
    """What the run loop needs: the optimiser's name, learning rate and other keyword arguments."""

    name: str
    lr: float
    kwargs: dict[str, Any]


@dataclass
class _Base:
    name: str
    lr: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and 0 < self.lr <= MAX_LR):
            raise ValueError(f"optim.lr must be > 0 and at most {MAX_LR:g}, got {self.lr}")

    def typed(self) -> OptimConfig:
        kwargs = asdict(self)
        return OptimConfig(kwargs.pop("name"), kwargs.pop("lr"), kwargs)


MAX_LR = 1e38  # float32's range: a larger rate is infinite in the update itself (a crash, not a result)


def _within(name: str, value: float, low: float, high: float, high_open: bool = False) -> None:
    ok = math.isfinite(value) and low <= value and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"optim.{name} must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value}")


@dataclass
class SGDSettings(_Base):
    momentum: float
    weight_decay: float

    def __post_init__(self) -> None:
        super().__post_init__()
        _within("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _within("weight_decay", self.weight_decay, 0.0, 1.0)


@dataclass
class AdamSettings(_Base):
    betas: list[float]
    eps: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas must be two numbers, got {self.betas}")
        for beta in self.betas:
            _within("betas", beta, 0.0, 1.0, high_open=True)
        _within("eps", self.eps, 1e-30, 1.0)
        # Adam's first step is lr / (1 - beta1) (bias correction), computed in float32
        if self.lr / (1 - self.betas[0]) > MAX_LR:
            bound = MAX_LR * (1 - self.betas[0])
            raise ValueError(f"optim.lr must be at most {bound:g} with optim.betas[0]={self.betas[0]:g}, got {self.lr}")


@dataclass
class RMSpropSettings(_Base):
    alpha: float
    eps: float

    def __post_init__(self) -> None:
        super().__post_init__()
        _within("alpha", self.alpha, 0.0, 1.0, high_open=True)
        _within("eps", self.eps, 1e-30, 1.0)


OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], type[_Base]]] = {
    "sgd": (torch.optim.SGD, SGDSettings),
    "adam": (torch.optim.Adam, AdamSettings),
    "rmsprop": (torch.optim.RMSprop, RMSpropSettings),
}
