"""Figures of one study, drawn from its cells, probe rows and records (no torch, no Hydra).

Every figure is written as PNG and PDF (vector) at a paper's width, one column (3.3 in) or two
(6.9 in), with its data beside it as CSV (same name) so a reader can replot it. A mitigation set has
one colour, line style and marker across all figures of a report (``set_styles``; Okabe-Ito's
colour-blind-safe palette, the baseline black). Lines are the mean over seeds (geometric mean on a
log axis), bands the seeds' min-max (so they stay inside a metric's range). A value of exactly 0
(float32 underflow, or by construction: truncated BPTT, a zero-initialised branch) is marked ▽ at
the bottom edge, a non-finite one (a diverged run) × at the top edge, not dropped; y limits come
from the runs that completed, so a diverged run cannot stretch them.

- ``<study>_gradient_flow``: the flow metric at step 0 along depth or time (with the next, all an
  init-only study gets: nothing over training is drawn for runs of one step);
- ``<study>_grad_norm_per_block``: step-0 gradient norm per block, where blocks hold several kinds;
- ``<study>_grad_ratio_training``: the first/last gradient ratio over training steps;
- ``<study>_grad_heatmap``: log10 per-layer (or per-time-step) gradient norm over training steps;
- ``<study>_<setting>``: headline metrics against each swept setting with 3+ values;
- ``<study>_trainability_depth``: the share of seeds that trained against depth;
- ``<study>_loss``: training batch loss over steps.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from vanex.records.reader import StudyData
from vanex.report.tables import human, setting_text
from vanex.science.stats import TRAINED_FRACTION, trained

WIDTH = {"one": 3.3, "two": 6.9}  # inches: a one-column and a two-column paper figure
DPI = 150  # the PNGs (for screens and the HTML page); the PDFs are vector
RC = {
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "figure.titlesize": 8,
    "lines.linewidth": 1.0,
    "lines.markersize": 3,
    "pdf.fonttype": 42,
    "svg.hashsalt": "vanex",
}
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#999999")
DASHES = ("-", (0, (4, 1.5)), (0, (1, 1)), (0, (3, 1, 1, 1)), (0, (6, 1.5, 1, 1.5, 1, 1.5)))
MARKERS = ("o", "s", "^", "D", "P", "X", "*")
_STYLES: dict[str, tuple[str, Any, str]] = {}


def set_styles(names: list[str]) -> None:
    """Fix each mitigation set's (colour, line style, marker) for the report: the baseline black and
    solid, the others in the given order through 7 colours, 5 line styles and 7 markers, each
    cycling on its own: 7 and 5 are coprime, so no two of 35 sets share a colour and a line style."""
    _STYLES.clear()
    for name in ["baseline", *[n for n in names if n != "baseline"]]:
        style(name)


def style(name: str) -> tuple[str, Any, str]:
    if name not in _STYLES:
        if name == "baseline":
            _STYLES[name] = ("#000000", "-", "o")
        else:
            i = len([n for n in _STYLES if n != "baseline"])
            _STYLES[name] = (OKABE_ITO[i % 7], DASHES[i % 5], MARKERS[i % 7])  # 35 distinct (colour, dashes)
    return _STYLES[name]


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcdefaults()
    plt.rcParams.update(RC)
    return plt


def panel_title(ax: Any, text: str) -> None:
    """A panel title wrapped to the panel's width (7-pt text: about 15 characters an inch)."""
    inches = ax.figure.get_figwidth() / ax.get_gridspec().ncols
    ax.set_title(textwrap.fill(text or "all cells", max(20, int(inches * 14)), break_long_words=False))


def panels(plt: Any, n: int, aspect: float = 0.75, ncols: int = 3) -> tuple[Any, np.ndarray]:
    """A constrained-layout grid: one column wide for a single panel, else two columns wide."""
    ncols = 1 if n == 1 else min(ncols, n)
    width = WIDTH["one"] if ncols == 1 else WIDTH["two"]
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width, width / ncols * aspect * nrows + 0.6), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _legend(fig: Any, handles: list, ncols: int = 4) -> None:
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False)


