"""The deep MLP's report section (torch-free, beside its task; registered through the ``vanex.sections``
entry point): the mean-field prediction of the backward signal per layer (``vanex.science.meanfield``)
against the ``backprop`` probe at initialisation, with the agreement as numbers, the trainability
phase diagram against the depth scale, and batch norm's gradient explosion against Yang et al.'s rate.

A study takes part when its records are deep MLPs under ``task.init=scaled`` (weights
N(0, sigma_w^2/fan_in), biases 0) whose probes hold ``grad_preact``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from vanex.records.reader import StudyData
from vanex.registry import SECTIONS
from vanex.report.figures import WIDTH, figure_links, panels, pyplot, save
from vanex.report.sections import Section
from vanex.report.tables import frame_markdown
from vanex.science import meanfield
from vanex.science.stats import loss_vs_chance, trained

KEYS = ("task.activation", "task.weight_scale", "task.depth")


def _deep_mlps(records: dict[str, dict], norm: str, keep: Any) -> dict[str, dict]:
    """The deep MLP records without skips, with ``norm``, whose settings pass ``keep``."""
    return {
        rid: r
        for rid, r in records.items()
        if r["task"] == "deep_mlp"
        and r["settings"].get("task.norm") == norm
        and r["settings"].get("task.residual") == "none"
        and keep(r["settings"])
    }


def _scaled_runs(records: dict[str, dict]) -> dict[str, dict]:
    return _deep_mlps(
        records,
        "none",
        lambda s: (
            s.get("task.init") == "scaled"
            and s.get("task.activation") in meanfield.ACTIVATIONS
            and not s.get("task.bias_scale")
        ),  # the overlay and phase diagram are drawn for sigma_b = 0
    )


def _step0_flows(probes: pd.DataFrame, runs: dict[str, dict]) -> Any:
    """(run id, ||dL/dh_l|| of each hidden layer at step 0) of every run in ``runs`` whose series is
    complete, finite and positive."""
    if probes.empty or not runs:
        return
    flow = probes[(probes["metric"] == "grad_preact") & probes["run_id"].isin(runs)]
    for rid, group in flow.groupby("run_id"):
        group = group[group["step"] == group["step"].min()]
        hidden = [e["name"] for e in runs[rid]["task_info"]["layers"] if e["hidden"]]
        values = group.set_index("layer")["value"].reindex(hidden).to_numpy(dtype=float)
        if len(values) >= 2 and np.isfinite(values).all() and (values > 0).all():
            yield rid, values


def agreement(probes: pd.DataFrame, records: dict[str, dict]) -> pd.DataFrame:
    """One row per (activation, sigma_w, depth, hidden layer): measured log10 ||dL/dh_l|| relative to
    the last hidden layer at step 0 (mean over seeds, and the number of seeds) and the prediction."""
    runs = _scaled_runs(records)
    rows = []
    for rid, values in _step0_flows(probes, runs):
        r = runs[rid]
        measured = np.log10(values) - np.log10(values[-1])
        s = r["settings"]
        q_in = r["task_info"]["constants"]["input_second_moment"]
        predicted = meanfield.profile(s["task.activation"], s["task.weight_scale"], q_in, len(values))
        for i, (m, p) in enumerate(zip(measured, predicted, strict=True)):
            rows.append((s["task.activation"], s["task.weight_scale"], s["task.depth"], i + 1, r["seed"], m, p))
    cols = ["activation", "sigma_w", "depth", "layer", "seed", "measured", "predicted"]
    frame = pd.DataFrame(rows, columns=cols)
    if frame.empty:
        return frame
    keys = ["activation", "sigma_w", "depth", "layer"]
    # runs that differ only in their training budget share the initialisation: count a seed once
    frame = frame.drop_duplicates(keys + ["seed"])
    return (
        frame.groupby(keys)
        .agg(measured=("measured", "mean"), predicted=("predicted", "first"), seeds=("seed", "nunique"))
        .reset_index()
    )


def summary(points: pd.DataFrame) -> tuple[pd.DataFrame, float, float]:
    """(per cell: chi_1, predicted and measured mean log10 growth per layer, RMS error in decades;
    R^2 of measured on predicted over every point; median absolute error in decades)."""
    rows = []
    for (act, sw, depth), g in points.groupby(["activation", "sigma_w", "depth"]):
        layers = g["layer"].to_numpy(dtype=float)
        slope = lambda y: -np.polyfit(layers, y, 1)[0]  # noqa: E731 - growth per layer towards the input
        err = g["measured"] - g["predicted"]
        chi_1 = meanfield.chi1(act, sw)
        rows.append(
            {
                "activation": act,
                "sigma_w": sw,
                "depth": depth,
                "chi_1": chi_1,
                "predicted log10 growth/layer": slope(g["predicted"].to_numpy()),
                "measured log10 growth/layer": slope(g["measured"].to_numpy()),
                "rms error (decades)": float(np.sqrt((err**2).mean())),
                "seeds": int(g["seeds"].min()),
            }
        )
    residual = ((points["measured"] - points["predicted"]) ** 2).sum()
    total = ((points["measured"] - points["measured"].mean()) ** 2).sum()
    r2 = float(1 - residual / total) if total > 0 else math.nan
    return pd.DataFrame(rows), r2, float((points["measured"] - points["predicted"]).abs().median())


def phase(records: dict[str, dict]) -> pd.DataFrame:
    """Per (activation, sigma_w, depth): the share of seeds that trained (``vanex.science.stats.trained``)."""
    runs = _scaled_runs(records)
    rows = []
    for r in runs.values():
        ok = trained(loss_vs_chance(r["summary"].get("final_train_loss"), r["task_info"]["chance_loss"]))
        s = r["settings"]
        rows.append((s["task.activation"], s["task.weight_scale"], s["task.depth"], s["task.steps"], float(ok)))
    frame = pd.DataFrame(rows, columns=["activation", "sigma_w", "depth", "steps", "trained"])
    if frame.empty:
        return frame
    return frame.groupby(["activation", "sigma_w", "depth", "steps"], as_index=False)["trained"].mean()


def section(study: str, probes: pd.DataFrame, records: dict[str, dict], out: Path) -> list[str]:
    """Markdown parts (tables and figure links) for one study; empty when it has no such runs."""
    points = agreement(probes, records)
    if points.empty:
        return []
    import seaborn as sns

    plt = pyplot()

    table, r2, med = summary(points)
    parts = [
        "**Mean-field theory against measurement.** At step 0, log10 ||dL/dh_l|| of each hidden layer "
        "relative to the last (the `backprop` probe, mean over seeds) against the mean-field prediction "
        "from the measured input (Poole et al. 2016; Schoenholz et al. 2017: each layer multiplies "
        f"E||dL/dh||² by χ(q_l) = σ_w² E[φ′(h)²]). Agreement over all {len(points)} points: "
        f"R² = {r2:.3f}, median absolute error {med:.3f} decades.\n",
        frame_markdown(table) + "\n",
    ]
    out.mkdir(parents=True, exist_ok=True)
    acts = sorted(points["activation"].unique())
    fig, axes = panels(plt, len(acts), ncols=len(acts))
    for ax, act in zip(axes[0], acts, strict=True):
        data = points[points["activation"] == act]
        palette = dict(
            zip(sorted(data["sigma_w"].unique()), sns.color_palette("viridis", data["sigma_w"].nunique()), strict=True)
        )
        for sw, g in data.groupby("sigma_w"):
            ax.plot(
                g["layer"],
                g["predicted"],
                color=palette[sw],
                lw=1.5,
                label=f"σ_w={sw:g} (χ₁={meanfield.chi1(act, sw):.2f})",
            )
            ax.plot(g["layer"], g["measured"], "o", color=palette[sw], ms=3.5)
        ax.set_title(act)
        ax.set_xlabel("hidden layer")
        ax.set_ylabel("log10 ||dL/dh_l|| / ||dL/dh_L||")
        ax.legend()
    fig.suptitle("Backward signal at init: mean-field prediction (lines) vs measured (dots)")
    path = save(fig, out / f"{study}_meanfield.png", plt, points)
    parts.extend(figure_links(path))
    grid = phase(records)
    grid = grid[grid.groupby(["activation", "sigma_w"])["depth"].transform("nunique") >= 3] if not grid.empty else grid
    if not grid.empty:
        parts.extend(_phase_figure(study, grid, out, plt))
    return parts


def _batchnorm_runs(records: dict[str, dict]) -> dict[str, dict]:
    return _deep_mlps(records, "batchnorm", lambda s: s.get("task.activation") == "relu")


def batchnorm_points(probes: pd.DataFrame, records: dict[str, dict]) -> pd.DataFrame:
    """Per (sigma_w, depth, seed) of batch-normalised ReLU MLPs: the growth of ||dL/dh_l|| at step 0
    from the last hidden layer to the first, in decades, and per layer (Yang et al. 2019)."""
    runs = _batchnorm_runs(records)
    rows = []
    for rid, values in _step0_flows(probes, runs):
        r = runs[rid]
        growth = float(np.log10(values[0] / values[-1]))
        s = r["settings"]
        rows.append((s.get("task.weight_scale"), len(values), r["seed"], growth, growth / (len(values) - 1)))
    frame = pd.DataFrame(rows, columns=["sigma_w", "depth", "seed", "growth", "per_layer"])
    return frame.drop_duplicates(["sigma_w", "depth", "seed"])  # both numeric paths: a seed counts once


def batchnorm_section(study: str, probes: pd.DataFrame, records: dict[str, dict], out: Path) -> list[str]:
    """The measured growth of the backward signal of batch-normalised ReLU nets across depth against
    Yang et al.'s rate, as a table and a figure; empty when the study has no such runs."""
    points = batchnorm_points(probes, records)
    if points.empty:
        return []
    rate = meanfield.batchnorm_relu_growth()
    table = (
        points.groupby(["sigma_w", "depth"])
        .agg(measured=("per_layer", "mean"), sd=("per_layer", "std"), seeds=("seed", "nunique"))
        .reset_index()
    )
    table["predicted"] = rate
    table["off by"] = [f"{m / rate - 1:+.0%}" for m in table["measured"]]
    table = table.rename(columns={"measured": "measured decades/layer", "sd": "sd", "predicted": "predicted"})
    parts = [
        "**Batch norm against its mean-field theory.** At step 0, log10 ||dL/dh_1|| / ||dL/dh_L|| of "
        "batch-normalised ReLU nets (the `backprop` probe) against Yang et al. (2019): each layer "
        f"multiplies E||dL/dh||² by π/(π−1), {rate:.4f} decades per layer whatever σ_w.\n",
        frame_markdown(table) + "\n",
    ]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH["one"], 2.6), layout="constrained")
    markers = dict(zip(sorted(points["sigma_w"].unique()), "osD^v", strict=False))
    for sw, g in points.groupby("sigma_w"):
        stats = g.groupby("depth")["growth"].agg(["mean", "std"]).reset_index()
        ax.errorbar(
            stats["depth"],
            stats["mean"],
            yerr=stats["std"].fillna(0),
            fmt=markers[sw],
            ms=4,
            capsize=2,
            label=f"measured, σ_w={sw:g} (mean ± sd over seeds)",
        )
    depths = np.array([1, points["depth"].max()])
    ax.plot(depths, rate * (depths - 1), "k--", lw=1, label="Yang et al. 2019: ½ log10(π/(π−1)) per layer")
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("log10 ||dL/dh_1|| / ||dL/dh_L|| at init")
    ax.set_title("Batch norm makes a ReLU net's gradient explode at init")
    ax.legend()
    path = save(fig, out / f"{study}_batchnorm.png", plt, points)
    return parts + figure_links(path)


