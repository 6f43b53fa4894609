"""Record directories (``<results>/<run_id>/run.json`` + tidy ``probes.csv``) and study manifests.

The record is the contract between training and reporting: ``run.json`` carries
``schema_version``, every setting as a flat dotted key, what the task declares (headline
metrics, flow metric, chance loss, layers with block index and kind), provenance, summary and
diagnosis, so a reader never composes a config or imports a task. ``run_id`` hashes the
training identity only (task settings, the ordered mitigations and their parameters, the
optimiser, seed, device, threads, numerics); what only observes (probes, diagnosis thresholds,
profile name, where results go) is not hashed, so changing it orphans no record. A record is
written into a temporary sibling directory and renamed into place. This module imports no
torch and no Hydra: the reporter relies on it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
FINISHED = ("completed", "diverged")  # statuses a study does not redo; "failed" is retried
IDENTITY_PREFIXES = ("task.", "mitigation.", "optim.")  # setting groups that shape training
IDENTITY_KEYS = ("task", "mitigations", "seed", "device", "threads", "numerics")
STUDIES_DIR = "_studies"
MANIFEST_KEYS = {"study", "profile", "task", "swept", "diagnosis", "cells"}  # <results>/_studies/<study>-<profile>.json


def identity_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that can change a run's numbers."""
    return {k: v for k, v in settings.items() if k in IDENTITY_KEYS or k.startswith(IDENTITY_PREFIXES)}


def run_id(settings: dict[str, Any]) -> str:
    payload = json.dumps(identity_settings(settings), sort_keys=True)  # "mitigations" stays an ordered list
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def record_dir(results_dir: str | Path, rid: str) -> Path:
    return Path(results_dir) / rid


class OldRecord(Exception):
    """A run.json of an earlier schema."""


def load_run(path: Path) -> dict[str, Any] | None:
    """The run.json in ``path``, or None if absent or unreadable; ``OldRecord`` if of an older schema."""
    try:
        run = json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(run, dict):
        return None
    if run.get("schema_version") != SCHEMA_VERSION:
        raise OldRecord(f"{path / 'run.json'}: record schema {run.get('schema_version', 1)}, expected {SCHEMA_VERSION}")
    return run


def is_finished(results_dir: str | Path, rid: str) -> bool:
    try:
        run = load_run(record_dir(results_dir, rid))
    except OldRecord:
        return False  # rerun: the new record replaces it
    return run is not None and run.get("status") in FINISHED


def _atomic_dir(final: Path, fill: Any) -> Path:
    """Fill a temporary sibling of ``final`` with ``fill(tmp)``, then swap it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; records and reports are meant to be shared
        fill(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_record(results_dir: str | Path, run: dict[str, Any], rows: list[tuple[int, str, str, float]]) -> Path:
    """Atomically (re)place the record directory of ``run``."""

    def fill(tmp: Path) -> None:
        with open(tmp / "probes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("step", "metric", "layer", "value"))
            writer.writerows(rows)
        (tmp / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")

    return _atomic_dir(record_dir(results_dir, run["run_id"]), fill)


def read_probes(path: Path) -> list[tuple[int, str, str, float]]:
    """The rows of a record's probes.csv (``nan``/``inf`` are values, not missing data)."""
    with open(path / "probes.csv", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        return [(int(step), metric, layer, float(value)) for step, metric, layer, value in reader]


def manifest_path(results_dir: str | Path, study: str, profile: str) -> Path:
    return Path(results_dir) / STUDIES_DIR / f"{study}-{profile}.json"


def write_manifest(results_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = manifest_path(results_dir, manifest["study"], manifest["profile"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_manifests(results_dir: str | Path, profile: str) -> list[dict[str, Any]]:
    """Every study manifest of ``profile`` in ``results_dir``, by study name."""
    out = []
    for path in sorted((Path(results_dir) / STUDIES_DIR).glob(f"*-{profile}.json")):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"gradbench: warning: skipping unreadable manifest {path}: {exc}", file=sys.stderr)
            continue
        if not isinstance(manifest, dict) or not MANIFEST_KEYS <= set(manifest):
            print(f"gradbench: warning: skipping {path}: not a study manifest", file=sys.stderr)
        elif manifest["profile"] == profile:
            out.append(manifest)
    return out


def varying_settings(settings: list[dict[str, Any]]) -> list[str]:
    """The swept settings: keys that take several values among cells with the same mitigations
    (a knob that only follows the mitigation set, e.g. ``task.activation`` under ``relu``, is not)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in settings:
        groups.setdefault(repr(s.get("mitigations")), []).append(s)
    keys = sorted(
        {k for s in settings for k in s if k not in ("seed", "mitigations") and not k.startswith("mitigation.")}
    )
    return [k for k in keys if any(len({repr(s.get(k)) for s in group}) > 1 for group in groups.values())]
