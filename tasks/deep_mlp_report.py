"""The deep MLP's report section (torch-free, beside its task; registered through the ``vanex.sections``
entry point): the mean-field prediction of the backward signal per layer (``vanex.science.meanfield``)
against the ``backprop`` probe at initialisation, with the agreement as numbers, the trainability
phase diagram against the depth scale, batch norm's gradient explosion against Yang et al.'s rate, and
the spread of the input-output Jacobian across depth and width against its finite-width prediction
(Hanin 2018; the ``input_jacobian`` probe).

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
    """Per (activation, sigma_w, depth): the share of seeds that trained (``vanex.science.stats.trained``);
    runs of one step (read at initialisation only) say nothing about trainability and are left out."""
    runs = _scaled_runs(records)
    rows = []
    for r in runs.values():
        if int(r["settings"].get("task.steps", 0)) <= 1:
            continue
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


def _with_interval(points: pd.DataFrame, digits: str) -> list[str]:
    """The ``measured`` column with its interval, '0.57 [0.47, 0.66]', in the format ``digits`` ('.2f')."""
    return [
        f"{m:{digits}} [{lo:{digits}}, {hi:{digits}}]"
        for m, lo, hi in zip(points["measured"], points["ci_low"], points["ci_high"], strict=True)
    ]


def _draw_measured(ax: Any, x: pd.Series, g: pd.DataFrame, i: int, label: str) -> None:
    """One group's ``measured`` points at ``x`` with their interval as error bars, in colour and marker ``i``."""
    err = np.array([g["measured"] - g["ci_low"], g["ci_high"] - g["measured"]])
    ax.errorbar(x, g["measured"], yerr=err, fmt="os^"[i % 3], color=f"C{i}", ms=4, capsize=2, label=label)


def _depth_axis(ax: Any, plt: Any, depths: Any) -> None:
    """A log axis of hidden layers, ticked at the depths that ran."""
    ax.set_xscale("log")
    depths = sorted(depths)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("hidden layers")


JACOBIAN = ("jacobian_logsq_mean", "jacobian_logsq_var", "jacobian_zero_fraction")


def _one_path(runs: dict[str, dict]) -> dict[str, dict]:
    """The runs on one numeric path: the one claims are judged on first, when present (a second path
    repeats the same cells)."""
    from vanex.report.claims import DEFAULT_NUMERICS

    paths = {r["settings"].get("numerics") for r in runs.values()}
    path = DEFAULT_NUMERICS if DEFAULT_NUMERICS in paths else min(paths, default=None)
    return {rid: r for rid, r in runs.items() if r["settings"].get("numerics") == path}


