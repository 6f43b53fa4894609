"""``vanex compare A B``: what moved between two result sets or reports.

A and B are each a report folder (``summary.csv``, ``tables/``, ``claims.csv``, as ``vanex
report`` writes them) or a results folder with study manifests, which is reported first (into a
temporary folder; nothing is written beside it). The comparison, per metric as ``TOLERANCES``
declares:

- ``exact``: step-0 values (the untrained network's gradient ratios) must be equal run by run where
  a run trained on one CPU model on both sides (``timing.csv`` says which, run by run: a report may
  hold runs of several; pinned numerics reproduce them bit for bit on one model); across CPU
  models within a relative tolerance of ``STEP0_REL_TOL`` (an Intel Xeon and an AMD EPYC differ by
  at most 5.8e-7 over 492 runs, a few float32 roundings; a changed initialisation moves them by far more).
  Except a *rounding-sensitive* run: one whose twin on the other numeric code path (every other
  setting equal) differs from it by more than ``STEP0_REL_TOL`` on either side. Each side measures
  that itself, before any comparison: rounding alone moves such a step-0 map beyond the tolerance
  (batch norm at 50 layers: 6%), so its values are compared per cell, by 95% CI overlap, as a
  trained metric is;
- ``ci_overlap`` (every other metric): per cell, the two 95% confidence intervals of the mean over
  seeds must overlap; a cell with one seed has no interval and must match exactly; a value that is
  a word (diverged, underflow, not applicable) must be the same word;
- per cell the majority diagnosis (init and training) and, where every run of both sides trained on
  one CPU model, the counts of seeds
  completed / diverged / failed must be equal; across CPU models a run at the edge of stability may
  flip between completed and diverged (4 of 519 did), and a *mixed* cell (no verdict read by 80% of
  its seeds, ``tables.SETTLED``) may change its majority: such moves are listed as notes. A
  settled verdict on both sides that differs is a difference. A cell whose counts moved so has its
  trained metrics over other seeds on each side; what moved in them is a note too;
- per claim its status.

Runs or cells present on one side only are listed too; sides of different profiles are refused.
Exit 0 when nothing moved, 1 when something did, 2 on bad input. Torch-free, like the reporter.
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from vanex.errors import UserError
from vanex.records.tolerance import STEP0_REL_TOL, equal

TOLERANCES = dict.fromkeys(("grad_ratio_init", "init_log10_grad_ratio", "init_log10_backward_ratio"), "exact")
COUNTS = ("completed", "diverged", "failed")


@dataclass(frozen=True)
class Side:
    label: str
    summary: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    claims: pd.DataFrame
    cpus: frozenset[str]  # the CPU models its runs trained on (timing.csv)
    run_cpus: dict[str, str]  # run id -> the CPU model it trained on (timing.csv)


def tolerance(metric: str) -> str:
    return TOLERANCES.get(metric, "ci_overlap")


def load(path: str, profile: str, scratch: Path) -> Side:
    """A report folder as it is, or a results folder reported into ``scratch`` first."""
    folder = Path(path)
    if (folder / "summary.csv").is_file() and (folder / "tables").is_dir():
        report = folder
    elif (folder / "_studies").is_dir():
        from vanex.report.build import write_report

        report = write_report(str(folder), str(scratch / "report"), profile, None, numbers_only=True)
        report = report.parent  # not folder.name: '..'
    else:
        raise UserError(
            f"'{path}' is neither a report (summary.csv and tables/, from `vanex report`) nor a results "
            "folder with study manifests (_studies/, from `vanex study`)"
        )
    linked = [p for p in (report, *report.iterdir(), *report.glob("tables/*")) if p.is_symlink()]
    if linked:
        raise UserError(f"'{linked[0]}' is a symbolic link; compare reads only the report's own files")
    tables = {
        p.stem: pd.read_csv(p, keep_default_na=False, na_values=[""])
        for p in sorted(report.glob("tables/*.csv"))
        if p.is_file()  # a folder of that name is no table
    }
    claims_path = report / "claims.csv"
    claims = pd.read_csv(claims_path) if claims_path.is_file() else pd.DataFrame(columns=["name", "status"])
    timing = pd.read_csv(report / "timing.csv") if (report / "timing.csv").is_file() else pd.DataFrame()
    cpus = frozenset(timing["cpu"].astype(str)) if "cpu" in timing else frozenset({"unknown"})
    run_cpus = (
        dict(zip(timing["run_id"].astype(str), timing["cpu"].astype(str), strict=True)) if "cpu" in timing else {}
    )
    return Side(path, pd.read_csv(report / "summary.csv"), tables, claims, cpus, run_cpus)


def one_cpu(a: Side, b: Side) -> bool:
    """Whether both sides trained on one and the same known CPU model."""
    return a.cpus == b.cpus and len(a.cpus) == 1 and "unknown" not in a.cpus


def one_cpu_run(a: Side, b: Side, run_id: str) -> bool:
    """Whether one run trained on one and the same known CPU model on both sides (a report may hold
    runs of several models: each record says which)."""
    cpu = a.run_cpus.get(run_id, "unknown")
    return cpu != "unknown" and cpu == b.run_cpus.get(run_id)


def _path_twins_differ(frame: pd.DataFrame, settings: list[str], values: dict[str, str]) -> set:
    """The index labels of ``frame``'s rows whose twin on another numeric code path (a row whose
    ``settings`` are all equal but ``numerics``) differs from it in a step-0 value, column -> metric
    in ``values``, by more than the cross-CPU tolerance: rounding alone moves these that far."""
    if "numerics" not in frame or frame.empty:
        return set()
    sensitive: set = set()
    keys = frame[settings].map(lambda v: "–" if pd.isna(v) else str(v)).agg("|".join, axis=1)
    for _, twins in frame.groupby(keys, sort=False):
        if twins["numerics"].nunique() < 2:
            continue
        for column, metric in values.items():
            numbers = [float(v) for v in twins[column] if pd.notna(v)]
            if any(not equal(x, y, False, metric) for x in numbers for y in numbers):
                sensitive |= set(twins.index)
    return sensitive


def _sensitive_runs(summary: pd.DataFrame, exact: list[str]) -> set[str]:
    """The run ids whose step-0 values differ from their other numeric path's beyond the tolerance."""
    not_settings = {"run_id", "profile", "git_commit", "study", "status", "numerics", "metric", "value"}
    settings = [c for c in summary.columns if c not in not_settings]
    sensitive: set[str] = set()
    for metric in exact:
        runs = summary[summary["metric"] == metric].drop_duplicates("run_id").reset_index(drop=True)
        sensitive |= set(runs.loc[sorted(_path_twins_differ(runs, settings, {"value": metric})), "run_id"])
    return sensitive


