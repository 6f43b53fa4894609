"""Where a run came from: vanex source (commit, dirty flag, lock-file hash), versions, CPU
and its pinned code paths, GPU, threads, wall time.

The source is identified from the package's own files, never from the current directory: an
installed wheel carries ``_build_info.json`` (written at build time by ``setup.py``); a source
checkout is asked with ``git -C <package dir>``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
import vanex
from vanex import numerics

PACKAGE_DIR = Path(vanex.__file__).resolve().parent
LOCK_FILE = "constraints.txt"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def file_sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


@functools.cache
def source() -> dict[str, Any]:
    """{git_commit, git_dirty, lock_file_sha256, from}: the vanex source this process runs."""
    baked = PACKAGE_DIR / "_build_info.json"
    if baked.is_file():
        return {**json.loads(baked.read_text()), "from": "build"}
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit,
        "git_dirty": None if dirty is None else bool(dirty),
        "lock_file_sha256": file_sha256(PACKAGE_DIR.parent / LOCK_FILE),
        "from": "checkout",
    }


def provenance(device: torch.device, wall_time_s: float) -> dict[str, Any]:
    return {
        "vanex": vanex.__version__,
        **source(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": numerics.cpuinfo("model name") or platform.processor() or platform.machine(),
        "numerics": numerics.provenance(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "wall_time_s": round(wall_time_s, 3),
    }
