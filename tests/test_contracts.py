"""Registry-driven contract tests: every task, mitigation and probe, with no per-name code.

A new task or mitigation (built-in or plugin) is covered here automatically.
"""

from __future__ import annotations

import math
import re
import sys

import pytest
from helpers import TINY
from vanex.engine.config import compose, group_options, prepare, typed
from vanex.engine.mitigation import KnobMitigation
from vanex.engine.runner import run
from vanex.errors import UserError
from vanex.records.store import load_run
from vanex.registry import MITIGATIONS, PROBES, TASKS
from vanex.science.diagnosis import TRAINING_ORDER

BUILTIN_MITIGATIONS = MITIGATIONS.names()


def test_every_mitigation_has_a_config_file_and_vice_versa():
    assert set(group_options("mitigation")) == set(MITIGATIONS.names())


CITATION = re.compile(r"\b(19|20)\d{2}\b")  # a source cited as "Author et al. YYYY"


def test_tasks_and_mitigations_cite_their_source_and_probes_say_what_they_measure():
    for name in TASKS.names():  # a task's paper is in its module docstring
        doc = sys.modules[TASKS.get(name).__module__].__doc__ or ""
        assert CITATION.search(doc), f"task {name}: module docstring cites no source"
    for name in MITIGATIONS.names():
        assert CITATION.search(MITIGATIONS.get(name).__doc__ or ""), f"mitigation {name}: docstring cites no source"
    for name in PROBES.names():
        assert (PROBES.get(name).__doc__ or "").strip(), f"probe {name} has no docstring"


def test_unknown_names_fail_loudly_with_valid_names():
    with pytest.raises(UserError, match="valid mitigations: .*clip_norm"):
        MITIGATIONS.get("nope")


@pytest.mark.parametrize("task", TASKS.names())
def test_task_declares_layers_in_order_and_trains(task, results):
    record = run(prepare(compose([f"task={task}", f"results_dir={results}", *TINY])))
    assert record["status"] == "completed", record["error"]
    assert record["diagnosis"]["init"]["verdict"] in ("vanishing", "exploding", "stable")
    assert record["diagnosis"]["training"]["verdict"] in (*TRAINING_ORDER, "healthy", "inconclusive")
    info = record["task_info"]
    assert info["chance_loss"] > 0 and info["flow_metric"] and info["headline_metrics"]
    assert any(layer["hidden"] for layer in info["layers"])
    assert math.isfinite(record["summary"]["grad_ratio_init"])
    assert math.isfinite(record["summary"]["final_train_loss"])


@pytest.mark.parametrize("task", TASKS.names())
@pytest.mark.parametrize("mitigation", BUILTIN_MITIGATIONS)
def test_each_mitigation_applies_or_refuses_before_training(task, mitigation, results):
    cfg = compose([f"task={task}", f"mitigation=[{mitigation}]", f"results_dir={results}", *TINY])
    cls, task_cls = MITIGATIONS.get(mitigation), TASKS.get(task)
    instance = typed(cls, cfg.mitigation[mitigation], "")
    accepted = task_cls.knob_values.get(getattr(cls, "knob", None))
    if not cls.needs <= task_cls.capabilities or (
        issubclass(cls, KnobMitigation)
        and (cls.knob not in task_cls.knobs or (accepted is not None and instance.knob_value() not in accepted))
    ):
        with pytest.raises(UserError, match=f"mitigation '{mitigation}' cannot apply to task '{task}'"):
            prepare(cfg)
        assert not results.exists()  # refused before anything was trained or written
        return
    record = run(prepare(cfg))
    assert record["status"] in ("completed", "diverged"), record["error"]
    assert record["mitigations"] == [mitigation]
    assert load_run(results / record["run_id"])["run_id"] == record["run_id"]


