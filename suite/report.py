"""The reporter: records -> ``reports/`` (Markdown summary, tidy CSV, seaborn figures).

For each study, the grid is expanded exactly as ``gradbench study`` does, so each cell is
matched to its record by ``run_id``; cells without a record are listed as missing, never
invented. Tables show mean +- std over seeds and the majority diagnosis.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from suite.config import group_options
from suite.errors import UserError
from suite.records import load_run, record_dir
from suite.registry import TASKS
from suite.study import plan
from suite.task import layer_kind


def collect(results: str, profile: str, studies: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(cells: one row per study cell with its record, probes: tidy probe rows, records)."""
    cells, probes, records = [], [], {}
    for study in studies:
        for planned in plan(study, profile, [f"results_dir={results}"]):
            run = load_run(record_dir(results, planned.run_id))
            c = planned.cell
            row = {
                "study": study,
                "task": c.task,
                "mitigations": c.label,
                "overrides": ";".join(c.overrides),
                "seed": c.seed,
                "run_id": planned.run_id,
                "status": run["status"] if run else "missing",
            }
            cells.append(row)
            if run is None:
                continue
            records[planned.run_id] = run
            row["verdict"] = (run.get("diagnosis") or {}).get("verdict")
            row.update({k: v for k, v in run["summary"].items() if isinstance(v, (int, float))})
            df = pd.read_csv(
                record_dir(results, planned.run_id) / "probes.csv", keep_default_na=False, dtype={"layer": str}
            )
            df["value"] = df["value"].astype(float)  # "nan"/"inf" are values here, not missing data
            probes.append(df.assign(**{k: row[k] for k in ("study", "mitigations", "overrides", "seed", "run_id")}))
    swept = {o.split("=")[0] for row in cells for o in row["overrides"].split(";") if o}
    for row in cells:  # the value every swept setting took in each run, defaults included
        for key in swept:
            row["config_" + key] = _select(records[row["run_id"]]["config"], key) if row["run_id"] in records else None
    probes_df = pd.concat(probes, ignore_index=True) if probes else pd.DataFrame()
    return pd.DataFrame(cells), probes_df, list(records.values())


