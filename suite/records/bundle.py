"""The records a report ships (``records.tar.gz`` in the report folder): every reported record's
``run.json`` and the probe rows that the diagnosis and the claims read, with the study manifests,
so that ``vanex claims --results reports`` (and ``vanex report --results reports``) judge the
committed report in a fresh clone without training.

The archive is deterministic (sorted members, no times, owners or modes of this machine), so a
report written twice from the same records is byte-identical. It is read by unpacking it into a
temporary results folder: the one reader of records (``vanex.records.reader``) reads it as it reads
any other, and members that would land outside that folder are refused.
"""

from __future__ import annotations

import csv
import gzip
import io
import tarfile
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vanex.errors import UserError
from vanex.records.store import STUDIES_DIR, manifest_path, record_dir

BUNDLE = "records.tar.gz"
# what vanex.science.diagnosis.diagnose reads: whole series, a series at step 0 only, one at its last step only
DIAGNOSIS_SERIES = frozenset({"grad_ratio", "grad_norm_global", "train_loss", "nonfinite"})
DIAGNOSIS_STEP0 = frozenset({"grad_preact"})
DIAGNOSIS_LAST = frozenset({"act_dead"})
MAX_UNPACKED = 2 * 1024**3  # bytes: a bundle that unpacks to more is refused (a report's is a few MB)


def write_bundle(
    out_file: Path,
    results: Path,
    manifests: list[dict[str, Any]],
    reads: Callable[[dict], dict[str, set[str]]],
    read: Collection[str],
) -> int:
    """Write ``out_file`` from ``manifests`` and the records in ``results`` that the report ``read`` (run
    ids: never one the reader refused, e.g. behind a symbolic link, malformed or unreadable), keeping the
    probe rows that the diagnosis reads and, of each cell, those that ``reads(manifest)`` says a claim
    reads of it (run_id -> metrics); returns the number of records packed."""
    members: dict[str, bytes] = {}
    keep: dict[str, set[str]] = {}  # run_id -> the series kept: a run in two studies keeps what each reads
    for m in manifests:
        manifest = manifest_path(results, m["study"], m["profile"])
        members[f"{STUDIES_DIR}/{manifest.name}"] = manifest.read_bytes()
        claimed = reads(m)
        for cell in m["cells"]:
            if cell["run_id"] in read:  # else missing in the report too
                keep.setdefault(cell["run_id"], set(DIAGNOSIS_SERIES)).update(claimed.get(cell["run_id"], set()))
    for rid, series in keep.items():
        path = record_dir(results, rid)
        members[f"{rid}/run.json"] = (path / "run.json").read_bytes()
        members[f"{rid}/probes.csv"] = _kept_rows(path / "probes.csv", series)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(members[name]))
    out_file.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9, mtime=0))
    return sum(name.endswith("/run.json") for name in members)


def _kept_rows(path: Path, keep: Collection[str]) -> bytes:
    """probes.csv with only the rows of ``keep``, the step-0 rows of ``DIAGNOSIS_STEP0`` and the
    last step's rows of ``DIAGNOSIS_LAST`` (unless ``keep`` has them whole), each line byte for byte."""
    kept: list[tuple[str, str, str]] = []  # (metric, step, line)
    with open(path, newline="") as f:
        lines = iter(f)
        header = next(lines, "")
        for line in lines:
            step, metric = next(csv.reader([line]))[:2]
            if metric in keep or metric in DIAGNOSIS_LAST or (metric in DIAGNOSIS_STEP0 and step == "0"):
                kept.append((metric, step, line))
    last: dict[str, int] = {}  # the last step of each DIAGNOSIS_LAST series not kept whole
    for metric, step, _ in kept:
        if metric in DIAGNOSIS_LAST and metric not in keep:
            last[metric] = max(last.get(metric, -1), int(step))
    return (header + "".join(line for m, s, line in kept if m not in last or int(s) == last[m])).encode()


def is_bundled_report(folder: str | Path) -> bool:
    """A report folder that ships its records (and is not itself a results folder)."""
    return (Path(folder) / BUNDLE).is_file() and not (Path(folder) / STUDIES_DIR).is_dir()


@contextmanager
def records_of(folder: str) -> Iterator[str]:
    """``folder`` itself, or for a report folder that ships its records, a temporary results folder
    holding them (removed on exit). Those records hold only the probe series that the claims and the
    diagnosis read: enough to judge the claims, not to redraw the report's figures."""
    if not is_bundled_report(folder):
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="vanex-records-") as tmp:
        _unpack(Path(folder) / BUNDLE, Path(tmp))
        yield tmp


def _unpack(bundle: Path, into: Path) -> None:
    try:
        with tarfile.open(bundle, mode="r:gz") as tar:
            members = tar.getmembers()
            if sum(m.size for m in members) > MAX_UNPACKED:
                raise UserError(f"{bundle} unpacks to more than {MAX_UNPACKED // 1024**3} GiB; not a report's records")
            bad = [m.name for m in members if not m.isfile() or not _plain(m.name)]
            if bad:
                raise UserError(f"{bundle} holds {bad[0]!r}, which is not a record file; not read")
            tar.extractall(into, members=members, filter="data")
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise UserError(f"cannot read the records shipped in {bundle} ({exc}); rewrite the report") from None


def _plain(name: str) -> bool:
    """``<run_id>/run.json``, ``<run_id>/probes.csv`` or ``_studies/<name>.json``: nothing else unpacks."""
    parts = name.split("/")
    if len(parts) != 2 or parts[0] in ("", ".", "..") or parts[1] in ("", ".", ".."):
        return False
    if parts[0] == STUDIES_DIR:
        return parts[1].endswith(".json")
    return parts[1] in ("run.json", "probes.csv")
