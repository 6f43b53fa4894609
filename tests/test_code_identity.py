"""A record names the code that trained it, and is stale when the installed code differs."""

from __future__ import annotations

import copy

from vanex.records import code
from vanex.tasks.deep_mlp import DeepMLP, DeepMLPConfig


def test_identity_names_the_modules_of_a_runs_classes_and_their_bases_with_their_distribution():
    ident = code.identity([DeepMLP, DeepMLPConfig])
    assert {"vanex.tasks.deep_mlp", "vanex.tasks.digits"} <= set(ident["modules"])  # DigitsClassification is a base
    assert not set(ident["modules"]) & set(code.CORE)  # the core is one fingerprint of its own
    entry = ident["modules"]["vanex.tasks.deep_mlp"]
    assert entry["distribution"] == "vanex" and len(entry["sha256"]) == 16 and entry["version"]


def test_a_record_is_stale_exactly_when_a_fingerprint_it_names_differs():
    record = {"provenance": {"code": code.identity([DeepMLP])}}
    assert code.stale(record) is None
    edited = copy.deepcopy(record)
    edited["provenance"]["code"]["modules"]["vanex.tasks.digits"]["sha256"] = "0" * 16
    assert code.stale(edited) == "vanex.tasks.digits changed"
    edited["provenance"]["code"]["core"] = "0" * 16
    assert code.stale(edited) == "vanex's training core changed"
    gone = copy.deepcopy(record)
    gone["provenance"]["code"]["modules"]["vanex_gone.plugin"] = {"sha256": "0" * 16}
    assert code.stale(gone) == "vanex_gone.plugin changed"  # an uninstalled plugin's records are stale too
    assert code.stale({"provenance": {}}) == "it names no code (made before records did)"


def test_a_study_names_finished_records_that_lack_an_opt_in_probe_it_asks_for(monkeypatch, tmp_path):
    """Probes are not part of a run's identity, so a study can find a record of its cell that another
    study made without the opt-in probe it asks for: it must say so, not reuse it silently."""
    from omegaconf import OmegaConf
    from vanex.engine import plan
    from vanex.engine.config import prepare
    from vanex.engine.runner import run
    from vanex.engine.study import _lacking_probes

    study = {
        "task": "deep_mlp",
        "seeds": [0],
        "overrides": ["task.steps=1", "task.depth=2", "probe.names=[input_jacobian,grad_norm]"],
        "grid": [{"mitigations": [[]]}],
    }
    monkeypatch.setattr(plan, "load_study", lambda name: plan.check_study(study, "x.yaml"))
    _, runs = plan.plan("x", "quick", [f"results_dir={tmp_path}"])
    assert _lacking_probes(runs) is None  # nothing finished yet
    run(prepare(OmegaConf.create(runs[0].config)))
    _, runs = plan.plan("x", "quick", [f"results_dir={tmp_path}"])
    assert runs[0].finished and _lacking_probes(runs) is None
    probes = tmp_path / runs[0].run_id / "probes.csv"  # as a study that did not ask for it would have left it
    probes.write_text("".join(line for line in probes.open() if ",jacobian_" not in line))
    assert _lacking_probes(runs) == ("input_jacobian", 1)
