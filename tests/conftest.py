"""Hypothesis profiles (HYPOTHESIS_PROFILE=dev|ci; nox uses ci) and shared fixtures."""

from __future__ import annotations

import os

import pytest
import vanex  # noqa: F401  (first: pins the CPU code paths before anything imports torch)
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def results(tmp_path):
    return tmp_path / "results"
