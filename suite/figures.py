"""Seaborn figures of one study, drawn from its cells, probe rows and records (no torch, no Hydra).

- ``<study>_gradient_flow.png``: the flow metric at step 0 along depth (hidden layers of the same
  kind as the first, input -> output) or along time;
- ``<study>_grad_norm_per_block.png``: step-0 gradient norm per block and kind of layer, where
  blocks hold several kinds (attention and MLP, two convolutions);
- ``<study>_<setting>.png``: headline metrics against each swept setting with 3+ values;
- ``<study>_loss.png``: training batch loss over steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def write_figures(
    manifest: dict[str, Any],
    cells: pd.DataFrame,
    probes: pd.DataFrame,
    records: dict[str, dict],
    headline: list[str],
    out: Path,
) -> list[Path]:
    if probes.empty:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    study = manifest["study"]
    data = probes.assign(setting=probes["setting"].replace("", "all cells"))
    layers = {rid: r["task_info"]["layers"] for rid, r in records.items()}
    flow_metric = next(iter(records.values()))["task_info"]["flow_metric"]
    figures = []
    flow = data[(data["metric"] == flow_metric) & (data["step"] == 0)]
    if not flow.empty:
        xlabel = "hidden layer (input → output)" if flow_metric == "grad_norm" else "time step t"
        figures.append(
            _log_lines(
                sns,
                plt,
                _like_with_like(flow, layers),
                out / f"{study}_gradient_flow.png",
                "position",
                xlabel,
                f"{flow_metric} at step 0",
                col="setting",
                col_wrap=3,
                facet_kws={"sharex": False},
            )
        )
    per_block = _per_block(data[(data["metric"] == "grad_norm") & (data["step"] == 0)], layers)
    if not per_block.empty:
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
                col="setting",
                height=2.6,
            )
        )
    figures += _sweep_figures(study, manifest["swept"], cells, headline, out, sns, plt)
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
                col="setting",
                col_wrap=3,
            )
        )
    return figures


def _like_with_like(flow: pd.DataFrame, layers: dict[str, list[dict]]) -> pd.DataFrame:
    """Keep the hidden layers of the same kind as the first hidden one (as grad_ratio does) and
    number them in input->output order; time steps (``t0``, ``t1``...) are all kept."""
    keep = []
    for run_id, group in flow.groupby("run_id", sort=False):
        hidden = [entry for entry in layers.get(run_id, []) if entry["hidden"]]
        names = list(group["layer"])
        if hidden and set(names) & {h["name"] for h in hidden}:
            names = [h["name"] for h in hidden if h["kind"] == hidden[0]["kind"] and h["name"] in names]
        keep.append(group.set_index("layer").loc[names].reset_index().assign(position=range(len(names))))
    return pd.concat(keep, ignore_index=True)


def _per_block(grad_norm: pd.DataFrame, layers: dict[str, list[dict]]) -> pd.DataFrame:
    """Step-0 grad_norm with each layer's block and kind, for runs whose blocks hold several kinds."""
    keep = []
    for run_id, group in grad_norm.groupby("run_id", sort=False):
        where = {
            e["name"]: (e["block"], e["kind"]) for e in layers.get(run_id, []) if e["hidden"] and e["block"] is not None
        }
        if len({kind for _, kind in where.values()}) < 2:
            continue
        group = group[group["layer"].isin(where)]
        keep.append(
            group.assign(
                block=group["layer"].map(lambda n: where[n][0]), kind=group["layer"].map(lambda n: where[n][1])
            )
        )
    return pd.concat(keep, ignore_index=True) if keep else pd.DataFrame()


def _sweep_figures(
    study: str, swept: list[str], cells: pd.DataFrame, headline: list[str], out: Path, sns: Any, plt: Any
) -> list[Path]:
    """Headline metrics against each swept setting, one line per mitigation set, one panel per value
    of the other swept settings (so no line averages over them)."""
    figures = []
    metrics = [m for m in headline if m in cells.columns]
    for key in swept:
        values = pd.to_numeric(cells[key], errors="coerce")
        if values.nunique() < 3 or not metrics:
            continue
        data = cells.assign(others=cells.apply(lambda r: ", ".join(f"{k}={r[k]}" for k in swept if k != key), axis=1))
        # mitigation sets that were swept along this key (others appear at one value only)
        counts = data.groupby(["mitigations", "others"])[key].nunique()
        swept_sets = {m for (m, _), n in counts.items() if n >= 3}
        data = data[data["mitigations"].isin(swept_sets)]
        if data.empty:  # the key takes several values only across mitigation sets (e.g. a tbptt window)
            continue
        long = data.melt(id_vars=["mitigations", key, "others"], value_vars=metrics, var_name="metric")
        g = sns.relplot(
            data=long,
            x=key,
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
        ticks = sorted(values.dropna().unique())
        for ax in g.axes.flat:
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        figures.append(_save(g.figure, out / f"{study}_{key.replace('.', '_')}.png", plt))
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
