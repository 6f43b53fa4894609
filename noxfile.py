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
STUDIES = (
    "mlp_vanishing",
    "mlp_exploding",
    "mlp_meanfield",
    "rnn_copy",
    "rnn_exploding",
    "resnet_depth",
    "transformer_ln",
)


def _install(session: nox.Session, *extras: str) -> None:
    """Install gradbench itself (a regular, non-editable install: the wheel's configs are tested)."""
    session.install(*CONSTRAINTS, f".[{','.join(extras)}]" if extras else ".")


def _profile(posargs: list[str]) -> str:
    """The --profile given after `--` (e.g. `nox -- --profile full`), quick by default."""
    for i, arg in enumerate(posargs):
        if arg.startswith("--profile="):
            return arg.partition("=")[2]
        if arg == "--profile" and i + 1 < len(posargs):
            return posargs[i + 1]
    return "quick"


@nox.session
def reproduce(session: nox.Session) -> None:
    """Run every study (quick profile unless `-- --profile full`), resuming finished runs; write reports/."""
    _install(session)
    jobs = os.environ.get("GRADBENCH_JOBS", str(os.cpu_count() or 1))
    for study in STUDIES:
        session.run("gradbench", "study", study, "--jobs", jobs, *session.posargs)
    profile = _profile(session.posargs)
    out = "reports" if profile == "quick" else f"reports-{profile}"  # the committed report is the quick one
    session.run("gradbench", "report", "--results", "results", "--out", out, "--profile", profile)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on every core (pytest-xdist; hypothesis profile from HYPOTHESIS_PROFILE, default ci)."""
    _install(session, "test")
    session.env.setdefault("HYPOTHESIS_PROFILE", "ci")
    session.run("pytest", "-m", "not bench", "-n", "auto", "-p", "no:benchmark", *session.posargs)


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
    paths = ("suite", "tasks", "tests", "examples", "noxfile.py", "setup.py")
    session.run("ruff", "check", *paths, *session.posargs)
    session.run("ruff", "format", "--check", *paths)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks (pytest-benchmark, ~10 min): probe overhead per task against a bare PyTorch loop on a
    plain model, a study's engine overhead against its bare training loops, and the 2-worker speed-up;
    the ratios are printed against their targets at the end."""
    _install(session, "test")
    session.run("pytest", "tests/bench", "-m", "bench", "--benchmark-only", *session.posargs)
