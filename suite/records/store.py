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
import ctypes
import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from vanex.errors import UserError
from vanex.records import code

SCHEMA_VERSION = 2
MANIFEST_VERSION = 1  # of a study manifest (_studies/<study>-<profile>.json)
PROBE_HEADER = ("step", "metric", "layer", "value")  # probes.csv's first row
FINISHED = ("completed", "diverged")  # statuses a study does not redo; "failed" is retried
IDENTITY_PREFIXES = ("task.", "mitigation.", "optim.")  # setting groups that shape training
IDENTITY_KEYS = ("task", "mitigations", "seed", "device", "threads", "numerics")
OBSERVING = ("probe.", "diagnosis.", "profile.")  # setting groups that only observe: study-level, not per cell
STUDIES_DIR = "_studies"
MANIFEST_KEYS = {"study", "profile", "task", "swept", "diagnosis", "cells"}  # <results>/_studies/<study>-<profile>.json


def identity_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that can change a run's numbers."""
    return {k: v for k, v in settings.items() if k in IDENTITY_KEYS or k.startswith(IDENTITY_PREFIXES)}


def run_id(settings: dict[str, Any]) -> str:
    payload = json.dumps(identity_settings(settings), sort_keys=True)  # "mitigations" stays an ordered list
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def set_label(mitigations: list[str] | tuple[str, ...]) -> str:
    """How a mitigation set is named everywhere (tables, figures, progress lines): ``relu+he_init``,
    or ``baseline`` for none."""
    return "+".join(mitigations) or "baseline"


def setting_label(settings: dict[str, Any], keys: list[str]) -> str:
    """'key=value, ...' of ``keys`` in ``settings``, leaving out those that do not apply (None)."""
    return ", ".join(f"{k}={settings[k]}" for k in keys if settings.get(k) is not None)


def record_dir(results_dir: str | Path, rid: str) -> Path:
    return Path(results_dir) / rid


class OldRecord(Exception):
    """A run.json of another schema than this vanex writes (an older one, or a newer: ``NewerRecord``)."""


class NewerRecord(OldRecord):
    """A run.json made by a newer vanex: read as missing, and never overwritten by this one."""


# Strict JSON: a non-finite float is written as one of these strings (JSON has no NaN or Infinity)
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
DECODED_SECTIONS = ("summary", "diagnosis", "task_info")  # where such strings are read back as floats


