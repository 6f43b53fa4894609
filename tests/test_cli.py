"""End-to-end tests of the `gradbench` command, run in subprocesses as a user would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY, gradbench

ROOT = Path(__file__).resolve().parents[1]


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*/run.json"))]


def test_run_one_config_writes_a_complete_record(results):
    out = gradbench("run", "task.depth=3", f"results_dir={results}", *TINY)
    assert out.returncode == 0, out.stderr
    assert "diagnosis" in out.stdout
    (record,) = _records(results)
    assert record["status"] == "completed"
    for key in ("run_id", "task", "mitigations", "seed", "config", "provenance", "summary", "diagnosis"):
        assert key in record
    for key in ("gradbench", "torch", "python", "git_commit", "lock_file_sha256", "cpu", "threads", "wall_time_s"):
        assert key in record["provenance"]
    for key in ("grad_ratio_init", "final_train_loss", "test_accuracy"):
        assert record["summary"][key] is not None
    header = (results / record["run_id"] / "probes.csv").read_text().splitlines()[0]
    assert header == "step,metric,layer,value"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["mitigation=[nope]"], "unknown mitigation 'nope'; valid mitigations: batchnorm, clip_norm"),
        (["task=nope"], "unknown task 'nope'; valid tasks: deep_mlp, resnet, rnn_copy, transformer"),
        (["task=resnet", "mitigation=[lstm]"], "mitigation 'lstm' cannot apply to task 'resnet': it sets knob 'cell'"),
        (["task=transformer", "mitigation=[fixup]"], "knob 'residual' of this task accepts identity, rezero, deepnorm"),
        (["task=resnet", "task.depth=9"], "resnet depth must be 6n+2"),
        (["optim=nope"], "unknown optim 'nope'; valid optims: adam, rmsprop, sgd"),
        (["mitigation=[relu,tanh]"], "mitigations 'relu' and 'tanh' both set knob 'activation'"),
        (["task.depth=0"], "deep_mlp needs depth, width, steps and batch_size >= 1"),
        (["task.activation=softsign"], "activation 'softsign' is not one of sigmoid"),
        (["mitigation=[clip_norm]", "mitigation.clip_norm.max_norm=-1"], "clip_norm.max_norm must be > 0"),
        (["device=tpu"], "device 'tpu' is not one of cpu, cuda, auto"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(args, expected, results):
    out = gradbench("run", *args, f"results_dir={results}", *TINY)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not results.exists() or not _records(results)


def test_same_config_gives_identical_records(tmp_path):
    for name in ("a", "b"):
        out = gradbench("run", "mitigation=[batchnorm]", f"results_dir={tmp_path / name}", *TINY)
        assert out.returncode == 0, out.stderr
    (a,), (b,) = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert a["run_id"] == b["run_id"] and a["summary"] == b["summary"]
    probes = [(tmp_path / n / a["run_id"] / "probes.csv").read_bytes() for n in ("a", "b")]
    assert probes[0] == probes[1]


def test_diverging_run_is_recorded_not_crashed(results):
    out = gradbench("run", "optim.lr=1e6", "mitigation=[relu]", "task.depth=3", f"results_dir={results}", *TINY)
    assert out.returncode == 0, out.stderr
    (record,) = _records(results)
    assert record["status"] == "diverged"
    assert record["diagnosis"]["verdict"] == "diverged"


def test_hydra_multirun_sweeps_mitigation_sets(results):
    out = gradbench("run", "-m", "mitigation=[relu,he_init],[tanh]", "task.depth=3", f"results_dir={results}", *TINY)
    assert out.returncode == 0, out.stderr
    assert sorted(r["mitigations"] for r in _records(results)) == [["relu", "he_init"], ["tanh"]]


@pytest.mark.slow
def test_study_resumes_and_reports(tmp_path):
    results, reports = tmp_path / "results", tmp_path / "reports"
    args = ("study", "mlp_vanishing", "--profile", "smoke", "--jobs", "2", f"results_dir={results}")
    first = gradbench(*args)
    assert first.returncode == 0, first.stderr
    n = len(_records(results))
    assert n >= 30 and f"{n} runs, 0 already finished, {n} to run" in first.stderr
    victim = sorted(results.glob("*/run.json"))[0].parent
    mtimes = {p: p.stat().st_mtime_ns for p in results.glob("*/run.json") if p.parent != victim}
    shutil.rmtree(victim)  # as if the run had never finished
    second = gradbench(*args)
    assert second.returncode == 0, second.stderr
    assert f"{n} runs, {n - 1} already finished, 1 to run" in second.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # finished runs were not redone
    out = gradbench("report", "--results", str(results), "--out", str(reports), "--profile", "smoke")
    assert out.returncode == 0, out.stderr
    summary = (reports / "summary.md").read_text()
    assert "| baseline | - | 3/3 |" in summary and "task.depth=40" in summary
    csv = (reports / "summary.csv").read_text().splitlines()
    assert csv[0] == "study,task,mitigations,overrides,seed,metric,value"
    assert any(line.startswith("mlp_vanishing,deep_mlp,he_init+relu,task.depth=40,") for line in csv)
    assert any(line.startswith("mlp_vanishing,deep_mlp,baseline,,0,grad_ratio_init,") for line in csv)
    assert {p.name for p in (reports / "figures").glob("*.png")} >= {
        "mlp_vanishing_gradient_flow.png",
        "mlp_vanishing_loss.png",
        "mlp_vanishing_task_depth.png",
    }


@pytest.mark.slow
def test_interrupted_study_resumes_without_redoing_runs(results):
    command = [
        str(Path(sys.executable).with_name("gradbench")),
        "study",
        "mlp_vanishing",
        "--profile",
        "smoke",
        "--jobs",
        "1",
        f"results_dir={results}",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(results.glob("*/run.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    done = len(_records(results))
    assert done >= 3 and not any(p.name.startswith(".") for p in results.iterdir() if p.is_dir())
    again = gradbench("study", "mlp_vanishing", "--profile", "smoke", "--jobs", "1", f"results_dir={results}")
    assert again.returncode == 0, again.stderr
    assert f"{done} already finished" in again.stderr


@pytest.mark.slow
def test_example_plugin_installs_lists_and_runs_beside_builtins(tmp_path):
    site = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(ROOT / "examples" / "gradbench-agc"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    listing = gradbench("list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "  agc " in listing.stdout and "  agc_mlp" in listing.stdout
    results = tmp_path / "results"
    study = gradbench("study", "agc_mlp", "--profile", "smoke", "--jobs", "1", f"results_dir={results}", env=env)
    assert study.returncode == 0, study.stderr
    sets = {tuple(r["mitigations"]) for r in _records(results) if r["status"] == "completed"}
    assert {("agc",), ("relu", "he_init", "agc"), ("clip_norm",), ()} <= sets
    extra = gradbench(
        "study",
        "mlp_vanishing",
        "--profile",
        "smoke",
        "--with",
        "agc",
        "--jobs",
        "1",
        f"results_dir={results}",
        env=env,
    )
    assert extra.returncode == 0, extra.stderr
    base = gradbench("study", "mlp_vanishing", "--profile", "smoke", "--jobs", "1", f"results_dir={results}", env=env)
    count = int(base.stderr.split(" runs,")[0].split()[-1])
    assert (
        f"{count + 3} runs, {count + 3} already finished"
        in gradbench(
            "study", "mlp_vanishing", "--profile", "smoke", "--with", "agc", f"results_dir={results}", env=env
        ).stderr
    )
