"""The claims judge: statuses from seeds and the learning-rate neighbourhood, the CLI, the bound."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import vanex
from hypothesis import given, settings
from hypothesis import strategies as st
from vanex.errors import UserError
from vanex.records.reader import StudyData
from vanex.registry import CLAIMS
from vanex.report.claims import LOCK, Cells, Claim, Outcome, _Study, evaluate, fmt, less, lock_problems, relock
from vanex.science.bounds import COPY_RECALL, through_time_bound


class ToyClaim(Claim):
    name, paper, where, statement, study = "toy_claim", "Toy 2024", "Fig. 1", "b trains below a", "toy"
    cells = {"a": Cells((), {"optim.lr": 0.1}), "b": Cells(("fix",), {"optim.lr": 0.1})}
    control = "a"

    def predicate(self, g):
        a, b = g["a"].values("final_train_loss"), g["b"].values("final_train_loss")
        return Outcome(less(b, a), f"b {fmt(b)} vs a {fmt(a)}")


def fake_study(losses: dict[tuple[str, float], list[float]]) -> _Study:
    """A study whose cell (mitigation, lr) has one finished seed per loss (nan: diverged)."""
    study = _Study.__new__(_Study)
    cells, rows = [], []
    for (mitigation, lr), values in losses.items():
        for seed, loss in enumerate(values):
            rid = f"{mitigation}-{lr}-{seed}"
            mitigations = [mitigation] if mitigation else []
            cells.append({"run_id": rid, "mitigations": mitigations, "seed": seed, "settings": {"optim.lr": lr}})
            status = "diverged" if math.isnan(loss) else "completed"
            rows.append({"run_id": rid, "status": status, "final_train_loss": loss, "training": "healthy"})
    probes = pd.DataFrame(columns=["step", "metric", "layer", "value", "run_id"])
    study.missing, study.data = None, StudyData({"cells": cells}, pd.DataFrame(rows), probes, {}, 0)
    return study


def judge(losses):
    return evaluate(ToyClaim(), "res", "quick", cache={("res", "toy", "quick"): fake_study(losses)})


GOOD, BAD = [0.1, 0.12, 0.11], [1.0, 1.1, 0.9]


def test_holds_everywhere_is_a_checked_tick():
    r = judge({(a, lr): (BAD if a == "" else GOOD) for a in ("", "fix") for lr in (0.05, 0.1, 0.2)})
    assert r.status == "✓" and "×0.5 ✓" in r.neighbourhood and "×2 ✓" in r.neighbourhood


def test_flip_at_double_learning_rate_is_fragile():
    losses = {(a, lr): (BAD if a == "" else GOOD) for a in ("", "fix") for lr in (0.05, 0.1)}
    losses |= {("", 0.2): GOOD, ("fix", 0.2): BAD}
    assert judge(losses).status == "fragile"


def test_fails_everywhere_is_a_cross_and_unrun_neighbours_are_said():
    r = judge({("", 0.1): GOOD, ("fix", 0.1): BAD})
    assert r.status == "✗" and r.neighbourhood.startswith("not run")


def test_tick_without_neighbours_is_marked():
    r = judge({("", 0.1): BAD, ("fix", 0.1): GOOD})
    assert r.status == "✓" and "not run" in r.neighbourhood


def test_too_few_seeds_is_not_run():
    assert judge({("", 0.1): BAD, ("fix", 0.1): GOOD[:1]}).status == "not run"


def test_diverged_seeds_count_as_worse_than_any_loss():
    nan = float("nan")
    assert judge({("", 0.1): [nan, nan, 1.0], ("fix", 0.1): GOOD}).status == "✓"
    assert judge({("", 0.1): GOOD, ("fix", 0.1): [0.01, nan, 0.01]}).status == "✗"
    assert "1 diverged" in fmt(np.array([0.1, np.inf, 0.2]))


def test_missing_study_is_not_run(tmp_path):
    class Unrun(ToyClaim):
        study = "rnn_copy"

    r = evaluate(Unrun(), tmp_path, "quick")
    assert r.status == "not run"
    assert r.numbers == "no valid manifest _studies/rnn_copy-quick.json (run `vanex study rnn_copy`)"


def test_a_claim_on_a_study_vanex_lacks_or_with_a_control_it_lacks_is_not_run_and_says_why(tmp_path):
    """A third party's claim that names a study no config root has, or a control that is none of its cell
    groups, is 'not run' with the reason (it was told to run `vanex study toy`, or judged without a control)."""
    r = evaluate(ToyClaim(), tmp_path, "quick")
    assert r.status == "not run" and r.numbers.startswith("its study 'toy' is not one vanex has; valid studies: ")
    assert "rnn_copy" in r.numbers

    class NoControl(ToyClaim):
        control = "c"

    r = evaluate(NoControl(), tmp_path, "quick")
    assert (r.status, r.numbers, r.second_path) == (
        "not run",
        "its control 'c' is not one of its cell groups (a, b)",
        "–",
    )

    class Unnamed(ToyClaim):
        control = None

    r = evaluate(Unnamed(), tmp_path, "quick")
    assert r.numbers == "it names no control: set `control` to one of its cell groups (a, b)"


@given(st.lists(st.floats(0, 10), min_size=2, max_size=6), st.lists(st.floats(0, 10), min_size=2, max_size=6))
@settings(deadline=None)
def test_less_is_never_true_both_ways(a, b):
    assert not (less(np.array(a), np.array(b)) and less(np.array(b), np.array(a)))


def test_registry_holds_at_least_twelve_cited_claims():
    names = CLAIMS.names()
    assert len(names) >= 12
    for name in names:
        claim = CLAIMS.get(name)
        assert claim.paper and claim.where and claim.statement and claim.cells


def bound_holds(flow: pd.Series, sigma: float) -> tuple[int, int]:
    """(lags where ||dL/dh_t|| <= sigma^(s-t) ||dL/dh_s||, lags checked); s = the first recall step."""
    values = np.array([flow[f"t{t}"] for t in range(len(flow))], dtype=float)
    holds = through_time_bound(values, sigma, len(values) - COPY_RECALL)["holds"]
    return int(holds.sum()), len(holds)


@given(st.integers(2, 8), st.floats(0.3, 3.0), st.integers(0, 2**16))
@settings(deadline=None, max_examples=25)
def test_sigma_max_bound_holds_for_any_tanh_rnn(hidden, gain, seed):
    """Pascanu et al. (2013), eq. (7), a theorem and so a property test (it was claim
    pascanu2013_sigma_bound, which could not fail): ||dL/dh_t|| <= sigma_max^(s-t) ||dL/dh_s||
    before the first step s that carries a loss, for any tanh RNN."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(hidden, hidden, generator=g, dtype=torch.float64) * gain / hidden**0.5
    x = torch.randn(15, 3, hidden, generator=g, dtype=torch.float64)
    h, taps = torch.zeros(3, hidden, dtype=torch.float64), []
    states = []
    for t in range(15):
        h = torch.tanh(x[t] + h @ w.T)
        tap = torch.zeros_like(h, requires_grad=True)
        h = h + tap
        taps.append(tap)
        states.append(h)
    loss = sum((s**2).sum() for s in states[-10:])
    grads = torch.autograd.grad(loss, taps)
    flow = pd.Series({f"t{t}": float(gr.norm()) for t, gr in enumerate(grads)})
    held, total = bound_holds(flow, float(torch.linalg.matrix_norm(w, ord=2)))
    assert total == 5 and held == total


