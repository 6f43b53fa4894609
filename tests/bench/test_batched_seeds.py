"""Benchmark behind a decision not taken (issue 24, item 5): the seeds of a deep_mlp cell trained as
a batch dimension (weights of shape (seeds, in, out), ``torch.baddbmm``) against the same seeds
trained one after another, in plain PyTorch at the task's default size (20 sigmoid layers of 64
units, 64-example batches, SGD), one thread. vanex does not batch seeds: deep_mlp is under a tenth
of the quick profile's run time, and a batched product rounds differently, so every deep_mlp
record would change (README, "Speed"). Rounds are interleaved; reported, never asserted."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytestmark = pytest.mark.bench

SEEDS, DEPTH, WIDTH, BATCH, CLASSES, STEPS, ROUNDS = 5, 20, 64, 64, 10, 1000, 3


def _data() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2000, WIDTH, generator=g), torch.randint(0, CLASSES, (2000,), generator=g)
    return x, y, [torch.randint(0, 2000, (BATCH,), generator=g) for _ in range(STEPS)]


def looped(x: torch.Tensor, y: torch.Tensor, batches: list[torch.Tensor]) -> None:
    for seed in range(SEEDS):
        torch.manual_seed(seed)
        layers = [m for _ in range(DEPTH) for m in (nn.Linear(WIDTH, WIDTH), nn.Sigmoid())]
        model = nn.Sequential(*layers, nn.Linear(WIDTH, CLASSES))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for i in batches:
            loss = F.cross_entropy(model(x[i]), y[i])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def batched(x: torch.Tensor, y: torch.Tensor, batches: list[torch.Tensor]) -> None:
    torch.manual_seed(0)
    dims = [WIDTH] * (DEPTH + 1) + [CLASSES]
    weights = [(torch.randn(SEEDS, a, b) / a**0.5).requires_grad_() for a, b in zip(dims[:-1], dims[1:], strict=True)]
    biases = [torch.zeros(SEEDS, 1, b, requires_grad=True) for b in dims[1:]]
    optimizer = torch.optim.SGD(weights + biases, lr=0.05)
    for i in batches:
        h = x[i].expand(SEEDS, BATCH, WIDTH)
        for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            h = torch.sigmoid(h) if k < DEPTH else h
        loss = F.cross_entropy(h.reshape(SEEDS * BATCH, CLASSES), y[i].repeat(SEEDS), reduction="sum") / BATCH
        optimizer.zero_grad(set_to_none=True)  # the sum over seeds: each seed's gradient is its own mean loss's
        loss.backward()
        optimizer.step()


def test_seeds_as_a_batch_dimension(benchmark, overheads):
    torch.set_num_threads(1)
    data = _data()
    times: list[float] = []

    def looped_round():  # untimed by pytest-benchmark: the reference of this round
        start = time.perf_counter()
        looped(*data)
        times.append(time.perf_counter() - start)

    benchmark.group = "deep_mlp: 5 seeds batched against looped (plain PyTorch)"
    benchmark.pedantic(batched, args=data, setup=looped_round, rounds=ROUNDS, warmup_rounds=0)
    stats = benchmark.stats.stats
    overheads["batched seeds"] = {
        "looped / batched (speed-up)": (sorted(times)[len(times) // 2] / stats.median, min(times) / stats.min)
    }
