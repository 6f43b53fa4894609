"""Statistics over seeds and the task-independent quantities every verdict reads.

One home for each: the Student-t interval (tables, claims and figures all use it), the loss relative
to the task's chance loss (``loss_vs_chance``, computed once for every task), and what "trained"
means (the trainability figure, the phase diagram and the claims all use ``trained``).
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95  # confidence level of every interval vanex reports
TRAINED_FRACTION = 0.5  # a run trained when its final training loss is below this share of chance


def t_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t confidence interval of the mean over seeds; low = high = NaN
    for a single seed (no interval from one value), ±inf when a value is not finite."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    if not np.isfinite(values).all():
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def loss_vs_chance(loss: float | None, chance: float | None) -> float:
    """Final training loss over the task's chance loss (the best input-blind predictor's): 1 is
    chance, 0 is perfect. NaN where either is missing; inf where the loss is not finite."""
    if loss is None or chance is None or not chance or math.isnan(loss):
        return math.nan
    return loss / chance if math.isfinite(loss) else math.inf


def trained(ratio: float, fraction: float = TRAINED_FRACTION) -> bool:
    """Whether a run with this ``loss_vs_chance`` trained: finite and below ``fraction`` of chance."""
    return bool(math.isfinite(ratio) and ratio < fraction)