def _handles(plt: Any, names: list[str], marks: set[str]) -> list:
    from matplotlib.lines import Line2D

    out = [Line2D([], [], color=style(n)[0], linestyle=style(n)[1], marker=style(n)[2], label=n) for n in names]
    if "underflow" in marks:
        out.append(
            Line2D(
                [],
                [],
                color="0.3",
                marker="v",
                linestyle="",
                label="exactly 0 in a seed (underflow, or by construction)",
            )
        )
    if "diverged" in marks:
        out.append(Line2D([], [], color="0.3", marker="x", linestyle="", label="non-finite (diverged seed)"))
    return out


def _limits(values: pd.Series, log: bool) -> tuple[float, float] | None:
    """y limits from the values of completed runs, padded; None when there are none."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    if not len(v):
        return None
    lo, hi = float(v.min()), float(v.max())
    if log:
        return 10 ** (math.log10(lo) - 0.3), 10 ** (math.log10(hi) + 0.3)
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 0.05)
    return lo - pad, hi + pad


def _draw_lines(ax: Any, data: pd.DataFrame, x: str, log: bool, band: bool, marker: bool) -> set[str]:
    """Per mitigation set: mean over seeds (geometric on a log axis) with a min-max band; returns the
    marks drawn ('underflow', 'diverged')."""
    marks: set[str] = set()
    for name, group in data.groupby("mitigations", sort=False):
        colour, dashes, mark = style(name)
        by_x = group.groupby(x, sort=True)["value"]
        finite = group[np.isfinite(group["value"]) & ((group["value"] > 0) if log else True)]
        stats = finite.groupby(x, sort=True)["value"]
        if len(finite):
            centre = stats.apply(lambda v: 10 ** np.log10(v).mean()) if log else stats.mean()
            ax.plot(
                centre.index, centre.values, color=colour, linestyle=dashes, marker=mark if marker else None, label=name
            )
            if band and stats.size().max() > 1:
                ax.fill_between(
                    stats.min().index, stats.min().values, stats.max().values, color=colour, alpha=0.15, lw=0
                )
        under = [k for k, v in by_x if log and (v == 0).any()]
        bad = [k for k, v in by_x if (~np.isfinite(v)).any()]
        trans = ax.get_xaxis_transform()
        if under:
            ax.plot(under, [0.01] * len(under), "v", color=colour, transform=trans, clip_on=False)
            marks.add("underflow")
        if bad:
            ax.plot(bad, [0.99] * len(bad), "x", color=colour, transform=trans, clip_on=False)
            marks.add("diverged")
    return marks


def line_figure(
    data: pd.DataFrame,
    path: Path,
    title: str,
    x: str,
    xlabel: str,
    ylabel: str,
    *,
    log: bool = True,
    xscale: str = "linear",
    integer_x: bool = False,
    band: bool = True,
    marker: bool = True,
    hline: tuple[float, str] | None = None,
) -> Path:
    """One panel per value of ``data['panel']``, one line per mitigation set; ``data`` has columns
    panel, mitigations, seed, status, ``x`` and value (and is written beside the figure as CSV).
    Panels share y limits (from completed runs), or, with a ``share`` column, those with the same
    ``share`` value do, and it is their y label."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    names = list(dict.fromkeys(data["panel"]))
    fig, axes = panels(plt, len(names))
    marks: set[str] = set()
    share = data["share"] if "share" in data else pd.Series("", index=data.index)
    limits = {}
    for key, part in data.groupby(share, sort=False):
        done = part.loc[part["status"] == "completed", "value"]
        limits[key] = _limits(done, log) or _limits(part["value"], log)
    for ax, panel in zip(axes.flat, names, strict=False):
        part = data[data["panel"] == panel]
        key = share[part.index[0]]
        ax.set_yscale("log" if log else "linear")
        if xscale == "symlog":
            ax.set_xscale("symlog", linthresh=max(1.0, float(part[x].replace(0, np.nan).min())))
        else:
            ax.set_xscale(xscale)
        marks |= _draw_lines(ax, part, x, log, band, marker)
        if limits[key]:
            ax.set_ylim(*limits[key])
        if hline:
            ax.axhline(hline[0], color="0.4", lw=0.8, ls=":", label=hline[1])
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if xscale == "log":
            ticks = sorted(part[x].unique())
            ax.minorticks_off()
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        panel_title(ax, str(panel))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key or ylabel)
    names = list(dict.fromkeys(data["mitigations"]))
    handles = _handles(plt, names, marks)
    if hline:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="0.4", lw=0.8, ls=":", label=hline[1]))
    _legend(fig, handles)
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 13)))
    keep = [c for c in ("panel", "share", "mitigations", "seed", "status", "layer", x, "value") if c in data]
    return save(fig, path, plt, data[list(dict.fromkeys(keep))])


