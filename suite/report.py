"""The reporter: records + study manifests -> ``reports/`` (Markdown, tidy CSVs, seaborn figures).

It reads only what ``gradbench study`` and the runs wrote: each study's manifest
(``<results>/_studies/<study>-<profile>.json``: every cell with its settings and run_id) and
each record (run.json + probes.csv). It imports neither torch nor Hydra nor the task registry,
so a report can be rebuilt anywhere the records are, whatever configs or plugins are installed.
Cells without a record are listed as missing, never invented. The diagnosis is computed again
from the probe series with the manifest's thresholds, so new rules apply to old records. A
report is built in a temporary folder and swapped in whole: no stale figure survives.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from suite.diagnosis import DiagnosisConfig, diagnose
from suite.errors import UserError
from suite.records import (
    OldRecord,
    _atomic_dir,
    load_manifests,
    load_run,
    read_probes,
    record_dir,
    varying_settings,
)

OBSERVE = ("probe.", "diagnosis.", "profile.")  # settings that only observe; not shown as cell settings
PROBE_METRICS = ("grad_norm", "grad_through_time", "batch_loss", "grad_ratio")  # what the figures draw


def adhoc_manifests(runs_dir: str) -> list[dict[str, Any]]:
    """One manifest per task for every record in ``runs_dir`` (e.g. a ``gradbench run -m`` sweep)."""
    by_task: dict[str, list[dict]] = {}
    for path in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
        try:
            run = load_run(path)
        except OldRecord:
            continue
        if run is not None:
            by_task.setdefault(run["task"], []).append(run)
    manifests = []
    for task, runs in sorted(by_task.items()):
        cells = [
            {
                "run_id": r["run_id"],
                "mitigations": r["mitigations"],
                "seed": r["seed"],
                "settings": {k: v for k, v in r["settings"].items() if not k.startswith(OBSERVE)},
            }
            for r in runs
        ]
        manifests.append(
            {
                "study": f"runs_{task}",
                "profile": "runs",
                "task": task,
                "description": f"every {task} record in {runs_dir}",
                "swept": varying_settings([c["settings"] for c in cells]),
                "diagnosis": {
                    k.partition(".")[2]: v for k, v in runs[0]["settings"].items() if k.startswith("diagnosis.")
                },
                "cells": cells,
            }
        )
    return manifests


def _label(cell: dict[str, Any], swept: list[str]) -> str:
    return ", ".join(f"{k}={cell['settings'].get(k)}" for k in swept)


def collect(manifest: dict[str, Any], results: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict], int]:
    """(cells: one row per cell, probes: the rows the figures draw, records by run_id, old records skipped)."""
    thresholds = DiagnosisConfig(**manifest["diagnosis"])
    swept = manifest["swept"]
    rows, probes, records, old = [], [], {}, 0
    for cell in manifest["cells"]:
        row = {
            "study": manifest["study"],
            "task": manifest["task"],
            "mitigations": "+".join(cell["mitigations"]) or "baseline",
            "setting": _label(cell, swept),
            **{k: cell["settings"].get(k) for k in swept},
            "seed": cell["seed"],
            "run_id": cell["run_id"],
        }
        rows.append(row)
        path = record_dir(results, cell["run_id"])
        try:
            run = load_run(path)
        except OldRecord:
            run, old = None, old + 1
        if run is None:
            row["status"] = "missing"
            continue
        try:
            series = read_probes(path)
        except (OSError, ValueError) as exc:
            print(
                f"gradbench: warning: {path / 'probes.csv'} unreadable ({exc}); cell shown as missing", file=sys.stderr
            )
            row["status"] = "missing"
            continue
        records[cell["run_id"]] = run
        row["status"] = run["status"]
        steps, chance = run["settings"]["task.steps"], run["task_info"]["chance_loss"]
        diagnosis = diagnose(series, run["status"], steps, chance, thresholds)
        if diagnosis is not None:
            init, training = diagnosis["init"], diagnosis["training"]
            row.update(
                init=init["verdict"],
                init_log10_grad_ratio=init["log10_grad_ratio"],
                training=training["verdict"],
                training_flags="+".join(training["flags"]),
                late_log10_grad_ratio=training["late_log10_grad_ratio"],
            )
        row.update({k: v for k, v in run["summary"].items() if isinstance(v, (int, float)) and k != "steps"})
        keep = [r for r in series if r[1] in PROBE_METRICS or r[1] == run["task_info"]["flow_metric"]]
        frame = pd.DataFrame(keep, columns=["step", "metric", "layer", "value"])
        probes.append(frame.assign(**{k: row[k] for k in ("mitigations", "setting", "seed", "run_id")}))
    probe_frame = pd.concat(probes, ignore_index=True) if probes else pd.DataFrame()
    return pd.DataFrame(rows), probe_frame, records, old


def _mean_std(values: pd.Series, scientific: bool) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    values = values[values.map(math.isfinite)]
    if values.empty:
        return "n/a"
    fmt = "{:.2e}" if scientific else "{:.3f}"
    return fmt.format(values.mean()) + (" ± " + fmt.format(values.std()) if len(values) > 1 else "")


def _majority(values: pd.Series, n: int) -> str:
    counts = Counter(v for v in values.dropna() if v)
    if not counts:
        return "n/a"
    verdict, count = counts.most_common(1)[0]
    others = ", ".join(f"{v} {c}" for v, c in counts.most_common()[1:])
    return f"{verdict} {count}/{n}" + (f" ({others})" if others else "")


def _median(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return "n/a" if values.empty else f"{values.median():.1f}"


def _verdicts(done: pd.DataFrame, part: str, ratio: str) -> str:
    """Majority verdict of one diagnosis part over the completed seeds, with the median log10 ratio."""
    if done.empty or part not in done:
        return "n/a"
    return f"{_majority(done[part], len(done))} ({_median(done[ratio])})"


def study_table(cells: pd.DataFrame, manifest: dict[str, Any], headline: list[str]) -> str:
    """One row per cell (mitigations x swept settings), mean ± sample std over seeds."""
    swept = manifest["swept"]
    metrics = [m for m in dict.fromkeys(("grad_ratio_init", *headline)) if m in cells.columns]
    header = [
        "mitigations",
        *swept,
        "runs",
        metrics[0] if metrics else "grad_ratio_init",
        "init (log10 ratio)",
        *metrics[1:],
        "training (later-half log10 ratio)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (mitigations, _), group in cells.groupby(["mitigations", "setting"], sort=False):
        done = group[group["status"] != "missing"]
        statuses = Counter(done["status"])
        runs = f"{len(done)}/{len(group)}" + "".join(f" ({n} {s})" for s, n in statuses.items() if s != "completed")
        init = _verdicts(done, "init", "init_log10_grad_ratio")
        training = _verdicts(done, "training", "late_log10_grad_ratio")
        values = [_mean_std(done[m], m == "grad_ratio_init") if m in done else "n/a" for m in metrics]
        settings = [str(group[k].iloc[0]) for k in swept]
        lines.append("| " + " | ".join([mitigations, *settings, runs, values[0], init, *values[1:], training]) + " |")
    return "\n".join(lines)


ID_COLUMNS = ["study", "task", "mitigations", "setting", "seed", "run_id"]
DIAGNOSIS_COLUMNS = ["status", "init", "training", "training_flags"]


def tidy_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one numeric value per row (study, task, mitigations, setting, seed, run_id, metric, value)."""
    found = cells[cells["status"] != "missing"]
    numeric = [
        c
        for c in found.columns
        if c not in ID_COLUMNS + DIAGNOSIS_COLUMNS
        and pd.api.types.is_numeric_dtype(found[c])
        and not c.startswith(("task.", "optim.", "mitigation."))
    ]
    long = found.melt(id_vars=ID_COLUMNS, value_vars=numeric, var_name="metric", value_name="value")
    long = long.dropna(subset=["value"])
    return long.sort_values(ID_COLUMNS[:5] + ["metric"], kind="stable").reset_index(drop=True)


