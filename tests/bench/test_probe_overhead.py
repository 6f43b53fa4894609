"""Benchmark: per task, vanex's training loop with the default probes against a bare PyTorch
loop on a plain model of the same architecture (``plain.py``), and against vanex's own model
trained bare, on the same batches and machine. Rounds are interleaved (plain, bare and probed run
one after another in every round, so a machine that slows down slows all three). Reported as
ratios at the end of the run (``conftest.py``), never asserted."""

from __future__ import annotations

import time

import pytest
import torch
from plain import bare_steps, plain_loop
from vanex.engine.config import compose, prepare
from vanex.engine.probes import Rows
from vanex.engine.runner import _train, applicable_probes, make_optimizer, seed_everything

pytestmark = pytest.mark.bench

ROUNDS = 5
# steps per run: the task's default where a run takes seconds; fewer where it takes most of a minute
# (probe and evaluation points are log- and linearly spaced over the run, so fewer steps means a
# larger probed fraction: the ratio is then an upper bound on the default run's)
TASKS = {"deep_mlp": 1000, "rnn_copy": 600, "resnet": 140, "transformer": 150}


def bare_loop(task, spec) -> None:
    """vanex's own model and optimizer, no probes, no evaluation, no mitigations."""
    model = task.build_model()
    bare_steps(task, spec, model, make_optimizer(spec.optim, task.param_groups(model), []))


def probed_loop(task, spec) -> None:
    model = task.build_model()
    _train(spec, task, model, applicable_probes(spec, task, model), Rows(), "bench")


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@pytest.mark.parametrize("name", list(TASKS))
def test_probe_overhead(benchmark, name, tmp_path, overheads):
    spec = prepare(compose([f"task={name}", f"task.steps={TASKS[name]}", f"results_dir={tmp_path}", "progress=false"]))
    seed_everything(spec.run.seed, spec.run.threads)
    task = spec.task_cls(spec.task_config, torch.device("cpu"))
    times: dict[str, list[float]] = {"plain": [], "bare": []}

    def others():  # untimed by pytest-benchmark: the two references of this round
        times["plain"].append(_timed(plain_loop, task, spec))
        times["bare"].append(_timed(bare_loop, task, spec))

    benchmark.group = "probe overhead per task (one run's training)"
    benchmark.pedantic(probed_loop, args=(task, spec), setup=others, rounds=ROUNDS, warmup_rounds=1)
    probed = benchmark.stats.stats
    rounds = len(probed.data)
    plain, bare = (sorted(times[k][-rounds:]) for k in ("plain", "bare"))  # the warmup round is dropped
    ratios = {
        "probed / plain": (probed.median / plain[rounds // 2], probed.min / plain[0]),
        "bare own model / plain": (bare[rounds // 2] / plain[rounds // 2], bare[0] / plain[0]),
    }
    benchmark.extra_info.update({f"{k} (median)": v[0] for k, v in ratios.items()})
    benchmark.extra_info.update({"steps": TASKS[name], "plain_median_s": plain[rounds // 2]})
    overheads[name] = ratios
