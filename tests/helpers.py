"""Helpers shared by the test modules."""

from __future__ import annotations

import dataclasses
import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY = ["task.steps=12", "probe.samples=4", "probe.eval_samples=3", "progress=false"]  # a run in well under a second


def vanex(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the installed console script in a subprocess, as a user would."""
    script = Path(sys.executable).with_name("vanex")
    command = [str(script)] if script.exists() else [shutil.which("vanex") or "vanex"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def vanex_here(*args: str) -> subprocess.CompletedProcess:
    """``vanex ARGS`` in this process, as the console script runs it (``vanex.cli.main``), for a command
    refused before anything trains: what it prints and its exit code, without the two seconds a new
    interpreter takes to import torch. Leaves ``sys.argv`` as it was."""
    import contextlib
    import io

    from vanex import cli

    out, err, argv = io.StringIO(), io.StringIO(), list(sys.argv)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse's refusals exit
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            sys.argv[:] = argv
    return subprocess.CompletedProcess(["vanex", *args], code, out.getvalue(), err.getvalue())


@functools.cache
def _composed_task_config(task: str) -> Any:
    from vanex.engine.config import compose, prepare

    return prepare(compose([f"task={task}", "progress=false"])).task_config


def task_config(task: str, **changes: Any) -> Any:
    """A task's typed config composed exactly as the CLI does (defaults from conf/), with ``changes``."""
    return dataclasses.replace(_composed_task_config(task), **changes)


def install_example(name: str, site: Path) -> dict[str, str]:
    """pip-install ``examples/<name>`` into ``site``; the environment in which vanex sees it."""
    import os

    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--target", str(site), str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def small_study(monkeypatch, cells: int = 6, paths: tuple[str, ...] = ()) -> None:
    """Replace every study file by a few cells of the 3-layer MLP (seconds to run), in this process;
    ``paths``: the numeric code paths its cells also run on."""
    from vanex.engine import plan

    small = {
        "task": "deep_mlp",
        "seeds": list(range(cells)),
        "overrides": ["task.depth=3"],
        "grid": [{"mitigations": [[]], **({"numerics": list(paths)} if paths else {})}],
    }
    monkeypatch.setattr(plan, "load_study", lambda name: small)


def default_sigint() -> None:
    """preexec_fn for a child that a test interrupts: a shell's background job (`nox -s tests &`)
    starts with SIGINT ignored, which Python then keeps ignoring; restore the default."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