def _encode(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else "Infinity" if obj > 0 else "-Infinity"
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, str) and obj in NONFINITE:
        return NONFINITE[obj]
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Standard JSON (no NaN/Infinity tokens: JavaScript's JSON.parse and jq read it as written)."""
    return json.dumps(_encode(obj), indent=2, allow_nan=False) + "\n"


def _inside(path: Path) -> bool:
    """False for a path that is, or goes through, a symbolic link: reads never leave the results folder."""
    return not any(p.is_symlink() for p in (path, path / "run.json", path / "probes.csv"))


_WARNED: set[str] = set()  # what this process has said: a report reads each study twice (its pages, its claims)


def warn(text: str) -> None:
    """One warning line on stderr, said once per process however often the same record is read."""
    if text not in _WARNED:
        _WARNED.add(text)
        print(f"vanex: warning: {text}", file=sys.stderr)


def load_run(path: Path) -> dict[str, Any] | None:
    """The run.json in ``path``, or None if absent, unreadable, malformed or behind a symbolic link;
    ``OldRecord`` if of an older schema."""
    if not _inside(path):
        warn(f"{path} is a symbolic link; not read")
        return None
    try:
        run = json.loads((path / "run.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep to be a record
        warn(f"{path / 'run.json'} unreadable ({type(exc).__name__}); treated as missing")
        return None
    if not isinstance(run, dict):
        warn(f"{path / 'run.json'} is not a record; treated as missing")
        return None
    if run.get("schema_version") != SCHEMA_VERSION:
        version = run.get("schema_version", 1)
        newer = isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION
        problem = "made by a newer vanex" if newer else "of an older schema"
        raise (NewerRecord if newer else OldRecord)(
            f"{path / 'run.json'} is {problem} ({version}; this vanex reads {SCHEMA_VERSION})"
        )
    return {k: _decode(v) if k in DECODED_SECTIONS else v for k, v in run.items()}


KEEP_STALE = "VANEX_KEEP_STALE"  # set (by `vanex study --keep-stale`): a record made by other code counts as finished


def is_finished(results_dir: str | Path, rid: str) -> bool:
    """Whether ``rid`` has a finished record made by the code installed now (``vanex.records.code``;
    with ``VANEX_KEEP_STALE=1``, by any code)."""
    try:
        run = load_run(record_dir(results_dir, rid))
    except NewerRecord as exc:  # training it again would replace a newer vanex's result
        raise UserError(f"{exc}: upgrade vanex, or move the record to train the cell again") from None
    except OldRecord:
        return False  # rerun: the new record replaces it
    if run is None or run.get("run_id") != rid or run.get("status") not in FINISHED:
        return False  # a record of another run (copied, renamed) is replaced by this cell's own
    if not _probes_header(record_dir(results_dir, rid)):
        return False  # a record whose probes.csv is gone or damaged is trained again, not skipped forever
    return os.environ.get(KEEP_STALE) == "1" or code.stale(run) is None


def _probes_header(path: Path) -> bool:
    """Whether ``path``'s probes.csv starts with its header row and ends with a whole row (a cheap check)."""
    try:
        with open(path / "probes.csv", newline="") as f:
            whole = next(csv.reader(f), None) == list(PROBE_HEADER)
        with open(path / "probes.csv", "rb") as f:  # and ends as the writer ends it, not cut mid-row
            f.seek(-1, os.SEEK_END)
            return whole and f.read(1) == b"\n"
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


_HOST = socket.gethostname().replace(".", "-")
_TEMP_TAG = f"{_HOST}.{os.getpid()}"  # temporary folders name their owner: .<name>.<host>.<pid>.[old.]<random>


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def atomic_dir(final: Path, fill: Any) -> Path:
    """Fill a temporary sibling of ``final`` with ``fill(tmp)``, then put it in place in one step.

    An existing ``final`` is exchanged with the new folder atomically and only then removed, so
    at every instant ``final`` is whole, old or new; concurrent writers of one record each leave
    a whole record (the last one wins). Where the exchange is unsupported, the old folder is moved
    aside first and removed after the new one is in place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_symlink():  # not a folder vanex wrote (readers refuse it): replace the link, never its target
        print(f"vanex: warning: {final} is a symbolic link; replaced by the folder written now", file=sys.stderr)
        final.unlink()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_TEMP_TAG}.", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; records and reports are meant to be shared
        fill(tmp)
        for _ in range(100):  # another writer may put a folder in place between our two attempts
            try:
                os.rename(tmp, final)  # no folder there yet (or an empty one)
                return final
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            if _exchange(tmp, final):
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
                return final
            aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_TEMP_TAG}.old.", dir=final.parent))
            try:
                os.rename(final, aside / final.name)
            except FileNotFoundError:
                continue
            os.rename(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
            return final
        raise OSError(errno.EBUSY, "could not put the folder in place", str(final))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale(folder: str | Path, name: str = "") -> int:
    """Remove temporary folders left in ``folder`` by vanex processes of this host that no
    longer run (killed in the middle of a write), only those of ``name``'s writes if it is given;
    returns how many were removed."""
    removed = 0
    prefix = f".{name}." if name else "."
    try:
        entries = [p for p in Path(folder).iterdir() if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return 0
    for path in entries:
        parts = path.name.split(".")  # "", name, host, pid, ["old",] random
        if len(parts) < 5:
            continue
        host, pid = (parts[-4], parts[-3]) if parts[-2] == "old" else (parts[-3], parts[-2])
        if host != _HOST or not pid.isdigit() or pid_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def write_record(results_dir: str | Path, run: dict[str, Any], rows: list[tuple[int, str, str, float]]) -> Path:
    """Atomically (re)place the record directory of ``run``."""

    def fill(tmp: Path) -> None:
        with open(tmp / "probes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(PROBE_HEADER)
            writer.writerows(rows)
        (tmp / "run.json").write_text(dumps(run))

    return atomic_dir(record_dir(results_dir, run["run_id"]), fill)


def read_probes(path: Path) -> list[tuple[int, str, str, float]]:
    """The rows of a record's probes.csv (``nan``/``inf`` are values, not missing data); ValueError
    if malformed."""
    if not _inside(path):
        raise ValueError("a symbolic link; not read")
    try:
        text = (path / "probes.csv").read_text()
        reader = csv.reader(io.StringIO(text, newline=""))
        if next(reader, None) != list(PROBE_HEADER):  # an empty or truncated file is not "no probes"
            raise ValueError("probes.csv lacks its header row (empty or truncated)")
        if not text.endswith("\n"):  # the writer ends every row with a newline: this one was cut mid-row
            raise ValueError("probes.csv ends mid-row (truncated)")
        return [(int(step), metric, layer, float(value)) for step, metric, layer, value in reader]
    except csv.Error as exc:
        raise ValueError(str(exc)) from None


def make_manifest(
    study: str, profile: str, task: str, description: str, runs: list[tuple[str, list[str], int, dict[str, Any]]]
) -> dict[str, Any]:
    """What the reporter needs to show a study without composing any config: every cell (run_id,
    mitigations, seed, settings that shape training), the settings that vary across cells, and the
    diagnosis thresholds; ``runs`` holds (run_id, mitigations, seed, flat settings) per cell."""
    cells = [
        {
            "run_id": rid,
            "mitigations": list(m),
            "seed": seed,
            "settings": {k: v for k, v in s.items() if not k.startswith(OBSERVING)},
        }
        for rid, m, seed, s in runs
    ]
    first = runs[0][3] if runs else {}
    return {
        "manifest_version": MANIFEST_VERSION,
        "study": study,
        "profile": profile,
        "task": task,
        "description": description,
        "swept": varying_settings([c["settings"] for c in cells]),
        "diagnosis": {k.partition(".")[2]: v for k, v in first.items() if k.startswith("diagnosis.")},
        "cells": cells,
    }


def manifest_path(results_dir: str | Path, study: str, profile: str) -> Path:
    return Path(results_dir) / STUDIES_DIR / f"{study}-{profile}.json"


def write_manifest(results_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = manifest_path(results_dir, manifest["study"], manifest["profile"])
    if path.parent.is_symlink() or path.is_symlink():
        raise UserError(f"{path.parent} is a symbolic link; vanex writes manifests only inside the results folder")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{path.parent} is not a folder; vanex keeps its study manifests there: move it away")
    try:
        old = json.loads(path.read_text()).get("manifest_version") if path.is_file() else None
    except (OSError, ValueError, AttributeError, RecursionError):
        old = None  # unreadable or not a mapping: replaced by a whole one
    if isinstance(old, int) and not isinstance(old, bool) and old > MANIFEST_VERSION:
        raise UserError(
            f"{path} was written by a newer vanex (manifest version {old}; this one writes {MANIFEST_VERSION}); "
            "it is left as it is: upgrade vanex to run this study here"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{_TEMP_TAG}.tmp")
    try:
        tmp.write_text(dumps(manifest))
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: the old manifest stays whole, the partial one goes
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write the study manifest {path} ({exc.strerror or exc}); it is unchanged") from None
    return path


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # study and profile names, as registries and config files name them
RUN_ID = re.compile(r"^[0-9a-f]{16}$")  # run_id(): 16 hex digits, so a record's folder never leaves results/


def manifest_problem(manifest: Any, path: Path) -> str | None:
    """What makes ``manifest`` (read from ``path``) unsafe or unusable, or None: every name and id it
    holds becomes a path, so each is checked against its format before anything is read or written."""
    if not isinstance(manifest, dict) or not MANIFEST_KEYS <= set(manifest):
        return "not a study manifest"
    version = manifest.get("manifest_version", MANIFEST_VERSION)
    if version != MANIFEST_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION
        why = "a newer vanex wrote it: upgrade vanex to read it" if newer else "not a version vanex writes"
        return f"it is manifest version {version!r}, this vanex reads {MANIFEST_VERSION} ({why})"
    study, profile, cells = manifest["study"], manifest["profile"], manifest["cells"]
    if not (isinstance(study, str) and _NAME.match(study) and isinstance(profile, str) and _NAME.match(profile)):
        return f"study {study!r} or profile {profile!r} is not a snake_case name"
    if path.name != f"{study}-{profile}.json":
        return f"it names study {study!r}, profile {profile!r}, not its own file name"
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        return "'cells' is not a list of cells"
    if not cells:
        return "it lists no cells"
    seen: set[str] = set()
    for cell in cells:
        rid = cell.get("run_id")
        if not (isinstance(rid, str) and RUN_ID.match(rid)):
            return f"run_id {rid!r} is not 16 hex digits"
        if rid in seen:
            return f"cell {rid} is listed twice"
        seen.add(rid)
        mitigations, seed = cell.get("mitigations"), cell.get("seed")
        if not (isinstance(mitigations, list) and all(isinstance(m, str) for m in mitigations)):
            return f"cell {rid}: mitigations must be a list of names"
        if not isinstance(cell.get("settings"), dict) or not (isinstance(seed, int) and not isinstance(seed, bool)):
            return f"cell {rid} lacks its settings or an integer seed"
    if not (isinstance(manifest["swept"], list) and all(isinstance(k, str) for k in manifest["swept"])):
        return "'swept' is not a list of setting names"
    if not isinstance(manifest["task"], str):
        return "'task' is not a task name"
    return _thresholds_problem(manifest["diagnosis"])


def _thresholds_problem(diagnosis: Any) -> str | None:
    """What is wrong with a manifest's diagnosis thresholds (numbers the diagnosis accepts), or None."""
    from vanex.conf import diagnosis_defaults
    from vanex.science.diagnosis import DiagnosisConfig

    if not isinstance(diagnosis, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in diagnosis.values()
    ):
        return "'diagnosis' must map thresholds to finite numbers"
    try:
        DiagnosisConfig(**{**diagnosis_defaults(), **diagnosis})
    except (TypeError, ValueError) as exc:
        return f"diagnosis thresholds: {exc}"
    return None


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``, or None (with one warning line) if it is unreadable, behind a
    symbolic link, or fails ``manifest_problem``."""
    if path.is_symlink() or path.parent.is_symlink():
        warn(f"skipping manifest {path}: a symbolic link (reads never leave the results folder)")
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        warn(f"skipping unreadable manifest {path}: {type(exc).__name__}: {str(exc)[:200]}")
        return None
    if (problem := manifest_problem(manifest, path)) is not None:
        warn(f"skipping manifest {path}: {problem}")
        return None
    return manifest


def load_manifests(results_dir: str | Path, profile: str) -> list[dict[str, Any]]:
    """Every valid study manifest of ``profile`` in ``results_dir``, by study name."""
    paths = sorted((Path(results_dir) / STUDIES_DIR).glob(f"*-{profile}.json"))
    return [m for m in map(read_manifest, paths) if m is not None and m["profile"] == profile]


def require_manifests(results_dir: str | Path, profile: str) -> list[dict[str, Any]]:
    """``load_manifests``, refused in one line naming the profiles that do have manifests when it is empty."""
    manifests = load_manifests(results_dir, profile)
    if not manifests:
        every = map(read_manifest, (Path(results_dir) / STUDIES_DIR).glob("*.json"))
        found = sorted({m["profile"] for m in every if m is not None})
        have = f"it has manifests for: {', '.join(found)}" if found else "it has none"
        raise UserError(
            f"no study manifests for profile '{profile}' in '{results_dir}/{STUDIES_DIR}' ({have}); "
            f"run `vanex study NAME --profile {profile}` first"
        )
    return manifests


def varying_settings(settings: list[dict[str, Any]]) -> list[str]:
    """The swept settings: keys that take several values among cells with the same mitigations
    (a knob that only follows the mitigation set, e.g. ``task.activation`` under ``relu``, is not; a
    mitigation's own parameter swept by a study, e.g. ``mitigation.tbptt.window``, is)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in settings:
        groups.setdefault(repr(s.get("mitigations")), []).append(s)
    keys = sorted({k for s in settings for k in s if k not in ("seed", "mitigations")})
    # a key only some cells have (optim.momentum when SGD and Adam cells mix) varies only where it is present
    return [k for k in keys if any(len({repr(s[k]) for s in group if k in s}) > 1 for group in groups.values())]