def heatmap_figure(data: pd.DataFrame, path: Path, title: str, ylabel: str) -> Path:
    """One panel per run: log10 value per (position, sampled step); 0 (underflow) black, non-finite white."""
    plt = pyplot()
    names = list(dict.fromkeys(data["panel"]))
    fig, axes = panels(plt, len(names), aspect=0.8)
    logs = np.log10(data["value"].where(data["value"] > 0))
    finite = logs[np.isfinite(logs)]
    vmin, vmax = (float(finite.quantile(0.02)), float(finite.quantile(0.98))) if len(finite) else (0.0, 1.0)
    cmap = plt.get_cmap("viridis").with_extremes(under="black", bad="white")
    image = None
    for ax, panel in zip(axes.flat, names, strict=False):
        part = data[data["panel"] == panel]
        table = part.pivot_table(index="position", columns="step", values="value", aggfunc="first", dropna=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log10(table.to_numpy(dtype=float))
        z = np.where(np.isneginf(z), vmin - 1, z)  # underflow drawn in the "under" colour
        z = np.ma.masked_invalid(z)
        rows = np.arange(z.shape[0] + 1) - 0.5 + float(table.index[0])  # rows at their positions (layers from 1)
        image = ax.pcolormesh(np.arange(z.shape[1] + 1), rows, z, cmap=cmap, vmin=vmin, vmax=vmax)
        steps = list(table.columns)
        ticks = sorted({0, len(steps) // 2, len(steps) - 1})
        ax.set_xticks([t + 0.5 for t in ticks], [str(steps[t]) for t in ticks])
        panel_title(ax, str(panel))
        ax.set_xlabel("training step (sampled)")
        ax.set_ylabel(ylabel)
    if image is not None:
        fig.colorbar(
            image, ax=axes, shrink=0.8, extend="both", label="log10 gradient norm (black: 0, white: non-finite)"
        )
    fig.suptitle(title)
    return save(fig, path, plt, data[["panel", "run_id", "step", "position", "layer", "value"]])


_DRAWN = contextvars.ContextVar("vanex_figures_drawn", default=True)


@contextlib.contextmanager
def undrawn():
    """Inside, ``save`` writes a figure's data but draws no PNG or PDF: a report for its numbers only
    (compare's scratch reports), which spends most of its time drawing otherwise."""
    token = _DRAWN.set(False)
    try:
        yield
    finally:
        _DRAWN.reset(token)


def save(figure: Any, path: Path, plt: Any, data: pd.DataFrame | None = None) -> Path:
    """Write ``path`` (PNG), the same figure as PDF, and ``data`` as CSV beside them; returns the PNG.
    No creation dates or software versions are written, so reruns are byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if _DRAWN.get():
        figure.savefig(path, dpi=DPI, metadata={"Software": None})
        figure.set_layout_engine("none")  # the PDF keeps the PNG's layout instead of working it out again
        figure.savefig(path.with_suffix(".pdf"), metadata={"Creator": None, "Producer": None, "CreationDate": None})
    plt.close(figure)
    if data is not None:
        data.to_csv(path.with_suffix(".csv"), index=False, float_format="%.6g")
    return path


BANDS = (
    "line: mean over seeds (geometric on a log axis), band: the seeds' min-max; ▽: exactly 0 in a seed, ×: non-finite"
)
CAPTIONS = {  # what a figure draws, by the end of its name (<study>_<kind>): the HTML caption and the Markdown alt
    "gradient_flow": f"Gradient norm at step 0 along depth (or through time), per mitigation set; {BANDS}.",
    "grad_norm_per_block": f"Gradient norm at step 0 per block, one line per parameter kind; {BANDS}.",
    "grad_ratio_training": f"Ratio of the first to the last layer's gradient norm over training; {BANDS}.",
    "grad_heatmap": "log10 gradient norm per layer (or time step, rows) over the sampled training steps (columns), "
    "one panel per run; black: exactly 0, white: non-finite.",
    "loss": f"Training batch loss over steps; {BANDS}.",
    "trainability_depth": "Share of seeds that trained (final training loss below half of chance) against depth.",
    "meanfield": "Mean-field prediction (lines) beside the measured backward signal ‖∂L/∂h_l‖ per layer at step 0 "
    "(points: mean over seeds), relative to the last hidden layer.",
    "batchnorm": "Growth of the backward signal of batch-normalised ReLU nets at step 0 against depth: measured "
    "(points, one per seed) and Yang et al.'s rate ½·log10(π/(π−1)) decades per layer (line).",
    "jacobian_spread": "Variance over inputs and seeds of ln ‖J(x)ᵀu‖² of He-initialised ReLU nets at step 0 "
    "against β = depth/width: measured (points with 95% bootstrap intervals over seeds) and the finite-width "
    "prediction (dashed, one line per width as depth grows).",
    "isometry": "Normalised variance of the squared singular values of the Jacobian from the input to the last hidden "
    "layer at step 0 against depth: measured (points, one per seed) and the wide-limit prediction (dashed).",
    "sigma_bound": "Gradient through time of plain RNNs at step 0 against Pascanu et al.'s bound from the recurrent "
    "matrix's largest singular value.",
    "born_dead": "Share of seeds whose ReLU net (zero biases) is constant on its batch at step 0, per width against "
    "depth (bars: 95% Wilson interval); dashed: the exact probability that a layer is all at 0 for one input.",
    "shattered": "Autocorrelation between neighbouring points of the input gradient along a line of 256 inputs at "
    "step 0 against depth, feed-forward with and without batch norm and resnet with it (bars: 95% interval over "
    "seeds); dashed: the "
    "paper's rates from the 1-layer value.",
    "loss_ratio_delay": f"Final loss over the memoryless baseline against the copy task's delay T; {BANDS}.",
}


def caption_of(path: Path) -> str:
    """What the figure at ``path`` draws (``CAPTIONS``); a sweep figure <study>_<setting> is a headline metric
    against that setting."""
    kind = next((k for k in sorted(CAPTIONS, key=len, reverse=True) if path.stem.endswith("_" + k)), None)
    if kind is not None:
        return CAPTIONS[kind]
    if "_phase_" in path.stem:
        return "Trainability phase diagram: the share of seeds that trained (final loss below half of chance) per "
        "weight scale σ_w and depth."
    return f"Headline metrics of {path.stem} against the swept setting; {BANDS}."


def figure_links(path: Path, caption: str | None = None) -> list[str]:
    """The Markdown parts of one figure: the image (its caption as the alt text), then links to its PDF and data."""
    extra = [f"[PDF](figures/{path.stem}.pdf)"]
    if path.with_suffix(".csv").exists():
        extra.append(f"[data (CSV)](figures/{path.stem}.csv)")
    text = (caption or caption_of(path)).replace("[", "(").replace("]", ")")
    return [f"![{text}](figures/{path.name})\n", f"{path.stem}: " + " · ".join(extra) + "\n"]


def write_figures(data: StudyData, out: Path, drawn_elsewhere: set[str] = frozenset()) -> list[Path]:
    """The generic figures of a study (module docstring); a swept setting in ``drawn_elsewhere`` has
    its own figure in another section and is not drawn against the headline metrics here."""
    cells, probes, records, headline = data.cells, data.probes, data.records, data.headline
    if probes.empty:
        return []
    study, swept = data.name, data.swept
    status = dict(zip(cells["run_id"], cells["status"], strict=True))
    label, rank = panel_labels(cells, swept)
    rows = probes.assign(panel=probes["run_id"].map(label), status=probes["run_id"].map(status))
    rows = rows.assign(rank=rows["run_id"].map(rank)).sort_values("rank", kind="stable").drop(columns="rank")
    # at step 0 nothing has been optimised: one panel for all optimiser settings (one run of each seed)
    label0, _ = panel_labels(cells, [k for k in swept if not k.startswith("optim.")])
    firsts = set(cells.groupby([cells["mitigations"], cells["run_id"].map(label0), cells["seed"]])["run_id"].first())
    step0 = rows[(rows["step"] == 0) & rows["run_id"].isin(firsts)]
    step0 = step0.assign(panel=step0["run_id"].map(label0))
    layers = {rid: r["task_info"]["layers"] for rid, r in records.items()}
    flow_metric = data.flow_metric
    position = "hidden layer (input → output)" if flow_metric == "grad_norm" else "time step t"
    unit = "‖∂L/∂W_l‖" if flow_metric == "grad_norm" else "‖∂L/∂h_t‖"
    figures = []
    flow = step0[step0["metric"] == flow_metric]
    if not flow.empty:
        figures.append(
            line_figure(
                _like_with_like(flow, layers),
                out / f"{study}_gradient_flow.png",
                f"{study}: gradient norm along the network at initialisation (step 0)",
                "position",
                position,
                unit,
                integer_x=True,
            )
        )
    per_block = _per_block(step0[step0["metric"] == "grad_norm"], layers)
    if not per_block.empty:
        per_block = per_block.assign(panel=per_block["kind"] + " | " + per_block["panel"])
        figures.append(
            line_figure(
                per_block,
                out / f"{study}_grad_norm_per_block.png",
                f"{study}: step-0 gradient norm per block, by kind of layer",
                "block",
                "block (input → output)",
                "‖∂L/∂W‖",
                integer_x=True,
            )
        )
    if all(int(r["settings"].get("task.steps", 2)) <= 1 for r in records.values()):
        return figures  # an init-only study (one step): nothing was trained, so nothing over training is drawn
    ratio = rows[(rows["metric"] == "grad_ratio") & (rows["step"] > 0)]
    if not ratio.empty:
        figures.append(
            line_figure(
                ratio,
                out / f"{study}_grad_ratio_training.png",
                f"{study}: first/last {'layer' if flow_metric == 'grad_norm' else 'time step'} gradient ratio "
                "over training",
                "step",
                "training step",
                "first / last gradient norm",
                xscale="symlog",
                marker=False,
                hline=(1.0, "ratio 1 (no vanishing or explosion)"),
            )
        )
    heat = _heatmap_runs(rows[rows["metric"] == flow_metric], cells, layers, label)
    if not heat.empty:
        left = sorted(set(cells["mitigations"]) - set(heat["mitigations"]))
        shown, total = heat["mitigations"].nunique(), cells["mitigations"].nunique()
        which = f"; {shown} of {total} sets, without {', '.join(left)}" if left else ""
        figures.append(
            heatmap_figure(
                heat,
                out / f"{study}_grad_heatmap.png",
                f"{study}: log10 gradient norm per {'layer' if flow_metric == 'grad_norm' else 'time step'} over "
                f"training (one seed per mitigation set{which})",
                position,
            )
        )
    figures += _sweep_figures(study, swept, drawn_elsewhere, cells, headline, out)
    figures += _trainability(study, swept, cells, out)
    loss = rows[rows["metric"] == "batch_loss"]
    if not loss.empty:
        figures.append(
            line_figure(
                loss,
                out / f"{study}_loss.png",
                f"{study}: training batch loss over steps (mean since the previous sample)",
                "step",
                "training step",
                "batch loss (nats)",
                xscale="symlog",
                marker=False,
            )
        )
    return figures


def panel_labels(cells: pd.DataFrame, keys: list[str]) -> tuple[dict[str, str], dict[str, tuple]]:
    """Per run id: its panel's title, the settings ``keys`` as a reader names them ("depth=20, lr=0.05",
    "all cells" without any), and its rank, so panels come in the order of their values (10, 20, 50)."""

    def sort_key(value: Any) -> tuple:
        number = pd.to_numeric(value, errors="coerce") if not isinstance(value, (list, dict)) else math.nan
        return (
            (2, "")
            if value is None or (isinstance(value, float) and math.isnan(value))
            else ((0, float(number), "") if not pd.isna(number) else (1, 0.0, str(value)))
        )

    label, key = {}, {}
    for _, cell in cells.iterrows():
        shown = [
            (k, cell[k]) for k in keys if not (cell[k] is None or (isinstance(cell[k], float) and math.isnan(cell[k])))
        ]
        label[cell["run_id"]] = ", ".join(f"{human(k)}={setting_text(v)}" for k, v in shown) or "all cells"
        key[cell["run_id"]] = tuple(sort_key(cell[k]) for k in keys)
    ranks = {k: i for i, k in enumerate(sorted(set(key.values())))}
    return label, {rid: ranks[k] for rid, k in key.items()}


def _like_with_like(flow: pd.DataFrame, layers: dict[str, list[dict]]) -> pd.DataFrame:
    """Keep the hidden layers of the same kind as the first hidden one (as grad_ratio does) and
    number them in input->output order; time steps (``t0``, ``t1``...) are all kept."""
    keep = []
    for run_id, group in flow.groupby("run_id", sort=False):
        for _, at_step in group.groupby("step", sort=True):
            hidden = [entry for entry in layers.get(run_id, []) if entry["hidden"]]
            names = list(at_step["layer"])
            if hidden and set(names) & {h["name"] for h in hidden}:
                names = [h["name"] for h in hidden if h["kind"] == hidden[0]["kind"] and h["name"] in names]
            first = 0 if all(re.fullmatch(r"t\d+", n) for n in names) else 1  # time steps from t0, layers from 1
            keep.append(
                at_step.set_index("layer").loc[names].reset_index().assign(position=range(first, first + len(names)))
            )
    return pd.concat(keep, ignore_index=True)


def _heatmap_runs(
    flow: pd.DataFrame, cells: pd.DataFrame, layers: dict[str, list[dict]], label: dict[str, str], most: int = 48
) -> pd.DataFrame:
    """The flow series of one run per mitigation set (its first cell in the study, lowest seed), at
    most ``most`` sets (the title says when some are left out), each labelled with its mitigations,
    settings and seed."""
    if flow.empty:
        return flow
    found = cells[cells["status"].isin(["completed", "diverged"]) & cells["run_id"].isin(flow["run_id"])]
    firsts = found.groupby("mitigations", sort=False).head(1).head(most)
    runs = []
    for _, cell in firsts.iterrows():
        seeds = found[(found["mitigations"] == cell["mitigations"]) & (found["setting"] == cell["setting"])]
        run = seeds.sort_values("seed").iloc[0]
        title = f"{run['mitigations']}, {label[run['run_id']]}, seed {run['seed']}"
        runs.append(_like_with_like(flow[flow["run_id"] == run["run_id"]], layers).assign(panel=title))
    return pd.concat(runs, ignore_index=True)


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
                block=group["layer"].map(lambda n: where[n][0] + 1),  # blocks numbered from 1, as layers are
                kind=group["layer"].map(lambda n: where[n][1]),
            )
        )
    return pd.concat(keep, ignore_index=True) if keep else pd.DataFrame()


def _others(cells: pd.DataFrame, swept: list[str], key: str) -> tuple[pd.Series, pd.Series]:
    """Each cell's panel title (its other swept settings, as a reader names them) and its panel's rank."""
    label, rank = panel_labels(cells, [k for k in swept if k != key])
    return cells["run_id"].map(label), cells["run_id"].map(rank)


def along(cells: pd.DataFrame, swept: list[str], key: str, least: int = 3) -> pd.DataFrame:
    """The cells of the mitigation sets swept along ``key`` (``least`` values or more at fixed other
    settings), with 'panel' holding the other settings; empty when none is."""
    values = pd.to_numeric(cells[key], errors="coerce")
    if values.nunique() < least:
        return cells.iloc[0:0]
    panel, rank = _others(cells, swept, key)
    data = cells.assign(panel=panel, rank=rank, **{key: values}).sort_values("rank", kind="stable")
    counts = data.groupby(["mitigations", "panel"])[key].transform("nunique")
    return data[(counts >= least) & data[key].notna()].drop(columns="rank")


def _sweep_figures(
    study: str, swept: list[str], skip: set[str], cells: pd.DataFrame, headline: list[str], out: Path
) -> list[Path]:
    """Each headline metric against each swept setting not in ``skip``, one line per mitigation set,
    one panel per value of the other swept settings."""
    figures = []
    metrics = [m for m in headline if m in cells.columns]
    for key in swept:
        if key in skip or not metrics:
            continue
        data = along(cells, swept, key)
        if data.empty:
            continue
        wide = key == "optim.lr" or data[key].max() / max(data[key].min(), 1e-12) > 20
        long = data.melt(id_vars=["mitigations", "panel", "seed", "status", key], value_vars=metrics, var_name="metric")
        names = long["metric"].map(human)
        long = long.assign(panel=names + " | " + long["panel"], share=names, value=pd.to_numeric(long["value"]))
        figures.append(
            line_figure(
                long,
                out / f"{study}_{key.replace('.', '_')}.png",
                f"{study}: {', '.join(map(human, metrics))} against {human(key)}",
                key,
                human(key),
                "",
                log=False,
                xscale="log" if wide else "linear",
                integer_x=not wide,
            )
        )
    return figures


def _trainability(study: str, swept: list[str], cells: pd.DataFrame, out: Path) -> list[Path]:
    """Share of seeds that trained (``vanex.science.stats.trained``: final loss below half of chance) against depth."""
    key = "task.depth"
    if key not in swept or "loss_vs_chance" not in cells:
        return []
    data = along(cells[cells["status"] != "missing"], swept, key, least=2)
    if data.empty:
        return []
    ok = data["loss_vs_chance"].map(lambda r: trained(float(r)))
    frame = data.assign(value=ok.astype(float))[["panel", "mitigations", "seed", "status", key, "value"]]
    frame = frame.groupby(["panel", "mitigations", key], sort=False, as_index=False).agg(
        value=("value", "mean"), seeds=("seed", "size")
    )
    frame = frame.assign(seed=0, status="completed")
    path = line_figure(
        frame,
        out / f"{study}_trainability_depth.png",
        f"{study}: share of seeds that trained against depth",
        key,
        {"deep_mlp": "hidden layers", "resnet": "layers (6n+2)", "transformer": "blocks"}.get(
            str(cells["task"].iloc[0]), "depth"
        ),
        f"share of seeds trained (loss < {TRAINED_FRACTION:g} × chance)",
        log=False,
        integer_x=True,
        band=False,
    )
    return [path]
