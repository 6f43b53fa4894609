"""Collects the benchmarks' ratios and prints them against their targets at the end of the run."""

from __future__ import annotations

import pytest

# name -> {ratio: (median over rounds, fastest round)}; the fastest round is less sensitive to a noisy machine
RATIOS: dict[str, dict[str, tuple[float, float]]] = {}
TARGETS = {  # issue 11: what each ratio should reach
    "probed / plain": ("<=", 1.05),
    "study (1 worker) / bare loops": ("<=", 1.15),
    "speed-up, 2 workers vs 1": (">=", 1.8),
    "speed-up, joblib (2) vs 1 worker": (">=", 1.8),
}


@pytest.fixture(scope="session")
def overheads() -> dict[str, dict[str, tuple[float, float]]]:
    return RATIOS


def pytest_terminal_summary(terminalreporter):
    if not RATIOS:
        return
    terminalreporter.section("vanex ratios (median over interleaved rounds; fastest round in brackets)")
    for name, ratios in RATIOS.items():
        for ratio, (median, fastest) in ratios.items():
            target = TARGETS.get(ratio)
            verdict = ""
            if target:
                sign, bound = target
                met = median <= bound if sign == "<=" else median >= bound
                verdict = f"   target {sign} {bound:.2f}: {'met' if met else 'NOT met'}"
            terminalreporter.write_line(f"{name:20} {ratio:34} {median:6.3f} [{fastest:6.3f}]{verdict}")
