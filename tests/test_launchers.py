"""Studies through Hydra's launcher plugins: each cell is a launcher job, and a record is the same
whichever launcher trained it (`--jobs N` is the joblib launcher with N processes)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from helpers import TINY, small_study, vanex
from vanex.engine import study
from vanex.errors import UserError


def _records(folder: Path) -> dict[str, tuple[dict, bytes]]:
    """run_id -> (run.json without its wall time, probes.csv bytes)."""
    out = {}
    for path in folder.glob("*/run.json"):
        record = json.loads(path.read_text())
        record["provenance"].pop("wall_time_s")
        out[record["run_id"]] = (record, (path.parent / "probes.csv").read_bytes())
    return out


LAUNCHED = [
    None,  # --jobs 2 without a launcher: joblib's processes
    "basic",
    "joblib",
    "joblib-batched",  # several runs a job, as joblib's jobs are on a study of more runs
    pytest.param("submitit_local", marks=pytest.mark.slow),  # a fresh process (torch import) per job
    pytest.param("ray", marks=pytest.mark.ray),
]


_SERIAL: dict[bool, dict] = {}  # the serial study's records, with both numeric paths or one


@pytest.mark.parametrize("launcher", LAUNCHED)
def test_a_study_through_a_hydra_launcher_writes_the_records_of_a_serial_study(launcher, tmp_path, monkeypatch):
    """The 3-layer MLP over 6 seeds; where the launcher's jobs train in workers started on each run's
    numeric path (--jobs, basic, joblib), on both paths in this one study process."""
    sizes: list[list[int]] = []
    batched = launcher == "joblib-batched"
    both = launcher in (None, "basic", "joblib", "joblib-batched")
    if batched:
        launcher = "joblib"
        monkeypatch.setattr(study, "BATCHES_PER_PROCESS", 1)  # 12 runs on 3 processes: batches of at most 4,
        # each of one path: 2 of 3 pinned runs, 2 of 3 generic (a process whose worker is on the other path
        # replaces it)
        batches = study._HydraLauncher._batches
        monkeypatch.setattr(
            study._HydraLauncher,
            "_batches",
            lambda self, todo: sizes.append([len(b) for b in batches(self, todo)]) or batches(self, todo),
        )
    plugin = {"joblib": "hydra_joblib_launcher", "submitit_local": "hydra_submitit_launcher"}.get(launcher)
    plugin = plugin or ("hydra_ray_launcher" if launcher == "ray" else None)
    if plugin and importlib.util.find_spec(f"hydra_plugins.{plugin}") is None:
        pytest.skip(f"{plugin} is not installed")
    small_study(monkeypatch, paths=("pinned", "generic") if both else ())
    serial, launched = tmp_path / "serial", tmp_path / "launched"
    if both not in _SERIAL:  # the same for every launcher: trained once per worker
        assert study.run_study("small", "smoke", [f"results_dir={serial}", "progress=false"], jobs=1) == 0
        _SERIAL[both] = _records(serial)
    extra = [f"results_dir={launched}", "progress=false", *([f"hydra/launcher={launcher}"] if launcher else [])]
    extra += ["hydra.launcher.n_jobs=3"] if batched else []
    assert study.run_study("small", "smoke", extra, jobs=2) == 0
    reference, records = _SERIAL[both], _records(launched)
    assert len(reference) == (12 if both else 6) and records.keys() == reference.keys()
    assert {r["provenance"]["numerics"]["mode"] for r, _ in reference.values()} == (
        {"pinned", "generic"} if both else {"pinned"}
    )
    assert sizes == ([[3, 3, 3, 3]] if batched else [])  # the batched launch trained 4 jobs of 3 runs
    for rid, (record, probes) in reference.items():
        other, other_probes = records[rid]
        moved = {key: (value, other.get(key)) for key, value in record.items() if other.get(key) != value}
        assert not moved and other_probes == probes, (rid, moved, other_probes == probes)
    assert not list((launched / "_leases").iterdir())  # every job released its claim
    assert launcher == "submitit_local" or not [
        p for p in launched.iterdir() if p.name.startswith(".")
    ]  # no sweep folder
    # a second launch finds everything finished and launches nothing
    assert study.run_study("small", "smoke", extra, jobs=2) == 0
    assert _records(launched) == reference


def test_a_launcher_that_does_not_exist_or_has_no_choice_is_one_clear_error(tmp_path, monkeypatch):
    small_study(monkeypatch)
    with pytest.raises(UserError, match=r"unknown launcher 'nope'; valid launchers: basic, joblib, submitit_local"):
        study.run_study("small", "smoke", [f"results_dir={tmp_path}", "hydra/launcher=nope"], jobs=1)
    with pytest.raises(UserError, match=r"hydra.launcher.n_jobs=3 needs a launcher: add hydra/launcher=NAME"):
        study.run_study("small", "smoke", [f"results_dir={tmp_path}", "hydra.launcher.n_jobs=3"], jobs=1)
    with pytest.raises(UserError, match=r"launcher 'basic': Could not override 'hydra.launcher.bogus'"):
        study.run_study(
            "small", "smoke", [f"results_dir={tmp_path}", "hydra/launcher=basic", "hydra.launcher.bogus=1"], jobs=1
        )
    with pytest.raises(UserError, match=r"hydra.launcher.n_jobs=0 runs nothing; give a number of processes"):
        study.run_study(
            "small", "smoke", [f"results_dir={tmp_path}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], 1
        )
    assert not list(tmp_path.glob("*/run.json"))  # refused before any training


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]])
def test_a_run_another_process_is_training_is_not_started_twice(tmp_path, launcher):
    """Also counted when the sweep's jobs run in processes of their own (joblib)."""
    from vanex.engine.config import compose, prepare
    from vanex.engine.leases import Lease

    overrides = [*TINY, f"results_dir={tmp_path}"]
    spec = prepare(compose(overrides))
    held = Lease(str(tmp_path), spec.run_id)
    assert held.acquire() is None
    try:
        single = vanex("run", *overrides)
        sweep = vanex("run", "-m", *overrides, "seed=0,1", *launcher)
    finally:
        held.release()
    assert single.returncode == 2 and f"run {spec.run_id} is being trained by another vanex" in single.stderr
    assert sweep.returncode == 1 and "1 of 2 runs failed or were refused" in sweep.stderr
    trained = [p.parent.name for p in tmp_path.glob("*/run.json")]
    assert len(trained) == 1 and spec.run_id not in trained  # seed 1 trained; seed 0 never started


