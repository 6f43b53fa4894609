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
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"optim.lr must be finite and > 0, got {self.lr}")

    def typed(self) -> OptimConfig:
        kwargs = asdict(self)
        return OptimConfig(kwargs.pop("name"), kwargs.pop("lr"), kwargs)


@dataclass
class SGDSettings(_Base):
    momentum: float
    weight_decay: float


@dataclass
class AdamSettings(_Base):
    betas: list[float]
    eps: float


@dataclass
class RMSpropSettings(_Base):
    alpha: float
    eps: float


OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], type[_Base]]] = {
    "sgd": (torch.optim.SGD, SGDSettings),
    "adam": (torch.optim.Adam, AdamSettings),
    "rmsprop": (torch.optim.RMSprop, RMSpropSettings),
}
