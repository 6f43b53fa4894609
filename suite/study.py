"""Studies: named grids of runs (task x mitigation sets x overrides x seeds), run resumably.

A study file (``conf/study/<name>.yaml``) lists grid entries; each entry is a list of
mitigation sets, optionally a ``sweep`` of override values (cartesian product) and the
``profiles`` it belongs to. A cell is composed through Hydra like any single run, so its
``run_id`` is the same as ``gradbench run`` would give; cells whose finished record exists
are skipped, which makes an interrupted study resume where it stopped.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from suite.config import compose, load_group_file, prepare
from suite.records import is_finished, run_id


@dataclass(frozen=True)
class Cell:
    study: str
    task: str
    mitigations: tuple[str, ...]
    overrides: tuple[str, ...]  # the cell's own settings, e.g. ("task.depth=40",)
    seed: int

    @property
    def label(self) -> str:
        return "+".join(sorted(self.mitigations)) or "baseline"

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
    config: dict[str, Any]  # resolved config
    run_id: str
    results_dir: str
    finished: bool = False


def expand(name: str, profile: str, with_sets: list[list[str]] | None = None) -> list[Cell]:
    """All cells of study ``name`` under ``profile`` (plus extra mitigation sets, if given)."""
    study = OmegaConf.to_container(load_group_file("study", name), resolve=True)
    assert isinstance(study, dict)
    task, seeds = study["task"], list(study["seeds"])
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
            overrides = base + tuple(f"{k}={v}" for k, v in zip(keys, values, strict=False))
            for mitigations in entry["mitigations"]:
                for seed in seeds:
                    cell = Cell(name, task, tuple(mitigations), overrides, int(seed))
                    cells.setdefault((cell.mitigations, cell.overrides, cell.seed), cell)
    return list(cells.values())


def plan(name: str, profile: str, extra: list[str], with_sets: list[list[str]] | None = None) -> list[PlannedRun]:
    """One planned run per distinct config; a cell's overrides keep only non-default settings."""
    runs: dict[str, PlannedRun] = {}
    defaults: dict[str, Any] = {}
    for cell in expand(name, profile, with_sets):
        if cell.task not in defaults:
            defaults[cell.task] = compose([f"task={cell.task}", f"profile={profile}", *extra])
        changed = tuple(o for o in cell.overrides if not _is_default(defaults[cell.task], o))
        cell = dataclasses.replace(cell, overrides=changed)
        config = OmegaConf.to_container(compose(cell.hydra_overrides(profile, extra)), resolve=True)
        rid = run_id(config)
        results_dir = str(config["results_dir"])
        runs.setdefault(rid, PlannedRun(cell, config, rid, results_dir, is_finished(results_dir, rid)))
    return list(runs.values())


def _is_default(defaults: Any, override: str) -> bool:
    key, _, value = override.partition("=")
    current = OmegaConf.select(defaults, key.lstrip("+"), default=None)
    return current is not None and str(current) == value


def _execute(config: dict[str, Any]) -> dict[str, Any]:
    """Worker entry point: one run, no per-step progress (many run side by side)."""
    from suite.runner import run

    return run(prepare(OmegaConf.create({**config, "progress": False})))


def run_study(name: str, profile: str, extra: list[str], jobs: int, with_sets: list[list[str]] | None = None) -> int:
    """Run every unfinished cell; returns the number of failed runs."""
    runs = plan(name, profile, extra, with_sets)
    todo = [r for r in runs if not r.finished]
    print(
        f"study {name} ({profile}): {len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to run",
        file=sys.stderr,
    )
    for r in todo:  # fail fast on user errors (e.g. a mitigation that cannot apply) before any training
        prepare(OmegaConf.create(r.config))
    failed, start = 0, time.perf_counter()
    if jobs <= 1 or len(todo) <= 1:
        results = ((r, _execute(r.config)) for r in todo)
        failed = _report_progress(results, len(todo), start)
    else:
        ctx = multiprocessing.get_context("spawn")  # fork after torch threads start is unsafe
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_execute, r.config): r for r in todo}
            failed = _report_progress(((futures[f], f.result()) for f in as_completed(futures)), len(todo), start)
    print(f"study {name}: done in {time.perf_counter() - start:.0f}s, {failed} failed", file=sys.stderr)
    return failed


def _report_progress(results, total: int, start: float) -> int:
    failed = 0
    for i, (planned, record) in enumerate(results, 1):
        cell = planned.cell
        verdict = (record.get("diagnosis") or {}).get("verdict", "-")
        acc = record["summary"].get("test_accuracy")
        acc_text = "" if acc is None else f" test_accuracy={acc:.3f}"
        settings = " ".join(cell.overrides)
        print(
            f"[{i}/{total}] {cell.label} {settings} seed={cell.seed}: {record['status']} {verdict}{acc_text}"
            f" ({record['provenance']['wall_time_s']:.1f}s, {time.perf_counter() - start:.0f}s total)",
            file=sys.stderr,
        )
        if record["status"] == "failed":
            failed += 1
            print(f"    error: {record['error']}", file=sys.stderr)
    return failed