def jacobian_points(study: StudyData) -> pd.DataFrame:
    """Per (depth, width) of He-initialised ReLU MLPs with the ``input_jacobian`` probe: the variance of
    ln ||J(x)^T u||^2 over inputs and seeds with a 95% bootstrap interval over seeds (one numeric path:
    ``_one_path``), beta = depth/width and the finite-width prediction."""
    from vanex.report.claims_builtin import DIGITS_INPUTS, pooled_variance

    def shape(record: dict) -> tuple[int, int]:
        return int(record["settings"]["task.depth"]), int(record["settings"]["task.width"])

    step0 = study.probes[study.probes["metric"].isin(JACOBIAN)]
    if step0.empty:
        return pd.DataFrame()
    step0 = step0[step0["step"] == 0].pivot_table(index="run_id", columns="metric", values="value", aggfunc="first")
    runs = {rid: r for rid, r in study.records.items() if rid in step0.index and r["task"] == "deep_mlp"}
    runs = _one_path({rid: r for rid, r in runs.items() if r["settings"].get("task.activation") == "relu"})
    rng = np.random.default_rng(0)
    rows = []
    for depth, width in sorted({shape(r) for r in runs.values()}):
        ids = [rid for rid, r in runs.items() if shape(r) == (depth, width)]
        stats = step0.loc[ids, list(JACOBIAN)].to_numpy(dtype=float)
        boot = [pooled_variance(stats[rng.integers(0, len(stats), len(stats))]) for _ in range(400)]
        low, high = np.quantile(boot, [0.025, 0.975])
        predicted = meanfield.relu_jacobian_log_variance(depth, width, DIGITS_INPUTS)
        rows.append((depth, width, depth / width, pooled_variance(stats), low, high, predicted, len(ids)))
    columns = ["depth", "width", "beta", "measured", "ci_low", "ci_high", "predicted", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def jacobian_section(study: StudyData, out: Path) -> list[str]:
    """The measured spread of the input-output Jacobian against its prediction, as a table and a figure."""
    from vanex.report.claims_builtin import DIGITS_INPUTS

    points = jacobian_points(study)
    if points.empty:
        return []
    table = points.assign(
        measured=_with_interval(points, ".3g"),
        **{"off by": [f"{m / p - 1:+.0%}" for m, p in zip(points["measured"], points["predicted"], strict=True)]},
    ).drop(columns=["ci_low", "ci_high"])
    parts = [
        "**The spread of the input-output Jacobian against depth and width (Hanin 2018).** At step 0, the "
        "variance over inputs and seeds of ln ||J(x)ᵀu||² (the `input_jacobian` probe, u a fixed unit output "
        "direction) of He-initialised ReLU nets, against its finite-width prediction "
        "(`vanex.science.meanfield.relu_jacobian_log_variance`): about 5/width per layer, so set by "
        "β = Σ 1/width, not by depth alone. Measured: 95% bootstrap interval over seeds.\n",
        frame_markdown(table) + "\n",
    ]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH["one"], 2.6), layout="constrained")
    for i, (width, g) in enumerate(points.groupby("width")):
        _draw_measured(ax, g["beta"], g, i, f"measured, width {width}")
        depths = np.arange(1, int(points["depth"].max()) + 1)
        theory = [meanfield.relu_jacobian_log_variance(int(d), int(width), DIGITS_INPUTS) for d in depths]
        ax.plot(depths / width, theory, "--", color=f"C{i}", lw=1)
    ax.plot([], [], "k--", lw=1, label="finite-width prediction")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("β = Σ 1/width (hidden layers / width)")
    ax.set_ylabel("Var ln ||J(x)ᵀu||² at init")
    ax.set_title("Width, not depth alone, sets the gradient's spread")
    ax.legend()
    path = save(fig, out / f"{study.name}_jacobian_spread.png", plt, points)
    return parts + figure_links(path)


class _OptInProbeSection(Section):
    """A section drawn for a study whose records hold a series of its (opt-in) probe's ``metrics``."""

    def applies(self, study: StudyData) -> bool:
        return not study.probes.empty and bool(study.probes["metric"].isin(self.metrics).any())


@SECTIONS.register("jacobian_spread")
class JacobianSpreadSection(_OptInProbeSection):
    """The input-output Jacobian's spread across depth and width against its finite-width prediction."""

    order = 41
    metrics = JACOBIAN
    writes = ("figures/{study}_jacobian_spread.png",)

    def write(self, study: StudyData, out: Path) -> list[str]:
        return jacobian_section(study, out / "figures")


SPECTRUM = ("jacobian_sv2_mean", "jacobian_sv2_normvar")


def isometry_points(study: StudyData) -> pd.DataFrame:
    """Per run of a deep MLP with the ``jacobian_spectrum`` probe (one numeric path:
    ``_one_path``): its weights (orthogonal or Gaussian), activation, sigma_w, depth, seed, the measured
    normalised variance of the Jacobian's squared singular values and its wide-limit prediction."""
    values = study.probes[(study.probes["metric"] == "jacobian_sv2_normvar") & (study.probes["step"] == 0)]
    if values.empty:
        return pd.DataFrame()
    measured = values.groupby("run_id")["value"].first()
    runs = _one_path({rid: r for rid, r in study.records.items() if rid in measured.index and r["task"] == "deep_mlp"})
    rows = []
    for rid, r in runs.items():
        s = r["settings"]
        orthogonal = "orthogonal_init" in r["mitigations"] or s.get("task.init") == "orthogonal"
        sigma_w = 1.0 if orthogonal else float(s["task.weight_scale"])
        q_in = r["task_info"]["constants"]["input_second_moment"]
        depth = int(s["task.depth"])
        predicted = meanfield.jacobian_spectrum_variance(s["task.activation"], sigma_w, q_in, depth, orthogonal)
        weights = "orthogonal" if orthogonal else f"Gaussian σ_w={sigma_w:g}"
        rows.append((f"{s['task.activation']}, {weights}", depth, r["seed"], float(measured[rid]), predicted))
    return pd.DataFrame(rows, columns=["set", "depth", "seed", "measured", "predicted"]).sort_values(["set", "depth"])