def _phase_figure(study: str, grid: pd.DataFrame, out: Path, plt: Any) -> list[str]:
    parts = []
    for act, data in grid.groupby("activation"):
        fig, ax = plt.subplots(figsize=(WIDTH["one"], 2.8), layout="constrained")
        sc = ax.scatter(
            data["sigma_w"], data["depth"], c=data["trained"], cmap="RdYlGn", vmin=0, vmax=1, s=80, edgecolors="k"
        )
        fig.colorbar(sc, label="share of seeds that trained")
        sws = np.linspace(data["sigma_w"].min(), data["sigma_w"].max(), 200)
        depth6 = [6 * meanfield.correlation_depth_scale(act, sw) for sw in sws]
        depth6 = np.where(np.isfinite(depth6), depth6, np.nan)  # infinite at the critical sigma_w
        ax.plot(sws, depth6, "k--", label="6 ξ_c, ξ_c = −1/ln χ_c (Schoenholz et al. 2017)")
        ax.set_yscale("log")
        ax.set_ylim(data["depth"].min() / 1.5, data["depth"].max() * 1.5)
        depths = sorted(data["depth"].unique())
        ax.set_yticks(depths, [str(d) for d in depths])
        ax.yaxis.set_minor_locator(plt.NullLocator())
        ax.set_xlabel("σ_w")
        ax.set_ylabel("hidden layers")
        ax.set_title(f"Trainability of a deep {act} MLP")
        ax.legend()
        path = save(fig, out / f"{study}_phase_{act}.png", plt, data)
        parts.extend(figure_links(path))
    return parts


@SECTIONS.register("meanfield")
class MeanFieldSection(Section):
    """Mean-field prediction against the measured backward signal at init; trainability phase diagram."""

    order = 40
    metrics = ("grad_preact",)
    writes = (
        "figures/{study}_meanfield.png",
        "figures/{study}_phase_<activation>.png",
        "figures/{study}_batchnorm.png",
    )

    def applies(self, study: StudyData) -> bool:
        return bool(_scaled_runs(study.records) or _batchnorm_runs(study.records))

    def write(self, study: StudyData, out: Path) -> list[str]:
        parts = section(study.name, study.probes, study.records, out / "figures")
        return parts + batchnorm_section(study.name, study.probes, study.records, out / "figures")
