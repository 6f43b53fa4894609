"""The Mitigation extension point: a named, typed object with optional hook points.

A mitigation is a dataclass whose fields are its parameters (from
``conf/mitigation/<name>.yaml``). It may override any of the hooks below; the run loop calls
each hook of every selected mitigation in the order the user listed them.

- ``check(task)``: refuse a task it cannot apply to (raise ``UserError``), before training; by default
  a task that lacks one of the capabilities in ``needs`` (``vanex.engine.task.Capability``).
- ``adjust_config(config)``: change the task's architecture knobs (returns a new config).
- ``init_model(model)``: re-initialise the built model.
- ``transform_grads(params)``: change gradients after backward (clipping).
- ``optimizer_kwargs(kwargs)``: change the optimiser's keyword arguments.
- ``lr_factor(step)``: multiply the learning rate at ``step`` (schedules such as warmup).
- ``after_step(model)``: act after the optimiser step (weight constraints).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from vanex.engine.task import ProbedModel, Task
from vanex.errors import UserError


@dataclass
class Mitigation:
    name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()  # capabilities the task's model must have (Capability)

    def check(self, task: type[Task]) -> None:
        """Raise ``UserError`` if this mitigation cannot apply to ``task``."""
        missing = sorted(self.needs - task.capabilities)
        if missing:
            raise self.refuse(task, f"it needs the model's {', '.join(missing)}, which this task does not declare")

    def adjust_config(self, config: Any) -> Any:
        return config

    def init_model(self, model: ProbedModel) -> None:
        pass

    def transform_grads(self, params: list[torch.nn.Parameter]) -> None:
        pass

    def optimizer_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return kwargs

    def lr_factor(self, step: int) -> float:
        return 1.0

    def after_step(self, model: ProbedModel) -> None:
        pass

    def refuse(self, task: type[Task], reason: str) -> UserError:
        return UserError(f"mitigation '{self.name}' cannot apply to task '{task.name}': {reason}")


@dataclass
class KnobMitigation(Mitigation):
    """A mitigation that sets one architecture knob of the task to a fixed value."""

    knob: ClassVar[str]
    value: ClassVar[Any]

    def knob_value(self) -> Any:
        """The value this mitigation gives the knob (a parameter, for e.g. ``tbptt``)."""
        return self.value

    def check(self, task: type[Task]) -> None:
        super().check(task)
        if self.knob not in task.knobs:
            knobs = ", ".join(task.knobs) or "none"
            raise self.refuse(task, f"it sets knob '{self.knob}', which this task lacks (its knobs: {knobs})")
        accepted = task.knob_values.get(self.knob)
        if accepted is not None and self.knob_value() not in accepted:
            values = ", ".join(map(str, accepted))
            raise self.refuse(task, f"knob '{self.knob}' of this task accepts {values}, not {self.knob_value()}")

    def adjust_config(self, config: Any) -> Any:
        return dataclasses.replace(config, **{self.knob: self.knob_value()})


def check_composition(mitigations: list[Mitigation], task: type[Task]) -> None:
    """Refuse mitigations that do not apply, and pairs that set the same knob differently."""
    owners: dict[str, Mitigation] = {}
    for m in mitigations:
        m.check(task)
        if isinstance(m, KnobMitigation):
            other = owners.setdefault(m.knob, m)
            if other is not m and other.knob_value() != m.knob_value():
                clash = f"mitigations '{other.name}' and '{m.name}' both set knob '{m.knob}'"
                raise UserError(f"{clash} of task '{task.name}'; pick one")