def isometry_section(study: StudyData, out: Path) -> list[str]:
    """The spread of the Jacobian's spectrum across depth against the prediction, as a table and a figure."""
    points = isometry_points(study)
    if points.empty:
        return []
    table = (
        points.groupby(["set", "depth"])
        .agg(
            median=("measured", "median"),
            low=("measured", "min"),
            high=("measured", "max"),
            predicted=("predicted", "first"),
            seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    table["measured (median, range)"] = [
        f"{m:.3g} ({lo:.3g}–{hi:.3g})" for m, lo, hi in zip(table["median"], table["low"], table["high"], strict=True)
    ]
    table["off by"] = [f"{m / p - 1:+.0%}" for m, p in zip(table["median"], table["predicted"], strict=True)]
    table = table[["set", "depth", "measured (median, range)", "predicted", "seeds", "off by"]]
    parts = [
        "**Dynamical isometry (Saxe et al. 2014; Pennington et al. 2017).** At step 0, the normalised variance "
        "E[λ²]/E[λ]² − 1 of the squared singular values λ of the Jacobian from the input to the last hidden layer "
        "(the `jacobian_spectrum` probe, 8 inputs a run; 0 is an isometry) against its wide-limit prediction "
        "(`vanex.science.meanfield.jacobian_spectrum_variance`: free factors' variances add, 1 a Gaussian layer, "
        "μ₂/μ₁² − 1 a nonlinearity).\n",
        frame_markdown(table) + "\n",
    ]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH["one"], 2.6), layout="constrained")
    for i, (name, g) in enumerate(points.groupby("set")):
        colour = f"C{i}"
        ax.plot(g["depth"], g["measured"], "osD"[i % 3], color=colour, ms=3, alpha=0.6, label=f"{name} (seeds)")
        theory = g.groupby("depth")["predicted"].first()
        ax.plot(theory.index, theory.to_numpy(), "--", color=colour, lw=1)
    ax.plot([], [], "k--", lw=1, label="wide-limit prediction")
    _depth_axis(ax, plt, points["depth"].unique())
    ax.set_yscale("log")
    ax.set_ylabel("E[λ²]/E[λ]² − 1, λ = σ²(J)")
    ax.set_title("The Jacobian's spectrum at init: spread against depth")
    ax.legend()
    path = save(fig, out / f"{study.name}_isometry.png", plt, points)
    return parts + figure_links(path)


@SECTIONS.register("jacobian_isometry")
class IsometrySection(_OptInProbeSection):
    """The spread of the input-output Jacobian's singular values across depth against its prediction."""

    order = 42
    metrics = SPECTRUM
    writes = ("figures/{study}_isometry.png",)

    def write(self, study: StudyData, out: Path) -> list[str]:
        return isometry_section(study, out / "figures")


