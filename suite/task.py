"""The Task extension point: data, model family, loss, metrics and declared knobs.

A task owns its data (generated in code or scikit-learn's bundled digits, never a
download), builds its model from a typed config dataclass, and declares its probe-able
layers in input->output order so per-layer probes mean the same thing across tasks.
Mitigations change a task only through the knobs it declares (``Task.knobs``).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class Layer:
    """One probe-able layer: its weight, the module whose output is its activation."""

    name: str
    weight: nn.Parameter
    activation: nn.Module | None = None  # an ``Activation`` module, hooked by the activation probe
    hidden: bool = True  # False for input embeddings and output heads


def layer_kind(name: str) -> str:
    """The kind of a layer within its block: "block3.mlp_out" -> "mlp_out"; "hidden_2" -> ""."""
    return name.rpartition(".")[2] if "." in name else ""


class ProbedModel(nn.Module):
    """A model that lists its layers in input->output order."""

    def layers(self) -> list[Layer]:  # pragma: no cover - interface
        raise NotImplementedError


class Task(ABC):
    """Base class of every task; subclasses register with ``@TASKS.register(name)``."""

    name: ClassVar[str]
    Config: ClassVar[type]  # a dataclass of the task's settings and knobs
    knobs: ClassVar[tuple[str, ...]] = ()  # config fields mitigations may set
    knob_values: ClassVar[dict[str, tuple]] = {}  # the values a knob accepts, where limited
    flow_metric: ClassVar[str] = "grad_norm"  # probe metric whose first/last hidden entries give grad_ratio
    headline_metrics: ClassVar[tuple[str, ...]] = ("final_train_loss",)  # summary metrics the reporter plots

    def __init__(self, config: Any, device: torch.device) -> None:
        self.config = config
        self.device = device

    @classmethod
    def make_config(cls, values: dict[str, Any]) -> Any:
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"task '{cls.name}' has no setting(s) {unknown}; valid: {sorted(fields)}")
        return cls.Config(**values)

    @property
    def steps(self) -> int:
        return self.config.steps

    @abstractmethod
    def build_model(self) -> ProbedModel:
        """Build the model described by ``self.config`` on ``self.device``."""

    @abstractmethod
    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        """An endless stream of training batches drawn with ``generator``."""

    @abstractmethod
    def loss(self, model: ProbedModel, batch: Any) -> torch.Tensor:
        """Scalar training loss of ``model`` on ``batch``."""

    @abstractmethod
    def evaluate(self, model: ProbedModel) -> dict[str, float]:
        """Metrics on fixed evaluation data; must include ``train_loss``."""

    def constants(self) -> dict[str, float]:
        """Task constants stored with every run (e.g. a memoryless baseline loss)."""
        return {}
