"""The config boundary: Hydra composition in, typed objects out.

The YAML files under ``conf/`` are the only source of every default; each group has a
dataclass schema *without* defaults (task configs, mitigations, optimisers, probes, profiles,
diagnosis thresholds, the top-level settings), and ``prepare`` merges the composed values into
it with OmegaConf's structured configs: a wrong type, an unknown key or a missing value is
refused in one line (``UserError``) before anything trains. Everything below ``prepare``
takes typed values. Config groups are found in ``vanex.conf`` (the repository's ``conf/``
folder, shipped inside the wheel) and in every plugin's ``vanex.conf`` package.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError
from vanex import numerics
from vanex.engine.mitigation import Mitigation, check_composition
from vanex.engine.optim import OPTIMIZERS, OptimConfig
from vanex.engine.task import Task
from vanex.errors import UserError
from vanex.records.store import run_id
from vanex.registry import MITIGATIONS, PROBES, TASKS, plugin_conf_packages
from vanex.science.diagnosis import DiagnosisConfig

CONF_PACKAGE = "vanex.conf"  # the wheel maps the repository's conf/ to this package
GROUPS = ("task", "mitigation", "optim", "probe", "profile", "diagnosis", "study")
DEVICES = ("cpu", "cuda", "auto")
MAX_SAMPLES = 10_000  # probe schedules are built point by point: a billion samples would hang planning
_OPTION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # a config option's name: no path, no dots


MAX_THREADS = 1024  # more than any CPU has; at 100000, torch.set_num_threads segfaults


@dataclass
class RunSettings:
    """The top-level keys of ``conf/config.yaml`` (their defaults and comments live there)."""

    seed: int
    device: str
    threads: int
    numerics: str
    results_dir: str
    progress: bool

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer from 0 to 2**32 - 1 (numpy's seed range), got {self.seed}")
        if not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads must be from 1 to {MAX_THREADS}, got {self.threads}")
        if self.device not in DEVICES:
            raise ValueError(f"device '{self.device}' is not one of {', '.join(DEVICES)}")
        if self.numerics not in numerics.MODES:
            raise ValueError(f"numerics '{self.numerics}' is not one of {', '.join(numerics.MODES)}")


@dataclass
class ProfileConfig:
    name: str  # studies pick grid entries by it
    steps_scale: float  # multiplier on the task's steps

    def __post_init__(self) -> None:
        if not (math.isfinite(self.steps_scale) and self.steps_scale > 0):
            raise ValueError(f"profile.steps_scale must be finite and > 0, got {self.steps_scale}")


@dataclass
class ProbeConfig:
    names: list[str]  # registered probe names
    samples: int  # log-spaced sampled steps
    linear_samples: int  # evenly spaced sampled steps, so the later half of a run is seen too
    eval_samples: int  # log-spaced full evaluations before the final one, at most
    eval_budget: float  # ... and at most as many as cost this share of the training (Task.eval_cost)

    def __post_init__(self) -> None:
        if min(self.samples, self.linear_samples, self.eval_samples) < 0:
            raise ValueError("probe.samples, probe.linear_samples and probe.eval_samples must be >= 0")
        if not 0 <= self.eval_budget <= 1:
            raise ValueError(f"probe.eval_budget must be a share of the training from 0 to 1, got {self.eval_budget}")
        if max(self.samples, self.linear_samples, self.eval_samples) > MAX_SAMPLES:
            raise ValueError(f"probe sample counts must be at most {MAX_SAMPLES} (one per step of a long run)")


def typed(schema: type, values: Any, prefix: str) -> Any:
    """``values`` as an instance of the dataclass ``schema``; one-line ``UserError`` when they do not fit."""
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values or {}))
    except ConfigKeyError as exc:
        valid = ", ".join(f.name for f in dataclasses.fields(schema))
        raise UserError(
            f"unknown setting '{prefix}{exc.full_key}'; valid settings of {prefix or 'the top level'}: {valid}"
        ) from None
    except MissingMandatoryValue as exc:
        raise UserError(
            f"setting '{prefix}{exc.full_key}' has no value; give one in its config file or on the command line"
        ) from None
    except ValidationError as exc:
        raise UserError(f"setting '{prefix}{exc.full_key}': {str(exc).splitlines()[0]}") from None
    except OmegaConfBaseException as exc:
        raise UserError(f"invalid settings under '{prefix}': {str(exc).splitlines()[0]}") from None
    except (ValueError, TypeError) as exc:  # the schema's own checks (__post_init__)
        raise UserError(f"invalid {prefix.rstrip('.') or 'top-level'} settings: {exc}") from None
    for field in dataclasses.fields(obj):  # NaN and infinity are no setting's value (a bound says 'none' with null)
        value = getattr(obj, field.name)
        for number in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(number, float) and not math.isfinite(number):
                raise UserError(f"setting '{prefix}{field.name}' must be a finite number, got {number}")
    return obj


def searchpath_override() -> list[str]:
    """The Hydra override that adds plugin config roots to the search path."""
    extra = [f"pkg://{p}" for p in plugin_conf_packages()]
    return [f"hydra.searchpath=[{','.join(extra)}]"] if extra else []


def conf_dir() -> Path:
    """The built-in config folder: ``vanex.conf`` when installed, ``conf/`` in a source tree."""
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


def group_file(group: str, name: str) -> Path:
    """The YAML file of option ``name`` of ``group``, from the config roots only (never a path)."""
    if _OPTION.match(name):
        for root in _conf_roots():
            path = root / group / f"{name}.yaml"
            if path.is_file():
                return path
    raise UserError(f"unknown {group} '{name}'; valid {plural(group)}: {', '.join(group_options(group))}")


def plural(group: str) -> str:
    return group[:-1] + "ies" if group.endswith("y") else group + "s"


def check_overrides(overrides: list[str]) -> None:
    """Refuse unknown option names in group overrides before Hydra sees them (one clear line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # hydra's parser errors are multi-line; keep the first line
        raise UserError(f"cannot parse overrides {overrides}: {str(exc).splitlines()[0]}") from None
    for o, text in zip(parsed, overrides, strict=True):
        if not o.key_or_group:
            raise UserError(f"override '{text}' names no setting; write KEY=VALUE, e.g. task.depth=30")
        group = o.key_or_group
        if group not in GROUPS or o.is_delete():
            continue
        valid = MITIGATIONS.names() if group == "mitigation" else group_options(group)
        for value in _leaf_values(o):
            if value not in valid:
                raise UserError(f"unknown {group} '{value}'; valid {plural(group)}: {', '.join(valid)}")


def _leaf_values(override: Any) -> list[str]:
    values = []
    for v in override.sweep_iterator() if override.is_sweep_override() else [override.value()]:
        values.extend(str(x) for x in (v if isinstance(v, list) else [v]))
    return values


@dataclass
class RunSpec:
    """A fully typed run: what ``vanex.engine.runner.run`` needs, plus its flat settings to record."""

    task_cls: type[Task]
    task_config: Any
    mitigations: list[Mitigation]
    optim: OptimConfig
    probe: ProbeConfig
    diagnosis: DiagnosisConfig
    run: RunSettings
    settings: dict[str, Any]  # every setting as a flat dotted key (task.depth, optim.lr, ...), defaults included

    @property
    def run_id(self) -> str:
        return run_id(self.settings)


def flatten(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(flatten(f"{prefix}{key}.", value))
        elif not isinstance(value, dict):
            out[f"{prefix}{key}"] = value
    return out


def prepare(cfg: DictConfig, training: bool = True) -> RunSpec:
    """Typed run spec from a composed config; bad values raise ``UserError`` (one line). A spec for
    ``training`` must ask for this process's numerics; a study plans cells of any (``training=False``)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    groups = {g: resolved.pop(g, None) for g in ("task", "mitigation", "optim", "probe", "profile", "diagnosis")}
    resolved.pop("hydra", None)
    run = typed(RunSettings, resolved, "")
    if training and run.numerics != numerics.active_mode():
        raise UserError(
            f"numerics={run.numerics} differs from this process's ({numerics.active_mode()}); the CPU code paths are "
            "fixed before torch loads: give numerics=... on the vanex command line, not in a config file"
        )
    profile = typed(ProfileConfig, groups["profile"], "profile.")
    task_values = dict(groups["task"] or {})
    task_cls = TASKS.get(str(task_values.pop("name", None)))
    steps = task_values.get("steps")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps < 1:
        raise UserError(f"setting 'task.steps' must be at least 1, got {steps}")
    if isinstance(steps, int) and not isinstance(steps, bool):
        task_values["steps"] = max(1, int(round(steps * profile.steps_scale)))
    task_config = typed(task_cls.Config, task_values, "task.")
    mitigation_values = groups["mitigation"] or {}
    mitigations = [typed(MITIGATIONS.get(n), p, f"mitigation.{n}.") for n, p in mitigation_values.items()]
    check_composition(mitigations, task_cls)
    for m in mitigations:
        try:
            task_config = m.adjust_config(task_config)
        except (ValueError, TypeError) as exc:
            raise UserError(f"invalid task settings after mitigation '{m.name}': {exc}") from None
    try:
        task_cls.check_knobs(task_config)
        task_cls.check_config(task_config)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _check_results_dir(run.results_dir)
    optim_values = dict(groups["optim"] or {})
    optim_name = str(optim_values.get("name"))
    if optim_name not in OPTIMIZERS:
        raise UserError(f"unknown optim '{optim_name}'; valid optims: {', '.join(OPTIMIZERS)}")
    optim = typed(OPTIMIZERS[optim_name][1], optim_values, "optim.")
    probe = typed(ProbeConfig, groups["probe"], "probe.")
    for name in probe.names:
        PROBES.get(name)
    diagnosis = typed(DiagnosisConfig, groups["diagnosis"], "diagnosis.")
    settings = {
        "task": task_cls.name,
        "mitigations": [m.name for m in mitigations],
        **flatten("task.", dataclasses.asdict(task_config)),
        **flatten("mitigation.", {m.name: dataclasses.asdict(m) for m in mitigations}),
        **flatten("optim.", dataclasses.asdict(optim)),
        **flatten("profile.", dataclasses.asdict(profile)),
        **flatten("probe.", dataclasses.asdict(probe)),
        **flatten("diagnosis.", dataclasses.asdict(diagnosis)),
        **{k: getattr(run, k) for k in ("seed", "device", "threads", "numerics")},
    }
    return RunSpec(task_cls, task_config, mitigations, optim.typed(), probe, diagnosis, run, settings)


def _check_results_dir(path: str) -> None:
    """A results folder that is a file, or cannot be written, is refused before training."""
    if not path.strip():
        raise UserError("results_dir is empty; give the folder for the records, e.g. results_dir=results")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"results_dir '{path}' exists and is not a folder; give a folder path")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"results_dir '{path}' cannot be written ({existing} is not a writable folder)")
    try:  # what os.access cannot tell (/proc, a read-only mount): create it now, before any training
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"results_dir '{path}' cannot be created ({exc.strerror or exc})") from None


_COMPOSED: dict[tuple[str, ...], DictConfig] = {}  # group overrides -> the config Hydra composed from them


def compose(overrides: list[str]) -> DictConfig:
    """Compose the primary config with ``overrides`` (the CLI's path; used by studies and tests).

    Hydra builds a config in two stages: the defaults list, from the group overrides
    (``task=resnet``, ``mitigation=[lstm]``), then the remaining value overrides
    (``task.depth=56``) applied to the merged result. The first stage is most of the cost (~0.1 s)
    and a study's cells share a few group choices, so its result is kept per distinct group
    overrides and the second stage is Hydra's own (``_apply_overrides_to_config``) on a copy.
    Overrides of Hydra's own settings, sweeps and packages take Hydra's full path."""
    import copy

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    check_overrides(overrides)
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            parsed = OverridesParser.create().parse_overrides(overrides)
            if any(o.is_sweep_override() or o.package is not None or o.is_hydra_override() for o in parsed):
                return hydra_compose("config", overrides=[*overrides, *searchpath_override()])
            groups = [_is_group(o.key_or_group) for o in parsed]
            key = tuple(o.input_line for o, group in zip(parsed, groups, strict=True) if group)
            if key not in _COMPOSED:
                _COMPOSED[key] = hydra_compose("config", overrides=[*key, *searchpath_override()])
            cfg = copy.deepcopy(_COMPOSED[key])
            values = [o for o, group in zip(parsed, groups, strict=True) if not group]
            hydra_private().apply_overrides(values, cfg)
            return cfg
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(_override_error(str(exc), overrides)) from None


def _override_error(message: str, overrides: list[str]) -> str:
    """Hydra's first line, and for a key the config does not have, the keys that its parent does have."""
    first = message.splitlines()[0]
    unknown = re.match(r"Could not override '([^']+)'", first)
    if not (unknown and "To append to your config" in message):  # Hydra says so for a key it does not have
        return f"cannot apply overrides: {first}"
    key = unknown.group(1)
    parent = key.rpartition(".")[0]
    try:
        node = OmegaConf.select(compose([o for o in overrides if not o.startswith(f"{key}=")]), parent or "")
    except UserError:  # another override is wrong too: say what Hydra said
        node = None
    if not isinstance(node, DictConfig):
        return f"cannot apply overrides: {first}"
    valid = ", ".join(sorted(k for k in node if k != "hydra")) or "none (it takes no settings)"
    return f"unknown setting '{key}'; valid settings of {parent or 'the top level'}: {valid}"


HYDRA_WRITTEN_FOR = "1.3"  # the hydra-core minor version hydra_private() was written against (pyproject: <1.4)


@functools.cache
def hydra_private() -> SimpleNamespace:
    """Every private Hydra API vanex uses, in one place, for hydra-core 1.3 (``HYDRA_WRITTEN_FOR``):
    ``apply_overrides(overrides, cfg)``, the second stage of composition (value overrides on a
    composed config, ``ConfigLoaderImpl._apply_overrides_to_config``), and ``Callbacks``, which a
    launcher plugin needs in its ``HydraContext`` (``hydra._internal.callbacks``). Another Hydra
    version is refused in one line rather than failing somewhere inside it."""
    import hydra

    if not hydra.__version__.startswith(HYDRA_WRITTEN_FOR + "."):
        raise UserError(
            f"hydra-core {hydra.__version__} is installed; vanex uses private Hydra calls written for "
            f"{HYDRA_WRITTEN_FOR}.x: pip install 'hydra-core=={HYDRA_WRITTEN_FOR}.*'"
        )
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    return SimpleNamespace(apply_overrides=ConfigLoaderImpl._apply_overrides_to_config, Callbacks=Callbacks)


def _is_group(key: str) -> bool:
    """Whether an override's key names a config group (``task``, ``hydra/launcher``...), not a value."""
    return key in GROUPS or any((root / key).is_dir() for root in _conf_roots())
