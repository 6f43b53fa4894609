"""Registries of tasks, mitigations, probes, published claims and report sections, keyed by stable
snake_case names.

One decorator registers a class under its name (timm style); lookups of unknown names fail loudly
with the list of valid names, and a name registered twice raises. Nothing is listed here: the
built-in extensions come through the same entry-point groups as a third party's, declared in
vanex's pyproject.toml, and each registered class remembers the distribution that added it
(``origin``, shown by ``vanex list``). Each group names a module to import or a callable to call:

- ``vanex.plugins``: tasks, mitigations and probes (these import torch);
- ``vanex.claims`` and ``vanex.sections``: published claims and report sections, torch-free, so
  the reporter and ``vanex claims`` load them without any model code;
- ``vanex.conf``: a package holding Hydra config folders (``mitigation/``, ``task/``, ``study/`` ...).
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from vanex.errors import UserError

T = TypeVar("T", bound=type)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

PLUGIN_GROUP = "vanex.plugins"
CLAIMS_GROUP = "vanex.claims"
SECTIONS_GROUP = "vanex.sections"
CONF_GROUP = "vanex.conf"
_origin = ["vanex"]  # the distribution whose entry point is being loaded; registrations take it


class Registry(Generic[T]):
    """Name -> class mapping for one kind of extension point, filled from entry-point ``group``."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind, self.group = kind, group
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} is not snake_case")

        def decorate(cls: T) -> T:
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"duplicate {self.kind} name {name!r}")
            cls.name = name
            cls.origin = _origin[-1]
            self._items[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> T:
        load(self.group)
        if name not in self._items:
            raise UserError(f"unknown {self.kind} '{name}'; valid {self.kind}s: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        load(self.group)
        return sorted(self._items)


TASKS: Registry = Registry("task", PLUGIN_GROUP)
MITIGATIONS: Registry = Registry("mitigation", PLUGIN_GROUP)
PROBES: Registry = Registry("probe", PLUGIN_GROUP)
CLAIMS: Registry = Registry("claim", CLAIMS_GROUP)
SECTIONS: Registry = Registry("section", SECTIONS_GROUP)


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ep.value.partition(".")[0]


@functools.cache
def load(group: str) -> None:
    """Import every entry point of ``group`` (once); its registrations are credited to its distribution."""
    if group not in (PLUGIN_GROUP, CLAIMS_GROUP, SECTIONS_GROUP):
        raise ValueError(f"unknown entry-point group {group!r}")
    seen: set[tuple[str, str]] = set()
    for ep in sorted(entry_points(group=group), key=lambda e: (_distribution(e) != "vanex", e.name)):
        if (ep.name, ep.value) in seen:  # an editable install can list a distribution twice
            continue
        seen.add((ep.name, ep.value))
        _origin.append(_distribution(ep))
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        finally:
            _origin.pop()


def load_module(module: str, origin: str) -> None:
    """Import ``module`` with its registrations credited to ``origin`` (tests, examples run in place)."""
    _origin.append(origin)
    try:
        importlib.import_module(module)
    finally:
        _origin.pop()


@functools.cache
def plugin_conf_packages() -> tuple[str, ...]:
    """Packages that plugins declare as extra Hydra config roots (read once: scanning entry points
    costs milliseconds, per config)."""
    return tuple(sorted({ep.value for ep in entry_points(group=CONF_GROUP)}))