def _runs(a: Side, b: Side, notes: list[str]) -> list[str]:
    """Step-0 metrics run by run (exactly where a run trained on one CPU model on both sides; across
    models within the relative tolerance, unless rounding-sensitive); runs on one side only."""
    moved = []
    key = ["run_id", "metric"]  # a run in two studies (mlp_width and mlp_isometry share some) has rows in both
    left, right = (s.summary.drop_duplicates(key).set_index(key)["value"] for s in (a, b))
    only_a = sorted(set(a.summary["run_id"]) - set(b.summary["run_id"]))
    only_b = sorted(set(b.summary["run_id"]) - set(a.summary["run_id"]))
    for label, ids in ((a.label, only_a), (b.label, only_b)):
        if ids:
            moved.append(f"runs only in {label}: {len(ids)} ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})")
    exact = [m for m in sorted(set(a.summary["metric"])) if tolerance(m) == "exact"]
    across = {rid for rid in set(a.summary["run_id"]) & set(b.summary["run_id"]) if not one_cpu_run(a, b, rid)}
    sensitive = across & (_sensitive_runs(a.summary, exact) | _sensitive_runs(b.summary, exact)) if across else set()
    if sensitive:
        notes.append(
            f"{len(sensitive)} runs are rounding-sensitive (their two numeric paths differ at step 0 by more than "
            f"a relative {STEP0_REL_TOL:g} on one side): their step-0 values are compared per cell (95% CI)"
        )
    for (rid, metric), value in left.items():
        other = right.get((rid, metric))
        if rid in sensitive:
            continue
        exactly = rid not in across
        if metric in exact and other is not None and not equal(float(value), float(other), exactly, metric):
            rule = "exact" if exactly else f"relative tolerance {STEP0_REL_TOL:g} across CPU models"
            moved.append(f"run {rid} {metric}: {float(value)!r} -> {float(other)!r} ({rule})")
    status_a = a.summary.drop_duplicates("run_id").set_index("run_id")["status"]
    status_b = b.summary.drop_duplicates("run_id").set_index("run_id")["status"]
    for rid in sorted(set(status_a.index) & set(status_b.index)):
        if status_a[rid] != status_b[rid]:
            (notes if rid in across else moved).append(f"run {rid} status: {status_a[rid]} -> {status_b[rid]}")
    return moved


