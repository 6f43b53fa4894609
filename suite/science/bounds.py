"""The sigma_max bound on the gradient through time (Pascanu, Mikolov & Bengio 2013, eq. 7).

Before the first step s that carries a loss, the loss reaches h_t only through h_s, so
dL/dh_t = (dh_s/dh_t)^T dL/dh_s, and for a plain tanh or ReLU cell (|phi'| <= 1)
||dh_s/dh_t|| <= sigma_max(W_hh)^(s-t). At positions >= s a readout adds direct terms, so they
are not compared.
"""

from __future__ import annotations

import numpy as np

SLACK = 1e-4  # relative tolerance: the records hold float32 norms
COPY_RECALL = 10  # the copy task's recalled symbols: its loss starts at the 10th step from the end


def through_time_bound(values: np.ndarray, sigma_max: float, first_loss_step: int) -> dict[str, np.ndarray]:
    """For t < s = ``first_loss_step``, with ``values[t]`` = ||dL/dh_t||: the lag s - t, the measured
    log10 ||dL/dh_t|| / ||dL/dh_s||, the bound's log10 (lag * log10 sigma_max) and whether it holds."""
    values = np.asarray(values, dtype=float)
    s = first_loss_step
    lag = np.arange(s, 0, -1)  # s - t for t = 0 .. s-1
    with np.errstate(divide="ignore"):
        measured = np.log10(values[:s] / values[s])
    holds = values[:s] <= values[s] * sigma_max**lag * (1 + SLACK)
    return {"lag": lag, "measured": measured, "bound": lag * np.log10(sigma_max), "holds": holds}
