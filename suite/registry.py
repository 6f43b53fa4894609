"""Registries of tasks, mitigations, probes and published claims, keyed by stable snake_case names.

One decorator registers a class under its name (timm style); lookups of unknown names fail
loudly with the list of valid names. The engine's own mitigations, probes and claims are imported by
``load_all``; every task, built-in or not, and third-party mitigations and probes come through
the ``gradbench.plugins`` entry-point group (the entry point names a module to import or a
callable to call); the built-in tasks are declared there in gradbench's pyproject.toml, so the
engine lists no task. Plugins ship Hydra configs through the ``gradbench.conf`` group (the
entry point names a package holding ``mitigation/``, ``task/``, ``study/`` ... folders).
Published claims (``suite.claims``) come through their own torch-free ``gradbench.claims`` group,
so the reporter can judge them without importing any model code.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from suite.errors import UserError

T = TypeVar("T", bound=type)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

BUILTIN_MODULES = (  # the engine's own extensions; tasks come only through entry points
    "suite.mitigations.architecture",
    "suite.mitigations.recurrent",
    "suite.mitigations.residual",
    "suite.mitigations.transformer",
    "suite.mitigations.gradients",
    "suite.mitigations.optimisation",
    "suite.probes",
)
PLUGIN_GROUP = "gradbench.plugins"
CLAIMS_GROUP = "gradbench.claims"  # torch-free: the reporter and `gradbench claims` load only these
CONF_GROUP = "gradbench.conf"


class Registry(Generic[T]):
    """Name -> class mapping for one kind of extension point."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._load = loader  # None: load_all

    def register(self, name: str) -> Callable[[T], T]:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} is not snake_case")

        def decorate(cls: T) -> T:
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"duplicate {self.kind} name {name!r}")
            cls.name = name
            self._items[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> T:
        (self._load or load_all)()
        if name not in self._items:
            raise UserError(f"unknown {self.kind} '{name}'; valid {self.kind}s: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        (self._load or load_all)()
        return sorted(self._items)


TASKS: Registry = Registry("task")
MITIGATIONS: Registry = Registry("mitigation")
PROBES: Registry = Registry("probe")

_loaded = False
_claims_loaded = False


def load_claims() -> None:
    """Import the built-in claims and every ``gradbench.claims`` entry point (once); no torch."""
    global _claims_loaded
    if _claims_loaded:
        return
    _claims_loaded = True
    importlib.import_module("suite.claims_builtin")
    for ep in entry_points(group=CLAIMS_GROUP):
        obj = ep.load()
        if callable(obj):
            obj()


CLAIMS: Registry = Registry("claim", load_claims)


def load_all() -> None:
    """Import the built-in modules and every installed plugin (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=PLUGIN_GROUP):
        obj = ep.load()
        if callable(obj):
            obj()


@functools.cache
def plugin_conf_packages() -> tuple[str, ...]:
    """Packages that third-party plugins declare as extra Hydra config roots (read once, as
    ``load_all`` loads plugins once: scanning entry points costs milliseconds, per config)."""
    return tuple(sorted(ep.value for ep in entry_points(group=CONF_GROUP)))