def _cell_key(frame: pd.DataFrame) -> pd.Series:
    """A cell's settings as one label; a setting that does not apply to the cell (empty) reads "–"."""
    settings = list(frame.columns[: list(frame.columns).index("seeds")])
    return frame[settings].map(lambda v: "–" if pd.isna(v) else str(v)).agg(", ".join, axis=1)


def _metric_moved(metric: str, x: pd.Series, y: pd.Series, exactly: bool = True, sensitive: bool = False) -> str | None:
    """Why one metric of one cell moved, or None; a rounding-sensitive cell's step-0 metrics across
    CPU models by CI overlap."""
    note_x, note_y = str(x[f"{metric}_note"] or ""), str(y[f"{metric}_note"] or "")
    note_x, note_y = ("" if n == "nan" else n for n in (note_x, note_y))
    if note_x or note_y:
        return None if note_x == note_y else f"{note_x or 'a number'} -> {note_y or 'a number'}"
    mean_x, mean_y = float(x[f"{metric}_mean"]), float(y[f"{metric}_mean"])
    if tolerance(metric) == "exact" and (exactly or not sensitive):
        ok = equal(mean_x, mean_y, exactly, metric)
        return None if ok else f"{mean_x:.8g} -> {mean_y:.8g} ({'exact' if exactly else 'relative tolerance'})"
    if math.isnan(x[f"{metric}_ci_low"]) or math.isnan(y[f"{metric}_ci_low"]):
        return None if equal(mean_x, mean_y) else f"{mean_x:.6g} -> {mean_y:.6g} (one seed: exact)"
    lo_x, hi_x, lo_y, hi_y = (float(v[f"{metric}_{e}"]) for v in (x, y) for e in ("ci_low", "ci_high"))
    if hi_x < lo_y or hi_y < lo_x:
        return (
            f"{mean_x:.4g} [{lo_x:.4g}, {hi_x:.4g}] -> {mean_y:.4g} [{lo_y:.4g}, {hi_y:.4g}] (95% CIs do not overlap)"
        )
    return None


def _cells(a: Side, b: Side, notes: list[str]) -> list[str]:
    moved, exactly = [], one_cpu(a, b)
    for study in sorted(set(a.tables) | set(b.tables)):
        if study not in a.tables or study not in b.tables:
            moved.append(f"study {study} only in {a.label if study in a.tables else b.label}")
            continue
        left, right = (t.set_index(_cell_key(t)) for t in (a.tables[study], b.tables[study]))
        for cell in left.index.difference(right.index).union(right.index.difference(left.index)):
            moved.append(f"{study} [{cell}] only in {a.label if cell in left.index else b.label}")
        metrics = [c[: -len("_mean")] for c in left.columns if c.endswith("_mean") and c in right.columns]
        sensitive = set() if exactly else _sensitive_cells(left, metrics) | _sensitive_cells(right, metrics)
        for cell in left.index.intersection(right.index):
            x, y = left.loc[cell], right.loc[cell]
            other_seeds = False  # across CPU models a seed flipped between completed and diverged (a note)
            for count in COUNTS:
                if int(x[count]) != int(y[count]):
                    line = f"{study} [{cell}] {count}: {int(x[count])} -> {int(y[count])}"
                    (moved if exactly or count == "failed" else notes).append(line)
                    other_seeds = other_seeds or not exactly
            for part in ("init", "training"):
                if part in x and str(x[part]) != str(y[part]):
                    line = f"{study} [{cell}] {part} verdict: {x[part]} -> {y[part]}"
                    mixed = not (_settled(x, part) and _settled(y, part))
                    (notes if mixed and not exactly else moved).append(
                        line + (" (mixed: seeds disagree)" if mixed else "")
                    )
            for metric in metrics:
                why = _metric_moved(metric, x, y, exactly, cell in sensitive)
                if why and other_seeds:
                    notes.append(f"{study} [{cell}] {metric}: {why}, over other seeds (a seed flipped)")
                elif why:
                    moved.append(f"{study} [{cell}] {metric}: {why}")
    return moved


