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

import hashlib
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
    dumps,
    load_manifests,
    load_run,
    make_manifest,
    read_probes,
    record_dir,
)
from suite.tables import cell_frame, delay_table, legend, lr_table, study_latex, study_table
from suite.theory import section as theory_section

PROBE_METRICS = (
    "grad_norm",
    "grad_through_time",
    "batch_loss",
    "grad_ratio",
    "sigma_max",
    "spectral_radius",
    "grad_preact",
)  # figures, claims


def adhoc_manifests(runs_dir: str) -> list[dict[str, Any]]:
    """One manifest per task for every record in ``runs_dir`` (e.g. a ``gradbench run -m`` sweep)."""
    by_task: dict[str, list[tuple]] = {}
    for path in sorted(Path(runs_dir).iterdir()):
        try:
            run = load_run(path)
            if run is not None:
                cell = (run["run_id"], run["mitigations"], run["seed"], dict(run["settings"]))
                by_task.setdefault(str(run["task"]), []).append(cell)
        except OldRecord:
            continue
        except (KeyError, TypeError, ValueError) as exc:
            print(
                f"gradbench: warning: record {path} is malformed ({type(exc).__name__}: {exc}); skipped",
                file=sys.stderr,
            )
    return [
        make_manifest(f"runs_{task}", "runs", task, f"every {task} record in {runs_dir}", cells)
        for task, cells in sorted(by_task.items())
    ]


def _label(cell: dict[str, Any], swept: list[str]) -> str:
    """'key=value, ...' of the swept settings that apply to the cell (None: does not apply)."""
    return ", ".join(f"{k}={cell['settings'][k]}" for k in swept if cell["settings"].get(k) is not None)


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
            summary, frame = _read_record(run, path, thresholds)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            print(
                f"gradbench: warning: record {path} is malformed ({type(exc).__name__}: {exc}); shown as missing",
                file=sys.stderr,
            )
            row["status"] = "missing"
            continue
        records[cell["run_id"]] = run
        row.update(summary, git_commit=run["provenance"].get("git_commit"))
        probes.append(frame.assign(**{k: row[k] for k in ("mitigations", "setting", "seed", "run_id")}))
    probe_frame = pd.concat(probes, ignore_index=True) if probes else pd.DataFrame()
    return pd.DataFrame(rows), probe_frame, records, old


