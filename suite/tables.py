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
