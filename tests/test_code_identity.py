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
