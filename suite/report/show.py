"""``vanex show RUN``: one run's training, as Cockpit or TensorBoard users expect to see it.

It prints what the run was (task, mitigations, seed, the settings that differ from the task's
defaults), how it ended and both parts of its diagnosis (computed again with today's rules, as the
report does), and draws one figure of its probe series over training: the gradient norm of every
layer, each layer's update ratio and activation statistics, the global gradient norm and the batch
loss; for a recurrent task also the gradient through time at the first and the last probed step.
Layers are numbered from 1 at the input, as in every figure of the report, and coloured along a
sequential colour map (a colour bar says which is which), so 56 layers stay readable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from vanex.errors import UserError
from vanex.records.reader import PROBE_COLUMNS, thresholds
from vanex.records.store import RUN_ID, OldRecord, load_run, read_probes, set_label
from vanex.science.diagnosis import diagnose

SUFFIXES = (".png", ".pdf", ".svg")
PER_LAYER = (
    ("grad_norm", "gradient norm ‖∂L/∂W_l‖", True),
    ("update_ratio", "update ratio ‖ΔW_l‖ / ‖W_l‖", True),
    ("act_std", "activation standard deviation", True),
    ("act_dead", "share of dead units (ReLU output 0 on every input)", False),
    ("act_saturated", "share of saturated units", False),
    ("act_inactive", "share of inactive units", False),
)


def find_record(run: str, results: str | Path, profile: str | None = None) -> Path:
    """The record folder that ``run`` names: a path to a record folder, a run id, or a unique prefix
    of one (4 hex digits at least) in ``results`` (among the records of ``profile``, when given)."""
    path = Path(run)
    if (path / "run.json").is_file():
        return path
    results = Path(results)
    if not RUN_ID.match(run.ljust(16, "0")) or len(run) < 4:
        raise UserError(f"'{run}' is neither a record folder nor a run id (16 hex digits, or a prefix of 4 or more)")
    if not results.is_dir():
        raise UserError(f"no records directory '{results}'; name it with --results (records are made by vanex run)")
    if (results / "records.tar.gz").is_file() and not any(results.glob("*/run.json")):
        raise UserError(
            f"'{results}' is a report: its shipped records hold no per-layer series; show a run from the results "
            "folder that made it, or train the run again with `vanex run`"
        )
    matches = sorted(p for p in results.glob(f"{run}*") if (p / "run.json").is_file())
    if profile is not None:
        matches = [p for p in matches if _profile_of(p) == profile]
    if not matches:
        among = f" among the {profile} profile's records" if profile is not None else ""
        raise UserError(f"no record of run '{run}' in '{results}'{among} (`vanex report` lists every cell's run id)")
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise UserError(f"'{run}' matches {len(matches)} runs in '{results}' ({names}); give more digits")
    return matches[0]


def _profile_of(path: Path) -> str | None:
    """The profile a record was trained under (None where unreadable)."""
    try:
        return (load_run(path) or {}).get("settings", {}).get("profile.name")
    except OldRecord:
        return None


def read(path: Path) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any] | None]:
    """(run.json, its probe rows, its diagnosis under today's rules) of the record folder ``path``."""
    try:
        run = load_run(path)
        series = read_probes(path) if (path / "probes.csv").exists() else []
    except OldRecord as exc:
        raise UserError(f"{exc}; show it with the vanex that reads it, or train it again") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path / 'probes.csv'} is unreadable ({exc})") from None
    if run is None:
        raise UserError(f"{path / 'run.json'} is unreadable or not a record")
    try:
        info = run["task_info"]
        steps = int(run["settings"]["task.steps"])
        diagnosis = diagnose(
            series, run["status"], steps, info["chance_loss"], thresholds({"diagnosis": {}}), info["layers"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path / 'run.json'} is malformed ({type(exc).__name__}: {exc})") from None
    return run, pd.DataFrame(series, columns=PROBE_COLUMNS), diagnosis


def describe(run: dict[str, Any], diagnosis: dict[str, Any] | None, path: Path, defaults: dict[str, Any]) -> str:
    """The text part: what the run was and how it ended, in a few lines; ``defaults``: the task's settings as
    its config file has them (the settings that differ from them are listed)."""
    settings = run["settings"]
    changed = {
        k: v
        for k, v in settings.items()
        if k.startswith(("task.", "optim.")) and k != "task.steps" and k in defaults and defaults[k] != v
    }
    summary = {k: v for k, v in run["summary"].items() if isinstance(v, (int, float)) and k != "steps"}
    lines = [
        f"run {run['run_id']} ({path})",
        f"  {run['task']}, {set_label(run['mitigations'])}, seed {run['seed']}, {settings.get('task.steps')} steps, "
        f"profile {settings.get('profile.name')}, numerics {settings.get('numerics')}",
        "  settings besides its steps that differ from the task's defaults: "
        + (", ".join(f"{k}={v}" for k, v in changed.items()) or "none"),
        f"  status: {run['status']}" + (f" ({run['error']})" if run.get("error") else ""),
        "  " + ", ".join(f"{k} {_fmt(v)}" for k, v in summary.items()),
    ]
    if diagnosis is not None:
        init, training = diagnosis["init"], diagnosis["training"]
        lines.append(
            f"  diagnosis: init {init['verdict']} (log10 backward ratio {_fmt(init['log10_backward_ratio'])}, "
            f"step-0 global gradient norm {_fmt(init['grad_norm_global'])}); training {training['label']}"
        )
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def out_path(out: str | None, run_id: str) -> Path:
    """Where the figure goes: ``--out`` (a .png, .pdf or .svg file) or ``vanex-show-<run id>.png``;
    a folder or a file of another kind is never overwritten."""
    path = Path(out) if out else Path(f"vanex-show-{run_id}.png")
    if path.is_dir() or path.is_symlink():
        raise UserError(f"--out {path} is a folder or a link; name a file")
    if path.suffix not in SUFFIXES:
        raise UserError(f"--out {path}: the figure is written as {', '.join(SUFFIXES)}; name a file with one of them")
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: folder '{path.parent}' does not exist")
    return path


def draw(run: dict[str, Any], probes: pd.DataFrame, path: Path) -> Path:
    """One figure of the run's probe series over training (module docstring)."""
    from vanex.report.figures import WIDTH, panel_title, pyplot

    plt = pyplot()
    per_layer = [(m, label, log) for m, label, log in PER_LAYER if (probes["metric"] == m).any()]
    flow = run["task_info"].get("flow_metric", "grad_norm")
    through_time = flow != "grad_norm" and (probes["metric"] == flow).any()
    n = len(per_layer) + 2 + through_time
    nrows = -(-n // 2)
    fig, axes = plt.subplots(nrows, 2, figsize=(WIDTH["two"], 2.0 * nrows + 0.5), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    cmap = plt.get_cmap("viridis")
    order = list(dict.fromkeys(probes.loc[probes["metric"].isin([m for m, _, _ in per_layer]), "layer"]))
    image = None
    for ax, (metric, label, log) in zip(axes.flat, per_layer, strict=False):
        part = probes[probes["metric"] == metric]
        table = part.pivot_table(index="step", columns="layer", values="value", aggfunc="mean", dropna=False)
        layers = [name for name in order if name in table.columns]
        for name in layers:
            colour = cmap(order.index(name) / max(1, len(order) - 1))
            ax.plot(
                table.index, _positive(table[name]) if log else table[name], color=colour, lw=0.8, marker=_dot(table)
            )
        image = ax.scatter([], [], c=[], cmap=cmap, vmin=1, vmax=max(2, len(order)))
        _axes(ax, label, log)
    scalars = (
        ("grad_norm_global", "global gradient norm ‖∂L/∂θ‖", True),
        ("batch_loss", "training batch loss", False),
    )
    for ax, (metric, label, log) in zip(axes.flat[len(per_layer) :], scalars, strict=False):
        part = probes[probes["metric"] == metric].groupby("step")["value"].mean()
        ax.plot(part.index, _positive(part) if log else part, color="black", lw=0.9, marker=_dot(part))
        if metric == "batch_loss" and run["task_info"].get("chance_loss"):
            ax.axhline(run["task_info"]["chance_loss"], color="0.4", ls=":", lw=0.8, label="chance / baseline loss")
            ax.legend(frameon=False, loc="upper right")
        _axes(ax, label, log)
    if through_time:
        ax = axes.flat[len(per_layer) + 2]
        part = probes[probes["metric"] == flow]
        steps = sorted(part["step"].unique())
        for step, dashes in ((steps[0], "-"), (steps[-1], "--")):
            at = part[part["step"] == step]
            lags = np.arange(len(at))[::-1]  # t0 is the earliest input: the longest way back from the loss
            ax.plot(lags, _positive(at["value"].to_numpy()), color="black", ls=dashes, lw=0.9, label=f"step {step}")
        _log_scale(ax)
        ax.set_xlabel("lag (time steps back from the loss)")
        panel_title(ax, "gradient through time ‖∂L/∂h_t‖")
        ax.legend(frameon=False)
    if image is not None and len(order) > 1:
        bar = fig.colorbar(image, ax=axes[: -(-len(per_layer) // 2)], shrink=0.8, label="layer (1 = nearest the input)")
        bar.ax.yaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(
        f"{run['task']} {set_label(run['mitigations'])}, seed {run['seed']}: {run['status']} (run {run['run_id']})"
    )
    from vanex.report.figures import DPI

    fig.savefig(path, dpi=DPI, metadata=_NO_DATES[path.suffix])
    plt.close(fig)
    return path


_NO_DATES = {  # no creation dates or software versions: the same run gives the same bytes
    ".png": {"Software": None},
    ".pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    ".svg": {"Creator": None, "Date": None},
}


def _dot(series: Any) -> str | None:
    """A marker on each point of a series of a few probed steps (one point draws no line)."""
    return "." if len(series) <= 5 else None


def _axes(ax: Any, label: str, log: bool) -> None:
    from vanex.report.figures import panel_title

    if log:
        _log_scale(ax)
    ax.set_xlabel("training step")
    panel_title(ax, label)


def _log_scale(ax: Any) -> None:
    """A log y axis, where the panel has a value to draw on one; else a note (a diverged run's series can
    be all inf or NaN, which matplotlib refuses to log-scale)."""
    if any(np.isfinite(np.asarray(line.get_ydata(), dtype=float)).any() for line in ax.lines):
        ax.set_yscale("log")
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no finite positive value", transform=ax.transAxes, ha="center", va="center", fontsize=7)


def _positive(values: Any) -> Any:
    """A log axis's values: 0 and non-finite values are left out of the line (not drawn as 0)."""
    values = np.asarray(values, dtype=float)
    return np.where((values > 0) & np.isfinite(values), values, math.nan)
