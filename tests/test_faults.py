"""Fault injection: kills in the middle of a record write, concurrent writers, interrupts of a
parallel study, a results folder that stops accepting writes, malformed study files and records.
Each ends in a whole record, a one-line error or a skipped record, never a traceback or lost data."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import TINY, default_sigint, small_study, vanex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vanex.engine import plan, study
from vanex.errors import UserError
from vanex.records import store as records
from vanex.records.store import clean_stale, dumps, load_run, write_record

PHASES = {  # the function a write calls at that phase -> where a kill there leaves the write
    "fill": "vanex.records.store.dumps",  # probes.csv written, run.json not yet
    "swap": "os.rename",  # the new folder complete, not yet in place
    "cleanup": "shutil.rmtree",  # the new folder in place, the old one not yet removed
}
KILL_AT = """
import os, sys, importlib
from vanex.records import store as records
module, _, name = sys.argv[2].rpartition(".")
setattr(importlib.import_module(module), name, lambda *a, **k: os._exit(9))
records.write_record(sys.argv[1], {"run_id": "r", "schema_version": 2, "version": "new"}, [(0, "m", "", 2.0)])
"""


def _dot_folders(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("phase", PHASES)
def test_a_kill_at_any_phase_of_a_write_leaves_a_whole_record_and_the_next_run_cleans_up(phase, tmp_path):
    write_record(tmp_path, {"run_id": "r", "schema_version": 2, "version": "old"}, [(0, "m", "", 1.0)])
    out = subprocess.run(
        [sys.executable, "-c", KILL_AT, str(tmp_path), PHASES[phase]], capture_output=True, timeout=120
    )
    assert out.returncode == 9, out.stderr
    record = load_run(tmp_path / "r")
    assert record is not None and record["version"] in ("old", "new")  # whole, never half-written or gone
    assert (tmp_path / "r" / "probes.csv").read_text().startswith("step,metric,layer,value")
    assert _dot_folders(tmp_path)  # the killed writer left its temporary folder...
    assert clean_stale(tmp_path) >= 1 and not _dot_folders(tmp_path)  # ...which the next run removes


def test_concurrent_writers_of_one_record_leave_one_whole_record(tmp_path):
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(25):
                write_record(tmp_path, {"run_id": "r", "schema_version": 2, "writer": k, "i": i}, [(i, "m", "", k)])
        except BaseException as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    record = load_run(tmp_path / "r")
    assert record["i"] == 24 and not _dot_folders(tmp_path)
    assert (tmp_path / "r" / "probes.csv").read_text().splitlines()[1] == f"24,m,,{record['writer']}"


def test_records_are_standard_json_and_read_back_non_finite_values(tmp_path):
    summary = {"grad_ratio_init": 0.0, "log": -math.inf, "loss": math.nan, "big": math.inf}
    write_record(tmp_path, {"run_id": "r", "schema_version": 2, "summary": summary}, [])

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    json.loads((tmp_path / "r" / "run.json").read_text(), parse_constant=refuse)  # what JSON.parse accepts
    back = load_run(tmp_path / "r")["summary"]
    assert back["log"] == -math.inf and back["big"] == math.inf and math.isnan(back["loss"])
    assert "NaN" not in dumps({"x": 1.0})


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_results_folder_that_stops_accepting_writes_fails_those_runs_and_keeps_the_others(
    code, tmp_path, monkeypatch
):
    small_study(monkeypatch)
    real, calls = records.atomic_dir, []

    def failing(final, fill):
        calls.append(final)
        if len(calls) > 2:
            raise OSError(code, os.strerror(code), str(final))
        return real(final, fill)

    monkeypatch.setattr(records, "atomic_dir", failing)
    monkeypatch.setenv(study.IN_PROCESS, "1")  # the patched writer lives in this process
    failed = study.run_study("small", "smoke", [f"results_dir={tmp_path}", "progress=false"], jobs=1)
    assert failed == 4  # the sweep went on past each failed write
    written = [load_run(p) for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    assert len(written) == 2 and all(r["status"] == "completed" for r in written)
    assert not _dot_folders(tmp_path)


def _session_processes(sid: int) -> list[int]:
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # session id; zombies are already gone
            alive.append(int(stat.parent.name))
    return alive


STUDY, RUNS = "mlp_exploding", 105  # a smoke study of short runs (~20 s on one core), stopped after its 4th record


def _start_study(results: Path) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("vanex")), "study", STUDY, "--profile", "smoke"]
    proc = subprocess.Popen(
        [*command, "--jobs", "2", f"results_dir={results}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    deadline = time.time() + 120
    while len(list(results.glob("*/run.json"))) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc


@pytest.mark.slow
def test_ctrl_c_stops_a_parallel_study_within_seconds_and_a_rerun_resumes(results):
    proc = _start_study(results)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    start = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - start < 15, err
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(1)
    assert not _session_processes(proc.pid)  # no worker outlived the study
    assert not _dot_folders(results)  # no temporary folder left
    done = len(list(results.glob("*/run.json")))
    assert done < RUNS  # pending cells were cancelled
    again = vanex("study", STUDY, "--profile", "smoke", "--jobs", "2", f"results_dir={results}")
    assert again.returncode == 0 and f"{done} already finished" in again.stderr, again.stderr


@pytest.mark.slow
def test_a_term_to_a_parallel_study_ends_it_without_a_worker_traceback(results):
    """A TERM to the study alone (a scheduler's time limit, `kill PID`): its workers, which find the
    study's pipe closed mid-send, exit quietly (each printed a BrokenPipeError traceback before)."""
    proc = _start_study(results)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err, err
    deadline = time.time() + 15
    while _session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not _session_processes(proc.pid)


@pytest.mark.slow
def test_workers_do_not_outlive_a_killed_study(results):
    proc = _start_study(results)
    proc.kill()  # kill -9: no handler runs in the study process
    proc.communicate(timeout=60)
    deadline = time.time() + 15
    while _session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not _session_processes(proc.pid)


def test_vanex_run_keeps_a_finished_record_and_refuses_to_replace_a_newer_vanexs(tmp_path):
    """`vanex run` trained and wrote over whatever record its run id had: a study's record replaced by one
    with fewer probes (probes only observe, so the id is the same), a newer vanex's record destroyed."""
    first = vanex("run", *TINY, f"results_dir={tmp_path}")
    assert first.returncode == 0, first.stderr
    (record,) = tmp_path.glob("*/run.json")
    before = {p.name: p.read_bytes() for p in record.parent.iterdir()}
    again = vanex("run", *TINY, "probe.names=[]", f"results_dir={tmp_path}")
    assert again.returncode == 0 and "already recorded by this code; not trained again" in again.stderr, again.stderr
    assert record.parent.name in again.stdout  # its one line, from the record kept
    assert {p.name: p.read_bytes() for p in record.parent.iterdir()} == before
    newer = json.loads(record.read_text()) | {"schema_version": 99}
    record.write_text(json.dumps(newer))
    refused = vanex("run", *TINY, f"results_dir={tmp_path}")
    assert refused.returncode == 2 and "made by a newer vanex" in refused.stderr, refused.stderr
    assert json.loads(record.read_text()) == newer
    assert not (tmp_path / "_leases" / f"{record.parent.name}.lease").exists()  # its lease was released


def test_a_file_where_vanex_keeps_leases_or_manifests_is_one_line_before_anything_trains(tmp_path):
    """A file named `_leases` or `_studies` in a results folder gave a FileExistsError traceback (run) or
    failed every run of a study, one by one."""
    for name, args in (
        ("_leases", ["run", *TINY]),
        ("_leases", ["study", "rnn_init", "--profile", "smoke"]),
        ("_studies", ["study", "rnn_init", "--profile", "smoke"]),
    ):
        results = tmp_path / f"{name}-{args[0]}"
        results.mkdir()
        (results / name).write_text("mine")
        out = vanex(*args, f"results_dir={results}")
        assert out.returncode == 2 and out.stderr.strip() == (
            f"vanex: error: {results / name} is not a folder; vanex keeps its "
            f"{'run leases' if name == '_leases' else 'study manifests'} there: move it away"
        ), out.stderr
        assert sorted(p.name for p in results.iterdir()) == [name] and (results / name).read_text() == "mine"


def test_a_study_process_for_one_numeric_path_stops_once_the_study_that_started_it_is_gone(tmp_path):
    """The study process a study starts for its second path (under VANEX_IN_PROCESS=1 or a launcher)
    trained on, and wrote records, after that study was killed. Here it is started as a child of this
    test, naming another process as the study that started it: it finds that study gone and exits
    before it trains anything."""
    from vanex.engine.study import ONLY_PATH, PARENT

    env = {**os.environ, ONLY_PATH: "generic", PARENT: "1"}  # pid 1 is not its parent: "the study is gone"
    out = vanex("study", "rnn_init", "--profile", "smoke", "--jobs", "1", f"results_dir={tmp_path}", env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert not list(tmp_path.glob("*/run.json"))


@pytest.mark.slow
def test_a_term_to_compare_removes_its_scratch_reports_as_ctrl_c_does(tmp_path, smoke_records):
    """compare reports a results folder into a temporary folder, which a TERM (a time limit, `kill`) left
    behind; run, report, claims and verify take a TERM as a Ctrl-C too."""
    results, scratch = tmp_path / "results", tmp_path / "tmp"
    scratch.mkdir()
    smoke_records("rnn_init", results)
    script = Path(sys.executable).with_name("vanex")
    env = {**os.environ, "TMPDIR": str(scratch)}
    command = [str(script), "compare", str(results), str(results), "--profile", "smoke"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not any(scratch.iterdir()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert any(scratch.iterdir()), "compare made no scratch folder"
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "compare interrupted; nothing was changed" in err, err
    assert not any(scratch.iterdir())


def test_a_reader_that_leaves_the_pipe_early_is_not_an_error(tmp_path):
    """`vanex show RUN | head`: every write to stdout fails once the reader has gone (here, before the
    first), which ends the command quietly with exit 0 (a BrokenPipeError traceback before: the
    OSError clause caught it first and re-raised it)."""
    done = vanex("run", "task.steps=3", "progress=false", f"results_dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    script = Path(sys.executable).with_name("vanex")
    for args in (["show", "--results", str(tmp_path), next(tmp_path.glob("*/run.json")).parent.name], ["list"]):
        read, write = os.pipe()
        os.close(read)
        try:
            gone = subprocess.run([str(script), *args], stdout=write, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        finally:
            os.close(write)
        assert gone.returncode == 0 and "Traceback" not in gone.stderr and not gone.stderr, (args, gone.stderr)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
study_like = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"task": json_values, "seeds": json_values, "grid": json_values},
        optional={"overrides": json_values, "description": json_values, "nope": json_values},
    ),
    st.fixed_dictionaries(
        {
            "task": st.just("deep_mlp"),
            "seeds": st.just([0]),
            "grid": st.lists(
                st.dictionaries(
                    st.sampled_from(["mitigations", "sweep", "profiles", "other"]), json_values, max_size=3
                ),
                max_size=3,
            ),
        }
    ),
)


@given(study_like)
def test_malformed_study_files_get_one_line_naming_the_file(data):
    try:
        checked = plan.check_study(data, "conf/study/x.yaml")
    except UserError as exc:
        assert str(exc).startswith("conf/study/x.yaml: ") and "\n" not in str(exc)
    else:
        assert isinstance(checked["grid"], list) and checked["seeds"]


def test_a_study_file_cannot_set_what_its_own_fields_decide_nor_name_an_unknown_profile():
    """A sweep or override of task, mitigation, seed, profile or numerics trained runs whose records
    contradict the manifest (a `relu` run filed and reported as the baseline, resnet runs as deep_mlp,
    full-profile runs under the smoke manifest); a misspelt profile emptied the study silently."""
    study = {"task": "deep_mlp", "seeds": [0], "grid": [{"mitigations": [[]]}]}
    assert plan.check_study(study, "x.yaml")
    for bad, field in [
        ({"overrides": ["task=resnet"]}, "'overrides' sets 'task'"),
        ({"overrides": ["+seed=3"]}, "'overrides' sets '+seed'"),
        ({"grid": [{"mitigations": [[]], "sweep": {"mitigation": ["[relu]"]}}]}, "'grid[0].sweep' sets 'mitigation'"),
        ({"grid": [{"mitigations": [[]], "sweep": {"profile": ["full"]}}]}, "'grid[0].sweep' sets 'profile'"),
        ({"grid": [{"mitigations": [[]], "sweep": {"numerics": ["generic"]}}]}, "'grid[0].sweep' sets 'numerics'"),
    ]:
        with pytest.raises(UserError, match=re.escape(f"x.yaml: {field}, which the study's own fields decide")):
            plan.check_study({**study, **bad}, "x.yaml")
    with pytest.raises(UserError, match="profiles' names unknown profile 'smok'; valid profiles: full, quick, smoke"):
        plan.check_study({**study, "grid": [{"mitigations": [[]], "profiles": ["smok"]}]}, "x.yaml")


def test_bad_yaml_and_study_paths_are_refused_in_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: deep_mlp\ngrid: [\n")
    monkeypatch.setattr(plan, "group_file", lambda group, name: bad)
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        plan.load_study("bad")
    bad.write_bytes(b"task: deep_mlp  # caf\xe9\n")  # Latin-1: a UnicodeDecodeError traceback before
    with pytest.raises(UserError, match="bad.yaml: cannot be read as UTF-8 text"):
        plan.load_study("bad")
    for args in (["study", str(tmp_path / "x")], ["study", "../conf/study/rnn_copy"]):
        out = vanex(*args)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "unknown study" in out.stderr


garbage_records = st.one_of(
    st.text(max_size=40),  # not JSON at all
    json_values.map(json.dumps),  # JSON, but not a record
    st.fixed_dictionaries(  # the current schema, with any section wrong
        {"schema_version": st.just(2)},
        optional={k: json_values for k in ("status", "settings", "task_info", "summary", "provenance")},
    ).map(json.dumps),
)
THRESHOLDS = dict.fromkeys(
    (
        "vanishing_orders",
        "exploding_orders",
        "exploding_grad_norm",
        "exploding_growth_orders",
        "dead_fraction",
        "stall_fraction",
    ),
    1.0,
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage_records, st.text(max_size=60))
def test_a_malformed_record_is_shown_as_missing_never_a_crash(tmp_path, run_json, probes_csv):
    from vanex.records.reader import read_study

    path = tmp_path / "bad0000000000000"
    path.mkdir(exist_ok=True)
    (path / "run.json").write_text(run_json)
    (path / "probes.csv").write_text(probes_csv)
    cell = {"run_id": path.name, "mitigations": [], "seed": 0, "settings": {}}
    manifest = {"study": "s", "task": "t", "swept": [], "diagnosis": THRESHOLDS, "cells": [cell]}
    cells = read_study(manifest, tmp_path).cells
    assert cells["status"].iloc[0] == "missing"


def test_a_malformed_record_is_named_once_however_often_it_is_read(tmp_path, capsys):
    """A report reads each study for its pages and again for its claims: one warning, not two."""
    from vanex.records.reader import read_study

    path = tmp_path / "bad0000000000001"
    path.mkdir()
    (path / "run.json").write_text("{")
    cell = {"run_id": path.name, "mitigations": [], "seed": 0, "settings": {}}
    manifest = {"study": "s", "task": "t", "swept": [], "diagnosis": THRESHOLDS, "cells": [cell]}
    for _ in range(2):
        assert read_study(manifest, tmp_path).cells["status"].iloc[0] == "missing"
    assert capsys.readouterr().err.count(str(path)) == 1


def test_a_ctrl_c_that_a_library_turns_into_its_own_error_still_stops_a_serial_study(tmp_path, monkeypatch):
    small_study(monkeypatch)
    calls = []

    def execute(config):  # the signal lands inside a library that re-raises it as its own error (OmegaConf)
        calls.append(config)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt as exc:
            return study._failed(f"ConfigKeyError: {exc!r}")
        return study._failed("no signal came")

    monkeypatch.setattr(study, "_execute", execute)
    monkeypatch.setenv(study.IN_PROCESS, "1")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            study.run_study("small", "smoke", [f"results_dir={tmp_path}", "progress=false"], jobs=1)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) == 1  # no further cell started


def test_a_non_finite_recurrent_matrix_is_a_diverged_run_not_a_native_crash(tmp_path):
    """LAPACK's eigvals segfaulted (MKL SGEBAL, exit 139) on a recurrent matrix holding a NaN, which a
    first SGD step at an enormous rate makes: the run is recorded as diverged (its gradient overflows
    first), and the spectrum probe itself checks finiteness before any linear algebra, reading NaN.
    (recurrent_gain=inf itself is refused before training.)"""
    import torch
    from vanex.engine.probes import ProbeContext, RecurrentSpectrum, Rows

    args = ("task=rnn_copy", "profile=smoke", "task.init=scaled", "task.recurrent_gain=2.0", "optim=sgd")
    out = vanex("run", *args, "optim.lr=1e38", f"results_dir={tmp_path}", "progress=false")
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/run.json")]
    assert record["status"] == "diverged"

    class NaNRecurrence:
        def recurrent_matrix(self):
            return torch.full((4, 4), float("nan"))

    rows = Rows()
    RecurrentSpectrum().before_forward(ProbeContext(task=None, model=NaNRecurrence(), layers=[], params=[], rows=rows))
    assert [(m, math.isnan(v)) for _, m, _, v in rows.to_records()] == [("spectral_radius", True), ("sigma_max", True)]
    refused = vanex("run", *args, "task.recurrent_gain=inf", f"results_dir={tmp_path / 'no'}")
    assert refused.returncode == 2 and "must be a finite number" in refused.stderr


@pytest.mark.parametrize("mitigations", ["[relu,identity_init]", "[relu,identity_init,clip_value]"])
def test_a_non_finite_gradient_makes_a_diverged_run_whatever_its_loss(tmp_path, mitigations):
    """The IRNN at SGD lr 1 has a recurrent gradient beyond float32's range at step 1 while its loss
    stays finite (it ended 'completed' at loss 1.08); clamping the entries (clip_value) hides nothing:
    the gradient is checked before any mitigation transforms it."""
    args = ("task=rnn_copy", f"mitigation={mitigations}", "task.delay=20", "task.steps=200", "optim=sgd")
    out = vanex("run", *args, "optim.lr=1.0", f"results_dir={tmp_path}", "progress=false")
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/run.json")]
    assert record["status"] == "diverged" and record["summary"]["final_train_loss"] is None
    rows = (tmp_path / record["run_id"] / "probes.csv").read_text().splitlines()
    assert "1,nonfinite,gradient,1.0" in rows


def test_a_gradient_whose_global_norm_overflows_float32_is_diverged(tmp_path):
    """Every entry and every layer's norm finite (~5e18), their global L2 norm beyond float32 (the
    grad_norm_global probe records inf): it was 'completed' when the check summed per-layer norms."""
    args = ("task.steps=5", "task.init=scaled", "task.weight_scale=8", "task.activation=identity")
    out = vanex("run", *args, "mitigation=[clip_value]", f"results_dir={tmp_path}", "progress=false")
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/run.json")]
    rows = (tmp_path / record["run_id"] / "probes.csv").read_text().splitlines()
    assert "0,grad_norm_global,,inf" in rows and "0,nonfinite,gradient,1.0" in rows
    assert record["status"] == "diverged"


def _manifest(study: str = "tiny", run_id: str = "0123456789abcdef") -> dict:
    cell = {"run_id": run_id, "mitigations": [], "seed": 0, "settings": {}}
    return {"study": study, "profile": "smoke", "task": "deep_mlp", "swept": [], "diagnosis": {}, "cells": [cell]}


@pytest.mark.parametrize(
    "manifest, problem",
    [
        (_manifest(study="../../../pwned"), "is not a snake_case name"),
        (_manifest(run_id="/etc"), "run_id '/etc' is not 16 hex digits"),
        (_manifest(run_id="../0123456789abc"), "is not 16 hex digits"),
        (_manifest(study="other"), "not its own file name"),
        ({**_manifest(), "cells": []}, "it lists no cells"),
        ({**_manifest(), "cells": _manifest()["cells"] * 2}, "is listed twice"),
        ({**_manifest(), "cells": [{**_manifest()["cells"][0], "mitigations": [1, None]}]}, "a list of names"),
        ({**_manifest(), "cells": [{**_manifest()["cells"][0], "seed": "zero"}]}, "an integer seed"),
        ({**_manifest(), "diagnosis": {"vanishing_orders": "NaN"}}, "thresholds to finite numbers"),
        ({**_manifest(), "diagnosis": {"stall_fraction": -5}}, "diagnosis thresholds: diagnosis needs"),
        ({**_manifest(), "task": 5}, "'task' is not a task name"),
        ({**_manifest(), "manifest_version": 2}, "manifest version 2, this vanex reads 1 (a newer vanex wrote it"),
        ({**_manifest(), "manifest_version": "1"}, "manifest version '1', this vanex reads 1 (not a version"),
    ],
)
def test_names_and_ids_from_a_manifest_are_checked_before_they_become_paths(tmp_path, manifest, problem):
    """A manifest whose study name or run id would lead outside the results or report folder is
    skipped with one warning line naming the problem; nothing outside --out is written."""
    studies = tmp_path / "results" / "_studies"
    studies.mkdir(parents=True)
    (studies / "tiny-smoke.json").write_text(json.dumps(manifest))
    out = vanex("report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "r"), "--profile", "smoke")
    assert out.returncode == 2 and problem in out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_deep_json_a_cut_probes_file_and_links_out_are_refused_in_one_warning(tmp_path):
    """JSON nested past Python's recursion limit, a probes.csv cut mid-row and a _studies folder that is a
    symbolic link out of the results folder: each is a warning and a missing record or manifest, never a
    traceback, and never read through the link."""
    results = tmp_path / "results"
    out = vanex("run", "task.depth=2", "task.steps=3", "progress=false", f"results_dir={results}")
    assert out.returncode == 0, out.stderr
    (record,) = results.glob("*/run.json")
    probes = record.parent / "probes.csv"
    assert records.read_probes(record.parent)  # whole
    probes.write_text(probes.read_text()[:-3])  # cut mid-row
    with pytest.raises(ValueError, match="ends mid-row"):
        records.read_probes(record.parent)
    assert not records.is_finished(results, record.parent.name)  # a study trains it again
    newer = {**json.loads(record.read_text()), "schema_version": records.SCHEMA_VERSION + 1}
    record.write_text(json.dumps(newer))
    with pytest.raises(UserError, match="made by a newer vanex"):  # a study never overwrites it
        records.is_finished(results, record.parent.name)
    record.write_text("[" * 100_000 + "]" * 100_000)
    assert records.load_run(record.parent) is None
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "tiny-smoke.json").write_text(json.dumps(_manifest()))
    (results / "_studies").symlink_to(outside)
    assert records.read_manifest(results / "_studies" / "tiny-smoke.json") is None
    with pytest.raises(UserError, match="symbolic link"):
        records.write_manifest(results, _manifest())


def test_a_report_ships_only_the_records_it_read(tmp_path):
    """A record the reader refused (behind a symbolic link, malformed) is not packed into records.tar.gz."""
    from vanex.records.bundle import write_bundle

    results = tmp_path / "results"
    out = vanex("run", "task.depth=2", "task.steps=3", "progress=false", f"results_dir={results}")
    assert out.returncode == 0, out.stderr
    (rid,) = [p.parent.name for p in results.glob("*/run.json")]
    run = json.loads((results / rid / "run.json").read_text())
    manifest = records.make_manifest("tiny", "smoke", "deep_mlp", "", [(rid, [], 0, run["settings"])])
    records.write_manifest(results, manifest)
    for read, packed in (({rid}, 1), (set(), 0)):
        assert write_bundle(tmp_path / "b.tar.gz", results, [manifest], lambda m: {}, read) == packed


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "task.depth=${oc.env:VANEX_NOT_SET_ANYWHERE}"], "cannot apply overrides: "),
        (["run", "results_dir=" + "a" * 300], "a file name is too long"),
        (["study", "mlp_meanfield", "--with", ""], "--with needs mitigation names"),
        (["study", "mlp_meanfield", "--with", ","], "--with needs mitigation names"),
    ],
)
def test_unresolvable_overrides_long_names_and_empty_sets_are_one_line(tmp_path, args, expected):
    out = vanex(*args, cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and expected in out.stderr, out.stderr
    assert list(tmp_path.iterdir()) == []  # and nothing is left behind


def test_compare_of_a_damaged_report_is_one_line_with_exit_2(tmp_path):
    committed = Path(__file__).resolve().parents[1] / "reports"
    for name, damage in (("summary.csv", b"\xff\xfe"), ("claims.csv", b"a,b\n1\n"), ("summary.csv", b"")):
        copy = tmp_path / f"r-{len(damage)}-{name}"
        shutil.copytree(committed, copy, ignore=shutil.ignore_patterns("figures", "*.html", "*.tar.gz"))
        (copy / name).write_bytes(damage)
        out = vanex("compare", str(copy), str(committed))
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "a report file is damaged or not written by vanex" in out.stderr


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_symlinked_record_is_replaced_by_the_rerun_and_its_target_left_alone(tmp_path):
    """A record folder that is a symbolic link (here to a file) made its cell fail on every rerun with
    '[Errno 20] Not a directory'; the link is now replaced by the record, the target untouched."""
    args = ("task.depth=3", "task.steps=5", "progress=false", f"results_dir={tmp_path / 'r'}")
    first = vanex("run", *args)
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("*/run.json")]
    folder = tmp_path / "r" / record["run_id"]
    shutil.rmtree(folder)
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    folder.symlink_to(target)
    again = vanex("run", *args)
    assert first.returncode == again.returncode == 0, again.stderr
    assert "is a symbolic link; replaced" in again.stderr
    assert folder.is_dir() and not folder.is_symlink() and json.loads((folder / "run.json").read_text())["run_id"]
    assert target.read_text() == "mine"


