"""The tables of a study: one row per cell with every swept setting, seed counts, means with 95%
Student-t confidence intervals, both diagnosis parts with the numbers they rest on and the claims
that read the cell (``cell_frame``: the CSV), shown as Markdown (``study_table``) and as a LaTeX
booktabs table (``study_latex``, pandas Styler), each with the caption that says what every column
and word means; and the learning-rate table. ``markdown_table`` is the one writer of Markdown tables."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from vanex.science.stats import LEVEL, t_interval

NOT_A_NUMBER = {
    "zero": "the first layer's (or time step's) gradient norm is exactly 0, from float32 underflow or by "
    "construction (truncated BPTT, a zero-initialised branch), so the log10 ratio is -inf (k/n: in k of n seeds)",
    "diverged": "every completed seed diverged (non-finite loss), so there is no value to average",
    "not applicable": "the cell's task does not measure this metric, or no record of the cell was found",
}
INIT_METRIC = "init_log10_backward_ratio"  # the step-0 backward signal the init verdict reads (log10, decades)
INIT_METRICS = (INIT_METRIC, "init_log10_grad_ratio")  # and the weight-gradient ratio, for comparison (CSV only)
SETTLED = 0.8  # a cell's verdict is settled when at least this share of its finished seeds reads it; else *mixed*


def _metric_stats(done: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Mean and CI of one metric over a cell's completed seeds, or the word saying why there is none."""
    out: dict[str, Any] = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "note": ""}
    if metric not in done:
        return {**out, "note": "not applicable"}
    completed = done[done["status"] == "completed"]
    values = pd.to_numeric(completed[metric], errors="coerce").dropna().to_numpy(dtype=float)
    if metric in INIT_METRICS:  # a step-0 value exists for diverged seeds too
        values = pd.to_numeric(done[metric], errors="coerce").dropna().to_numpy(dtype=float)
    under = int(np.isneginf(values).sum())
    if under:
        return {**out, "n": len(values), "note": f"zero ({under}/{len(values)})"}
    values = values[np.isfinite(values)]
    if not len(values):
        diverged = (done["status"] == "diverged").any() and completed.empty
        return {**out, "note": "diverged" if diverged else "not applicable"}
    mean, low, high = t_interval(values)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values), "note": ""}


def _majority(values: pd.Series) -> tuple[str, int, str]:
    """(most common verdict, its count, the others as 'verdict count, ...')."""
    counts = Counter(v for v in values.dropna() if v)
    if not counts:
        return "", 0, ""
    (verdict, count), *rest = counts.most_common()
    return verdict, count, ", ".join(f"{v} {c}" for v, c in rest)


def _also(done: pd.DataFrame) -> str:
    """The conditions that co-occur with a cell's training verdicts, each with its count of seeds:
    'vanishing 3, unstable 1' (a run's flags name its verdict first, then what else it showed)."""
    if "training_flags" not in done:
        return ""
    counts = Counter(f for flags in done["training_flags"].dropna() for f in str(flags).split("+")[1:] if f)
    return ", ".join(f"{flag} {count}" for flag, count in counts.most_common())


def cell_frame(
    cells: pd.DataFrame, manifest: dict[str, Any], headline: list[str], claims: dict[str, list[str]] | None = None
) -> pd.DataFrame:
    """One row per cell (mitigation set x swept settings): every swept setting as its own column,
    how many seeds completed / diverged / failed / are missing / are stale, for the step-0 log10 gradient ratio and
    each headline metric the mean over completed seeds with its 95% Student-t interval (``<m>_mean``,
    ``<m>_ci_low``, ``<m>_ci_high``, ``<m>_n``, and ``<m>_note`` when there is no number), both diagnosis
    parts (majority verdict, its count, the others, whether it is settled: read by at least ``SETTLED``
    of the finished seeds, else the cell is *mixed*; the median log10 ratio; ``training_also``: the
    conditions that co-occur in training, with their counts), and the claims that read the cell
    (``claims``: run_id -> claim names)."""
    swept, claims = manifest["swept"], claims or {}
    metrics = list(dict.fromkeys((*INIT_METRICS, *headline)))
    rows = []
    for _, group in cells.groupby(["mitigations", "setting"], sort=False):
        status = Counter(group["status"])
        row: dict[str, Any] = {"mitigations": group["mitigations"].iloc[0]}
        row.update({k: group[k].iloc[0] for k in swept})
        row.update(
            seeds=len(group),
            completed=status["completed"],
            diverged=status["diverged"],
            failed=status["failed"],
            missing=status["missing"],
            stale=int(group["stale"].notna().sum()) if "stale" in group else 0,
        )
        done = group[group["status"].isin(["completed", "diverged"])]
        for metric in metrics:
            row.update({f"{metric}_{k}": v for k, v in _metric_stats(done, metric).items()})
        for part, ratio in (("init", INIT_METRIC), ("training", "late_log10_grad_ratio")):
            verdict, count, others = _majority(done[part]) if part in done else ("", 0, "")
            ratios = pd.to_numeric(done[ratio], errors="coerce").dropna() if ratio in done else pd.Series([])
            row.update(
                {
                    part: verdict,
                    f"{part}_count": count,
                    f"{part}_others": others,
                    f"{part}_settled": bool(verdict) and count >= SETTLED * len(done),
                    f"{part}_median_log10_ratio": float(ratios.median()) if len(ratios) else math.nan,
                }
            )
        row["training_also"] = _also(done)
        names = sorted({c for rid in group["run_id"] for c in claims.get(rid, [])})
        row["claims"] = "; ".join(names)
        rows.append(row)
    return pd.DataFrame(rows)


