"""Record directories: ``<results>/<run_id>/run.json`` plus the tidy ``probes.csv``.

A record is written into a temporary sibling directory and renamed into place, so a
crash or an interrupt never leaves a half-written record behind. ``run_id`` is a hash of the
resolved config, so the same config always maps to the same directory (that is how studies
skip finished runs).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

import suite

FINISHED = ("completed", "diverged")  # statuses a study does not redo; "failed" is retried
NOT_HASHED = ("results_dir", "progress")  # settings that cannot change a run's numbers
LOCK_FILE = "constraints.txt"


def run_id(config: dict[str, Any]) -> str:
    payload = {k: v for k, v in config.items() if k not in NOT_HASHED}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_dir(results_dir: str | Path, rid: str) -> Path:
    return Path(results_dir) / rid


def load_run(path: Path) -> dict[str, Any] | None:
    """The run.json in ``path``, or None if absent or unreadable."""
    try:
        return json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        return None


def is_finished(results_dir: str | Path, rid: str) -> bool:
    run = load_run(record_dir(results_dir, rid))
    return run is not None and run.get("status") in FINISHED


def write_record(results_dir: str | Path, run: dict[str, Any], rows: list[tuple[int, str, str, float]]) -> Path:
    """Atomically (re)place the record directory of ``run``."""
    final = record_dir(results_dir, run["run_id"])
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run['run_id']}.", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a record is meant to be shared
        with open(tmp / "probes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("step", "metric", "layer", "value"))
            writer.writerows(rows)
        (tmp / "run.json").write_text(json.dumps(run, indent=2, sort_keys=False, default=str) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _file_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device, wall_time_s: float) -> dict[str, Any]:
    return {
        "gradbench": suite.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "lock_file_sha256": _file_hash(Path(LOCK_FILE)),
        "cpu": _cpu_model(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "wall_time_s": round(wall_time_s, 3),
    }
