"""Code identity: which source trained a record, and whether the code installed now is the same.

A record names the code that trained it (``provenance.code``): a fingerprint of vanex's training
core (the modules every run executes: ``CORE``) and, for every module that defined a class of the
run's task, model, mitigations or applied probes (and their base classes) outside that core, its
distribution, version and a fingerprint of its source file. A record whose fingerprints differ
from the installed code's is *stale*: ``vanex study`` reruns it (``--keep-stale`` keeps it), and
``report`` and ``claims`` say so per study. ``git_commit`` beside it is informational: a commit
that changes no training code leaves every record current.

Fingerprints hash the source files' bytes, found without running them (torch-free: the reporter
calls ``stale``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CORE = (  # what every run executes: the training loop, its inputs, the probes, the diagnosis
    "vanex.engine.runner",
    "vanex.engine.config",
    "vanex.engine.task",
    "vanex.engine.mitigation",
    "vanex.engine.nn",
    "vanex.engine.schemes",
    "vanex.engine.optim",
    "vanex.engine.probes",
    "vanex.science.diagnosis",
    "vanex.science.stats",
    "vanex.registry",
    "vanex.numerics",
)


@functools.cache
def module_file(name: str) -> Path | None:
    """The source file of module ``name``, found without running it (its parent packages are
    imported, as finding a submodule needs; vanex's and the example plugins' are light)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


@functools.cache
def fingerprint(name: str) -> str | None:
    """16 hex digits of the SHA-256 of module ``name``'s source; None if it cannot be found."""
    path = module_file(name)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path is not None else None


@functools.cache
def core() -> str:
    """One fingerprint over the training core's modules."""
    joined = "\n".join(f"{name} {fingerprint(name)}" for name in CORE)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def distribution(module: str) -> tuple[str | None, str | None]:
    """(distribution name, version) of the installed distribution that provides ``module``."""
    names = _distributions().get(module.split(".")[0]) or []
    if not names:
        return None, None
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return names[0], None


@functools.cache
def _ours() -> frozenset[str]:
    """Top-level packages whose code can train a run: vanex and every ``vanex.plugins`` provider."""
    eps = importlib.metadata.entry_points(group="vanex.plugins")
    return frozenset({"vanex", *(ep.value.split(":")[0].split(".")[0] for ep in eps)})


def identity(classes: Iterable[type]) -> dict[str, Any]:
    """The ``provenance.code`` entry of a record whose run used ``classes`` (the task's, the model's,
    the mitigations', the applied probes'): the modules defining them and their bases, core aside."""
    modules = {c.__module__ for cls in classes for c in cls.__mro__ if c.__module__.split(".")[0] in _ours()}
    out = {}
    for name in sorted(modules - set(CORE)):
        dist, version = distribution(name)
        out[name] = {"distribution": dist, "version": version, "sha256": fingerprint(name)}
    return {"core": core(), "modules": out}


def stale(record: dict[str, Any]) -> str | None:
    """Why ``record`` was made by other code than the code installed now, in a few words; None if not."""
    code = (record.get("provenance") or {}).get("code")
    if not isinstance(code, dict) or not isinstance(code.get("modules"), dict):
        return "it names no code (made before records did)"
    if code.get("core") != core():
        return "vanex's training core changed"
    modules = code["modules"].items()
    changed = [m for m, entry in modules if not isinstance(entry, dict) or entry.get("sha256") != fingerprint(m)]
    return f"{', '.join(changed)} changed" if changed else None