def setting_text(v: Any) -> str:
    """A setting as a table shows it: – where it does not apply, 35 rather than 35.0 (a column with
    gaps is float)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return str(v)


def _number(v: float, digits: int = 3) -> str:
    if not math.isfinite(v):
        return "-inf" if v < 0 else "inf" if v > 0 else "NaN"
    return f"{v:.{digits}g}"


def metric_range(metric: str) -> tuple[float, float]:
    """The values a metric can take, by its name: accuracies in [0, 1]; losses, ratios and norms (not
    their logs) at least 0; anything else unbounded. A confidence interval is clipped to it."""
    if "log10" in metric:
        return -math.inf, math.inf
    if "accuracy" in metric:
        return 0.0, 1.0
    if any(word in metric for word in ("loss", "ratio", "norm")):
        return 0.0, math.inf
    return -math.inf, math.inf


MIN_SEEDS_FOR_INTERVAL = 3  # with 1 or 2 seeds a t interval says little (t = 12.7 at n = 2): shown without one


def _shown(row: pd.Series, metric: str) -> str:
    """'mean [low, high]' (the 95% CI clipped to the metric's range, with as many significant figures
    as it takes for the three numbers to differ, up to 6), 'mean (n seeds)' for fewer than 3 seeds, or
    the word for what is not a number."""
    if row[f"{metric}_note"]:
        return row[f"{metric}_note"]
    mean, n = row[f"{metric}_mean"], int(row[f"{metric}_n"])
    if n < MIN_SEEDS_FOR_INTERVAL or math.isnan(row[f"{metric}_ci_low"]):
        return f"{_number(mean)} ({n} seed{'s' if n != 1 else ''})"
    floor, ceiling = metric_range(metric)
    return interval_text(mean, max(row[f"{metric}_ci_low"], floor), min(row[f"{metric}_ci_high"], ceiling))


def interval_text(mean: float, low: float, high: float) -> str:
    """'mean [low, high]' with as many significant figures as it takes (3 to 6) for the three to differ;
    'mean' alone where there is no interval (one value)."""
    if math.isnan(low) or math.isnan(high):
        return _number(mean)
    digits = 3
    while digits < 6 and low < high and len({_number(v, digits) for v in (low, mean, high)}) < 3:
        digits += 1
    return f"{_number(mean, digits)} [{_number(low, digits)}, {_number(high, digits)}]"


def _verdict_words(row: pd.Series, part: str, n: int) -> str:
    """'stalled 4/5 (+vanishing 3)': a settled verdict, its count of n and the conditions that co-occur in
    training; 'mixed: stalled 3, vanishing 2 of 5' where no verdict is read by ``SETTLED`` of the seeds."""
    if not row[part]:
        return "n/a"
    if not row.get(f"{part}_settled", True):
        others = f", {row[f'{part}_others']}" if row[f"{part}_others"] else ""
        return f"mixed: {row[part]} {row[f'{part}_count']}{others} of {n}"
    also = row.get(f"{part}_also", "") if part == "training" else ""
    also = also if isinstance(also, str) else ""
    return f"{row[part]} {row[f'{part}_count']}/{n}" + (f" (+{also.replace(', ', ', +')})" if also else "")


def _verdict_text(row: pd.Series, part: str, n: int) -> str:
    if not row[part]:
        return "not applicable"
    others = f" (others: {row[f'{part}_others']})" if row[f"{part}_others"] and row.get(f"{part}_settled", True) else ""
    return f"{_verdict_words(row, part, n)}{others}; {_number(row[f'{part}_median_log10_ratio'])}"


def display_frame(frame: pd.DataFrame, manifest: dict[str, Any], headline: list[str]) -> pd.DataFrame:
    """The table a reader sees (Markdown and LaTeX): strings, one column per swept setting."""
    metrics = list(dict.fromkeys((INIT_METRIC, *headline)))
    shown = []
    for _, row in frame.iterrows():
        n = int(row["completed"] + row["diverged"])
        out = {"mitigations": row["mitigations"]}
        out.update({k: setting_text(row[k]) for k in manifest["swept"]})
        out["n (done/div/fail)"] = (
            f"{n}/{int(row['diverged'])}/{int(row['failed'])}"
            + (f" ({int(row['missing'])} missing)" if row["missing"] else "")
            + (f" ({int(row['stale'])} stale)" if row.get("stale") else "")
        )
        out["log10 init backward ratio"] = _shown(row, INIT_METRIC)
        out["init verdict; median"] = _verdict_text(row, "init", n)
        out.update({m: _shown(row, m) for m in metrics[1:]})
        out["training verdict; median later-half log10 ratio"] = _verdict_text(row, "training", n)
        out["claims"] = row["claims"] or "–"
        shown.append(out)
    return pd.DataFrame(shown)


def caption(manifest: dict[str, Any]) -> str:
    """What every number in a study table means (Markdown; the LaTeX table carries it too)."""
    return (
        f"Study `{manifest['study']}`, {manifest['profile']} profile. One row per cell: the mitigation set and every "
        "swept setting (written out even where it equals the task's default; – where it does not apply). "
        "*n (done/div/fail)*: seeds that finished (completed or diverged) / diverged / failed; *stale*: records "
        "made by other code than the installed one (`vanex study` reruns them). "
        "Numbers are the mean over "
        f"the completed seeds with its {LEVEL:.0%} confidence interval in brackets (Student t with n−1 degrees of "
        "freedom: mean ± t·s/√n, clipped to the metric's range; cells with fewer than 3 seeds show the mean alone); "
        "the step-0 log10 ratio is averaged over every finished seed, diverged ones "
        "included. Verdicts: the majority verdict and its count out of n, the conditions that co-occur in training "
        "with their counts (+...), the other verdicts, then the median log10 ratio; a cell where no verdict is read "
        f"by {SETTLED:.0%} of the seeds is *mixed* (its verdicts listed): at the edge, where another CPU's rounding"
        " may move it (`vanex compare` notes such moves rather than failing). Words: "
        + "; ".join(f"*{k}*: {v}" for k, v in NOT_A_NUMBER.items())
        + "."
    )


def study_table(frame: pd.DataFrame, manifest: dict[str, Any], headline: list[str]) -> str:
    """The Markdown study table with its caption."""
    return caption(manifest) + "\n\n" + frame_markdown(display_frame(frame, manifest, headline).rename(columns=human))


ASCII = str.maketrans({"–": "--", "−": "-", "·": " ", "√": "sqrt ", "±": "+/-", "≤": "<=", "≥": ">=", "×": "x"})
LATEX_SPECIAL = str.maketrans({c: "\\" + c for c in "_%&#$"} | {"\\": r"\textbackslash{}", "`": "", "*": ""})


TEXTWIDTH_PT = 469.0  # \textwidth of a two-column article (10 pt): every table is a table* that fits it
GLYPH_PT = {  # widths at \scriptsize (7 pt Computer Modern), measured with \settowidth under pdflatex
    **dict.fromkeys("0123456789agoe/", 3.99),
    **dict.fromkeys("ceszr()t", 3.56),  # c, e, z: 3.56; s, r, t, (, ): 3.13-3.17 (rounded up)
    **dict.fromkeys("bdhnpu", 4.42),
    **dict.fromkeys("kqvxyJ", 4.21),
    **dict.fromkeys("fjI_", 2.88),
    **dict.fromkeys("il.,;:[]'|!-", 2.7),  # 2.26-2.69
    **dict.fromkeys(" ", 2.7),
    **dict.fromkeys("mw", 6.57),
}
COLUMN_PAD_PT = 7.0  # 2 x \tabcolsep, set to 3.5 pt in the tables
ROWS_PER_TABLE = 40  # rows of one float: more would not fit a page's height at \scriptsize


def human(key: str) -> str:
    """A column's name as a paper writes it: ``task.depth`` -> depth, ``optim.lr`` -> lr,
    ``mitigation.lstm.forget_bias`` -> lstm forget bias, ``final_train_loss`` -> final train loss."""
    if key == "optim.name":
        return "optimizer"
    parts = key.split(".")
    if parts[0] in ("task", "optim") and len(parts) > 1:
        parts = parts[1:]
    elif parts[0] == "mitigation" and len(parts) > 2:
        parts = parts[1:]
    return " ".join(parts).replace("_", " ")


def _latex_text(value: Any) -> str:
    return str(value).translate(ASCII).translate(LATEX_SPECIAL)


def _header(name: str) -> str:
    """A header cell stacked one word a line, so a column is as wide as its values, not its name."""
    words = _latex_text(name).split()
    return words[0] if len(words) == 1 else r"\begin{tabular}[b]{@{}l@{}}" + r"\\".join(words) + r"\end{tabular}"


def _text_pt(text: str) -> float:
    """How wide ``text`` sets in a table (``GLYPH_PT``; capitals and the rest at 6.2 pt, a little over most)."""
    return sum(GLYPH_PT.get(c, 6.2) for c in str(text).translate(ASCII).replace("--", "-"))


def _width_pt(column: pd.Series, name: str) -> float:
    """A column's width: its widest line (a cell may hold two, split at a newline; a header one word a line)."""
    lines = [line for text in map(str, column) for line in text.split("\n")]
    return max(_text_pt(text) for text in [*lines, *name.split()]) + COLUMN_PAD_PT


