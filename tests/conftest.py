"""Shared fixtures and hypothesis profiles (HYPOTHESIS_PROFILE=dev|ci; nox uses ci)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

TINY = ["task.steps=12", "probe.samples=4", "probe.eval_samples=3", "progress=false"]  # a run in well under a second


@pytest.fixture
def results(tmp_path):
    return tmp_path / "results"


def gradbench(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the installed console script in a subprocess, as a user would."""
    script = Path(sys.executable).with_name("gradbench")
    command = [str(script)] if script.exists() else [shutil.which("gradbench") or "gradbench"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
