"""scikit-learn's bundled handwritten digits (1,797 8x8 images), standardised, split once.

The data ship inside scikit-learn, so nothing is downloaded. The split and the
standardisation statistics depend only on ``split_seed`` and ``test_fraction``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vanex.engine.task import SEED_MAX, ProbedModel, Task, within

N_IMAGES = 1797  # scikit-learn's digits


@dataclass
class Digits:
    x_train: torch.Tensor  # (N_train, 64) standardised pixels
    y_train: torch.Tensor  # (N_train,) int64 labels 0..9
    x_test: torch.Tensor  # (N_test, 64)
    y_test: torch.Tensor  # (N_test,)
    n_classes: int = 10

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless shuffled mini-batches; each epoch is a fresh permutation from ``generator``."""
        n = self.x_train.shape[0]
        while True:
            order = torch.randperm(n, generator=generator).to(self.x_train.device)
            for start in range(0, n - batch_size + 1, batch_size):  # drop the ragged last batch
                idx = order[start : start + batch_size]
                yield self.x_train[idx], self.y_train[idx]


@functools.cache
def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The images (1797, 64) as float32 pixel intensities 0..16 and their int64 labels, read once
    per process from the CSV inside scikit-learn (``sklearn/datasets/data/digits.csv.gz``, the
    file ``sklearn.datasets.load_digits`` reads) without importing scikit-learn: its import costs
    each worker ~2 s, the parse ~20 ms per run. A test checks they equal ``load_digits()``'s."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scikit-learn is not installed; it ships the digits images: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    x, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)
    x.flags.writeable = y.flags.writeable = False  # shared by every run of the process
    return x, y


def load_digits(test_fraction: float, split_seed: int, device: torch.device) -> Digits:
    x, y = raw_digits()
    order = np.random.default_rng(split_seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6  # train statistics only
    x = (x - mean) / std

    def to(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return Digits(to(x[train]), to(y[train]), to(x[test]), to(y[test]))


@torch.no_grad()
def classification_metrics(model: torch.nn.Module, digits: Digits) -> dict[str, float]:
    """Full-set loss and accuracy on train and test, in eval mode."""
    was_training = model.training
    model.eval()
    out = {}
    for split, x, y in (("train", digits.x_train, digits.y_train), ("test", digits.x_test, digits.y_test)):
        logits = model(x)  # (N, 10)
        out[f"{split}_loss"] = torch.nn.functional.cross_entropy(logits, y)
        out[f"{split}_accuracy"] = (logits.argmax(dim=1) == y).float().mean()
    model.train(was_training)
    return {k: float(v) for k, v in out.items()}


class DigitsClassification(Task):
    """Shared half of the tasks that classify the digits: data, batches, loss, metrics.
    Subclass configs need ``test_fraction``, ``split_seed`` and ``batch_size``."""

    headline_metrics = ("final_train_loss", "test_accuracy")
    validation_metric = "test_loss"  # the held-out split; learning rates tuned on it make it a validation set

    def __init__(self, config: Any, device: torch.device) -> None:
        super().__init__(config, device)
        self.data: Digits = load_digits(config.test_fraction, config.split_seed, device)

    @classmethod
    def check_config(cls, config: Any) -> None:
        if not 0.0 < config.test_fraction < 1.0:
            raise ValueError(f"task.test_fraction must be in (0, 1), got {config.test_fraction}")
        within("task", split_seed=(config.split_seed, 0, SEED_MAX))
        n_train = N_IMAGES - int(round(config.test_fraction * N_IMAGES))
        if not 1 <= config.batch_size <= n_train:
            raise ValueError(f"task.batch_size={config.batch_size} must be between 1 and the {n_train} training images")

    def eval_cost(self) -> float:
        return N_IMAGES / (3 * self.config.batch_size)  # both splits, forward only

    def chance_loss(self) -> float:
        """Cross-entropy of the class frequencies: the best prediction that ignores the image."""
        p = torch.bincount(self.data.y_train, minlength=self.data.n_classes).double() / len(self.data.y_train)
        return float(-(p[p > 0] * p[p > 0].log()).sum())

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        return self.data.batches(self.config.batch_size, generator)

    def loss(self, model: ProbedModel, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    def evaluate(self, model: ProbedModel) -> dict[str, float]:
        return classification_metrics(model, self.data)
