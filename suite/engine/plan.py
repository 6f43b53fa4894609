"""Study planning: a study file (``conf/study/<name>.yaml``) -> its cells and one planned run per
distinct training identity, plus the manifest the reporter reads.

A study file lists grid entries; each entry is a list of mitigation sets, optionally a ``sweep`` of
override values (cartesian product), the ``profiles`` it belongs to and its own ``seeds`` (headline
cells run more seeds than the rest). A cell is composed through Hydra like any single run, so its
``run_id`` is the same as ``vanex run`` would give, and a cell whose finished record exists is
marked finished: an interrupted study resumes where it stopped. Launching is ``vanex.engine.study``.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import OmegaConf
from vanex import conf, numerics
from vanex.engine.config import compose, group_file, prepare
from vanex.errors import UserError
from vanex.records.store import is_finished, make_manifest, run_id, set_label

DEFAULT_NUMERICS = str(conf.value("numerics"))  # the path every cell runs on unless its entry names others
STUDY_KEYS = ("description", "task", "seeds", "overrides", "grid")
ENTRY_KEYS = ("mitigations", "sweep", "profiles", "seeds", "numerics")
OWN_KEYS = ("task", "mitigation", "seed", "profile", "numerics")  # settings a cell's fields set: never swept over


def load_study(name: str) -> dict[str, Any]:
    """The study file ``name`` from the config roots, checked against the study schema."""
    path = group_file("study", name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    return check_study(data, str(path))


def check_study(data: Any, where: str) -> dict[str, Any]:
    """Refuse, in one line naming the file and the field, a study that does not fit the schema."""

    def fail(field: str, problem: str) -> None:
        raise UserError(f"{where}: {field} {problem}")

    def names(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    if not isinstance(data, dict):
        fail("the file", f"must be a mapping with keys task, seeds and grid, not {type(data).__name__}")
    for key in data:
        if key not in STUDY_KEYS:
            fail(f"key '{key}'", f"is unknown; valid keys: {', '.join(STUDY_KEYS)}")
    for key in ("task", "seeds", "grid"):
        if key not in data:
            fail(f"'{key}'", "is missing")
    if not isinstance(data["task"], str):
        fail("'task'", f"must be a task name, not {data['task']!r}")

    def check_seeds(field: str, seeds: Any) -> None:
        if not (isinstance(seeds, list) and seeds and all(type(x) is int and x >= 0 for x in seeds)):
            fail(field, f"must be a non-empty list of non-negative integers, not {seeds!r}")

    def check_own(field: str, keys: list[str]) -> None:  # what the study's own fields say, and the manifest records
        for key in keys:
            if key.lstrip("+~").split("=", 1)[0] in OWN_KEYS:
                fail(field, f"sets '{key.split('=', 1)[0]}', which the study's own fields decide (task, mitigations, "
                     "seeds, numerics; the profile is the command's): set it there")  # fmt: skip

    check_seeds("'seeds'", data["seeds"])
    if not names(data.get("overrides") or []):
        fail("'overrides'", "must be a list of Hydra overrides such as task.depth=40")
    check_own("'overrides'", data.get("overrides") or [])
    if not isinstance(data.get("description", ""), str):
        fail("'description'", "must be text")
    grid = data["grid"]
    if not (isinstance(grid, list) and grid):
        fail("'grid'", "must be a non-empty list of entries, each with a list of mitigation sets")
    for i, entry in enumerate(grid):
        field = f"'grid[{i}]"
        if not isinstance(entry, dict):
            fail(field + "'", "must be a mapping with 'mitigations' (and optionally 'sweep', 'profiles')")
        for key in entry:
            if key not in ENTRY_KEYS:
                fail(f"{field}.{key}'", f"is unknown; valid keys: {', '.join(ENTRY_KEYS)}")
        sets = entry.get("mitigations")
        if not (isinstance(sets, list) and sets and all(names(m) for m in sets)):
            fail(
                f"{field}.mitigations'",
                f"must be a list of mitigation sets such as [[], [relu, he_init]], not {sets!r}",
            )
        sweep = entry.get("sweep") or {}
        scalar = (str, int, float, bool)
        if not (isinstance(sweep, dict) and all(isinstance(k, str) for k in sweep)) or not all(
            isinstance(v, list) and v and all(isinstance(x, scalar) for x in v) for v in sweep.values()
        ):
            fail(f"{field}.sweep'", "must map settings to non-empty lists of values, e.g. {task.depth: [2, 5]}")
        check_own(f"{field}.sweep'", list(sweep))
        if not names(entry.get("profiles", [])):
            fail(f"{field}.profiles'", "must be a list of profile names")
        if unknown := [p for p in entry.get("profiles", []) if p not in conf.profiles()]:
            fail(
                f"{field}.profiles'",
                f"names unknown profile '{unknown[0]}'; valid profiles: {', '.join(conf.profiles())}",
            )
        if "seeds" in entry:
            check_seeds(f"{field}.seeds'", entry["seeds"])
        paths = entry.get("numerics", [])
        if not (names(paths) and set(paths) <= set(numerics.MODES) and len(set(paths)) == len(paths)):
            fail(f"{field}.numerics'", f"must list distinct numeric code paths of {', '.join(numerics.MODES)}")
    return data


@dataclass(frozen=True)
class Cell:
    study: str
    task: str
    mitigations: tuple[str, ...]  # in the order they apply (order can change results)
    overrides: tuple[str, ...]  # the cell's own settings, e.g. ("task.depth=40",)
    seed: int

    @property
    def label(self) -> str:
        return set_label(self.mitigations)

    def hydra_overrides(self, profile: str, extra: list[str]) -> list[str]:
        return [
            f"task={self.task}",
            f"mitigation=[{','.join(self.mitigations)}]",
            f"seed={self.seed}",
            f"profile={profile}",
            *self.overrides,
            *extra,
        ]


@dataclass
class PlannedRun:
    cell: Cell
    config: dict[str, Any]  # composed config, resolved
    settings: dict[str, Any]  # flat typed settings (what the record will carry)
    run_id: str
    results_dir: str
    finished: bool = False


def expand(name: str, profile: str, with_sets: list[list[str]] | None = None) -> tuple[dict[str, Any], list[Cell]]:
    """The study file and all its cells under ``profile`` (plus extra mitigation sets, if given)."""
    study = load_study(name)
    task = study["task"]
    base = tuple(study.get("overrides") or ())
    entries = list(study["grid"])
    if with_sets:
        entries.append({"mitigations": with_sets})
    cells: dict[tuple, Cell] = {}
    for entry in entries:
        if profile not in entry.get("profiles", [profile]):
            continue
        sweep = entry.get("sweep") or {}
        keys = list(sweep)
        for values in itertools.product(*(sweep[k] for k in keys)):
            swept = base + tuple(f"{k}={v}" for k, v in zip(keys, values, strict=False))
            # an entry's cells on each numeric code path it lists (the default one first, unnamed)
            paths = [(), *((f"numerics={n}",) for n in entry.get("numerics", []) if n != DEFAULT_NUMERICS)]
            for overrides, mitigations in itertools.product((swept + p for p in paths), entry["mitigations"]):
                for seed in entry.get("seeds", study["seeds"]):
                    cell = Cell(name, task, tuple(mitigations), overrides, int(seed))
                    cells.setdefault((cell.mitigations, cell.overrides, cell.seed), cell)
    return study, list(cells.values())


def plan(
    name: str, profile: str, extra: list[str], with_sets: list[list[str]] | None = None
) -> tuple[dict[str, Any], list[PlannedRun]]:
    """The study's manifest and one planned run per distinct training identity."""
    study, cells = expand(name, profile, with_sets)
    runs: dict[str, PlannedRun] = {}
    reseedable: dict[tuple, tuple[dict[str, Any], dict[str, Any]]] = {}  # seedless cell -> its first seed's
    for cell in cells:
        seedless = (cell.mitigations, cell.overrides)
        if seedless in reseedable and 0 <= cell.seed < 2**32:  # RunSettings' seed range, else prepare refuses it
            config, settings = ({**copy.deepcopy(d), "seed": cell.seed} for d in reseedable[seedless])
        else:
            cfg = compose(cell.hydra_overrides(profile, extra))
            spec = prepare(cfg, training=False)  # refuses bad cells (a mitigation that cannot apply...) before training
            config, settings = OmegaConf.to_container(cfg, resolve=True), spec.settings
            if config["seed"] == cell.seed and not _interpolates(cfg):
                reseedable[seedless] = (config, settings)
        rid = run_id(settings)
        results_dir = config["results_dir"]
        runs.setdefault(rid, PlannedRun(cell, config, settings, rid, results_dir, is_finished(results_dir, rid)))
    cells = [(r.run_id, list(r.cell.mitigations), r.cell.seed, r.settings) for r in runs.values()]
    manifest = make_manifest(name, profile, study["task"], study.get("description", ""), cells)
    return manifest, list(runs.values())


def _interpolates(cfg: Any) -> bool:
    """Whether any value of a composed config (Hydra's own settings aside) is an interpolation such as
    ``${seed}``. A cell's other seeds are its first seed's config and settings with ``seed`` set (one
    Hydra composition per seedless cell instead of one per seed: a 100-seed study plans ~20x faster)
    only where nothing can follow the seed."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    stack: list[Any] = [raw]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and "${" in value:
            return True
    return False
