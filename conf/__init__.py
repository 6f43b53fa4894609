"""vanex's Hydra configs (the repository's ``conf/``, installed as ``vanex.conf``): one folder per
config group. The primary config's defaults list is the one source of the default choices."""

from __future__ import annotations

import functools
from pathlib import Path

HERE = Path(__file__).resolve().parent


@functools.cache
def _primary() -> dict:
    import yaml

    return yaml.safe_load((HERE / "config.yaml").read_text())


def value(key: str) -> object:
    """A top-level setting of ``config.yaml`` (``value("numerics")``)."""
    return _primary()[key]


@functools.cache
def default(group: str) -> str:
    """The option of ``group`` that ``config.yaml``'s defaults list chooses (``default("profile")``)."""
    for entry in _primary()["defaults"]:
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    raise KeyError(f"config.yaml's defaults list chooses no {group}")


@functools.cache
def diagnosis_defaults() -> dict[str, float]:
    """The diagnosis thresholds of ``diagnosis/default.yaml``: a reader fills in what an older study
    manifest lacks with them, so new rules apply to old records."""
    import yaml

    return dict(yaml.safe_load((HERE / "diagnosis" / "default.yaml").read_text()))