def _provenance(records: list[dict]) -> tuple[str, str | None]:
    """(the provenance section, a warning if records come from several source commits)."""
    keys = ("gradbench", "git_commit", "git_dirty", "lock_file_sha256", "torch", "python", "cpu", "threads")
    lines = []
    for key in keys:
        values = Counter(str(r["provenance"].get(key)) for r in records)
        lines.append(f"- {key}: " + ", ".join(f"{v} ({n} runs)" if len(values) > 1 else v for v, n in values.items()))
    paths = Counter(
        str(r["provenance"]["numerics"]["aten_cpu_capability"]) + " / " + str(r["provenance"]["numerics"]["mode"])
        for r in records
    )
    lines.append(
        "- CPU code path (ATen capability / numerics): " + ", ".join(f"{v} ({n} runs)" for v, n in paths.items())
    )
    wall = sum(r["provenance"]["wall_time_s"] for r in records)
    lines.append(f"- total training wall time: {wall:.0f} s over {len(records)} runs")
    sources = Counter((r["provenance"].get("git_commit"), r["provenance"].get("git_dirty")) for r in records)
    warning = None
    if len(sources) > 1:
        listed = "; ".join(f"{c or 'unknown'}{' (dirty)' if d else ''}: {n} runs" for (c, d), n in sources.items())
        warning = f"records come from {len(sources)} different gradbench sources: {listed}"
    return "\n".join(lines), warning


