"""Benchmark: a whole study as a user runs it (``vanex study``, a subprocess) against the sum of
bare training loops of the same runs, and with two workers against one. Rounds are interleaved.

A run's *bare training loop* is the work no engine can avoid: build the model, apply the run's
mitigations (init, gradient transforms, after-step hooks, learning-rate factors excluded), and take
its optimizer steps on its batches. Everything else a study does is engine overhead: starting
Python and importing torch, composing configs, building each run's data, probes, evaluations,
leases and records. Reported at the end of the run (``conftest.py``), never asserted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import vanex
from omegaconf import OmegaConf
from plain import bare_steps
from vanex import numerics
from vanex.engine.config import prepare
from vanex.engine.runner import make_optimizer, seed_everything
from vanex.engine.study import plan

pytestmark = pytest.mark.bench

STUDY = "mlp_meanfield"  # 205 runs of 100 steps, 95 of them on the second numeric path (quick profile)
HERE = Path(__file__).resolve().parent
ROUNDS = int(os.environ.get("VANEX_BENCH_ROUNDS", "3"))


def bare_runs(results_dir: str) -> float:
    """Seconds spent in the bare training loops of every run of the study: those on this process's numeric
    code path here, the others in a process on theirs (the paths are fixed before torch loads), as the
    study itself trains them."""
    _, runs = plan(STUDY, "quick", [f"results_dir={results_dir}"])
    here = numerics.active_mode()
    total = _bare(results_dir, here)
    for mode in sorted({r.settings["numerics"] for r in runs} - {here}):
        code = f"import sys; sys.path[:0] = {[str(HERE), str(HERE.parent)]!r}; from vanex import numerics; "
        code += f"numerics.apply({mode!r}); import test_engine as t; "  # the code path before torch loads
        code += f"print(t._bare({results_dir!r}, {mode!r}))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        total += float(out.stdout.split()[-1])
    return total


def _bare(results_dir: str, mode: str) -> float:
    _, runs = plan(STUDY, "quick", [f"results_dir={results_dir}"])
    total = 0.0
    for planned in (r for r in runs if r.settings["numerics"] == mode):
        spec = prepare(OmegaConf.create({**planned.config, "progress": False}))
        seed_everything(spec.run.seed, spec.run.threads)
        task = spec.task_cls(spec.task_config, torch.device("cpu"))  # the data: not timed
        start = time.perf_counter()
        model = task.build_model()
        for m in spec.mitigations:
            m.init_model(model)
        optimizer = make_optimizer(spec.optim, task.param_groups(model), spec.mitigations)
        bare_steps(task, spec, model, optimizer, mitigations=spec.mitigations)
        total += time.perf_counter() - start
    return total


def study(results_dir, jobs: int) -> None:
    done = vanex("study", STUDY, "--jobs", str(jobs), f"results_dir={results_dir}")
    assert done.returncode == 0, done.stderr[-2000:]


def test_study_engine_overhead_and_speedup(benchmark, tmp_path_factory, overheads):
    times: dict[str, list[float]] = {"bare": [], "two workers": []}

    def others():  # untimed by pytest-benchmark: this round's references; a fresh folder per study
        times["bare"].append(bare_runs(str(tmp_path_factory.mktemp("bare"))))
        start = time.perf_counter()
        study(tmp_path_factory.mktemp("two"), 2)
        times["two workers"].append(time.perf_counter() - start)
        return (tmp_path_factory.mktemp("one"), 1), {}

    benchmark.group = f"study {STUDY} (quick profile)"
    benchmark.pedantic(study, setup=others, rounds=ROUNDS)
    one = benchmark.stats.stats
    bare, two = (sorted(times[k]) for k in ("bare", "two workers"))
    median = ROUNDS // 2
    overheads["engine"] = {
        "study (1 worker) / bare loops": (one.median / bare[median], one.min / bare[0]),
        "speed-up, 2 workers vs 1": (one.median / two[median], one.min / two[0]),
    }
    benchmark.extra_info.update({"bare_median_s": bare[median], "two_workers_median_s": two[median]})
