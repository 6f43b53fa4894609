"""Benchmark: a whole study as a user runs it (``vanex study``, a subprocess) against the sum of
bare training loops of the same runs, and with two workers (``--jobs 2``, and two joblib processes
through ``hydra/launcher=joblib``) against one, on a study of many short runs and on one of fewer,
longer runs. Rounds are interleaved.

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

STUDIES = [  # quick profile: many short runs, and fewer longer ones (issue 24, item 2)
    "mlp_meanfield",  # 205 runs of 100 steps, 95 of them on the second numeric path
    "rnn_digits",  # 20 runs of 2000 steps (~20 s each), 10 of them on the second path
]
HERE = Path(__file__).resolve().parent
ROUNDS = int(os.environ.get("VANEX_BENCH_ROUNDS", "1"))  # a round of both studies is ~45 min on 2 cores


def bare_runs(name: str, results_dir: str) -> float:
    """Seconds spent in the bare training loops of every run of the study: those on this process's numeric
    code path here, the others in a process on theirs (the paths are fixed before torch loads), as the
    study itself trains them."""
    _, runs = plan(name, "quick", [f"results_dir={results_dir}"])
    here = numerics.active_mode()
    total = _bare(name, results_dir, here)
    for mode in sorted({r.settings["numerics"] for r in runs} - {here}):
        code = f"import sys; sys.path[:0] = {[str(HERE), str(HERE.parent)]!r}; from vanex import numerics; "
        code += f"numerics.apply({mode!r}); import test_engine as t; "  # the code path before torch loads
        code += f"print(t._bare({name!r}, {results_dir!r}, {mode!r}))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        total += float(out.stdout.split()[-1])
    return total


def _bare(name: str, results_dir: str, mode: str) -> float:
    _, runs = plan(name, "quick", [f"results_dir={results_dir}"])
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


def study(name: str, results_dir, jobs: int, *launcher: str) -> None:
    done = vanex("study", name, "--jobs", str(jobs), *launcher, f"results_dir={results_dir}")
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name", STUDIES)
def test_study_engine_overhead_and_speedup(name, benchmark, tmp_path_factory, overheads):
    times: dict[str, list[float]] = {"bare": [], "two workers": [], "joblib": []}

    def others():  # untimed by pytest-benchmark: this round's references; a fresh folder per study
        times["bare"].append(bare_runs(name, str(tmp_path_factory.mktemp("bare"))))
        for key, launcher in (("two workers", ()), ("joblib", ("hydra/launcher=joblib",))):
            start = time.perf_counter()
            study(name, tmp_path_factory.mktemp(key.replace(" ", "_")), 2, *launcher)
            times[key].append(time.perf_counter() - start)
        return (name, tmp_path_factory.mktemp("one"), 1), {}

    benchmark.group = f"study {name} (quick profile)"
    benchmark.pedantic(study, setup=others, rounds=ROUNDS)
    one = benchmark.stats.stats
    bare, two, joblib = (sorted(times[k]) for k in ("bare", "two workers", "joblib"))
    median = ROUNDS // 2
    overheads[f"study {name}"] = {
        "study (1 worker) / bare loops": (one.median / bare[median], one.min / bare[0]),
        "speed-up, 2 workers vs 1": (one.median / two[median], one.min / two[0]),
        "speed-up, joblib (2) vs 1 worker": (one.median / joblib[median], one.min / joblib[0]),
    }
    benchmark.extra_info.update(
        {"bare_median_s": bare[median], "two_workers_median_s": two[median], "joblib_median_s": joblib[median]}
    )