def test_a_record_that_names_another_run_is_shown_as_missing(tmp_path):
    """The reader trusted a folder's name over its run.json's run_id: a manifest's cell is read only
    from a record that says it is that cell's run."""
    results = tmp_path / "r"
    out = vanex("run", "task.depth=3", "task.steps=5", "progress=false", f"results_dir={results}")
    assert out.returncode == 0, out.stderr
    (path,) = results.glob("*/run.json")
    record = json.loads(path.read_text())
    other = "0123456789abcdef"
    shutil.copytree(path.parent, results / other)  # a folder named for another run, holding this one
    cell = (other, [], 0, record["settings"])
    (results / "_studies").mkdir()
    manifest = records.make_manifest("tiny", "smoke", "deep_mlp", "", [cell])
    (results / "_studies" / "tiny-smoke.json").write_text(json.dumps(manifest))
    report = vanex("report", "--results", str(results), "--out", str(tmp_path / "rep"), "--profile", "smoke")
    assert f"says it is run {record['run_id']!r}, not {other!r}; shown as missing" in report.stderr, report.stderr
    # counted once among the records claims could not read (it was counted twice), and repaired by the study
    (results / "_studies" / "tiny-smoke.json").unlink()
    assert vanex("study", "rnn_init", "--profile", "smoke", "--jobs", "1", f"results_dir={results}").returncode == 0
    manifest = results / "_studies" / "rnn_init-smoke.json"
    cells = json.loads(manifest.read_text())["cells"]
    stray = results / cells[0]["run_id"]
    shutil.rmtree(stray)
    shutil.copytree(results / cells[1]["run_id"], stray)
    claims = vanex("claims", "--results", str(results), "--profile", "smoke", "--claim", "pascanu2013_gain")
    assert claims.returncode == 1 and "study rnn_init: 1 record(s) could not be read" in claims.stderr, claims.stderr
    again = vanex("study", "rnn_init", "--profile", "smoke", "--jobs", "1", f"results_dir={results}")
    assert again.returncode == 0 and "1 to run here" in again.stderr, again.stderr
    assert json.loads((stray / "run.json").read_text())["run_id"] == cells[0]["run_id"]


