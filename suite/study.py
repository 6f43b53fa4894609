"""Studies: named grids of runs (task x mitigation sets x overrides x seeds), run resumably.

A study file (``conf/study/<name>.yaml``) lists grid entries; each entry is a list of
mitigation sets, optionally a ``sweep`` of override values (cartesian product) and the
``profiles`` it belongs to. A cell is composed through Hydra like any single run, so its
``run_id`` is the same as ``gradbench run`` would give; cells whose finished record exists
are skipped, which makes an interrupted study resume where it stopped. Before training, the
study writes its manifest, ``<results>/_studies/<study>-<profile>.json``: every cell with its
settings and run_id, which the reporter reads instead of composing configs.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from suite.config import compose, load_group_file, prepare
from suite.records import is_finished, varying_settings, write_manifest


@dataclass(frozen=True)
class Cell:
    study: str
    task: str
    mitigations: tuple[str, ...]  # in the order they apply (order can change results)
    overrides: tuple[str, ...]  # the cell's own settings, e.g. ("task.depth=40",)
    seed: int

    @property
    def label(self) -> str:
        return "+".join(self.mitigations) or "baseline"

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
    return study, list(cells.values())


def plan(
    name: str, profile: str, extra: list[str], with_sets: list[list[str]] | None = None
) -> tuple[dict[str, Any], list[PlannedRun]]:
    """The study's manifest and one planned run per distinct training identity."""
    study, cells = expand(name, profile, with_sets)
    runs: dict[str, PlannedRun] = {}
    for cell in cells:
        cfg = compose(cell.hydra_overrides(profile, extra))
        spec = prepare(cfg)  # refuses bad cells (a mitigation that cannot apply...) before any training
        config = OmegaConf.to_container(cfg, resolve=True)
        rid, results_dir = spec.run_id, spec.run.results_dir
        runs.setdefault(rid, PlannedRun(cell, config, spec.settings, rid, results_dir, is_finished(results_dir, rid)))
    return _manifest(name, profile, study, list(runs.values())), list(runs.values())


def _manifest(name: str, profile: str, study: dict[str, Any], runs: list[PlannedRun]) -> dict[str, Any]:
    """What the reporter needs to show a study without composing any config: every cell with its
    settings and run_id, the settings that vary across cells, and the diagnosis thresholds."""
    observe = ("probe.", "diagnosis.", "profile.")
    cells = [
        {
            "run_id": r.run_id,
            "mitigations": list(r.cell.mitigations),
            "seed": r.cell.seed,
            "settings": {k: v for k, v in r.settings.items() if not k.startswith(observe)},
        }
        for r in runs
    ]
    first = runs[0].settings if runs else {}
    return {
        "manifest_version": 1,
        "study": name,
        "profile": profile,
        "task": study["task"],
        "description": study.get("description", ""),
        "swept": varying_settings([c["settings"] for c in cells]),
        "diagnosis": {k.partition(".")[2]: v for k, v in first.items() if k.startswith("diagnosis.")},
        "cells": cells,
    }


def _execute(config: dict[str, Any]) -> dict[str, Any]:
    """Worker entry point: one run, no per-step progress (many run side by side)."""
    from suite.runner import run

    return run(prepare(OmegaConf.create({**config, "progress": False})))


def run_study(name: str, profile: str, extra: list[str], jobs: int, with_sets: list[list[str]] | None = None) -> int:
    """Write the study's manifest, then run every unfinished cell; returns the number of failed runs."""
    manifest, runs = plan(name, profile, extra, with_sets)
    todo = [r for r in runs if not r.finished]
    if runs:
        path = write_manifest(runs[0].results_dir, manifest)
        print(f"study {name}: manifest {path}", file=sys.stderr)
    print(
        f"study {name} ({profile}): {len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to run",
        file=sys.stderr,
    )
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
        diagnosis = record.get("diagnosis") or {}
        verdict = "/".join(diagnosis[part]["verdict"] for part in ("init", "training")) if diagnosis else "-"
        loss = record["summary"].get("final_train_loss")
        loss_text = "" if loss is None else f" final_train_loss={loss:.4g}"
        settings = " ".join(cell.overrides)
        print(
            f"[{i}/{total}] {cell.label} {settings} seed={cell.seed}: {record['status']} (init/training {verdict})"
            f"{loss_text}"
            f" ({record['provenance']['wall_time_s']:.1f}s, {time.perf_counter() - start:.0f}s total)",
            file=sys.stderr,
        )
        if record["status"] == "failed":
            failed += 1
            print(f"    error: {record['error']}", file=sys.stderr)
    return failed