def test_bound_check_can_fail():
    flow = pd.Series({f"t{t}": v for t, v in enumerate([5.0, 1.0, *([1.0] * 10)])})
    assert bound_holds(flow, 1.0) == (1, 2)


def test_cli_refuses_unknown_claims_and_missing_results(tmp_path):
    out = vanex("claims", "--results", str(tmp_path), "--claim", "nope")
    assert out.returncode == 2 and "unknown claim 'nope'" in out.stderr and "glorot2010_sigmoid" in out.stderr
    out = vanex("claims", "--results", str(tmp_path / "absent"))
    assert out.returncode == 2 and "no records directory" in out.stderr


@pytest.mark.slow
def test_claims_run_on_a_small_profile(tmp_path, smoke_records):
    results = tmp_path / "results"
    for name in ("rnn_exploding", "rnn_init"):
        smoke_records(name, results)
    out = vanex("claims", "--results", str(results), "--profile", "smoke")
    lines = [line for line in out.stdout.splitlines() if line and not line.startswith(" ")]
    assert len(lines) == len(CLAIMS.names())
    assert any("pascanu2013_gain" in line and line.startswith("✓") for line in lines)  # step 0: any budget
    assert any("pascanu2013_clipping_rnn" in line and not line.startswith("not run") for line in lines)
    # a gate: claims whose studies did not run fail it, each said in one line, unless allowed
    not_run = "claim(s) not run: arjovsky2016_orthogonal, bachlechner2020_rezero"
    assert out.returncode == 1 and not_run in out.stderr, out.stderr
    allowed = vanex("claims", "--results", str(results), "--profile", "smoke", "--allow-missing")
    assert allowed.returncode == (1 if any(line.startswith("✗") for line in lines) else 0), allowed.stdout
    nope = vanex("claims", "--results", str(results), "--profile", "nope")
    assert nope.returncode == 2 and "'nope'" in nope.stderr and "(it has manifests for: smoke)" in nope.stderr
    one = vanex("claims", "--results", str(results), "--profile", "smoke", "--claim", "pascanu2013_gain")
    assert one.returncode == 0, one.stderr
    assert one.stderr.splitlines() == [  # smoke verdicts are a setup check, and say so
        "vanex claims: the smoke profile trains each run for 1% of its steps to check a setup: its numbers and "
        "claim verdicts are not evidence; cite a report of the quick or full profile"
    ]
    record = next(p for p in results.glob("*/run.json") if "recurrent_gain" in p.read_text())
    (record.parent / "probes.csv").write_text("")  # an unreadable record is no longer silent
    broken = vanex("claims", "--results", str(results), "--profile", "smoke", "--claim", "pascanu2013_gain")
    assert broken.returncode == 1 and "study rnn_init: 1 record(s) could not be read" in broken.stderr
    cells = json.loads((results / "_studies" / "rnn_init-smoke.json").read_text())["cells"]
    other = next(results / c["run_id"] / "run.json" for c in cells if c["run_id"] != record.parent.name)
    other.write_text("not json")  # a damaged run.json is unreadable too, not silently one seed fewer
    broken = vanex("claims", "--results", str(results), "--profile", "smoke")
    assert broken.returncode == 1 and "study rnn_init: 2 record(s) could not be read" in broken.stderr
    resumed = vanex("study", "rnn_init", "--profile", "smoke", "--jobs", "1", f"results_dir={results}")
    to_run = [int(n) for n in re.findall(r"(\d+) to run here", resumed.stderr)]
    assert resumed.returncode == 0 and sum(to_run) == 2, resumed.stderr  # both trained again
    assert (
        vanex("claims", "--results", str(results), "--profile", "smoke", "--claim", "pascanu2013_gain").returncode == 0
    )