def _select(config: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def tidy_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: study, task, mitigations, overrides, seed, metric, value."""
    ids = ["study", "task", "mitigations", "overrides", "seed"]
    found = cells[cells["status"] != "missing"]
    value_cols = [c for c in found.columns if c not in ids and c != "run_id" and not c.startswith("config_")]
    long = found.melt(id_vars=ids, value_vars=value_cols, var_name="metric", value_name="value").dropna(
        subset=["value"]
    )
    return long.sort_values(ids + ["metric"], kind="stable").reset_index(drop=True)


def _mean_std(values: pd.Series, scientific: bool) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "n/a"
    fmt = "{:.2e}" if scientific else "{:.3f}"
    return fmt.format(values.mean()) + (" ± " + fmt.format(values.std()) if len(values) > 1 else "")


def study_table(cells: pd.DataFrame, task: str) -> str:
    key_metrics = dict.fromkeys(("grad_ratio_init", "final_train_loss", *TASKS.get(task).headline_metrics))
    metrics = [m for m in key_metrics if m in cells.columns and cells[m].notna().any()]
    header = ["mitigations", "overrides", "runs", *metrics, "diagnosis (majority)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (mitigations, overrides), group in cells.groupby(["mitigations", "overrides"], sort=False):
        done = group[group["status"] != "missing"]
        statuses = Counter(done["status"])
        runs = f"{len(done)}/{len(group)}" + "".join(f" ({n} {s})" for s, n in statuses.items() if s != "completed")
        verdicts = Counter(v for v in done.get("verdict", pd.Series(dtype=object)).dropna())
        verdict = (
            f"{verdicts.most_common(1)[0][0]} ({verdicts.most_common(1)[0][1]}/{len(done)})" if verdicts else "n/a"
        )
        values = [_mean_std(done[m], m == "grad_ratio_init") if m in done else "n/a" for m in metrics]
        lines.append("| " + " | ".join([mitigations, overrides or "-", runs, *values, verdict]) + " |")
    return "\n".join(lines)


def _sweep_figures(study: str, task: str, cells: pd.DataFrame, out: Path, sns: Any, plt: Any) -> list[Path]:
    """Headline metrics against each swept setting (e.g. task.depth), one line per mitigation set."""
    figures = []
    keys = sorted({o.split("=")[0] for o in cells["overrides"] for o in o.split(";") if o})
    metrics = [m for m in TASKS.get(task).headline_metrics if m in cells.columns]
    for key in keys:
        column = "config_" + key
        if column not in cells or cells[column].nunique() < 3 or not metrics:
            continue
        swept_sets = cells.loc[cells["overrides"].str.contains(key + "=", regex=False), "mitigations"]
        swept = cells[cells["mitigations"].isin(swept_sets)].copy()
        # one panel per value of the other swept settings, so no line averages over them
        swept["others"] = swept["overrides"].map(
            lambda o: ";".join(p for p in o.split(";") if p and not p.startswith(key + "="))
        )
        long = swept.melt(id_vars=["mitigations", column, "others"], value_vars=metrics, var_name="metric")
        g = sns.relplot(
            data=long,
            x=column,
            y="value",
            hue="mitigations",
            row="metric",
            col="others",
            kind="line",
            marker="o",
            errorbar="sd",
            height=3.0,
            facet_kws={"sharey": "row"},
        )
        g.set_axis_labels(key, "")
        ticks = sorted(long[column].dropna().unique())
        for ax in g.axes.flat:
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(ticks, [str(t) for t in ticks])
        figures.append(_save(g.figure, out / f"{study}_{key.replace('.', '_')}.png", plt))
    return figures


def _like_with_like(flow: pd.DataFrame, layers: dict[str, list[dict]]) -> pd.DataFrame:
    """Keep the hidden layers of the same kind as the first hidden one (as grad_ratio does) and
    number them in input->output order; time steps (``t0``, ``t1``...) are all kept."""
    keep = []
    for run_id, group in flow.groupby("run_id", sort=False):
        hidden = [entry["name"] for entry in layers.get(run_id, []) if entry["hidden"]]
        names = list(group["layer"])
        if hidden and set(names) & set(hidden):
            names = [n for n in names if n in hidden and layer_kind(n) == layer_kind(hidden[0])]
        keep.append(group[group["layer"].isin(names)].assign(position=range(len(names))))
    return pd.concat(keep, ignore_index=True)


def write_figures(
    study: str, task: str, cells: pd.DataFrame, probes: pd.DataFrame, out: Path, layers: dict[str, list[dict]]
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    figures = []
    data = probes[probes["study"] == study]
    data = data.assign(overrides=data["overrides"].replace("", "defaults"))  # panel title for no overrides
    flow_metric = TASKS.get(task).flow_metric
    flow = data[(data["metric"] == flow_metric) & (data["step"] == 0)].copy()
    if not flow.empty:
        flow = _like_with_like(flow, layers)
        xlabel = "hidden layer (input → output)" if flow_metric == "grad_norm" else "time step t"
        figures.append(
            _log_lines(
                sns,
                plt,
                flow,
                out / f"{study}_gradient_flow.png",
                "position",
                xlabel,
                f"{flow_metric} at step 0",
                col="overrides",
                col_wrap=3,
                facet_kws={"sharex": False},
            )
        )
    per_block = data[
        (data["metric"] == "grad_norm") & (data["step"] == 0) & data["layer"].str.contains(".", regex=False)
    ]
    if not per_block.empty:  # tasks with several kinds of layer per block (e.g. attention and MLP)
        per_block = per_block.assign(
            block=per_block["layer"].str.extract(r"(\d+)\.", expand=False).astype(int),
            kind=per_block["layer"].map(layer_kind),
        )
        figures.append(
            _log_lines(
                sns,
                plt,
                per_block,
                out / f"{study}_grad_norm_per_block.png",
                "block",
                "block",
                "grad_norm at step 0",
                row="kind",
                col="overrides",
                height=2.6,
            )
        )
    figures += _sweep_figures(study, task, cells, out, sns, plt)
    loss = data[data["metric"] == "batch_loss"]
    if not loss.empty:
        figures.append(
            _log_lines(
                sns,
                plt,
                loss,
                out / f"{study}_loss.png",
                "step",
                "step",
                "training batch loss (mean since last sample)",
                xscale="symlog",
                marker=None,
                col="overrides",
                col_wrap=3,
            )
        )
    return figures


def _log_lines(
    sns: Any,
    plt: Any,
    data: pd.DataFrame,
    path: Path,
    x: str,
    xlabel: str,
    ylabel: str,
    xscale: str = "linear",
    marker: str | None = "o",
    **facets: Any,
) -> Path:
    """Mean line per mitigation set with a log y axis, faceted as asked. Exact zeros (float32
    underflow, truncated gradients) cannot be drawn on a log axis and are left out."""
    facets.setdefault("height", 3.2)
    g = sns.relplot(
        data=data[data["value"] > 0],
        x=x,
        y="value",
        hue="mitigations",
        kind="line",
        marker=marker,
        errorbar=None,
        **facets,
    )
    g.set(yscale="log", xscale=xscale)
    if xscale == "symlog":  # steps start at 0: no negative half-axis
        g.set(xlim=(0, None))
    g.set_titles(row_template="{row_name}", col_template="{col_name}")
    g.set_axis_labels(xlabel, ylabel)
    return _save(g.figure, path, plt)


def _save(figure: Any, path: Path, plt: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return path


def _provenance(records: list[dict]) -> str:
    keys = ("gradbench", "torch", "python", "git_commit", "lock_file_sha256", "cpu", "threads")
    lines = []
    for key in keys:
        values = Counter(str(r["provenance"].get(key)) for r in records)
        lines.append(f"- {key}: " + ", ".join(f"{v} ({n} runs)" if len(values) > 1 else v for v, n in values.items()))
    wall = sum(r["provenance"]["wall_time_s"] for r in records)
    lines.append(f"- total training wall time: {wall:.0f} s over {len(records)} runs")
    return "\n".join(lines)


def write_report(results: str, out: str, profile: str, studies: list[str] | None) -> Path:
    valid = group_options("study")
    studies = studies or valid
    for s in studies:
        if s not in valid:
            raise UserError(f"unknown study '{s}'; valid studies: {', '.join(valid)}")
    if not Path(results).is_dir():
        raise UserError(f"no records directory '{results}'; run `gradbench study NAME` (or `nox`) first")
    cells, probes, records = collect(results, profile, studies)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tidy_summary(cells).to_csv(out_dir / "summary.csv", index=False)
    parts = [
        f"# gradbench report ({profile} profile)\n",
        "Generated by `gradbench report` from the records in "
        f"`{results}/`; regenerate with `nox`. Do not edit by hand.\n",
    ]
    for study in studies:
        study_cells = cells[cells["study"] == study]
        task = study_cells["task"].iloc[0]
        parts.append(f"## Study `{study}` (task `{task}`)\n")
        parts.append(study_table(study_cells, task) + "\n")
        layers = {r["run_id"]: r.get("layers", []) for r in records}
        figures = write_figures(study, task, study_cells, probes, out_dir / "figures", layers) if len(probes) else []
        for fig in figures:
            parts.append(f"![{fig.stem}](figures/{fig.name})\n")
    parts.append("## Provenance\n")
    parts.append(_provenance(records) + "\n" if records else "no records\n")
    path = out_dir / "summary.md"
    path.write_text("\n".join(parts))
    missing = int((cells["status"] == "missing").sum())
    print(f"report: {path} ({len(records)} records, {missing} cells missing)", file=sys.stderr)
    return path
