"""Per-run verdict on gradient flow: diverged, exploding, dead_units, vanishing or healthy.

The rules follow common practice (Bengio, Simard & Frasconi 1994; Pascanu et al. 2013;
Glorot & Bengio 2010): non-finite loss or gradients mean the run diverged; early
layers (or time steps) getting orders of magnitude *more* gradient than late ones, or a
global gradient norm beyond a bound, mean exploding; most rectifier units dead means
dead_units; early layers getting orders of magnitude *less* gradient mean vanishing. The
ratio used is the median over sampled steps, so one noisy step decides nothing. Thresholds
come from ``conf/diagnosis/default.yaml``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Any


@dataclass
class DiagnosisConfig:
    vanishing_orders: float = 2.0  # median log10(first/last grad) at or below -this => vanishing
    exploding_orders: float = 2.0  # median log10(first/last grad) at or above +this => exploding
    exploding_grad_norm: float = 1e4  # any global gradient norm above this => exploding
    dead_fraction: float = 0.5  # final mean dead-unit fraction at or above this => dead_units


def _series(rows: list[tuple[int, str, str, float]], metric: str) -> list[tuple[int, str, float]]:
    return [(s, layer, v) for s, m, layer, v in rows if m == metric]


def diagnose(rows: list[tuple[int, str, str, float]], status: str, cfg: DiagnosisConfig) -> dict[str, Any]:
    # a ratio of exactly 0 means the first layer's gradient underflowed float32: -inf orders
    logs = [math.log10(v) if v > 0 else -math.inf for _, _, v in _series(rows, "grad_ratio") if math.isfinite(v)]
    log_ratio = median(logs) if logs else None
    norms = [v for _, _, v in _series(rows, "grad_norm_global")]
    finite_norms = [v for v in norms if math.isfinite(v)]
    nonfinite = status == "diverged" or any(not math.isfinite(v) for v in norms)
    dead = _series(rows, "act_dead")
    last_dead_step = max((s for s, _, _ in dead), default=None)
    dead_final = [v for s, _, v in dead if s == last_dead_step]
    evidence = {
        "median_log10_grad_ratio": None if log_ratio is None else round(log_ratio, 3),
        "max_grad_norm": max(finite_norms) if finite_norms else None,
        "nonfinite": nonfinite,
        "dead_fraction_final": sum(dead_final) / len(dead_final) if dead_final else None,
        "thresholds": vars(cfg).copy(),
    }
    if nonfinite:
        verdict = "diverged"
    elif (log_ratio is not None and log_ratio >= cfg.exploding_orders) or (
        finite_norms and max(finite_norms) > cfg.exploding_grad_norm
    ):
        verdict = "exploding"
    elif evidence["dead_fraction_final"] is not None and evidence["dead_fraction_final"] >= cfg.dead_fraction:
        verdict = "dead_units"
    elif log_ratio is not None and log_ratio <= -cfg.vanishing_orders:
        verdict = "vanishing"
    else:
        verdict = "healthy"
    return {"verdict": verdict, "evidence": evidence}
