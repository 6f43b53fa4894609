"""The config boundary: Hydra composition in, typed objects out.

Everything below ``prepare`` takes typed values (task config dataclass, mitigation
dataclasses, ``OptimConfig``...). Config groups are found in ``suite.conf`` (the repository's
``conf/`` folder, shipped inside the wheel) and in every plugin's ``gradbench.conf`` package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from suite.diagnosis import DiagnosisConfig
from suite.errors import UserError
from suite.mitigation import Mitigation, check_composition
from suite.registry import MITIGATIONS, TASKS, plugin_conf_packages
from suite.task import Task

CONF_PACKAGE = "suite.conf"  # the wheel maps the repository's conf/ to this package
GROUPS = ("task", "mitigation", "optim", "probe", "profile", "diagnosis", "study")


def searchpath_override() -> list[str]:
    """The Hydra override that adds plugin config roots to the search path."""
    extra = [f"pkg://{p}" for p in plugin_conf_packages()]
    return [f"hydra.searchpath=[{','.join(extra)}]"] if extra else []


def conf_dir() -> Path:
    """The built-in config folder: ``suite.conf`` when installed, ``conf/`` in a source tree."""
    try:
        return Path(str(resources.files(CONF_PACKAGE)))
    except ModuleNotFoundError:  # running from a checkout without installing (suite/ next to conf/)
        return Path(__file__).resolve().parents[1] / "conf"


def _conf_roots() -> list[Path]:
    return [conf_dir(), *(Path(str(resources.files(p))) for p in plugin_conf_packages())]


def group_options(group: str) -> list[str]:
    """Names of the YAML files of ``group`` across the built-in and plugin config roots."""
    names = set()
    for root in _conf_roots():
        if (root / group).is_dir():
            names.update(p.stem for p in (root / group).glob("*.yaml"))
    return sorted(names)


def load_group_file(group: str, name: str) -> DictConfig:
    for root in _conf_roots():
        path = root / group / f"{name}.yaml"
        if path.is_file():
            return OmegaConf.create(path.read_text())
    raise UserError(f"unknown {group} '{name}'; valid {group}s: {', '.join(group_options(group))}")


def check_overrides(overrides: list[str]) -> None:
    """Refuse unknown option names in group overrides before Hydra sees them (one clear line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # hydra's parser errors are multi-line; keep the first line
        raise UserError(f"cannot parse overrides {overrides}: {str(exc).splitlines()[0]}") from None
    for o in parsed:
        group = o.key_or_group
        if group not in GROUPS or o.is_delete():
            continue
        valid = MITIGATIONS.names() if group == "mitigation" else group_options(group)
        for value in _leaf_values(o):
            if value not in valid:
                raise UserError(f"unknown {group} '{value}'; valid {group}s: {', '.join(valid)}")


def _leaf_values(override: Any) -> list[str]:
    values = []
    for v in override.sweep_iterator() if override.is_sweep_override() else [override.value()]:
        values.extend(str(x) for x in (v if isinstance(v, list) else [v]))
    return values


@dataclass
class OptimConfig:
    name: str  # sgd | adam | rmsprop
    lr: float
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProbeConfig:
    names: list[str]
    samples: int
    eval_samples: int


@dataclass
class RunSpec:
    """A fully typed run: what ``suite.runner.run`` needs, plus the resolved config to record."""

    task_cls: type[Task]
    task_config: Any
    mitigations: list[Mitigation]
    optim: OptimConfig
    probe: ProbeConfig
    diagnosis: DiagnosisConfig
    seed: int
    device: str
    threads: int
    results_dir: str
    progress: bool
    resolved: dict[str, Any]


def prepare(cfg: DictConfig) -> RunSpec:
    """Typed run spec from a composed config; bad values raise ``UserError`` (one line)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    try:
        task_values = dict(resolved["task"])
        task_cls = TASKS.get(task_values.pop("name"))
        scale = float(resolved["profile"]["steps_scale"])
        task_values["steps"] = max(1, int(round(task_values.get("steps", 1) * scale)))
        task_config = task_cls.make_config(task_values)
        mitigations = [
            MITIGATIONS.get(name)(**(params or {})) for name, params in (resolved.get("mitigation") or {}).items()
        ]
        check_composition(mitigations, task_cls)
        for m in mitigations:
            task_config = m.adjust_config(task_config)
        optim = dict(resolved["optim"])
        spec = RunSpec(
            task_cls=task_cls,
            task_config=task_config,
            mitigations=mitigations,
            optim=OptimConfig(name=optim.pop("name"), lr=float(optim.pop("lr")), kwargs=optim),
            probe=ProbeConfig(**resolved["probe"]),
            diagnosis=DiagnosisConfig(**resolved["diagnosis"]),
            seed=int(resolved["seed"]),
            device=str(resolved["device"]),
            threads=int(resolved["threads"]),
            results_dir=str(resolved["results_dir"]),
            progress=bool(resolved["progress"]),
            resolved=resolved,
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(f"invalid config: {exc}") from None
    if spec.device not in ("cpu", "cuda", "auto"):
        raise UserError(f"device '{spec.device}' is not one of cpu, cuda, auto")
    return spec


def compose(overrides: list[str]) -> DictConfig:
    """Compose the primary config with ``overrides`` (used by studies and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    check_overrides(overrides)
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=[*overrides, *searchpath_override()])
