"""The Task extension point: everything a task must or may provide.

A task owns its data (generated in code or scikit-learn's bundled digits, never a download),
builds its model from a typed config dataclass (``Config``, no defaults: the values live in
``conf/task/<name>.yaml``) and declares:

- ``knobs`` / ``knob_values``: the config fields mitigations may set, and the values they accept;
- its layers in input->output order (``ProbedModel.layers``), each with a block index and a
  kind as fields, so per-layer probes and the ``grad_ratio`` (first/last hidden layer of the
  same kind) mean the same thing across tasks;
- ``flow_metric``: the probe series whose first/last hidden entries give ``grad_ratio``;
- ``headline_metrics``: the summary metrics a report shows;
- ``validation_metric``: the summary metric, on data not trained on, on which a study's learning
  rate is tuned per mitigation set (lower is better);
- ``param_groups(model)`` (optional): the optimiser's parameter groups, each with an optional
  ``lr_scale`` on the learning rate;
- ``chance_loss()``: the training loss of the best input-blind predictor, against which a run is
  judged ``stalled``;
- ``capabilities``: optional probe hooks it implements (see ``Capability``); probes ask for a
  capability, never look for attributes.

A task registers with ``@TASKS.register(name)`` in a module named by an entry point of the
``vanex.plugins`` group; the built-in tasks do exactly the same in vanex's own
pyproject.toml, so the engine lists no task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from vanex.engine.nn import check_choice


class Capability:
    """Optional hooks a task may declare in ``Task.capabilities``."""

    TIME_FLOW = "gradient_through_time"  # Task.memory_loss(model, batch, taps): dL/dh_t for every t
    RECURRENT = "recurrent_matrix"  # ProbedModel.recurrent_matrix(): the square matrix of the recurrence
    ATTENTION = "attention_maps"  # ProbedModel.attention_modules(): modules that capture softmax weights

    ALL = (TIME_FLOW, RECURRENT, ATTENTION)


@dataclass
class Layer:
    """One probe-able layer: its weight, where it sits, and the module whose output is its activation."""

    name: str  # unique, e.g. "hidden_3" or "block3.attn_qkv"
    weight: nn.Parameter
    activation: nn.Module | None = None  # an ``Activation`` module, hooked by the activation probe
    hidden: bool = True  # False for input embeddings and output heads
    block: int | None = None  # index of the block (depth position) it belongs to
    kind: str = ""  # role within its block, e.g. "conv1", "attn_qkv"; like is compared with like

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "hidden": self.hidden, "block": self.block, "kind": self.kind}


class ProbedModel(nn.Module):
    """A model that lists its layers in input->output order."""

    def layers(self) -> list[Layer]:  # pragma: no cover - interface
        raise NotImplementedError

    def recurrent_matrix(self) -> torch.Tensor:
        """Capability ``recurrent_matrix``."""
        raise NotImplementedError(f"{type(self).__name__} declares no recurrent matrix")

    def attention_modules(self) -> list[nn.Module]:
        """Capability ``attention_maps``: modules with a ``capture`` flag that then keep ``probs`` (B, H, T, T)."""
        raise NotImplementedError(f"{type(self).__name__} declares no attention maps")


SEED_MAX = 2**32 - 1  # numpy's seed range


def within(task: str, **values: tuple[int, int, int]) -> None:
    """Refuse (``ValueError``) any ``name=(value, low, high)`` outside [low, high]: sizes have upper
    bounds so that a typo (width=1e6) is refused at once, not after a failed allocation or hours."""
    for name, (value, low, high) in values.items():
        if not low <= value <= high:
            raise ValueError(f"{task}.{name} must be from {low:,} to {high:,}, got {value:,}")


class Task(ABC):
    """Base class of every task; subclasses register with ``@TASKS.register(name)``."""

    name: ClassVar[str]
    Config: ClassVar[type]  # a dataclass of the task's settings and knobs, without defaults
    knobs: ClassVar[tuple[str, ...]] = ()  # config fields mitigations may set
    knob_values: ClassVar[dict[str, tuple]] = {}  # the values a knob accepts, where limited
    flow_metric: ClassVar[str] = "grad_norm"  # probe metric whose first/last hidden entries give grad_ratio
    headline_metrics: ClassVar[tuple[str, ...]] = ("final_train_loss",)  # summary metrics a report shows
    validation_metric: ClassVar[str] = "train_loss"  # held-out metric (lower is better) for learning-rate tuning
    capabilities: ClassVar[frozenset[str]] = frozenset()  # see Capability

    def __init__(self, config: Any, device: torch.device) -> None:
        self.config = config
        self.device = device

    @property
    def steps(self) -> int:
        return self.config.steps

    @classmethod
    def check_knobs(cls, config: Any) -> None:
        """Refuse (``ValueError``) a knob set to a value outside ``knob_values``; the engine calls it
        for every task, so a task declares its knobs and never checks them itself."""
        for knob, accepted in cls.knob_values.items():
            check_choice(knob, getattr(config, knob), accepted)

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Refuse (``ValueError``) settings that are inconsistent with the task's data, before
        anything is built or trained (e.g. a batch larger than the training set)."""
        return None

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

    @abstractmethod
    def chance_loss(self) -> float:
        """The ``train_loss`` of the best predictor that ignores the input (computed, not typed in)."""

    def eval_cost(self) -> float:
        """One ``evaluate`` call's cost in training steps, from sizes (forward passes over its N
        examples against a step's forward and backward on a batch of B: about N / 3B), so that the
        runner spends at most ``probe.eval_budget`` of a run on evaluations before the final one.
        Default 0: cheap, evaluated at every ``probe.eval_samples`` point."""
        return 0.0

    def memory_loss(self, model: ProbedModel, batch: Any, taps: list[torch.Tensor]) -> torch.Tensor:
        """Capability ``gradient_through_time``: the loss that needs memory, appending a zero tensor
        added to each h_t to ``taps`` so that its gradient is dL/dh_t."""
        raise NotImplementedError(f"task '{self.name}' declares no gradient through time")

    def param_groups(self, model: ProbedModel) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: dicts with ``params`` and optionally ``lr_scale``, a
        multiplier on ``optim.lr`` for that group (a training recipe's per-parameter learning rate,
        e.g. Fixup's lower one for its scalars). Default: one group of every trainable parameter."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def constants(self) -> dict[str, float]:
        """Task constants stored with every run (e.g. a memoryless baseline loss)."""
        return {}