def write_report(results: str, out: str, profile: str, studies: list[str] | None, runs_dir: str | None = None) -> Path:
    if runs_dir is not None:
        if not Path(runs_dir).is_dir():
            raise UserError(f"no records directory '{runs_dir}'")
        manifests, source = adhoc_manifests(runs_dir), Path(runs_dir)
        if not manifests:
            raise UserError(f"no records of the current schema in '{runs_dir}'")
    else:
        if not Path(results).is_dir():
            raise UserError(f"no records directory '{results}'; run `gradbench study NAME` (or `nox`) first")
        manifests, source = load_manifests(results, profile), Path(results)
        if not manifests:
            raise UserError(
                f"no study manifests for profile '{profile}' in '{results}/_studies'; "
                f"run `gradbench study NAME --profile {profile}` first"
            )
    names = [m["study"] for m in manifests]
    for s in studies or []:
        if s not in names:
            raise UserError(
                f"no manifest for study '{s}' (profile {profile}); studies with records: {', '.join(names)}"
            )
    manifests = [m for m in manifests if not studies or m["study"] in studies]
    path = _atomic_dir(Path(out), lambda tmp: _write(tmp, manifests, source, profile)) / "summary.md"
    print(f"report: {path}", file=sys.stderr)
    return path


def _write(out: Path, manifests: list[dict], source: Path, profile: str) -> None:
    from suite.figures import write_figures

    all_cells, all_records, parts, skipped = [], {}, [], 0
    for manifest in manifests:
        cells, probes, records, old = collect(manifest, source)
        all_cells.append(cells)
        all_records.update(records)
        skipped += old
        first = next(iter(records.values()), None)
        headline = first["task_info"]["headline_metrics"] if first else ["final_train_loss"]
        parts.append(f"## Study `{manifest['study']}` (task `{manifest['task']}`)\n")
        if manifest.get("description"):
            parts.append(manifest["description"] + "\n")
        parts.append(study_table(cells, manifest, headline) + "\n")
        for fig in write_figures(manifest, cells, probes, records, headline, out / "figures"):
            parts.append(f"![{fig.stem}](figures/{fig.name})\n")
    cells = pd.concat(all_cells, ignore_index=True)
    tidy_summary(cells).to_csv(out / "summary.csv", index=False)
    found = cells[cells["status"] != "missing"]
    found[[c for c in ID_COLUMNS + DIAGNOSIS_COLUMNS if c in found]].to_csv(out / "diagnosis.csv", index=False)
    header = [
        f"# gradbench report ({profile} profile)\n",
        f"Generated by `gradbench report` from the records in `{source}/`; regenerate with `nox`. "
        "Do not edit by hand.\n",
        _legend(manifests[0]["diagnosis"]),
    ]
    records = list(all_records.values())
    provenance, mixed = _provenance(records) if records else ("no records", None)
    if mixed:
        header.append(f"**Warning: {mixed}.**\n")
        print(f"gradbench: warning: {mixed}", file=sys.stderr)
    parts.append("## Provenance\n")
    parts.append(provenance + "\n")
    (out / "summary.md").write_text("\n".join(header + parts))
    missing = int((cells["status"] == "missing").sum())
    if skipped:
        print(
            f"gradbench: warning: {skipped} records of an older schema were skipped (shown as missing); "
            "rerun their studies",
            file=sys.stderr,
        )
    print(f"report: {len(records)} records, {missing} cells missing", file=sys.stderr)


def _legend(t: dict[str, float]) -> str:
    van, exp = f"1e-{t['vanishing_orders']:g}", f"1e{t['exploding_orders']:g}"
    return (
        "Each table row is one cell (mitigations × swept settings); numbers are mean ± sample standard deviation "
        "over its seeds. *init* is the gradient flow of the untrained network, from the step-0 ratio of the first "
        f"to the last hidden layer's (or time step's) gradient norm: vanishing (≤ {van}), exploding (≥ {exp}) or "
        "stable; the median log10 ratio is in brackets. *training* is what happened while training, in order of "
        "precedence: diverged (non-finite values), stalled (final training loss at or above "
        f"{t['stall_fraction']:.0%} of the task's chance loss), exploding (ratio ≥ {exp} or global gradient norm "
        f"above {t['exploding_grad_norm']:g} at a sampled step after step 0, or grown "
        f"{10 ** t['exploding_growth_orders']:g}× over the later half), vanishing (ratio ≤ {van} over the later "
        f"half), dead_units (≥ {t['dead_fraction']:.0%} of ReLU units dead), else healthy (inconclusive without "
        "evidence); the median later-half log10 ratio is in brackets. Counts are runs out of the completed ones; "
        "`-inf` is a ratio that underflowed float32 to zero.\n"
    )
