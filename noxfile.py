"""nox sessions: `nox` reproduces every study and regenerates reports/; `nox -s tests` tests.

Every session installs with `-c constraints.txt` (exact versions, torch==2.13.0 CPU).
`nox -R` reuses the environments and skips installs.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["reproduce"]
nox.options.reuse_existing_virtualenvs = False

CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session, *extras: str) -> None:
    """Install vanex itself (a regular, non-editable install: the wheel's configs are tested)."""
    session.install(*CONSTRAINTS, f".[{','.join(extras)}]" if extras else ".")


def _profile(posargs: list[str]) -> list[str]:
    """The ``--profile`` option given after ``--`` (e.g. ``nox -- --profile full``), for the report."""
    for i, arg in enumerate(posargs):
        if arg.startswith("--profile="):
            return [arg]
        if arg == "--profile" and i + 1 < len(posargs):
            return posargs[i : i + 2]
    return []


@nox.session
def reproduce(session: nox.Session) -> None:
    """Run every study (the default profile unless `-- --profile NAME`), resuming finished runs; write the report."""
    _install(session)
    jobs = os.environ.get("VANEX_JOBS", str(os.cpu_count() or 1))
    studies = session.run("vanex", "list", "studies", "--names", silent=True)  # conf/study/, and plugins'
    for study in (studies or "").split():
        session.run("vanex", "study", study, "--jobs", jobs, *session.posargs)
    session.run("vanex", "report", "--results", "results", *_profile(session.posargs))  # reports/ (or reports-NAME)
    if not _profile(session.posargs):  # the committed report: the README's claims table follows it
        session.run("python", "-m", "vanex.report.readme", "reports", "README.md")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on every core (pytest-xdist; hypothesis profile from HYPOTHESIS_PROFILE, default ci)."""
    _install(session, "test")
    session.env.setdefault("HYPOTHESIS_PROFILE", "ci")
    session.run("pytest", "-m", "not bench", "-n", "auto", "-p", "no:benchmark", "--durations=15", *session.posargs)


@nox.session(default=False)
def ray(session: nox.Session) -> None:
    """The Ray launcher test (`-m ray`: a smoke study on a local Ray instance, records equal to a serial
    study's). hydra-ray-launcher needs cloudpickle<3, which constraints.txt's joblib refuses: own lock."""
    session.install("-c", "constraints-ray.txt", ".[ray]", "pytest", "hypothesis")
    session.run("pytest", "tests/test_launchers.py", "-m", "ray", "-p", "no:benchmark", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint with ruff."""
    session.install(*CONSTRAINTS, "ruff")
    paths = ("suite", "tasks", "conf", "tests", "examples", "noxfile.py", "setup.py")
    session.run("ruff", "check", *paths, *session.posargs)
    session.run("ruff", "format", "--check", *paths)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks (pytest-benchmark, about an hour on 2 cores): probe overhead per task against a bare
    PyTorch loop on a plain model, two studies' engine overhead against their bare training loops, and
    the speed-up of two workers (--jobs 2, and joblib) over one, and deep_mlp seeds batched against
    looped (no target); the ratios are printed against their targets at the end."""
    _install(session, "test")
    session.run("pytest", "tests/bench", "-m", "bench", "--benchmark-only", *session.posargs)
