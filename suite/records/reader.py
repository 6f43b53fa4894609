"""The one torch-free reader of records: a study manifest and its records -> ``StudyData``, the
tables that the report, its sections, the claims and ``vanex compare`` all read.

Cells without a record are listed as ``missing``, never invented; a record of an older schema is
counted and shown as missing; a malformed one is named in one warning line and shown as missing.
The diagnosis is computed again from the probe series with the manifest's thresholds, so new
rules apply to old records, and ``loss_vs_chance`` is computed here once for every task. Only the
probe metrics a caller asks for are kept (with the task's flow metric): what the registered report
sections and claims declare they read.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from vanex.conf import diagnosis_defaults
from vanex.records import code
from vanex.records.store import (
    RUN_ID,
    OldRecord,
    load_run,
    make_manifest,
    read_probes,
    record_dir,
    set_label,
    setting_label,
    warn,
)
from vanex.science.diagnosis import DiagnosisConfig, diagnose
from vanex.science.stats import loss_vs_chance

PROBE_COLUMNS = ["step", "metric", "layer", "value"]
FINISHED = ("completed", "diverged")


@dataclass
class StudyData:
    """One study's manifest with what its records hold.

    ``cells``: one row per cell (study, task, mitigations, setting, each swept setting, seed, run_id,
    status, the diagnosis, every numeric summary value, loss_vs_chance, git_commit, stale: why the record
    was made by other code than the installed one, else None);
    ``probes``: the kept probe rows (step, metric, layer, value, mitigations, setting, seed, run_id);
    ``records``: run_id -> run.json of every readable record; ``old``: records of an older schema;
    ``cell_claims``: run_id -> the claims that read the cell (filled in by the report);
    ``unreadable``: records present but malformed or unreadable, shown as missing."""

    manifest: dict[str, Any]
    cells: pd.DataFrame
    probes: pd.DataFrame
    records: dict[str, dict]
    old: int
    cell_claims: dict[str, list[str]] = field(default_factory=dict)
    unreadable: int = 0  # records that exist but could not be read (each named in a warning)

    @property
    def name(self) -> str:
        return self.manifest["study"]

    @property
    def swept(self) -> list[str]:
        return self.manifest["swept"]

    @cached_property
    def thresholds(self) -> DiagnosisConfig:
        return thresholds(self.manifest)

    @property
    def task_info(self) -> dict[str, Any]:
        """What the task declared (the first record's; every record of a study is of one task)."""
        first = next(iter(self.records.values()), None)
        return first["task_info"] if first else {}

    @property
    def headline(self) -> list[str]:
        return list(self.task_info.get("headline_metrics", ["final_train_loss"]))

    @property
    def flow_metric(self) -> str:
        return self.task_info.get("flow_metric", "grad_norm")

    @property
    def validation_metric(self) -> str:
        return self.task_info.get("validation_metric", "train_loss")

    def finished(self) -> pd.DataFrame:
        """The cells whose run completed or diverged."""
        return self.cells[self.cells["status"].isin(FINISHED)]


def thresholds(manifest: dict[str, Any]) -> DiagnosisConfig:
    """The manifest's diagnosis thresholds, with today's defaults for any it predates."""
    return DiagnosisConfig(**{**diagnosis_defaults(), **manifest["diagnosis"]})


def read_study(manifest: dict[str, Any], results: Path, metrics: Collection[str] = ()) -> StudyData:
    """``manifest``'s cells with their records in ``results``, keeping the probe rows of ``metrics``."""
    cfg = thresholds(manifest)
    swept = manifest["swept"]
    rows, probes, records, old, unreadable = [], [], {}, 0, 0
    for cell in manifest["cells"]:
        row = {
            "study": manifest["study"],
            "task": manifest["task"],
            "mitigations": set_label(cell["mitigations"]),
            "setting": setting_label(cell["settings"], swept),
            **{k: cell["settings"].get(k) for k in swept},
            "seed": cell["seed"],
            "run_id": cell["run_id"],
        }
        rows.append(row)
        path = record_dir(results, cell["run_id"])
        try:
            run = load_run(path)
        except OldRecord as exc:
            warn(f"{exc}; shown as missing")
            run, old = None, old + 1
        if run is not None and run.get("run_id") != cell["run_id"]:
            warn(f"record {path} says it is run {run.get('run_id')!r}, not {cell['run_id']!r}; shown as missing")
            run = None  # counted once, below, as a record folder that holds no record of its cell
        if run is None:
            row["status"] = "missing"
            if path.exists():  # a record folder whose run.json is gone, damaged or not a record
                unreadable += 1
            continue
        try:
            summary, frame = _read_record(run, path, cfg, metrics)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            warn(f"record {path} is malformed ({type(exc).__name__}: {exc}); shown as missing")
            row["status"], unreadable = "missing", unreadable + 1
            continue
        records[cell["run_id"]] = run
        row.update(summary, git_commit=run["provenance"].get("git_commit"), stale=code.stale(run))
        probes.append(frame.assign(**{k: row[k] for k in ("mitigations", "setting", "seed", "run_id")}))
    probe_frame = pd.concat(probes, ignore_index=True) if probes else pd.DataFrame(columns=[*PROBE_COLUMNS, "run_id"])
    # a record with no probe rows must not turn the study's values into objects
    probe_frame = probe_frame.astype({"step": "int64", "value": "float64"})
    if stale := [row["stale"] for row in rows if row.get("stale")]:
        warn(
            f"study {manifest['study']}: {len(stale)} record(s) made by other code than the installed one "
            f"({stale[0]}); marked stale, `vanex study {manifest['study']}` reruns them"
        )
    return StudyData(manifest, pd.DataFrame(rows), probe_frame, records, old, unreadable=unreadable)


def _read_record(
    run: dict[str, Any], path: Path, thresholds: DiagnosisConfig, metrics: Collection[str]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the row's values: status, diagnosis, numeric summary, loss_vs_chance; the kept probe rows).
    Raises on a record that lacks what the report reads, so it is shown as missing, not half-used."""
    series = read_probes(path)
    status, info, provenance = run["status"], run["task_info"], run["provenance"]
    if status not in ("completed", "diverged", "failed"):
        raise ValueError(f"status {status!r} is not completed, diverged or failed")
    if not (
        isinstance(run["mitigations"], list) and isinstance(run["seed"], int) and not isinstance(run["seed"], bool)
    ):
        raise TypeError("mitigations must be a list and seed an integer")
    if not (isinstance(info["headline_metrics"], list) and isinstance(info["layers"], list)):
        raise TypeError("task_info.headline_metrics and task_info.layers must be lists")
    if not isinstance(provenance["numerics"], dict) or float(provenance["wall_time_s"]) < 0:
        raise TypeError("provenance lacks numerics or wall_time_s (the provenance section reads them)")
    values: dict[str, Any] = {"status": status}
    steps = int(run["settings"]["task.steps"])
    diagnosis = diagnose(series, status, steps, info["chance_loss"], thresholds, info["layers"])
    if diagnosis is not None:
        init, training = diagnosis["init"], diagnosis["training"]
        values.update(
            init=init["verdict"],
            init_log10_backward_ratio=init["log10_backward_ratio"],
            init_log10_grad_ratio=init["log10_grad_ratio"],
            init_grad_norm_global=init["grad_norm_global"],
            training=training["verdict"],
            training_label=training["label"],
            training_flags="+".join(training["flags"]),
            late_log10_grad_ratio=training["late_log10_grad_ratio"],
        )
    summary = run["summary"]
    values.update({k: v for k, v in summary.items() if isinstance(v, (int, float)) and k != "steps"})
    if status in FINISHED:
        values["chance_loss"] = info["chance_loss"]
        values["loss_vs_chance"] = loss_vs_chance(summary.get("final_train_loss"), info["chance_loss"])
    keep = set(metrics) | {info["flow_metric"]}
    return values, pd.DataFrame([r for r in series if r[1] in keep], columns=PROBE_COLUMNS)


def adhoc_manifests(runs_dir: str | Path) -> list[dict[str, Any]]:
    """One manifest per task for every record in ``runs_dir`` (e.g. a ``vanex run -m`` sweep)."""
    by_task: dict[str, list[tuple]] = {}
    for path in sorted(Path(runs_dir).iterdir()):
        if not RUN_ID.match(path.name):  # not a record folder: _studies, _leases, a user's files
            continue
        try:
            run = load_run(path)
            if run is not None and run["run_id"] != path.name:
                warn(f"record {path} says it is run {run['run_id']!r}, not its folder's name; skipped")
            elif run is not None:
                cell = (run["run_id"], run["mitigations"], run["seed"], dict(run["settings"]))
                by_task.setdefault(str(run["task"]), []).append(cell)
        except OldRecord:
            continue
        except (KeyError, TypeError, ValueError) as exc:
            warn(f"record {path} is malformed ({type(exc).__name__}: {exc}); skipped")
    return [
        make_manifest(f"runs_{task}", "runs", task, f"every {task} record in {runs_dir}", cells)
        for task, cells in sorted(by_task.items())
    ]