def _cell(value: Any) -> str:
    lines = [_latex_text(line) for line in str(value).split("\n")]
    return lines[0] if len(lines) == 1 else r"\begin{tabular}[t]{@{}l@{}}" + r"\\".join(lines) + r"\end{tabular}"


def study_latex(frame: pd.DataFrame, manifest: dict[str, Any], headline: list[str]) -> str:
    """The study for a paper: LaTeX booktabs tables (``table*``, \\scriptsize, plain ASCII: pdflatex
    with booktabs alone) that fit a two-column article's \\textwidth and a page's height. The settings
    columns come first in every part; the step-0 flow and its verdict, the headline metrics and the
    training verdict follow, spread over as many parts as it takes for each to fit (``TEXTWIDTH_PT``),
    and more than ``ROWS_PER_TABLE`` rows continue in further tables. A verdict is shown as its majority
    with its count; the others, the medians and the claims that read each cell are in the Markdown
    table and the CSV."""
    shown = display_frame(frame, manifest, headline)
    n = (frame["completed"] + frame["diverged"]).astype(int)
    keys = ["mitigations", *manifest["swept"]]
    names = [human(k) for k in keys]
    names = [name if names.count(name) == 1 else key.replace("_", " ") for name, key in zip(names, keys, strict=True)]
    fixed = pd.DataFrame({name: shown[key] for name, key in zip(names, keys, strict=True)})
    fixed["n"] = shown["n (done/div/fail)"]
    columns = {
        "log10 init backward ratio": shown["log10 init backward ratio"],
        "init": _majority_text(frame, "init", n),
        **{human(m): shown[m] for m in headline},
        "training": _majority_text(frame, "training", n),
    }
    parts: list[dict[str, pd.Series]] = [{}]
    room = TEXTWIDTH_PT - sum(_width_pt(fixed[c], c) for c in fixed.columns)
    for name, values in columns.items():
        if _width_pt(values, name) > room:  # too wide even alone: its cells on two lines, "verdict k/n" over "(+...)"
            values = values.str.replace(" (", "\n(", n=1, regex=False)
        if parts[-1] and sum(_width_pt(v, k) for k, v in parts[-1].items()) + _width_pt(values, name) > room:
            parts.append({})
        parts[-1][name] = values
    chunks = [range(i, min(i + ROWS_PER_TABLE, len(fixed))) for i in range(0, max(1, len(fixed)), ROWS_PER_TABLE)]
    tables = []
    total = len(parts) * len(chunks)
    for p, part in enumerate(parts):
        for c, rows in enumerate(chunks):
            table = pd.concat([fixed, pd.DataFrame(part)], axis=1).iloc[list(rows)]
            number = p * len(chunks) + c + 1
            tables.append(_latex_float(table, manifest, number, total, rows))
    return "\n".join(tables)