def test_a_report_cleans_what_a_killed_report_left_beside_its_folder(tmp_path):
    results = tmp_path / "r"
    assert vanex("run", "task.depth=3", "task.steps=5", "progress=false", f"results_dir={results}").returncode == 0
    left = tmp_path / f".rep.{records._HOST}.{_dead_pid()}.abc123"
    left.mkdir()
    (left / "summary.md").write_text("half")
    mine = tmp_path / f".other.{records._HOST}.{_dead_pid()}.abc123"  # not this report's: left alone
    mine.mkdir()
    out = vanex("report", "--runs", str(results), "--out", str(tmp_path / "rep"))
    assert out.returncode == 0, out.stderr
    assert not left.exists() and mine.exists()


def test_an_interrupted_report_does_not_speak_of_resuming(monkeypatch, capsys):
    from vanex import cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_report", interrupted)
    assert cli.main(["report"]) == 130
    assert capsys.readouterr().err == "vanex: report interrupted; nothing was changed\n"


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=basic"]])
def test_a_native_crash_of_one_run_is_its_failed_record_and_the_sweep_goes_on(tmp_path, monkeypatch, launcher):
    """A run whose process dies of a signal (here SIGSEGV sent to its worker in the middle of training,
    as a segfault in a library would) no longer kills the study, nor every resume: the worker is
    replaced, the run gets a failed record naming the signal, and the other cells train. The same
    under Hydra's basic launcher, which runs its jobs in the study's process: each trains in a worker."""
    from vanex.engine import plan as planning

    long = {"task": "deep_mlp", "seeds": [0, 1, 2], "overrides": ["task.depth=3", "task.steps=300000"]}
    monkeypatch.setattr(planning, "load_study", lambda name: {**long, "grid": [{"mitigations": [[]]}]})
    killed: list[int] = []

    def crash_one() -> None:  # once a worker has claimed a run, kill it as a segfault would
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            leases = list((tmp_path / "_leases").glob("*.lease")) if (tmp_path / "_leases").exists() else []
            workers = [p for p in __import__("multiprocessing").active_children() if p.name == "vanex-worker"]
            if leases and workers:
                time.sleep(1.0)
                os.kill(workers[0].pid, signal.SIGSEGV)
                killed.append(workers[0].pid)
            time.sleep(0.1)

    threading.Thread(target=crash_one, daemon=True).start()
    overrides = [f"results_dir={tmp_path}", "progress=false", *launcher]
    failed = study.run_study("crash", "smoke", overrides, jobs=1)  # smoke: 3,000 steps a run
    assert killed and failed == 1
    outcomes = [load_run(p) for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    assert sorted(r["status"] for r in outcomes) == ["completed", "completed", "failed"]
    (crashed,) = [r for r in outcomes if r["status"] == "failed"]
    assert "signal SIGSEGV" in crashed["error"] and crashed["provenance"]["code"]["core"]
    assert not list((tmp_path / "_leases").glob("*.lease"))  # the dead worker's claim is gone
    again = study.run_study("crash", "smoke", overrides, jobs=2)  # the resume retries it, and it trains
    assert again == 0


@pytest.fixture
def small_disk(tmp_path):
    """A real 200 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)]).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_a_real_full_disk_fails_runs_and_refuses_writes_in_one_line_leaving_nothing_half_written(small_disk):
    results = small_disk / "r"
    out = vanex("study", "rnn_init", "--profile", "smoke", "--jobs", "1", f"results_dir={results}")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "record not written: [Errno 28] No space left on device" in out.stderr
    report = vanex("report", "--results", str(results), "--profile", "smoke", "--out", str(small_disk / "rep"))
    said = [line for line in report.stderr.strip().splitlines() if not line.startswith("report: [")]  # progress
    assert report.returncode == 2 and said == [
        f"vanex: error: cannot write the report to {small_disk / 'rep'} (No space left on device); the folder is "
        "unchanged"
    ]
    with contextlib.suppress(OSError):  # whatever room the failed runs left, fill it
        (small_disk / "fill").write_bytes(b"\0" * 200_000)
    again = vanex("study", "mlp_meanfield", "--profile", "smoke", "--jobs", "1", f"results_dir={results}")
    assert again.returncode == 2 and "cannot write the study manifest" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
    assert not _dot_folders(small_disk) and not _dot_folders(results) and not list(results.glob("_studies/.*"))


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_a_native_crash_under_the_joblib_launcher_fails_only_its_run(tmp_path, monkeypatch):
    """Hydra's joblib launcher gives up on the whole launch when one job's process dies of a signal
    (loky's TerminatedWorkerError), so each of its jobs trains in a worker of its own process: the
    crash (SIGSEGV sent to that worker mid-run) fails that run only, and the other cells train."""
    from vanex.engine import plan as planning

    long = {"task": "deep_mlp", "seeds": [0, 1, 2], "overrides": ["task.depth=3", "task.steps=300000"]}
    monkeypatch.setattr(planning, "load_study", lambda name: {**long, "grid": [{"mitigations": [[]]}]})
    killed: list[int] = []

    def crash_one() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            leases = list((tmp_path / "_leases").glob("*.lease")) if (tmp_path / "_leases").exists() else []
            commands = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in _children(os.getpid())}
            pool = [p for p, c in commands.items() if b"loky" in c and b"resource_tracker" not in c]
            runs = [child for p in pool for child in _children(p)]  # the workers the jobs train in
            if leases and runs:
                time.sleep(1.0)
                os.kill(runs[0], signal.SIGSEGV)
                killed.append(runs[0])
            time.sleep(0.1)

    threading.Thread(target=crash_one, daemon=True).start()
    overrides = ["hydra/launcher=joblib", f"results_dir={tmp_path}", "progress=false"]
    failed = study.run_study("crash", "smoke", overrides, jobs=2)
    assert killed and failed == 1
    outcomes = [load_run(p) for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    assert sorted(r["status"] for r in outcomes) == ["completed", "completed", "failed"]
    assert "signal SIGSEGV" in next(r["error"] for r in outcomes if r["status"] == "failed")


def test_a_study_never_overwrites_a_manifest_a_newer_vanex_wrote(tmp_path):
    from vanex.records.store import write_manifest

    studies = tmp_path / "_studies"
    studies.mkdir()
    newer = json.dumps({**_manifest(), "manifest_version": 2})
    (studies / "tiny-smoke.json").write_text(newer)
    with pytest.raises(UserError, match=r"written by a newer vanex \(manifest version 2; this one writes 1\)"):
        write_manifest(tmp_path, {**_manifest(), "manifest_version": 1})
    assert (studies / "tiny-smoke.json").read_text() == newer
    (studies / "tiny-smoke.json").write_text("[damaged")  # a damaged one is replaced by a whole one
    write_manifest(tmp_path, {**_manifest(), "manifest_version": 1})
    assert json.loads((studies / "tiny-smoke.json").read_text())["manifest_version"] == 1


def test_a_run_in_two_studies_ships_the_series_each_study_reads(tmp_path):
    """Two studies can share a run (the same settings); the bundle keeps the series that either reads
    (it once kept only the last study's, so the other study's claim read 'no series' from the report)."""
    import tarfile

    from vanex.records.bundle import write_bundle

    results = tmp_path / "results"
    out = vanex("run", "task.depth=2", "task.steps=3", "progress=false", f"results_dir={results}")
    assert out.returncode == 0, out.stderr
    (rid,) = [p.parent.name for p in results.glob("*/run.json")]
    run = json.loads((results / rid / "run.json").read_text())
    cell = [(rid, [], 0, run["settings"])]
    manifests = [records.make_manifest(name, "smoke", "deep_mlp", "", cell) for name in ("one", "two")]
    for manifest in manifests:
        records.write_manifest(results, manifest)
    reads = {"one": {rid: {"act_mean"}}, "two": {rid: {"update_ratio"}}}
    write_bundle(tmp_path / "b.tar.gz", results, manifests, lambda m: reads[m["study"]], {rid})
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        rows = tar.extractfile(f"{rid}/probes.csv").read().decode().splitlines()[1:]
    assert {"act_mean", "update_ratio"} <= {row.split(",")[1] for row in rows}


def test_a_study_starts_its_workers_while_it_plans_and_leaves_none_behind(monkeypatch, tmp_path):
    """``--jobs`` workers are started before planning (their torch import overlaps it) and are the ones
    that train; those a study does not need (everything finished already) are ended, not left running."""
    small_study(monkeypatch, cells=3)
    started = []

    class Counted(study._Worker):
        def __init__(self, *args):
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(study, "_Worker", Counted)
    for _ in range(2):  # trains 3 cells on 2 workers; then finds all 3 finished
        assert study.run_study("small", "smoke", [f"results_dir={tmp_path}", *TINY], jobs=2) == 0
        assert len(started) == 2 and not study._SPARE
        assert all(w.process.exitcode is not None for w in started)
        started.clear()
    assert len(list(tmp_path.glob("*/run.json"))) == 3