def dying_points(study: StudyData) -> pd.DataFrame:
    """Per (depth, width) of ReLU MLPs with zero biases, read by the ``activation`` probe at step 0, when
    the study spans at least two depths and two widths (one numeric path: ``_one_path``): the share of
    seeds born dead (constant on the batch), its 95% Wilson interval, and the exact probability that a
    layer is all at 0 for one input, which bounds it from above."""
    from vanex.report.claims_builtin import wilson

    dead = study.probes[(study.probes["metric"] == "act_dead") & (study.probes["step"] == 0)]
    if dead.empty:
        return pd.DataFrame()
    born_dead = (dead.groupby("run_id")["value"].max() >= 1.0).astype(float)
    runs = _one_path(
        _deep_mlps(
            {rid: r for rid, r in study.records.items() if rid in born_dead.index},
            "none",
            lambda s: (
                s.get("task.activation") == "relu" and s.get("task.init") == "scaled" and not s.get("task.bias_scale")
            ),
        )
    )
    shapes = {rid: (int(r["settings"]["task.depth"]), int(r["settings"]["task.width"])) for rid, r in runs.items()}
    if len({d for d, _ in shapes.values()}) < 2 or len({w for _, w in shapes.values()}) < 2:
        return pd.DataFrame()
    rows = []
    for depth, width in sorted(set(shapes.values())):
        outcomes = born_dead[[rid for rid, shape in shapes.items() if shape == (depth, width)]]
        low, high = wilson(outcomes.sum(), len(outcomes))
        bound = meanfield.relu_dead_probability(depth, width)
        rows.append((depth, width, outcomes.mean(), low, high, bound, len(outcomes)))
    return pd.DataFrame(rows, columns=["depth", "width", "measured", "ci_low", "ci_high", "predicted", "seeds"])


def dying_section(study: StudyData, out: Path) -> list[str]:
    """The share of nets born dead across depth and width against the per-input probability."""
    points = dying_points(study)
    if points.empty:
        return []
    table = points.assign(
        measured=_with_interval(points, ".2f"),
        **{
            "bound (one input)": points["predicted"].map("{:.3f}".format),
            "measured − bound": [f"{m - p:+.3f}" for m, p in zip(points["measured"], points["predicted"], strict=True)],
        },
    ).drop(columns=["ci_low", "ci_high", "predicted"])
    parts = [
        "**Born dead (Lu et al. 2019).** At step 0, the share of seeds whose ReLU net (weights N(0, σ_w²/fan_in), "
        "zero biases) is constant on its 64-example batch: some hidden layer has every unit at 0 on every input "
        "(`act_dead` of 1, the `activation` probe). Beside it, the exact probability 1 − (1 − 2^−width)^depth that "
        "some hidden layer is all at 0 for one given input (`vanex.science.meanfield.relu_dead_probability`), an upper "
        "bound on the share. Measured: 95% Wilson interval over seeds.\n",
        frame_markdown(table) + "\n",
    ]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH["one"], 2.6), layout="constrained")
    for i, (width, g) in enumerate(points.groupby("width")):
        _draw_measured(ax, g["depth"], g, i, f"measured, width {width}")
        depths = np.arange(1, int(points["depth"].max()) + 1)
        ax.plot(
            depths, [meanfield.relu_dead_probability(int(d), int(width)) for d in depths], "--", color=f"C{i}", lw=1
        )
    ax.plot([], [], "k--", lw=1, label="one input: 1 − (1 − 2^−width)^depth")
    _depth_axis(ax, plt, points["depth"].unique())
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("share born dead at init")
    ax.set_title("Narrow ReLU nets are born dead more often with depth")
    ax.legend()
    path = save(fig, out / f"{study.name}_born_dead.png", plt, points)
    return parts + figure_links(path)


@SECTIONS.register("born_dead")
class BornDeadSection(Section):
    """The share of narrow ReLU nets born dead across depth and width against the per-input probability."""

    order = 43
    metrics = ("act_dead",)
    writes = ("figures/{study}_born_dead.png",)

    def applies(self, study: StudyData) -> bool:
        return not dying_points(study).empty

    def write(self, study: StudyData, out: Path) -> list[str]:
        return dying_section(study, out / "figures")


