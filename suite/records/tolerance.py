"""What the reproducibility promise allows between two CPU models (README, "Reproducibility"):
step-0 values (the untrained network's gradient ratios) within a relative ``STEP0_REL_TOL``.
``vanex compare`` applies it report against report, ``vanex verify`` record against retrained run."""

from __future__ import annotations

import math

# across CPU models: |a - b| <= tol * |a| for step-0 values (log10 values: in decades). An Intel Xeon and an
# AMD EPYC differ by at most 5.8e-7 over 492 runs, a few float32 roundings; a changed initialisation moves
# them by far more.
STEP0_REL_TOL = 1e-4


def equal(a: float, b: float, exact: bool = True, metric: str = "") -> bool:
    """``a`` and ``b`` equal (NaN equals NaN), or, unless ``exact``, within the cross-CPU tolerance;
    a ``metric`` named log10 is in decades, so the tolerance applies to the ratio it is the log of."""
    if (math.isnan(a) and math.isnan(b)) or a == b:
        return True
    if exact or not (math.isfinite(a) and math.isfinite(b)):
        return False
    if "log10" in metric:  # decades: the relative tolerance of the ratio itself
        return abs(a - b) <= math.log10(1 + STEP0_REL_TOL)
    return abs(a - b) <= STEP0_REL_TOL * abs(a)
