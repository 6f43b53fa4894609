"""Seaborn figures of one study, drawn from its cells, probe rows and records (no torch, no Hydra).

- ``<study>_gradient_flow.png``: the flow metric at step 0 along depth (hidden layers of the same
  kind as the first, input -> output) or along time;
- ``<study>_grad_norm_per_block.png``: step-0 gradient norm per block and kind of layer, where
  blocks hold several kinds (attention and MLP, two convolutions);
- ``<study>_<setting>.png``: headline metrics against each swept setting with 3+ values;
- ``<study>_loss.png``: training batch loss over steps.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
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


# --- The sigma_max^T bound of Pascanu et al. (2013) against the measured gradient through time ---


def rnn_bound_points(probes: pd.DataFrame, records: dict[str, dict], recall: int = 10) -> pd.DataFrame:
    """One row per (plain-RNN run, lag) at step 0: the measured log10 ||dL/dh_t|| / ||dL/dh_s|| and
    the bound (s - t) log10 sigma_max(W_hh), where s is the first of the ``recall`` positions that
    carry the loss and lag = s - t for t < s.

    Before s the loss reaches h_t only through h_s, so dL/dh_t = (dh_s/dh_t)^T dL/dh_s, and for a
    plain tanh or ReLU cell (|phi'| <= 1) ||dh_s/dh_t|| <= sigma_max^(s-t): the bound must hold at
    every lag (at positions >= s the readout adds direct terms, so they are not compared). Runs with
    a gated cell (the probed matrix is one gate block, not the Jacobian's) or truncated BPTT (the
    gradient is cut, trivially bounded) are left out. Columns: run_id, group, seed, sigma_max,
    lag, measured, bound (both log10), radius (lag log10 of the spectral radius: a reference for the
    typical growth, not a bound), holds."""
    columns = ["run_id", "group", "seed", "sigma_max", "lag", "measured", "bound", "radius", "holds"]
    if probes.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    step0 = probes[probes["step"] == 0]
    for rid, group in step0.groupby("run_id"):
        run = records.get(rid)
        if run is None or run["task"] != "rnn_copy":
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
        for t in range(first):
            lag = first - t
            measured = np.log10(values[t] / values[first]) if values[t] > 0 else -np.inf
            bound = lag * np.log10(sigma_max)
            holds = bool(values[t] <= values[first] * sigma_max**lag * (1 + 1e-4))  # float32 records
            rows.append((rid, label, run["seed"], sigma_max, lag, measured, bound, lag * log_rho, holds))
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    ncols = min(3, len(groups))
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
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
        ax.set_title(f"{textwrap.fill(name, 55)}\n(holds at {data['holds'].mean():.0%} of lags)", fontsize=8)
        ax.set_xlabel("lag s − t (s: first recall step)")
        ax.set_ylabel("log10 ||dL/dh_t|| / ||dL/dh_s||")
        ax.legend(fontsize=7)
    fig.suptitle("Gradient through time at init against Pascanu et al.'s σ_max^(s−t) bound")
    fig.tight_layout()
    return _save(fig, path, plt)


def rnn_bound_section(study: str, probes: pd.DataFrame, records: dict[str, dict], out: Path) -> list[str]:
    """Markdown parts for one study: the share of (run, lag) pairs where the sigma_max^T bound holds,
    a table per group, and ``<study>_sigma_bound.png`` in ``out``; empty without plain-RNN records."""
    points = rnn_bound_points(probes, records)
    if points.empty:
        return []
    from suite.tables import frame_markdown

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
        parts.append(f"![{path.stem}](figures/{path.name})\n")
    return parts
