"""Hypothesis profiles (HYPOTHESIS_PROFILE=dev|ci; nox uses ci) and shared fixtures."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import vanex  # noqa: F401  (first: pins the CPU code paths before anything imports torch)
from helpers import vanex as run_vanex
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def results(tmp_path):
    return tmp_path / "results"


@pytest.fixture(scope="session")
def shared(tmp_path_factory, worker_id) -> Callable[[str, Callable[[Path], None]], Path]:
    """``shared(name, make)``: a folder that ``make`` fills once in this test run, whichever pytest-xdist
    worker asks first (the others wait for it): for data that takes long to make and that many tests
    only read. A test must not change it (copy it first)."""
    root = tmp_path_factory.getbasetemp()
    root = root if worker_id == "master" else root.parent  # the run's folder, which every worker shares

    def get(name: str, make: Callable[[Path], None]) -> Path:
        folder, done = root / f"shared-{name}", root / f"shared-{name}.done"
        with open(root / f"shared-{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():  # not made, or a worker failed making it: (re)made here
                if folder.exists():
                    shutil.rmtree(folder)
                folder.mkdir()
                make(folder)
                done.touch()
        return folder

    return get


def _smoke_study(study: str, results: Path) -> None:
    out = run_vanex("study", study, "--profile", "smoke", "--jobs", "2", f"results_dir={results}", "progress=false")
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="session")
def twice(shared) -> Path:
    """Two fresh runs of mlp_meanfield's smoke study (``a`` and ``b``, 205 runs each, ~20 s on 2 cores)
    and the report of ``a`` (``report``), made once for every test that reads them."""

    def make(root: Path) -> None:
        for name in ("a", "b"):
            _smoke_study("mlp_meanfield", root / name)
        out = run_vanex("report", "--results", str(root / "a"), "--out", str(root / "report"), "--profile", "smoke")
        assert out.returncode == 0, out.stderr

    return shared("meanfield-smoke", make)


@pytest.fixture(scope="session")
def smoke_records(shared) -> Callable[[str, Path], Path]:
    """``smoke_records(study, folder)``: ``folder`` made a results folder holding a copy of ``study``'s
    smoke records and manifest, trained once in this test run (for tests that need finished records,
    not the training)."""

    def copy(study: str, folder: Path) -> Path:
        made = shared(f"{study}-smoke", lambda root: _smoke_study(study, root))
        shutil.copytree(made, folder, dirs_exist_ok=True)
        return folder

    return copy
