"""Collects benchmark medians so the probe-overhead ratio is printed at the end of the run."""

from __future__ import annotations

import pytest

MEDIANS: dict[str, float] = {}  # variant -> median seconds
MINIMA: dict[str, float] = {}  # variant -> fastest round: less sensitive to a noisy machine


@pytest.fixture(scope="session")
def timings() -> tuple[dict[str, float], dict[str, float]]:
    return MEDIANS, MINIMA


def pytest_terminal_summary(terminalreporter):
    if {"bare", "probed"} <= MEDIANS.keys():
        median = MEDIANS["probed"] / MEDIANS["bare"]
        fastest = MINIMA["probed"] / MINIMA["bare"]
        terminalreporter.write_line(
            f"deep_mlp training, default probes vs bare PyTorch loop: median ratio {median:.3f}, "
            f"min ratio {fastest:.3f} (target <= 1.10)"
        )
