"""Markdown tables of a study: one row per cell, seeds summarised, both diagnosis parts with the
numbers they rest on, and the legend that says what every column means."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pandas as pd


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
    metrics = list(dict.fromkeys(("grad_ratio_init", *headline)))  # a metric no record has shows as n/a
    header = ["mitigations", *swept, "runs", metrics[0], "init (log10 ratio)", *metrics[1:]]
    header.append("training (later-half log10 ratio)")
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


def legend(t: dict[str, float]) -> str:
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


def _finite_mean(values: pd.Series) -> float:
    """Mean over seeds where a diverged seed (no finite value) counts as infinitely bad."""
    values = pd.to_numeric(values, errors="coerce")
    return math.inf if values.isna().any() or not values.map(math.isfinite).all() else float(values.mean())


def lr_table(cells: pd.DataFrame, manifest: dict[str, Any], metric: str) -> str | None:
    """Learning rate tuned per mitigation set (DeepOBS / AlgoPerf practice): for every cell group
    swept over ``optim.lr`` on one shared grid, the mean held-out ``metric`` at each learning rate
    and the one that won. A seed that diverged or has no value counts as infinitely bad. ``None``
    when the study sweeps no learning rate."""
    key = "optim.lr"
    if key not in manifest["swept"] or metric not in cells:
        return None
    others = [k for k in manifest["swept"] if k != key]
    done = cells[cells["status"] != "missing"]
    groups = [(name, g) for name, g in done.groupby(["mitigations", *others], sort=False) if g[key].nunique() > 1]
    if not groups:
        return None
    lrs = sorted({lr for _, g in groups for lr in g[key]})
    header = ["mitigations", *others, *(f"lr {lr:g}" for lr in lrs), "tuned lr"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, group in groups:
        name = name if isinstance(name, tuple) else (name,)
        scores = {lr: _finite_mean(g[metric]) for lr, g in group.groupby(key)}
        best = min(scores, key=lambda lr: (scores[lr], lr))
        row = [str(v) for v in name]
        for lr in lrs:
            n = int((group[key] == lr).sum())
            text = "–" if lr not in scores else ("diverged" if math.isinf(scores[lr]) else f"{scores[lr]:.3f}")
            row.append(text if lr not in scores else f"{text} ({n})")
        row.append(f"**{best:g}**" if math.isfinite(scores[best]) else "none finite")
        lines.append("| " + " | ".join(row) + " |")
    caption = (
        f"Learning rate per mitigation set: mean held-out `{metric}` over seeds (number of seeds in brackets) "
        "at each learning rate of the shared grid, and the one that wins; a diverged seed counts as infinitely bad. "
        "The table above compares every set at each fixed learning rate; this one at its own best.\n"
    )
    return caption + "\n" + "\n".join(lines)


def delay_table(cells: pd.DataFrame, manifest: dict[str, Any], stall_fraction: float) -> str | None:
    """For a copy-task study sweeping the delay T: per mitigation set, how many seeds end below the
    memoryless baseline (``loss_ratio_baseline`` under ``stall_fraction``) at each T, and the largest T
    where every seed does. ``None`` without a ``task.delay`` sweep."""
    key, metric = "task.delay", "loss_ratio_baseline"
    if key not in manifest["swept"] or metric not in cells:
        return None
    others = [k for k in manifest["swept"] if k != key]
    done = cells[cells["status"] != "missing"]
    delays = sorted(done[key].dropna().unique())
    header = ["mitigations", *others, *(f"T={d:g}" for d in delays), "largest T left"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, group in done.groupby(["mitigations", *others], sort=False, dropna=False):
        name = name if isinstance(name, tuple) else (name,)
        row, left = [str(v) for v in name], []
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
        lines.append("| " + " | ".join(row) + " |")
    caption = (
        f"Seeds whose final loss is below {stall_fraction:.0%} of the memoryless baseline 10 ln 8 / (T + 20), "
        "per delay T, and the largest T at which every seed leaves the baseline.\n"
    )
    return caption + "\n" + "\n".join(lines)


def frame_markdown(frame: pd.DataFrame) -> str:
    """A data frame as a Markdown table, floats to three significant digits."""

    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
