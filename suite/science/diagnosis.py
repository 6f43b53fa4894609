"""Two-part diagnosis of a run, computed from its probe series (at the end of a run and again
at report time, so new rules apply to old records without retraining).

- ``init``: the gradient flow of the untrained network, from the step-0 ratio of the first to
  the last hidden layer's (or time step's) gradient norm: ``vanishing``, ``exploding`` or
  ``stable`` (``inconclusive`` without a ratio).
- ``training``: what happened while training, judged over the whole run and mostly its later
  half. In order of precedence: ``diverged`` (non-finite loss or gradients); ``stalled`` (final
  training loss not meaningfully below the chance level the task declares); ``exploding`` (the
  ratio or the global gradient norm beyond its bound at any sampled step after step 0, or the
  global norm grown by orders of magnitude over the later half); ``vanishing`` (the ratio below
  its bound over the later half); ``dead_units`` (most rectifier units dead at the end);
  ``inconclusive`` (no ratio after step 0, or no chance level to judge stalling); else
  ``healthy``. Every condition that holds is listed in ``flags``, with the numbers used.

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
TRAINING_ORDER = ("diverged", "stalled", "exploding", "vanishing", "dead_units")


@dataclass
class DiagnosisConfig:
    """Thresholds; their values and comments live in ``conf/diagnosis/default.yaml``."""

    vanishing_orders: float
    exploding_orders: float
    exploding_grad_norm: float
    exploding_growth_orders: float
    dead_fraction: float
    stall_fraction: float


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


def diagnose_init(rows: list[Row], cfg: DiagnosisConfig) -> dict[str, Any]:
    ratio0 = next((v for s, v in _series(rows, "grad_ratio") if s == 0), None)
    if ratio0 is None or math.isnan(ratio0):
        return {"verdict": "inconclusive", "grad_ratio": None, "log10_grad_ratio": None}
    log0 = _log10(ratio0)
    verdict = (
        "vanishing" if log0 <= -cfg.vanishing_orders else "exploding" if log0 >= cfg.exploding_orders else "stable"
    )
    return {"verdict": verdict, "grad_ratio": ratio0, "log10_grad_ratio": log0}


def diagnose_training(
    rows: list[Row], status: str, steps: int, chance_loss: float | None, cfg: DiagnosisConfig
) -> dict[str, Any]:
    ratios = [(s, _log10(v)) for s, v in _series(rows, "grad_ratio") if not math.isnan(v) and v >= 0]
    later = (steps / 2, steps)
    late_ratio = held_median(ratios, *later)
    max_ratio = max((v for s, v in ratios if s > 0), default=None)
    norms = _series(rows, "grad_norm_global")
    norm0 = next((v for s, v in norms if s == 0), None)
    max_norm = max((v for s, v in norms if s > 0 and math.isfinite(v)), default=None)
    late_norm = held_median([(s, _log10(v)) for s, v in norms if math.isfinite(v) and v >= 0], *later)
    growth = None if late_norm is None or not norm0 else late_norm - _log10(norm0)
    losses = _series(rows, "train_loss")
    final_loss = losses[-1][1] if losses else None
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
        "stalled": loss_vs_chance(final_loss, chance_loss) >= cfg.stall_fraction,
        "exploding": (max_ratio is not None and max_ratio >= cfg.exploding_orders)
        or (max_norm is not None and max_norm > cfg.exploding_grad_norm)
        or (growth is not None and growth >= cfg.exploding_growth_orders),
        "vanishing": late_ratio is not None and late_ratio <= -cfg.vanishing_orders,
        "dead_units": dead_final is not None and dead_final >= cfg.dead_fraction,
    }
    flags = [name for name in TRAINING_ORDER if conditions[name]]
    if flags:
        verdict = flags[0]
    elif late_ratio is None or final_loss is None or chance_loss is None:
        verdict = "inconclusive"
    else:
        verdict = "healthy"
    return {
        "verdict": verdict,
        "flags": flags,
        "late_log10_grad_ratio": late_ratio,
        "max_log10_grad_ratio": max_ratio,
        "max_grad_norm": max_norm,
        "late_grad_norm_growth_orders": _round(growth),
        "final_train_loss": final_loss,
        "chance_loss": chance_loss,
        "dead_fraction_final": dead_final,
    }


def diagnose(
    rows: list[Row], status: str, steps: int, chance_loss: float | None, cfg: DiagnosisConfig
) -> dict[str, Any] | None:
    """Both parts, with the thresholds used; None for a failed run (it has no dynamics to judge)."""
    if status == "failed":
        return None
    return {
        "init": diagnose_init(rows, cfg),
        "training": diagnose_training(rows, status, steps, chance_loss, cfg),
        "thresholds": asdict(cfg),
    }
