"""The benchmark's plain PyTorch models (tests/bench/plain.py) are twins of the tasks' models:
parameter for parameter the same shapes, and with the same weights the same loss. Otherwise the
probe-overhead ratio of `nox -s bench` would compare against a different network."""

from __future__ import annotations

import pytest
import torch
from bench.plain import plain_loss, plain_model
from vanex.engine.config import compose, prepare
from vanex.engine.runner import seed_everything
from vanex.registry import TASKS


@pytest.mark.parametrize("name", TASKS.names())
def test_plain_twin_computes_the_tasks_model(name, tmp_path):
    spec = prepare(compose([f"task={name}", f"results_dir={tmp_path}", "progress=false"]))
    seed_everything(spec.run.seed, spec.run.threads)
    task = spec.task_cls(spec.task_config, torch.device("cpu"))
    ours, twin = task.build_model(), plain_model(task)
    shapes = [tuple(p.shape) for p in ours.parameters()]
    assert shapes == [tuple(p.shape) for p in twin.parameters()]
    with torch.no_grad():
        for mine, theirs in zip(twin.parameters(), ours.parameters(), strict=True):
            mine.copy_(theirs)
    batch = next(task.batches(torch.Generator().manual_seed(0)))
    expected = task.loss(ours, batch)
    assert torch.allclose(plain_loss(twin, batch), expected, rtol=1e-5, atol=1e-6), name
    with torch.no_grad():  # a twin that ignored its weights would not follow a change of them
        for p in twin.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert not torch.allclose(plain_loss(twin, batch), expected, rtol=1e-5, atol=1e-6), name
