"""Every predicate can fail: each registered claim, given records in which its effect is absent,
is not ✓.

"Effect absent" is built from the claim's own control group: every cell group the claim reads (and
its learning-rate neighbours) gets the control's distribution, here the same seeds in one of three
regimes (a healthy run with flat gradients, a stalled one whose gradient vanishes towards the input,
a diverged one whose gradient explodes). A treatment that behaves like its control, or a measurement
that does not depend on the setting the claim varies, must not confirm the claim.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from vanex.records.reader import StudyData
from vanex.registry import CLAIMS
from vanex.report.claims import Cells, Claim, Outcome, _Study, evaluate

SEEDS = range(5)
CHANCE = 2.3
POSITIONS = 30  # layers or time steps of every synthetic probe series
REGIMES = {
    #          status      loss/chance  training    init        log10 ratio at init
    "healthy": ("completed", 0.05, "healthy", "stable", 0.0),
    "stalled": ("completed", 1.0, "stalled", "vanishing", -5.0),
    "diverged": ("diverged", math.nan, "diverged", "exploding", 3.0),
}


def _layer_names() -> list[str]:
    names = [f"hidden_{i}" for i in range(POSITIONS)] + [f"l{i + 1}" for i in range(POSITIONS)]
    return names + [f"block{i}.{kind}" for i in range(POSITIONS) for kind in ("conv1", "mlp_in", "mlp_out")]


def _probes(run_id: str, log_ratio: float) -> list[tuple]:
    """Step-0 series whose first entry is 10^log_ratio times its last, geometric in between."""
    rows = []
    for i in range(POSITIONS):
        value = 10.0 ** (log_ratio * (1 - i / (POSITIONS - 1)))
        rows.append((0, "grad_through_time", f"t{i}", value, run_id))
        rows.append((0, "grad_preact", f"l{i + 1}", value, run_id))
    rows += [(0, "grad_norm", name, 1.0, run_id) for name in _layer_names()]
    # saturated fractions over training: in the stalled regime the top hidden layer saturates first
    top = 0.9 if log_ratio < 0 else 0.0
    for step in range(0, 101, 10):
        rows += [
            (step, "act_saturated", f"hidden_{i}", top * i / (POSITIONS - 1) if step else 0.0, run_id)
            for i in range(POSITIONS)
        ]
    # no hidden layer with every unit at 0 on the batch: no net born dead, at any depth or width
    rows += [(0, "act_dead", f"hidden_{i}", 0.0, run_id) for i in range(POSITIONS)]
    # the input gradient along a line: as smooth at every depth, with and without skips
    rows += [(0, "grad_autocorr", f"lag{k}", 0.9**k, run_id) for k in (1, 2, 4, 8, 16, 32, 64)]
    rows += [(0, "sigma_max", "recurrent", 1.0, run_id), (0, "spectral_radius", "recurrent", 1.0, run_id)]
    # the input-output Jacobian's log spread: the same in every cell (it does not depend on the architecture)
    rows += [(0, "jacobian_logsq_mean", "", log_ratio, run_id), (0, "jacobian_logsq_var", "", 1.0, run_id)]
    rows += [(0, "jacobian_zero_fraction", "", 0.0, run_id)]
    # and the spread of its singular values: the same at every depth and for every init
    rows += [(0, "jacobian_sv2_mean", "", 1.0, run_id), (0, "jacobian_sv2_normvar", "", 1.0, run_id)]
    return rows


def effect_absent(claim: type[Claim], regime: str) -> _Study:
    """A study in which every cell group of ``claim`` (and its learning-rate neighbours) holds the same
    seeds as its control, all in ``regime``."""
    status, ratio, training, init, log_ratio = REGIMES[regime]
    groups = list(claim.cells.values())
    if claim.neighbourhood:
        for factor in (0.5, 2.0):
            for c in claim.cells.values():
                if isinstance(c.settings.get(claim.neighbourhood), (int, float)):
                    shifted = {**c.settings, claim.neighbourhood: c.settings[claim.neighbourhood] * factor}
                    groups.append(Cells(c.mitigations, shifted))
    cells, rows, probes = [], [], []
    for g, group in enumerate(groups):
        for seed in SEEDS:
            rid = f"g{g}s{seed}"
            cells.append(
                {"run_id": rid, "mitigations": list(group.mitigations), "seed": seed, "settings": dict(group.settings)}
            )
            loss = ratio * CHANCE
            rows.append(
                {
                    "run_id": rid,
                    "status": status,
                    "final_train_loss": loss,
                    "loss_vs_chance": ratio,
                    "chance_loss": CHANCE,
                    "training": training,
                    "init": init,
                    "init_log10_grad_ratio": log_ratio,
                    "init_log10_backward_ratio": log_ratio,
                    "copy_accuracy": 0.5,
                }
            )
            probes += _probes(rid, log_ratio)
    study = _Study.__new__(_Study)
    frame = pd.DataFrame(probes, columns=["step", "metric", "layer", "value", "run_id"])
    study.missing, study.data = None, StudyData({"cells": cells}, pd.DataFrame(rows), frame, {}, 0)
    return study


def statuses(claim: type[Claim]) -> dict[str, str]:
    """The claim's status in each effect-absent regime."""
    out = {}
    for regime in REGIMES:
        cache = {("res", claim.study, "quick"): effect_absent(claim, regime)}
        out[regime] = evaluate(claim(), "res", "quick", cache).status
    return out


@pytest.mark.parametrize("name", CLAIMS.names())
def test_every_claim_names_a_control_among_its_groups(name):
    claim = CLAIMS.get(name)
    assert claim.control in claim.cells, f"{name}: control {claim.control!r} is not one of {list(claim.cells)}"


@pytest.mark.parametrize("name", CLAIMS.names())
def test_no_claim_is_confirmed_where_its_effect_is_absent(name):
    found = statuses(CLAIMS.get(name))
    assert "✓" not in found.values(), f"{name} is ✓ on records without its effect: {found}"


class AlwaysHolds(Claim):
    paper, where, statement, study = "Toy 2026", "Fig. 0", "nothing can refute this", "toy"
    cells = {"a": Cells((), {"optim.lr": 0.1}), "b": Cells(("fix",), {"optim.lr": 0.1})}
    control = "a"

    def predicate(self, g):
        return Outcome(True, "")


class Compares(AlwaysHolds):
    def predicate(self, g):
        a, b = g["a"].values("loss_vs_chance"), g["b"].values("loss_vs_chance")
        return Outcome(bool(np.all(b < a)), "")


def test_the_check_catches_a_predicate_that_cannot_fail():
    assert set(statuses(AlwaysHolds).values()) == {"✓"}
    assert "✓" not in statuses(Compares).values()
