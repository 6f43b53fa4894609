"""Collects benchmark medians so the probe-overhead ratio is printed at the end of the run."""

from __future__ import annotations

import pytest

MEDIANS: dict[str, float] = {}


@pytest.fixture(scope="session")
def medians() -> dict[str, float]:
    return MEDIANS


def pytest_terminal_summary(terminalreporter):
    if {"bare", "probed"} <= MEDIANS.keys():
        ratio = MEDIANS["probed"] / MEDIANS["bare"]
        terminalreporter.write_line(
            f"deep_mlp training, default probes vs bare PyTorch loop: median ratio {ratio:.3f} (target <= 1.10)"
        )