def _sensitive_cells(table: pd.DataFrame, metrics: list[str]) -> set[str]:
    """The cells (keys of ``table``) whose step-0 means differ from their other numeric path's beyond
    the tolerance."""
    settings = [c for c in table.columns[: list(table.columns).index("seeds")] if c != "numerics"]
    exact = {f"{m}_mean": m for m in metrics if tolerance(m) == "exact"}
    return _path_twins_differ(table, settings, exact)


def _settled(row: pd.Series, part: str) -> bool:
    """Whether a cell's verdict is settled (read by most of its seeds; reports before 0.3.1 lack the column)."""
    value = row.get(f"{part}_settled", True)
    return str(value).lower() not in ("false", "0", "0.0")


def _claims(a: Side, b: Side) -> list[str]:
    """Each claim whose status differs; where its version differs too, both versions are named (a
    changed definition, not a reproduction, moved it)."""

    def status(side: Side) -> dict[str, str]:
        versions = side.claims["version"] if "version" in side.claims else [None] * len(side.claims)
        return {
            n: (f"v{int(v)} " if pd.notna(v) else "", str(st))
            for n, st, v in zip(side.claims["name"], side.claims["status"], versions, strict=True)
        }

    left, right = status(a), status(b)
    lines = []
    for name in sorted(set(left) | set(right)):
        (va, sa), (vb, sb) = left.get(name, ("", "absent")), right.get(name, ("", "absent"))
        if sa != sb:
            named = va != vb and va and vb
            lines.append(f"claim {name}: {va if named else ''}{sa} -> {vb if named else ''}{sb}")
    return lines


def compare(a: str, b: str, profile: str, notes: list[str] | None = None) -> list[str]:
    """Everything that moved from ``a`` to ``b``, one line each (empty: nothing moved); what may
    differ across CPU models without breaking the promise is appended to ``notes``."""
    notes = [] if notes is None else notes
    try:
        return _compare(a, b, profile, notes)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # pandas' parse errors are ValueErrors
        raise UserError(
            f"cannot compare {a} and {b}: a report file is damaged or not written by vanex ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); write the report again with `vanex report`"
        ) from None


def _compare(a: str, b: str, profile: str, notes: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="vanex-compare-") as scratch:
        left = load(a, profile, Path(scratch) / "a")
        right = load(b, profile, Path(scratch) / "b")
    profiles = [
        ", ".join(sorted(set(side.summary.get("profile", pd.Series(dtype=str)).astype(str)))) for side in (left, right)
    ]
    empty = [(side, other) for side, other in ((left, right), (right, left)) if side.summary.empty]
    if len(empty) == 1:  # no profile to read, and nothing of it to compare run by run
        side, other = empty[0]
        return [f"{side.label} holds no runs ({other.summary['run_id'].nunique()} in {other.label})"]
    if profiles[0] != profiles[1]:
        raise UserError(
            f"{a} is of the {profiles[0] or 'unknown'} profile and {b} of the {profiles[1] or 'unknown'}: their runs "
            "differ in length, so nothing in them is comparable; compare reports or results of one profile"
        )
    if not one_cpu(left, right) and left.cpus and right.cpus:
        notes.append(f"CPU models differ ({', '.join(sorted(left.cpus))} / {', '.join(sorted(right.cpus))})")
    return _runs(left, right, notes) + _cells(left, right, notes) + _claims(left, right)


def main(a: str, b: str, profile: str) -> int:
    notes: list[str] = []
    moved = compare(a, b, profile, notes)
    for line in notes:
        print(f"note: {line}")
    for line in moved:
        print(line)
    tolerances = (
        "step-0 values exact on one CPU model, within a relative " + f"{STEP0_REL_TOL:g} across models "
        "(rounding-sensitive runs: per cell); 95% CI overlap for every other metric; verdicts and claims equal"
    )
    if moved:
        many = "difference" if len(moved) == 1 else "differences"
        print(f"compare: {len(moved)} {many} between {a} and {b} ({tolerances})", file=sys.stderr)
        return 1
    print(f"compare: nothing moved between {a} and {b} ({tolerances})", file=sys.stderr)
    return 0