@pytest.mark.parametrize("task", TASKS.names())
def test_declared_capabilities_are_implemented_and_probes_use_only_declared_ones(task):
    from vanex.engine.task import Capability, ProbedModel, Task

    cls = TASKS.get(task)
    assert set(cls.capabilities) <= set(Capability.ALL)
    spec = prepare(compose([f"task={task}", *TINY]))
    model = cls(spec.task_config, __import__("torch").device("cpu")).build_model()
    hooks = {
        Capability.TIME_FLOW: (cls, Task, "memory_loss"),
        Capability.RECURRENT: (type(model), ProbedModel, "recurrent_matrix"),
        Capability.ATTENTION: (type(model), ProbedModel, "attention_modules"),
    }
    for capability, (owner, base, method) in hooks.items():
        implemented = getattr(owner, method) is not getattr(base, method)
        assert implemented == (capability in cls.capabilities), (
            f"{task}: {capability} declared={capability in cls.capabilities}"
        )
    layers = model.layers()
    assert len({layer.name for layer in layers}) == len(layers)
    assert all(layer.block is not None for layer in layers if layer.hidden)


@pytest.mark.parametrize("probe", PROBES.names())
def test_each_probe_emits_its_metrics_on_some_task(probe, results):
    import torch

    cls = PROBES.get(probe)
    assert cls.metrics, f"probe {probe} declares no metrics"
    emitted = set()
    for task in TASKS.names():
        spec = prepare(compose([f"task={task}", f"results_dir={results}", f"probe.names=[{probe}]", *TINY]))
        task_obj = spec.task_cls(spec.task_config, torch.device("cpu"))
        if cls().applies(task_obj, task_obj.build_model()):
            record = run(spec)
            lines = (results / record["run_id"] / "probes.csv").read_text().splitlines()[1:]
            emitted |= {line.split(",")[1] for line in lines}
    assert emitted & set(cls.metrics), f"probe {probe} applies to no task or emitted none of {cls.metrics}"


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("task", TASKS.names())
def test_each_task_trains_on_cuda(task, results):
    record = run(prepare(compose([f"task={task}", "device=cuda", f"results_dir={results}", *TINY])))
    assert record["status"] == "completed", record["error"]
    assert record["provenance"]["gpu"]


@pytest.mark.parametrize("where", ["data", "training"])
def test_a_crash_is_recorded_as_failed_not_raised(where, results, monkeypatch):
    import vanex.tasks.digits

    if where == "data":
        monkeypatch.setattr(vanex.tasks.digits, "load_digits", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    else:
        monkeypatch.setattr(vanex.tasks.digits.DigitsClassification, "loss", lambda *a: 1 / 0)
    record = run(prepare(compose([f"results_dir={results}", *TINY])))
    assert record["status"] == "failed" and record["error"]
    assert load_run(results / record["run_id"])["status"] == "failed"


def _hydra_compose(overrides: list[str]):
    """Hydra's full composition path, the reference ``compose`` must equal."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from vanex.engine.config import conf_dir, searchpath_override

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=[*overrides, *searchpath_override()])


@pytest.mark.parametrize("task", TASKS.names())
def test_compose_equals_hydras_full_composition(task):
    """``compose`` reuses the composed defaults per group choice and applies value overrides with
    Hydra's own code: for every mitigation on every task, the result is Hydra's, value for value."""
    from omegaconf import OmegaConf

    for i, mitigation in enumerate(BUILTIN_MITIGATIONS):
        overrides = [f"task={task}", f"seed={i}", f"mitigation=[{mitigation}]", "task.steps=7", "optim.lr=0.125"]
        if i % 3 == 0:
            overrides += [f"mitigation.{mitigation}.nope=1"] if i % 2 else ["profile=smoke", "+extra=x"]
        try:
            expected = OmegaConf.to_yaml(_hydra_compose(overrides))
        except Exception as exc:  # the same refusal, in one line; an unknown key names its parent's keys
            unknown = re.match(r"Could not override '([^']+)'", str(exc))
            said = f"unknown setting '{unknown.group(1)}'; valid settings of " if unknown else str(exc).splitlines()[0]
            with pytest.raises(UserError, match=re.escape(said)):
                compose(overrides)
            continue
        assert OmegaConf.to_yaml(compose(overrides)) == expected, overrides


def test_digits_read_without_scikit_learn_equal_its_load_digits():
    import numpy as np
    from sklearn.datasets import load_digits
    from vanex.tasks.digits import N_IMAGES, raw_digits

    x, y = raw_digits()
    data = load_digits()
    assert x.shape == (N_IMAGES, 64) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x, data.data.astype(np.float32)) and np.array_equal(y, data.target)
