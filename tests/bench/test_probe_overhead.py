"""Benchmark: deep_mlp training steps with gradbench's loop and default probes versus a bare
PyTorch loop on the same model, data and machine. Reported as a ratio, never asserted."""

from __future__ import annotations

import pytest
import torch

from suite.config import compose, prepare
from suite.probes import Rows
from suite.runner import _train, seed_everything

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    spec = prepare(compose([f"results_dir={tmp_path_factory.mktemp('r')}", "progress=false"]))
    seed_everything(spec.run.seed, spec.run.threads)
    return spec


@pytest.fixture(scope="module")
def task(spec):
    return spec.task_cls(spec.task_config, torch.device("cpu"))


def bare_loop(task, spec) -> None:
    model = task.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.optim.lr)
    batches = task.batches(torch.Generator().manual_seed(spec.run.seed))
    for _ in range(task.steps):
        x, y = next(batches)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("variant", ["bare", "probed"])
def test_deep_mlp_steps(benchmark, spec, task, variant, timings):
    benchmark.group = "deep_mlp training (default config, 1000 steps)"
    if variant == "bare":
        benchmark.pedantic(bare_loop, args=(task, spec), rounds=7, warmup_rounds=1)
    else:
        benchmark.pedantic(lambda: _train(spec, task, task.build_model(), Rows(), "bench"), rounds=7, warmup_rounds=1)
    medians, minima = timings
    medians[variant], minima[variant] = benchmark.stats.stats.median, benchmark.stats.stats.min
    if "bare" in medians and variant == "probed":
        benchmark.extra_info["median_ratio_vs_bare"] = medians["probed"] / medians["bare"]
