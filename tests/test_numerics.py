"""The second numeric code path: it really rounds differently on this machine, a study runs its cells
on both paths, and a claim whose verdict differs between them is fragile."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import vanex
from vanex.engine import plan
from vanex.errors import UserError
from vanex.records.reader import StudyData
from vanex.report.claims import Cells, Claim, Outcome, _Study, evaluate

CHAOTIC = ["task=deep_mlp", "mitigation=[relu]", "task.init=scaled", "task.weight_scale=2.0", "task.steps=40"]


def _record(results: Path) -> tuple[dict, bytes]:
    (folder,) = [p for p in results.iterdir() if (p / "run.json").is_file()]
    return json.loads((folder / "run.json").read_text()), (folder / "probes.csv").read_bytes()


def test_the_second_path_changes_the_bytes_of_a_chaotic_run_on_this_machine(tmp_path):
    """Otherwise the axis would check nothing: the same run on both paths, different numbers."""
    runs = {}
    for mode in ("pinned", "generic"):
        out = vanex("run", f"numerics={mode}", *CHAOTIC, f"results_dir={tmp_path / mode}", "progress=false")
        assert out.returncode == 0, out.stderr
        runs[mode] = _record(tmp_path / mode)
    (pinned, pinned_bytes), (generic, generic_bytes) = runs["pinned"], runs["generic"]
    assert pinned["run_id"] != generic["run_id"]  # the path is part of a run's identity
    assert generic["provenance"]["numerics"]["env"]["MKL_CBWR"] == "COMPATIBLE"
    assert generic["provenance"]["numerics"]["aten_cpu_capability"] == "DEFAULT"
    assert pinned_bytes != generic_bytes
    assert pinned["summary"]["grad_ratio_init"] != generic["summary"]["grad_ratio_init"]


def test_a_study_entry_runs_its_cells_on_every_path_it_lists(monkeypatch):
    study = {
        "task": "deep_mlp",
        "seeds": [0, 1],
        "grid": [{"mitigations": [[], ["relu"]], "numerics": ["pinned", "generic"]}, {"mitigations": [["tanh"]]}],
    }
    monkeypatch.setattr(plan, "load_study", lambda name: plan.check_study(study, "x.yaml"))
    _, cells = plan.expand("x", "quick")
    paths = [("numerics=generic" in c.overrides, c.mitigations) for c in cells]
    assert sorted(paths) == sorted(
        [(g, m) for g in (False, True) for m in ((), ("relu",)) for _ in (0, 1)] + [(False, ("tanh",))] * 2
    )
    for bad in (["pinned", "pinned"], ["fast"], "generic"):
        with pytest.raises(UserError, match=r"numerics' must list distinct numeric code paths"):
            plan.check_study({**study, "grid": [{"mitigations": [[]], "numerics": bad}]}, "x.yaml")


@pytest.mark.slow
def test_a_study_trains_the_second_path_in_its_own_process_and_claims_read_both(tmp_path):
    results = tmp_path / "results"
    out = vanex("study", "rnn_init", "--profile", "smoke", "--jobs", "2", f"results_dir={results}")
    assert out.returncode == 0, out.stderr
    assert "then the cells on numerics generic in their own process" in out.stderr
    records = [json.loads(p.read_text()) for p in results.glob("*/run.json")]
    paths = {(r["settings"]["numerics"], r["provenance"]["numerics"]["aten_cpu_capability"]) for r in records}
    assert paths == {("pinned", "AVX2"), ("generic", "DEFAULT")} and len(records) == 50
    again = vanex("study", "rnn_init", "--profile", "smoke", f"results_dir={results}")
    assert "50 already finished, 0 to run here" in again.stderr and "own process" not in again.stderr
    claims = vanex("claims", "--results", str(results), "--profile", "smoke", "--claim", "pascanu2013_gain")
    assert "second numeric path: ✓" in claims.stdout, claims.stdout


class Toy(Claim):
    paper, where, statement, study, neighbourhood = "Toy 2026", "Fig. 1", "b below a", "toy", None
    cells = {"a": Cells(()), "b": Cells(("fix",))}
    control = "a"

    def predicate(self, g):
        a, b = g["a"].values("loss_vs_chance"), g["b"].values("loss_vs_chance")
        return Outcome(bool(b.max() < a.min()), f"b {b.max():.2f} vs a {a.min():.2f}")


def _judge(losses: dict[tuple[str, str], float]) -> tuple[str, str]:
    cells, rows = [], []
    for (mitigation, path), loss in losses.items():
        for seed in range(3):
            rid = f"{mitigation}-{path}-{seed}"
            settings = {"numerics": path}
            cells.append(
                {"run_id": rid, "mitigations": [mitigation] if mitigation else [], "seed": seed, "settings": settings}
            )
            rows.append({"run_id": rid, "status": "completed", "loss_vs_chance": loss, "training": "healthy"})
    study = _Study.__new__(_Study)
    probes = pd.DataFrame(columns=["step", "metric", "layer", "value", "run_id"])
    study.missing, study.data = None, StudyData({"cells": cells}, pd.DataFrame(rows), probes, {}, 0)
    r = evaluate(Toy(), "res", "quick", {("res", "toy", "quick"): study})
    return r.status, r.second_path


def test_a_verdict_that_differs_on_the_second_path_is_fragile():
    same = {("", "pinned"): 0.9, ("fix", "pinned"): 0.2, ("", "generic"): 0.9, ("fix", "generic"): 0.2}
    assert _judge(same)[0] == "✓" and _judge(same)[1].startswith("✓")
    flips = {**same, ("fix", "generic"): 0.95}
    assert _judge(flips)[0] == "fragile" and _judge(flips)[1].startswith("✗")
    pinned_only = {k: v for k, v in same.items() if k[1] == "pinned"}
    status, second = _judge(pinned_only)
    assert status == "✓" and second.startswith("not run: no cells of its groups on numerics=generic")