def _lock() -> dict:
    return json.loads(LOCK.read_text())


def test_every_claim_matches_its_locked_definition():
    """Conditions fixed in advance: a claim's cells, thresholds or predicate change only with a new version."""
    assert lock_problems(_lock()) == []


def test_a_claim_edited_without_a_version_bump_is_caught(monkeypatch):
    claim = CLAIMS.get("he2016_degradation")
    monkeypatch.setattr(claim, "cells", {**claim.cells, "plain56": Cells((), {"task.depth": 44})})
    assert lock_problems(_lock()) == ["he2016_degradation: its definition changed but its version is still 2; bump it"]
    with pytest.raises(UserError, match="he2016_degradation changed without a version bump"):
        relock(_lock())
    monkeypatch.setattr(claim, "version", 3)  # bumped: the lock must be renewed, and then agrees
    assert lock_problems(_lock()) == ["he2016_degradation: version 3, locked 2; run `vanex claims --lock`"]
    assert lock_problems(relock(_lock())) == []


def test_a_predicate_edited_without_a_version_bump_is_caught(monkeypatch):
    claim = CLAIMS.get("wang2022_deepnorm")
    monkeypatch.setattr(claim, "predicate", lambda self, g: Outcome(True, "always"))
    assert lock_problems(_lock()) == ["wang2022_deepnorm: its definition changed but its version is still 1; bump it"]


def test_a_claims_step_count_is_matched_at_each_profiles_scale():
    """A claim gives ``task.steps`` at the quick profile's scale; a study's sweep of it is scaled by the
    profile (smoke 0.01, full 3), so the claim finds its cells in every profile, and only them."""
    from vanex.report.claims import manifest_scale

    cells = Cells(("lstm",), {"task.steps": 9000})
    cell = lambda steps: {"mitigations": ["lstm"], "settings": {"task.steps": steps}}  # noqa: E731
    for profile, steps in (("quick", 9000), ("smoke", 90), ("full", 27000)):
        scale = manifest_scale({"profile": profile})
        assert cells.matches(cell(steps), scale)
        assert not cells.matches(cell(3000 * scale), scale)  # the task's own budget is another cell
    assert manifest_scale({"profile": "a_plugins_profile"}) == 1.0
