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


def studies() -> list[str]:
    """The studies there are: ``study/*.yaml`` here and in the plugins' config roots (without importing
    torch, for the reporter and the claims)."""
    from importlib import resources

    from vanex.registry import plugin_conf_packages

    roots = [HERE, *(Path(str(resources.files(p))) for p in plugin_conf_packages())]
    return sorted({p.stem for root in roots for p in (root / "study").glob("*.yaml")})


def profiles() -> list[str]:
    """The profiles vanex ships (``profile/*.yaml``), for help texts; a plugin's config root may add more."""
    return sorted(p.stem for p in (HERE / "profile").glob("*.yaml"))


@functools.cache
def steps_scale(profile: str) -> float | None:
    """The ``steps_scale`` of ``profile`` (``profile/<name>.yaml``), or None for a profile that is not
    one of these files (e.g. a plugin's)."""
    import yaml

    path = HERE / "profile" / f"{profile}.yaml"
    if not path.is_file():
        return None
    scale = (yaml.safe_load(path.read_text()) or {}).get("steps_scale")
    return float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else None


def scaled_down(profile: str) -> float | None:
    """The ``steps_scale`` of ``profile`` when it is below 1 (runs shorter than the tasks' budgets, which
    the claims were registered at: a setup check, not evidence), else None (also for a profile that
    is not one of these files, e.g. a plugin's)."""
    scale = steps_scale(profile)
    return scale if scale is not None and scale < 1 else None


def not_evidence(profile: str) -> str | None:
    """One sentence saying why a report or claims of ``profile`` are not evidence, or None."""
    scale = scaled_down(profile)
    if scale is None:
        return None
    return (
        f"the {profile} profile trains each run for {scale:.0%} of its steps to check a setup: its numbers "
        "and claim verdicts are not evidence; cite a report of the quick or full profile"
    )