def shattered_points(study: StudyData) -> pd.DataFrame:
    """Per (architecture, depth) of deep MLPs with the ``gradient_correlation`` probe (one numeric path:
    ``_one_path``): the mean over seeds of the step-0 lag-1 autocorrelation of the input gradient along
    the line, its 95% interval, and Balduzzi et al.'s rate from the 1-layer net's value: 2^-(L-1) for a
    feed-forward net, 1/sqrt(L) for a resnet with batch norm."""
    from vanex.science.stats import t_interval

    values = study.probes[
        (study.probes["metric"] == "grad_autocorr") & (study.probes["layer"] == "lag1") & (study.probes["step"] == 0)
    ]
    if values.empty:
        return pd.DataFrame()
    measured = values.groupby("run_id")["value"].first()
    runs = _one_path({rid: r for rid, r in study.records.items() if rid in measured.index and r["task"] == "deep_mlp"})

    def kind(record: dict) -> str:
        name = "resnet" if record["settings"].get("task.residual") == "identity" else "feed-forward"
        return name + (" + batch norm" if record["settings"].get("task.norm") == "batchnorm" else ", no batch norm")

    groups: dict[tuple[str, int], list[float]] = {}
    for rid, r in runs.items():
        groups.setdefault((kind(r), int(r["settings"]["task.depth"])), []).append(float(measured[rid]))
    one = {k: np.mean(v) for (k, d), v in groups.items() if d == 1}
    rows = []
    for (name, depth), v in sorted(groups.items()):
        mean, low, high = t_interval(np.array(v))
        start = one.get(name, one.get(name.replace("resnet", "feed-forward"), math.nan))  # 1 layer has no skip
        rate = 2.0 ** -(depth - 1) if name.startswith("feed-forward") else depth**-0.5
        rows.append((name, depth, mean, low, high, start * rate, len(v)))
    return pd.DataFrame(rows, columns=["set", "depth", "measured", "ci_low", "ci_high", "predicted", "seeds"])


def shattered_section(study: StudyData, out: Path) -> list[str]:
    """The correlation of nearby inputs' gradients across depth against Balduzzi et al.'s rates."""
    points = shattered_points(study)
    if points.empty:
        return []
    table = points.assign(
        measured=_with_interval(points, ".3f"),
        **{"paper's rate": points["predicted"].map("{:.3g}".format)},
    ).drop(columns=["ci_low", "ci_high", "predicted"])
    parts = [
        "**Shattered gradients (Balduzzi et al. 2017).** At step 0, the autocorrelation between neighbouring "
        "points of the input gradient along a line of 256 inputs (the segment between two digits; the "
        "`gradient_correlation` probe, batch norm over the 256 points), feed-forward and resnet with batch norm as in "
        "the paper and feed-forward without it: near 1 for a smooth (brown-noise) series, "
        "near 0 for white noise. Beside it, the paper's rates started from the 1-layer net's value: 2^−(L−1) for a "
        "feed-forward net, 1/√L for a resnet with batch norm (their theorems are about the correlation of "
        "gradients at any two inputs under simplifying assumptions, not neighbours: the shapes compare, the "
        "values need not). Measured: mean over seeds, 95% interval.\n",
        frame_markdown(table) + "\n",
    ]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH["one"], 2.6), layout="constrained")
    for i, (name, g) in enumerate(points.groupby("set", sort=False)):
        _draw_measured(ax, g["depth"], g, i, name)
        ax.plot(g["depth"], g["predicted"], "--", color=f"C{i}", lw=1)
    ax.plot([], [], "k--", lw=1, label="paper's rate: 2^−(L−1) / 1/√L")
    ax.axhline(0, color="0.6", lw=0.6)
    _depth_axis(ax, plt, points["depth"].unique())
    ax.set_ylabel("neighbours' gradient correlation")
    ax.set_title("With batch norm, deep feed-forward gradients shatter")
    ax.legend(loc="center right")
    path = save(fig, out / f"{study.name}_shattered.png", plt, points)
    return parts + figure_links(path)


@SECTIONS.register("shattered")
class ShatteredSection(_OptInProbeSection):
    """The correlation of neighbouring inputs' gradients across depth, with and without skips."""

    order = 44
    metrics = ("grad_autocorr",)
    writes = ("figures/{study}_shattered.png",)

    def write(self, study: StudyData, out: Path) -> list[str]:
        return shattered_section(study, out / "figures")


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