def _read_record(run: dict[str, Any], path: Path, thresholds: DiagnosisConfig) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the row's values: status, diagnosis, numeric summary; the probe rows the figures draw).
    Raises on a record that lacks what the report reads, so it is shown as missing, not half-used."""
    series = read_probes(path)
    status, info, provenance = str(run["status"]), run["task_info"], run["provenance"]
    if not (isinstance(info["headline_metrics"], list) and isinstance(info["layers"], list)):
        raise TypeError("task_info.headline_metrics and task_info.layers must be lists")
    if not isinstance(provenance["numerics"], dict) or float(provenance["wall_time_s"]) < 0:
        raise TypeError("provenance lacks numerics or wall_time_s (the provenance section reads them)")
    values: dict[str, Any] = {"status": status}
    diagnosis = diagnose(series, status, int(run["settings"]["task.steps"]), info["chance_loss"], thresholds)
    if diagnosis is not None:
        init, training = diagnosis["init"], diagnosis["training"]
        values.update(
            init=init["verdict"],
            init_log10_grad_ratio=init["log10_grad_ratio"],
            training=training["verdict"],
            training_flags="+".join(training["flags"]),
            late_log10_grad_ratio=training["late_log10_grad_ratio"],
        )
    summary = run["summary"]
    values.update({k: v for k, v in summary.items() if isinstance(v, (int, float)) and k != "steps"})
    keep = [r for r in series if r[1] in PROBE_METRICS or r[1] == info["flow_metric"]]
    return values, pd.DataFrame(keep, columns=["step", "metric", "layer", "value"])


ID_COLUMNS = ["study", "task", "mitigations", "setting", "seed", "run_id"]
DIAGNOSIS_COLUMNS = ["status", "init", "training", "training_flags"]
SUMMARY_IDS = ["run_id", "profile", "git_commit", "study", "task", "mitigations", "seed", "status"]


def tidy_summary(cells: pd.DataFrame, records: dict[str, dict], settings: list[str], profile: str) -> pd.DataFrame:
    """summary.csv: one numeric value per row. Columns: run_id, profile, git_commit, study, task,
    mitigations, seed, status, one column per setting swept in any study (the run's own value, so a
    setting left at its default is written out; empty where it does not apply), metric, value.
    Verdicts are in diagnosis.csv."""
    found = cells[cells["status"] != "missing"].assign(profile=profile)
    found = found.reindex(columns=list(dict.fromkeys([*found.columns, *SUMMARY_IDS])))  # none found: empty
    for key in settings:
        found[key] = [records[rid]["settings"].get(key) for rid in found["run_id"]]
    skip = set(ID_COLUMNS + DIAGNOSIS_COLUMNS + SUMMARY_IDS) | set(settings)
    numeric = [c for c in found.columns if c not in skip and pd.api.types.is_numeric_dtype(found[c])]
    ids = SUMMARY_IDS + settings
    long = found.melt(id_vars=ids, value_vars=numeric, var_name="metric", value_name="value")
    long = long.dropna(subset=["value"])
    return long.sort_values(["study", "mitigations", *settings, "seed", "metric"], kind="stable").reset_index(drop=True)


def report_id(records: dict[str, dict], source: Path) -> str:
    """A stable id of the records a report summarises: a hash over each record's run_id, status,
    summary and probe series (not its wall time or host), so the same records give the same id."""
    digest = hashlib.sha256()
    for rid in sorted(records):
        run = records[rid]
        probes = (record_dir(source, rid) / "probes.csv").read_bytes()
        entry = [rid, run["status"], run["summary"], hashlib.sha256(probes).hexdigest()]
        digest.update(dumps(entry).encode())
    return digest.hexdigest()[:12]


def citation(rid: str, profile: str, records: list[dict]) -> str:
    """The citation text a report prints for itself (README: "Cite a report")."""
    commits = sorted({str(r["provenance"].get("git_commit") or "unknown")[:12] for r in records})
    version = sorted({str(r["provenance"].get("gradbench")) for r in records})
    return (
        f"gradbench contributors. gradbench report {rid} ({profile} profile, {len(records)} runs), "
        f"gradbench {', '.join(version)}, source commit {', '.join(commits)}. "
        "Software: gradbench, MIT licence; cite the software itself with CITATION.cff."
    )


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
    lines.append("- training wall time: per run in `timing.csv` (the one file that differs between reruns)")
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


def runs_dir_is_study(source: Path, manifests: list[dict]) -> bool:
    """Claims read study manifests; an ad-hoc ``--runs`` report has none."""
    return all(m["profile"] != "runs" for m in manifests)


def _write(out: Path, manifests: list[dict], source: Path, profile: str) -> None:
    from suite.figures import figure_links, rnn_bound_section, set_styles, write_figures
    from suite.html import write_html

    with_claims = runs_dir_is_study(source, manifests)
    if with_claims:
        from suite.claims import cell_claims, claims_frame, claims_markdown, evaluate_all
    set_styles(sorted({"+".join(c["mitigations"]) or "baseline" for m in manifests for c in m["cells"]}))
    all_cells, all_records, parts, skipped = [], {}, [], 0
    for manifest in manifests:
        study = manifest["study"]
        thresholds = DiagnosisConfig(**manifest["diagnosis"])
        cells, probes, records, old = collect(manifest, source)
        all_cells.append(cells)
        all_records.update(records)
        skipped += old
        first = next(iter(records.values()), None)
        headline = first["task_info"]["headline_metrics"] if first else ["final_train_loss"]
        parts.append(f"## Study `{study}` (task `{manifest['task']}`)\n")
        if manifest.get("description"):
            parts.append(manifest["description"] + "\n")
        frame = cell_frame(cells, manifest, headline, cell_claims(manifest) if with_claims else None)
        (out / "tables").mkdir(exist_ok=True)
        frame.to_csv(out / "tables" / f"{study}.csv", index=False)
        (out / "tables" / f"{study}.tex").write_text(study_latex(frame, manifest, headline))
        parts.append(study_table(frame, manifest, headline) + "\n")
        parts.append(f"Table files: [CSV](tables/{study}.csv) · [LaTeX (booktabs)](tables/{study}.tex)\n")
        validation = first["task_info"].get("validation_metric", "train_loss") if first else "train_loss"
        extra = (lr_table(cells, manifest, validation), delay_table(cells, manifest, thresholds.stall_fraction))
        parts.extend(table + "\n" for table in extra if table)
        for fig in write_figures(manifest, cells, probes, records, headline, thresholds, out / "figures"):
            parts.extend(figure_links(fig))
        parts.extend(theory_section(study, cells, probes, records, out / "figures"))
        parts.extend(rnn_bound_section(study, probes, records, out / "figures"))
    cells = pd.concat(all_cells, ignore_index=True)
    settings = sorted({k for m in manifests for k in m["swept"]})
    tidy_summary(cells, all_records, settings, profile).to_csv(out / "summary.csv", index=False)
    found = cells[cells["status"] != "missing"]
    found[[c for c in ID_COLUMNS + DIAGNOSIS_COLUMNS if c in found]].to_csv(out / "diagnosis.csv", index=False)
    records = [all_records[rid] for rid in sorted(all_records)]
    timing = [(r["run_id"], r["seed"], r["provenance"]["wall_time_s"]) for r in records]
    pd.DataFrame(timing, columns=["run_id", "seed", "wall_time_s"]).to_csv(out / "timing.csv", index=False)
    rid = report_id(all_records, source)
    header = [
        f"# gradbench report {rid} ({profile} profile)\n",
        f"Generated by `gradbench report` from the records in `{source}/`; regenerate with `nox`. "
        f"Do not edit by hand. Report id `{rid}` is a hash of the {len(records)} records it summarises "
        "(their settings, status, summary and probe series): the same records give the same id.\n",
        f"**Cite this report:** {citation(rid, profile, records)}\n",
        legend(manifests[0]["diagnosis"]),
    ]
    provenance, mixed = _provenance(records) if records else ("no records", None)
    if mixed:
        header.append(f"**Warning: {mixed}.**\n")
        print(f"gradbench: warning: {mixed}", file=sys.stderr)
    if with_claims:
        claims = evaluate_all(source, profile)
        claims_frame(claims).to_csv(out / "claims.csv", index=False)
        parts.append("## Published claims\n")
        parts.append(
            "Each claim is judged on every seed of the cells it reads (`gradbench claims` prints the same), "
            "then again at half and double the learning rate where those cells ran: **fragile** means the "
            "verdict flips there. A claim the records contradict stays, marked ✗.\n"
        )
        parts.append(claims_markdown(claims) + "\n")
    parts.append("## Provenance\n")
    parts.append(provenance + "\n")
    text = "\n".join(header + parts)
    (out / "summary.md").write_text(text)
    write_html(text, out, title=f"gradbench report {rid}")
    missing = int((cells["status"] == "missing").sum())
    if skipped:
        print(
            f"gradbench: warning: {skipped} records of an older schema were skipped (shown as missing); "
            "rerun their studies",
            file=sys.stderr,
        )
    print(f"report: {len(records)} records, {missing} cells missing", file=sys.stderr)
