"""Build hook: bake the source's git commit, dirty flag and lock-file hash into the wheel.

Records name the vanex source they came from (``suite/engine/provenance.py``); an installed
wheel has no git checkout beside it, so the build writes ``vanex/_build_info.json``.
Everything else about the package is declared in pyproject.toml.
"""

import hashlib
import json
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _git(*args):
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class BuildPyWithInfo(build_py):
    def run(self):
        super().run()
        if self.dry_run:
            return
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        lock = ROOT / "constraints.txt"
        info = {
            "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": None if dirty is None else bool(dirty),
            "lock_file_sha256": hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.is_file() else None,
        }
        target = Path(self.build_lib) / "vanex" / "_build_info.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(info) + "\n")


setup(cmdclass={"build_py": BuildPyWithInfo})
