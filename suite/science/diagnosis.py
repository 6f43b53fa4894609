"""Two-part diagnosis of a run, computed from its probe series (at the end of a run and again
at report time, so new rules apply to old records without retraining).

- ``init``: the gradient flow of the untrained network, read from the signal the mechanism acts
  on: the backward signal ||dL/dh_l|| reaching each layer's input (the ``backprop`` probe's
  ``grad_preact``, first over last hidden layer of the same kind; the task's flow ratio where that
  series is missing, e.g. ||dL/dh_t|| through time) and the step-0 global gradient norm:
  ``vanishing``, ``exploding`` (the backward ratio, or the global norm beyond its bound) or
  ``stable`` (``inconclusive`` without a ratio). Weight-gradient ratios are reported beside it but
  do not decide it: in a ReLU net the forward growth of a layer's input cancels the backward
  growth of its signal in ||dL/dW_l|| (Glorot & Bengio 2010; He et al. 2015).
- ``training``: what happened while training, judged over the whole run and mostly its later
  half. Every condition that holds is listed in ``flags``; the verdict is the first in the order
  ``diverged`` (non-finite loss or gradients); ``unstable`` (the final training loss far above the
  task's chance loss: training made the net worse than guessing); ``stalled`` (final training loss
  not meaningfully below chance); ``exploding`` (over the later half the median ratio, or the
  median global gradient norm, beyond its bound, or the global norm grown by orders of magnitude:
  a persistent state, not one transient sample); ``vanishing`` (the median ratio below its bound
  over the later half); ``dead_units`` (most rectifier units dead at the end); ``inconclusive``
  (no ratio after step 0, or no chance level); else ``healthy``. ``label`` names the verdict with
  the other conditions that hold beside it ("stalled (+vanishing)").

Over the later half a sampled value is held until the next sample and the median is weighted
by that time, so the verdict does not depend on how densely the run was sampled. The rules
follow Bengio, Simard & Frasconi (1994), Glorot & Bengio (2010) and Pascanu et al. (2013);
thresholds come from ``conf/diagnosis/default.yaml``. This module imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from vanex.science.stats import loss_vs_chance

Row = tuple[int, str, str, float]
TRAINING_ORDER = ("diverged", "unstable", "stalled", "exploding", "vanishing", "dead_units")


@dataclass
class DiagnosisConfig:
    """Thresholds; their values and comments live in ``conf/diagnosis/default.yaml``."""

    vanishing_orders: float
    exploding_orders: float
    exploding_grad_norm: float
    exploding_growth_orders: float
    dead_fraction: float
    stall_fraction: float
    unstable_fraction: float

    def __post_init__(self) -> None:
        for name in ("vanishing_orders", "exploding_orders", "exploding_grad_norm", "exploding_growth_orders"):
            if not getattr(self, name) > 0:
                raise ValueError(f"diagnosis.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.dead_fraction <= 1:
            raise ValueError(f"diagnosis.dead_fraction must be in (0, 1], got {self.dead_fraction}")
        if not 0 < self.stall_fraction <= self.unstable_fraction:
            raise ValueError(
                f"diagnosis needs 0 < stall_fraction <= unstable_fraction, got {self.stall_fraction} and "
                f"{self.unstable_fraction}"
            )


def _log10(value: float) -> float:
    return -math.inf if value == 0 else math.log10(value)


def _series(rows: list[Row], metric: str) -> list[tuple[int, float]]:
    return sorted((s, v) for s, m, _, v in rows if m == metric)


def held_median(series: list[tuple[int, float]], start: float, end: float) -> float | None:
    """Median over [start, end) of the piecewise-constant signal that holds each sample until the next."""
    weighted = []
    for i, (step, value) in enumerate(series):
        until = series[i + 1][0] if i + 1 < len(series) else end
        weight = min(until, end) - max(step, start)
        if weight > 0 and not math.isnan(value):
            weighted.append((value, weight))
    if not weighted:
        return None
    weighted.sort()
    half, total = sum(w for _, w in weighted) / 2, 0.0
    for value, weight in weighted:
        total += weight
        if total >= half:
            return value
    return weighted[-1][0]


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 3)


def backward_log10_ratio(rows: list[Row], layers: list[dict[str, Any]] | None) -> float | None:
    """log10 of ||dL/dh|| at the first hidden layer's input over the last's (same kind as the first) at
    step 0, from ``grad_preact``; None where the series has fewer than two such layers."""
    values = {layer: v for s, m, layer, v in rows if m == "grad_preact" and s == 0}
    hidden = [e for e in layers or [] if e.get("hidden") and e["name"] in values]
    same = [e["name"] for e in hidden if e.get("kind") == hidden[0].get("kind")] if hidden else []
    if len(same) < 2 or math.isnan(values[same[0]]) or math.isnan(values[same[-1]]):
        return None
    first, last = values[same[0]], values[same[-1]]
    if last == 0:
        return None if first == 0 else math.inf
    return _log10(first / last) if math.isfinite(first / last) else math.inf


def diagnose_init(rows: list[Row], cfg: DiagnosisConfig, layers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    ratio0 = next((v for s, v in _series(rows, "grad_ratio") if s == 0), None)
    weight = None if ratio0 is None or math.isnan(ratio0) else _log10(ratio0)
    backward = backward_log10_ratio(rows, layers)
    signal, log0 = ("grad_preact", backward) if backward is not None else ("flow ratio", weight)
    norm0 = next((v for s, v in _series(rows, "grad_norm_global") if s == 0), None)
    out = {"signal": signal, "log10_backward_ratio": log0, "grad_norm_global": norm0}
    if log0 is None:
        return {"verdict": "inconclusive", "grad_ratio": ratio0, "log10_grad_ratio": weight, **out}
    too_large = norm0 is not None and not norm0 <= cfg.exploding_grad_norm  # a non-finite norm is too large
    verdict = (
        "exploding"
        if log0 >= cfg.exploding_orders or too_large
        else "vanishing"
        if log0 <= -cfg.vanishing_orders
        else "stable"
    )
    return {"verdict": verdict, "grad_ratio": ratio0, "log10_grad_ratio": weight, **out}


def diagnose_training(
    rows: list[Row], status: str, steps: int, chance_loss: float | None, cfg: DiagnosisConfig
) -> dict[str, Any]:
    ratios = [(s, _log10(v)) for s, v in _series(rows, "grad_ratio") if not math.isnan(v) and v >= 0]
    later = (steps / 2, steps)
    late_ratio = held_median(ratios, *later)
    norms = _series(rows, "grad_norm_global")
    norm0 = next((v for s, v in norms if s == 0), None)
    late_logs = [(s, _log10(v) if math.isfinite(v) else math.inf) for s, v in norms if not math.isnan(v) and v >= 0]
    late_norm = held_median(late_logs, *later)
    growth = None if late_norm is None or not norm0 or not math.isfinite(late_norm) else late_norm - _log10(norm0)
    losses = _series(rows, "train_loss")
    final_loss = losses[-1][1] if losses else None
    vs_chance = loss_vs_chance(final_loss, chance_loss)
    dead = _series(rows, "act_dead")
    last_dead = [v for s, v in dead if s == dead[-1][0]] if dead else []
    dead_final = sum(last_dead) / len(last_dead) if last_dead else None
    nonfinite = (
        status == "diverged"
        or any(m == "nonfinite" for _, m, _, _ in rows)
        or any(not math.isfinite(v) for _, v in norms + losses)
    )
    conditions = {
        "diverged": nonfinite,
        "unstable": vs_chance >= cfg.unstable_fraction,
        "stalled": vs_chance >= cfg.stall_fraction,
        "exploding": (late_ratio is not None and late_ratio >= cfg.exploding_orders)
        or (late_norm is not None and late_norm > math.log10(cfg.exploding_grad_norm))
        or (growth is not None and growth >= cfg.exploding_growth_orders),
        "vanishing": late_ratio is not None and late_ratio <= -cfg.vanishing_orders,
        "dead_units": dead_final is not None and dead_final >= cfg.dead_fraction,
    }
    if conditions["unstable"]:
        conditions["stalled"] = False  # worse than chance is its own verdict, not a kind of stall
    flags = [name for name in TRAINING_ORDER if conditions[name]]
    if flags:
        verdict = flags[0]
    elif late_ratio is None or final_loss is None or chance_loss is None:
        verdict = "inconclusive"
    else:
        verdict = "healthy"
    others = [f for f in flags if f != verdict]
    return {
        "verdict": verdict,
        "label": verdict + (f" (+{', +'.join(others)})" if others else ""),
        "flags": flags,
        "late_log10_grad_ratio": late_ratio,
        "late_log10_grad_norm": _round(late_norm),
        "late_grad_norm_growth_orders": _round(growth),
        "final_train_loss": final_loss,
        "chance_loss": chance_loss,
        "loss_vs_chance": vs_chance,
        "dead_fraction_final": dead_final,
    }


def diagnose(
    rows: list[Row],
    status: str,
    steps: int,
    chance_loss: float | None,
    cfg: DiagnosisConfig,
    layers: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Both parts, with the thresholds used; None for a failed run (it has no dynamics to judge).
    ``layers``: the task's layer list (``task_info.layers``), where the backward signal is read."""
    if status == "failed":
        return None
    return {
        "init": diagnose_init(rows, cfg, layers),
        "training": diagnose_training(rows, status, steps, chance_loss, cfg),
        "thresholds": asdict(cfg),
    }
