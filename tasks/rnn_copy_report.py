"""The copy task's report sections (torch-free, beside the task they belong to; registered through the
``vanex.sections`` entry point): the delay table and figure, which read the final loss against the
memoryless baseline across the delay T, and the sigma_max bound of Pascanu et al. (2013) against
the measured gradient through time at initialisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from vanex.records.reader import StudyData
from vanex.registry import SECTIONS
from vanex.report.figures import along, figure_links, line_figure, panel_title, panels, pyplot, save
from vanex.report.sections import Section
from vanex.report.tables import frame_markdown, markdown_table, setting_text
from vanex.science.bounds import COPY_RECALL, through_time_bound

BASELINE = "10 ln 8 / (T + 20)"  # the memoryless baseline loss (the task's chance_loss), as printed
DELAY = "task.delay"


def _sweeps_delay(study: StudyData) -> bool:
    return DELAY in study.swept and "loss_vs_chance" in study.cells


def delay_table(cells: pd.DataFrame, manifest: dict[str, Any], stall_fraction: float) -> str | None:
    """For a copy-task study sweeping the delay T: per mitigation set, how many seeds end below the
    memoryless baseline (``loss_vs_chance`` under ``stall_fraction``) at each T, and the largest T
    where every seed does. ``None`` without a ``task.delay`` sweep."""
    key, metric = "task.delay", "loss_vs_chance"
    if key not in manifest["swept"] or metric not in cells:
        return None
    others = [k for k in manifest["swept"] if k != key]
    done = cells[cells["status"] != "missing"]
    delays = sorted(done[key].dropna().unique())
    header = ["mitigations", *others, *(f"T={d:g}" for d in delays), "largest T left"]
    lines = []
    for name, group in done.groupby(["mitigations", *others], sort=False, dropna=False):
        name = name if isinstance(name, tuple) else (name,)
        row, left = [setting_text(v) for v in name], []
        for d in delays:
            ratios = pd.to_numeric(group.loc[group[key] == d, metric], errors="coerce")
            if ratios.empty:
                row.append("–")
                continue
            below = int((ratios < stall_fraction).sum())  # NaN (diverged) is never below
            row.append(f"{below}/{len(ratios)}")
            if below == len(ratios):
                left.append(d)
        row.append(f"{max(left):g}" if left else "none")
        lines.append(row)
    caption = (
        f"Seeds whose final loss is below {stall_fraction:.0%} of the memoryless baseline {BASELINE}, "
        "per delay T (a diverged seed is never below), and the largest T at which every seed leaves the baseline "
        "(*none*: no T; – : not run at that T).\n"
    )
    return caption + "\n" + markdown_table(header, lines)


def _delay_figure(study: str, swept: list[str], cells: pd.DataFrame, stall: float, out: Path) -> list[Path]:
    """Copy-task final loss relative to the memoryless baseline against the delay T."""
    key, metric = "task.delay", "loss_vs_chance"
    if key not in swept or metric not in cells:
        return []
    data = along(cells[cells["status"] != "missing"], swept, key, least=2)
    if data.empty:
        return []
    frame = data[["panel", "mitigations", "seed", "status", key]].assign(value=pd.to_numeric(data[metric]))
    path = line_figure(
        frame,
        out / f"{study}_loss_ratio_delay.png",
        f"{study}: final loss / memoryless baseline against the delay T",
        key,
        "delay T (time steps)",
        f"final loss / {BASELINE}",
        log=False,
        integer_x=True,
        hline=(stall, f"stall threshold {stall:g}"),
    )
    return [path]


def rnn_bound_points(probes: pd.DataFrame, records: dict[str, dict], recall: int = COPY_RECALL) -> pd.DataFrame:
    """One row per (plain-RNN run, lag) at step 0: the measured log10 ||dL/dh_t|| / ||dL/dh_s|| and
    the bound (s - t) log10 sigma_max(W_hh) (``vanex.science.bounds``), s being the first of the
    ``recall`` positions that carry the loss. Runs with a gated cell (the probed matrix is one gate
    block, not the Jacobian's) or truncated BPTT (the gradient is cut, trivially bounded) are left out.
    Columns: run_id, group, seed, sigma_max, lag, measured, bound (both log10), radius (lag log10 of
    the spectral radius: a reference for the typical growth, not a bound), holds."""
    columns = ["run_id", "group", "seed", "sigma_max", "lag", "measured", "bound", "radius", "holds"]
    if probes.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    step0 = probes[probes["step"] == 0]
    for rid, group in step0.groupby("run_id"):
        run = records.get(rid)
        if run is None or "task.cell" not in run["settings"]:
            continue
        s = run["settings"]
        if s.get("task.cell") != "rnn" or int(s.get("task.tbptt") or 0) > 0:
            continue
        flow = group[group["metric"] == "grad_through_time"].set_index("layer")["value"]
        sigma = group.loc[group["metric"] == "sigma_max", "value"]
        if flow.empty or sigma.empty:
            continue
        values = flow.reindex([f"t{t}" for t in range(len(flow))]).to_numpy(dtype=float)
        first = len(values) - recall
        if first < 1 or not (values[first] > 0 and np.isfinite(values).all()):
            continue
        sigma_max = float(sigma.iloc[0])
        rho = group.loc[group["metric"] == "spectral_radius", "value"]
        log_rho = np.log10(float(rho.iloc[0])) if len(rho) else np.nan
        label = _group_label(group)
        check = through_time_bound(values, sigma_max, first)
        for lag, measured, bound, holds in zip(*(check[k] for k in ("lag", "measured", "bound", "holds")), strict=True):
            rows.append((rid, label, run["seed"], sigma_max, int(lag), measured, bound, lag * log_rho, bool(holds)))
    return pd.DataFrame(rows, columns=columns)


def _group_label(group: pd.DataFrame) -> str:
    """ "mitigations, key=value, ..." without the settings that do not apply to the cell (None)."""
    parts = [str(group[c].iloc[0]) for c in ("mitigations", "setting") if c in group and str(group[c].iloc[0])]
    words = [w for part in parts for w in part.split(", ") if not w.endswith(("=None", "=nan"))]
    return ", ".join(words) or str(group["run_id"].iloc[0])[:8]


def rnn_bound_fraction(points: pd.DataFrame) -> float:
    """Share of (run, lag) pairs at which the sigma_max^T bound holds; NaN when none were checked."""
    return float(points["holds"].mean()) if len(points) else float("nan")


def rnn_bound_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per group: seeds, sigma_max at init (mean), the lag checked up to, the share of lags where the
    bound holds, and how loose it is at the longest lag (bound minus measured, decades, mean over seeds)."""
    if points.empty:
        return pd.DataFrame()
    longest = points[points["lag"] == points.groupby("run_id")["lag"].transform("max")]
    slack = (longest["bound"] - longest["measured"]).groupby(longest["group"]).mean()
    table = points.groupby("group").agg(
        seeds=("run_id", "nunique"), sigma_max=("sigma_max", "mean"), max_lag=("lag", "max"), holds=("holds", "mean")
    )
    return table.assign(slack_at_max_lag=slack).reset_index()


def rnn_bound_figure(points: pd.DataFrame, path: Path) -> Path | None:
    """One panel per group: measured log10 ||dL/dh_t|| / ||dL/dh_s|| against the lag s - t (mean over
    seeds, band: min to max) and the bound lag * log10 sigma_max (dashed). None when no points."""
    points = points[np.isfinite(points["measured"])] if len(points) else points
    if points.empty:
        return None
    plt = pyplot()
    # cells that differ only in training (learning rate, optimiser, clipping) share their step-0
    # curves: one panel per initialisation, named after every cell that shares it
    runs = points.drop_duplicates("run_id").sort_values("seed")
    init = runs.groupby("group")["sigma_max"].first().round(5)  # the lowest seed's initial sigma_max
    names = {}
    for key in init.unique():
        same = sorted(init.index[init == key], key=len)
        names[key] = same[0] + (f" (and {len(same) - 1} more cells, same init)" if len(same) > 1 else "")
    points = points.assign(group=points["group"].map(lambda g: names[init[g]]))
    groups = sorted(points["group"].unique())
    fig, axes = panels(plt, len(groups))
    for ax, name in zip(axes.flat, groups, strict=False):
        data = points[points["group"] == name]
        by_lag = data.groupby("lag")
        measured, bound = by_lag["measured"], by_lag["bound"].mean()
        ax.fill_between(measured.min().index, measured.min(), measured.max(), color="C0", alpha=0.25, lw=0)
        ax.plot(measured.mean().index, measured.mean(), color="C0", label="measured")
        ax.plot(bound.index, bound, "k--", label=f"bound, σ_max={data['sigma_max'].mean():.2f}")
        radius = by_lag["radius"].mean()
        if radius.notna().all():
            ax.plot(radius.index, radius, ":", color="0.5", label="spectral radius^lag (no bound)")
        panel_title(ax, f"{name} (holds at {data['holds'].mean():.0%} of lags)")
        ax.set_xlabel("lag s − t (s: first recall step)")
        ax.set_ylabel("log10 ||dL/dh_t|| / ||dL/dh_s||")
        ax.legend()
    fig.suptitle("Gradient through time at init against Pascanu et al.'s σ_max^(s−t) bound")
    return save(fig, path, plt, points)


def rnn_bound_section(study: str, probes: pd.DataFrame, records: dict[str, dict], out: Path) -> list[str]:
    """Markdown parts for one study: the share of (run, lag) pairs where the sigma_max^T bound holds,
    a table per group, and ``<study>_sigma_bound.png`` in ``out``; empty without plain-RNN records."""
    points = rnn_bound_points(probes, records)
    if points.empty:
        return []
    table = rnn_bound_table(points)
    parts = [
        "**Gradient through time against the σ_max bound** (Pascanu et al. 2013). Before the first recall "
        "step s the loss reaches h_t only through h_s, and a tanh or ReLU cell has |φ′| ≤ 1, so "
        "||dL/dh_t|| ≤ σ_max(W_hh)^(s−t) ||dL/dh_s||. At step 0 it holds at "
        f"{rnn_bound_fraction(points):.1%} of {len(points)} (run, lag) pairs; slack: bound minus measured "
        "at the longest lag, in decades (a bound, not a prediction: σ_max > 1 permits growth, it does not "
        "cause it).\n",
        frame_markdown(table) + "\n",
    ]
    path = rnn_bound_figure(points, out / f"{study}_sigma_bound.png")
    if path is not None:
        parts.extend(figure_links(path))
    return parts


@SECTIONS.register("copy_delay_table")
class DelayTable(Section):
    """Per mitigation set and delay T, the seeds that leave the memoryless baseline."""

    order = 20

    def applies(self, study: StudyData) -> bool:
        return _sweeps_delay(study)

    def write(self, study: StudyData, out: Path) -> list[str]:
        table = delay_table(study.cells, study.manifest, study.thresholds.stall_fraction)
        return [table + "\n"] if table else []


@SECTIONS.register("copy_delay_figure")
class DelayFigure(Section):
    """Final loss over the memoryless baseline against the delay T."""

    order = 30
    writes = ("figures/{study}_loss_ratio_delay.png",)
    draws = (DELAY,)

    def applies(self, study: StudyData) -> bool:
        return _sweeps_delay(study)

    def write(self, study: StudyData, out: Path) -> list[str]:
        paths = _delay_figure(study.name, study.swept, study.cells, study.thresholds.stall_fraction, out / "figures")
        return [part for path in paths for part in figure_links(path)]


@SECTIONS.register("sigma_max_bound")
class SigmaBoundSection(Section):
    """The gradient through time at init against the sigma_max^(s-t) bound, for plain RNN cells."""

    order = 40
    metrics = ("grad_through_time", "sigma_max", "spectral_radius")
    writes = ("figures/{study}_sigma_bound.png",)

    def applies(self, study: StudyData) -> bool:
        return not study.probes.empty and (study.probes["metric"] == "sigma_max").any()

    def write(self, study: StudyData, out: Path) -> list[str]:
        return rnn_bound_section(study.name, study.probes, study.records, out / "figures")