def _majority_text(frame: pd.DataFrame, part: str, n: pd.Series) -> pd.Series:
    """Each cell's verdict as ``_verdict_words`` writes it."""
    return pd.Series(
        [_verdict_words(row, part, int(k)) for (_, row), k in zip(frame.iterrows(), n, strict=True)], index=frame.index
    )


def _latex_float(table: pd.DataFrame, manifest: dict[str, Any], number: int, total: int, rows: range) -> str:
    study = _latex_text(manifest["study"])
    part = f", part {number} of {total} (rows {rows.start + 1}--{rows.stop})" if total > 1 else ""
    body = [" & ".join(_header(c) for c in table.columns) + r" \\", r"\midrule"]
    body += [" & ".join(_cell(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    label = f"tab:{manifest['study']}" + (f"-{number}" if total > 1 else "")
    notes = (
        "n: seeds done/diverged/failed. "
        f"Mean over completed seeds [{LEVEL:.0%} CI, Student t, clipped to the metric's range]; fewer than 3 "
        "seeds: the mean alone. Verdicts: majority, its count of n, co-occurring conditions with their counts in "
        f"brackets; mixed: no verdict in {SETTLED:.0%} of the seeds. "
        "Every column and word is explained in "
        f"the report (summary.md, study {manifest['study']})."
    )
    return "\n".join(
        [
            r"\begin{table*}",
            r"\centering\scriptsize\setlength{\tabcolsep}{3.5pt}",
            rf"\caption{{Study {study} ({manifest['profile']} profile){part}.}}",
            rf"\label{{{label}}}",
            r"\begin{tabular}{" + "l" * len(table.columns) + "}",
            r"\toprule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\par\smallskip\parbox{\textwidth}{\scriptsize " + _latex_text(notes) + "}",
            r"\end{table*}",
            "",
        ]
    )


def legend(t: dict[str, float]) -> str:
    van, exp = f"1e-{t['vanishing_orders']:g}", f"1e{t['exploding_orders']:g}"
    return (
        "Each study table has its caption; in all of them *init* is the gradient flow of the untrained network, "
        "read from the backward signal: the step-0 ratio of ‖∂L/∂h‖ at the first hidden layer's input to the "
        "last's (the `backprop` probe; the task's flow ratio, e.g. ‖∂L/∂h_t‖ through time, where it is not "
        f"probed): vanishing (≤ {van}), exploding (≥ {exp}, or a step-0 global gradient norm above "
        f"{t['exploding_grad_norm']:g}) or stable. *training* is what happened while training, in order of "
        "precedence: diverged (non-finite values), unstable (final training loss at or above "
        f"{t['unstable_fraction']:.0%} of the task's chance loss), stalled (at or above {t['stall_fraction']:.0%}), "
        f"exploding (over the later half the median ratio ≥ {exp} or the median global gradient norm above "
        f"{t['exploding_grad_norm']:g}, or the norm grown {10 ** t['exploding_growth_orders']:g}×), vanishing "
        f"(median ratio ≤ {van} over the later half), dead_units (≥ {t['dead_fraction']:.0%} of ReLU units dead), "
        "else healthy (inconclusive without evidence); other conditions that hold are named in brackets, e.g. "
        "stalled (+vanishing). *claims*: the published claims (section below) that read the cell at its own "
        "learning rate.\n"
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
    header = ["mitigations", *map(human, others), *(f"lr {lr:g}" for lr in lrs), "tuned lr"]
    lines = []
    for name, group in groups:
        name = name if isinstance(name, tuple) else (name,)
        scores = {lr: _finite_mean(g[metric]) for lr, g in group.groupby(key)}
        best = min(scores, key=lambda lr: (scores[lr], lr))
        row = [setting_text(v) for v in name]
        for lr in lrs:
            n = int((group[key] == lr).sum())
            text = "–" if lr not in scores else ("diverged" if math.isinf(scores[lr]) else f"{scores[lr]:.3f}")
            row.append(text if lr not in scores else f"{text} ({n})")
        row.append(f"**{best:g}**" if math.isfinite(scores[best]) else "none finite")
        lines.append(row)
    caption = (
        f"Learning rate per mitigation set: mean held-out {human(metric)} over seeds (number of seeds in brackets) "
        "at each learning rate of the shared grid, and the one that wins; a diverged seed counts as infinitely bad "
        "(*diverged*: a seed at that rate diverged or has no value; *none finite*: so at every rate; "
        "– : not run at that rate). "
        "The table above compares every set at each fixed learning rate; this one at its own best.\n"
    )
    return caption + "\n" + markdown_table(header, lines)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown pipe table (the one writer of them): floats to three significant digits, a '|'
    inside a cell written as '/'."""

    def cell(v: Any) -> str:
        return (f"{v:.3g}" if isinstance(v, float) else str(v)).replace("|", "/")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_markdown(frame: pd.DataFrame) -> str:
    """A data frame as a Markdown table."""
    return markdown_table(list(frame.columns), [list(row) for row in frame.itertuples(index=False)])