def test_a_record_another_sweep_writes_during_a_launch_is_not_reported_as_trained_here(tmp_path, monkeypatch):
    """Two sweeps launch the same cells; the other one holds a run and writes its record while this
    launch is under way. Only the runs this launch's jobs trained are reported as they appear."""
    import shutil
    import time

    from vanex.engine.plan import plan

    small_study(monkeypatch, cells=2)
    other, here = tmp_path / "other", tmp_path / "here"
    assert study.run_study("small", "smoke", [f"results_dir={other}", "progress=false"], jobs=1) == 0
    _, todo = plan("small", "smoke", [f"results_dir={here}", "progress=false"])
    launcher = study._HydraLauncher(["hydra/launcher=joblib"], 2, str(here), "smoke", ["progress=false"])

    def launch(runs):  # the other sweep finishes the first run; this launch's job trains the second
        held, ours = runs
        shutil.copytree(other / held.run_id, here / held.run_id)
        shutil.copytree(other / ours.run_id, here / ours.run_id)
        study._mark_trained(json.loads((here / ours.run_id / "run.json").read_text()))
        time.sleep(1.5)  # the watcher scans meanwhile
        return [(held, {"status": study.CLAIMED, "holder": "another sweep"}), (ours, {"status": "completed"})]

    monkeypatch.setattr(launcher, "_launch", launch)
    outcomes = {p.run_id: outcome for p, outcome in launcher._watched(todo)}
    assert outcomes[todo[0].run_id]["status"] == study.CLAIMED
    assert outcomes[todo[1].run_id]["run_id"] == todo[1].run_id  # reported from its record as it appeared
    assert not (here / ".sweeps").exists()
