"""End-to-end tests of the `vanex` command, run in subprocesses as a user would."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import TINY, default_sigint, install_example, vanex, vanex_here

ROOT = Path(__file__).resolve().parents[1]
TRAINED = re.compile(r"^\[\d+/\d+\] .*: (completed|diverged|failed) \(", re.M)  # one progress line per trained run


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*/run.json"))]


def test_run_one_config_writes_a_complete_record(results):
    out = vanex("run", "task.depth=3", f"results_dir={results}", *TINY)
    assert out.returncode == 0, out.stderr
    assert "diagnosis" in out.stdout
    (record,) = _records(results)
    assert record["status"] == "completed"
    for key in ("schema_version", "run_id", "task", "mitigations", "seed", "settings", "task_info", "provenance"):
        assert key in record
    assert record["settings"]["task.depth"] == 3 and record["settings"]["task.width"] == 64  # defaults written out
    for key in ("vanex", "torch", "python", "git_commit", "git_dirty", "lock_file_sha256", "cpu", "numerics"):
        assert key in record["provenance"]
    assert record["provenance"]["git_commit"] and record["provenance"]["lock_file_sha256"]
    assert record["provenance"]["numerics"]["mode"] == "pinned"
    assert {"init", "training", "thresholds"} <= set(record["diagnosis"])
    for key in ("grad_ratio_init", "final_train_loss", "test_accuracy"):
        assert record["summary"][key] is not None
    header = (results / record["run_id"] / "probes.csv").read_text().splitlines()[0]
    assert header == "step,metric,layer,value"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["mitigation=[nope]"], "unknown mitigation 'nope'; valid mitigations: batchnorm, clip_norm"),
        (["task=nope"], "unknown task 'nope'; valid tasks: deep_mlp, resnet, rnn_copy, rnn_digits, transformer"),
        (["task=resnet", "mitigation=[lstm]"], "mitigation 'lstm' cannot apply to task 'resnet': it sets knob 'cell'"),
        (["task=transformer", "mitigation=[fixup]"], "knob 'residual' of this task accepts identity, rezero, deepnorm"),
        (["task=resnet", "task.depth=9"], "resnet depth must be 6n+2"),
        (["optim=nope"], "unknown optim 'nope'; valid optims: adam, rmsprop, sgd"),
        (["mitigation=[relu,tanh]"], "mitigations 'relu' and 'tanh' both set knob 'activation'"),
        (["task.depth=0"], "deep_mlp.depth must be from 1 to 1,000, got 0"),
        (["task.width=1000000"], "deep_mlp.width must be from 1 to 8,192, got 1,000,000"),
        (["task.split_seed=-1"], "task.split_seed must be from 0 to 4,294,967,295, got -1"),
        (["task=rnn_copy", "task.delay=10000000"], "rnn_copy.delay must be from 1 to 10,000"),
        (["task=rnn_copy", "task.eval_size=0"], "rnn_copy.eval_size must be from 1 to 100,000, got 0"),
        (["task=transformer", "task.vocab=1"], "transformer.vocab must be from 2 to 100,000, got 1"),
        (["task=transformer", "task.mlp_ratio=0"], "transformer.mlp_ratio must be from 1 to 64, got 0"),
        (["task=resnet", "task.depth=2000"], "resnet.depth must be from 8 to 1,202"),
        (["diagnosis.vanishing_orders=-1"], "diagnosis.vanishing_orders must be > 0, got -1.0"),
        (["diagnosis.stall_fraction=2"], "diagnosis needs 0 < stall_fraction <= unstable_fraction"),
        (["results_dir=/proc/vanex"], "results_dir '/proc/vanex' cannot be created"),
        (["results_dir="], "results_dir is empty"),
        (["=5"], "override '=5' names no setting; write KEY=VALUE"),
        (["task.activation=softsign"], "activation 'softsign' is not one of sigmoid"),
        (["mitigation=[clip_norm]", "mitigation.clip_norm.max_norm=-1"], "clip_norm.max_norm must be > 0"),
        (["device=tpu"], "device 'tpu' is not one of cpu, cuda, auto"),
        (["task.depth=abc"], "setting 'task.depth': Value 'abc' of type 'str' could not be converted to Integer"),
        (["task.nope=1"], "unknown setting 'task.nope'; valid settings of task: activation, batch_size, bias_scale"),
        (["+nope=1"], "unknown setting 'nope'; valid settings of the top level: seed"),
        (["seed=-1"], "seed must be an integer from 0 to 2**32 - 1 (numpy's seed range), got -1"),
        (["seed=4294967296"], "seed must be an integer from 0 to 2**32 - 1"),
        (["seed=1.5"], "setting 'seed'"),
        (["threads=0"], "threads must be from 1 to 1024, got 0"),
        (["threads=100000"], "threads must be from 1 to 1024, got 100000"),  # torch.set_num_threads segfaulted
        (["optim.lr=nan"], "optim.lr must be > 0 and at most 1e+38"),
        (["optim.lr=1e300"], "optim.lr must be > 0 and at most 1e+38, got 1e+300"),
        (["task.weight_scale=inf"], "setting 'task.weight_scale' must be a finite number, got inf"),
        (["optim.momentum=nan"], "optim.momentum must be in [0, 1), got nan"),
        (["optim.momentum=-1"], "optim.momentum must be in [0, 1), got -1.0"),
        (["optim.weight_decay=nan"], "optim.weight_decay must be in [0, 1], got nan"),
        (["optim=adam", "optim.betas=[2,0.999]"], "optim.betas must be in [0, 1), got 2.0"),
        (["optim=adam", "optim.eps=-1"], "optim.eps must be in [1e-30, 1], got -1.0"),
        (["optim=adam", "optim.lr=1e38"], "optim.lr must be at most 1e+37 with optim.betas[0]=0.9, got 1e+38"),
        (
            ["mitigation=[clip_norm]", "mitigation.clip_norm.max_norm=inf"],
            "'mitigation.clip_norm.max_norm' must be a finite",
        ),
        (["mitigation=[weight_decay]", "mitigation.weight_decay.coefficient=nan"], "must be a finite number, got nan"),
        (["task.steps=0"], "setting 'task.steps' must be at least 1, got 0"),
        (["task.steps=-5"], "setting 'task.steps' must be at least 1, got -5"),
        (["probe.samples=1000000000"], "probe sample counts must be at most 10000"),
        (["probe.names=[nope]"], "unknown probe 'nope'"),
        (["probe.eval_budget=2"], "probe.eval_budget must be a share of the training from 0 to 1, got 2.0"),
        (["numerics=fast"], "numerics 'fast' is not one of pinned, generic, native"),
        (["nope=1"], "unknown setting 'nope'; valid settings of the top level: device, diagnosis, numerics"),
        (["task.depth=1.5"], "setting 'task.depth'"),
        (["optim.lr=-1"], "optim.lr must be > 0 and at most 1e+38"),
        (["diagnosis.vanishing_orders=abc"], "setting 'diagnosis.vanishing_orders'"),
        (["task.batch_size=5000"], "task.batch_size=5000 must be between 1 and the 1438 training images"),
        (["results_dir=/dev/null"], "results_dir '/dev/null' exists and is not a folder"),
        (["task.dpeth=10"], "unknown setting 'task.dpeth' (did you mean 'task.depth'?); valid settings of task:"),
        (["mitigation=[reul]"], "unknown mitigation 'reul' (did you mean 'relu'?); valid mitigations: batchnorm"),
        (["task=rnn_cpy"], "unknown task 'rnn_cpy' (did you mean 'rnn_copy'?); valid tasks: deep_mlp"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(args, expected, results):
    out = vanex_here("run", f"results_dir={results}", *TINY, *args)  # the case's own results_dir wins
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not results.exists()  # refused before training: no record, not even an empty results folder


def test_the_console_script_refuses_a_bad_setting_as_main_does(results):
    """The cases above call vanex.cli.main in the test's process; the installed `vanex` says the same."""
    args = ("run", f"results_dir={results / 'new'}", *TINY, "task.depth=0")
    out, here = vanex(*args), vanex_here(*args)
    said = "vanex: error: invalid task settings: deep_mlp.depth must be from 1 to 1,000, got 0\n"
    assert (out.returncode, out.stdout, out.stderr) == (here.returncode, here.stdout, here.stderr) == (2, "", said)
    assert not results.exists()


def test_show_prints_one_run_and_draws_its_training(results, tmp_path):
    out = vanex("run", "task=rnn_copy", "task.delay=5", "task.hidden=16", f"results_dir={results}", *TINY)
    assert out.returncode == 0, out.stderr
    (record,) = _records(results)
    rid = record["run_id"]
    figure = tmp_path / "run.png"
    shown = vanex("show", rid[:6], "--results", str(results), "--out", str(figure))
    assert shown.returncode == 0, shown.stderr
    assert f"run {rid}" in shown.stdout and "rnn_copy, baseline, seed 0, 12 steps" in shown.stdout
    assert "task.delay=5" in shown.stdout and "status: completed" in shown.stdout and "diagnosis: init" in shown.stdout
    first = figure.read_bytes()
    assert first.startswith(b"\x89PNG") and len(first) > 20_000  # six panels and a colour bar, not an empty canvas
    quick = vanex("show", rid[:6], "--profile", "quick", "--results", str(results), "--out", str(figure))
    assert quick.returncode == 0, quick.stderr  # a prefix among the records of one profile (the run's: quick)
    again = vanex("show", str(results / rid), "--out", str(figure))  # a record folder names the run too
    assert again.returncode == 0 and figure.read_bytes() == first  # no dates in the file: same run, same bytes
    for args, expected in [
        (["12"], "'12' is neither a record folder nor a run id"),
        (["ffffffff"], "no record of run 'ffffffff'"),
        ([rid, "--out", str(tmp_path / "run.txt")], "name a file with one of them"),
        ([rid, "--out", str(tmp_path)], "is a folder or a link"),
        ([rid, "--results", str(ROOT / "reports")], "is a report: its shipped records hold no per-layer series"),
        ([rid[:6], "--profile", "smoke"], f"no record of run '{rid[:6]}' in '{results}' among the smoke profile's"),
        ([rid[:6], "--profile", "smok"], "unknown profile 'smok' (did you mean 'smoke'?); valid profiles: full,"),
    ]:
        bad = vanex("show", *args, *([] if "--results" in args else ["--results", str(results)]))
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and expected in bad.stderr, bad.stderr


def test_show_draws_a_diverged_run_whose_series_are_not_finite_and_names_a_copied_record(results, tmp_path):
    """A run diverged at step 0 has only inf or NaN gradient norms, which matplotlib cannot log-scale (a
    traceback before); a record copied under another folder name is shown with a warning, as report
    and claims name it."""
    args = ["task.init=scaled", "task.weight_scale=1e30", "task.activation=relu"]
    out = vanex("run", *args, f"results_dir={results}", *TINY)
    assert out.returncode == 0 and "diverged" in out.stdout, out.stderr
    (record,) = _records(results)
    shown = vanex("show", record["run_id"], "--results", str(results), "--out", str(tmp_path / "d.png"))
    assert shown.returncode == 0 and not shown.stderr and "status: diverged" in shown.stdout, shown.stderr
    assert (tmp_path / "d.png").read_bytes().startswith(b"\x89PNG")
    copy = tmp_path / "copies" / ("abcd" + "0" * 12)
    shutil.copytree(results / record["run_id"], copy)
    shown = vanex("show", "abcd", "--results", str(copy.parent), "--out", str(tmp_path / "c.png"))
    assert shown.returncode == 0 and f"run {record['run_id']}" in shown.stdout
    assert shown.stderr.strip() == (
        f"vanex show: warning: record {copy} says it is run '{record['run_id']}', not its folder's name (copied "
        "or renamed); shown as the run it says it is"
    )


BROKEN_PLUGINS = {  # module source, entry points, what the one line says
    "raises": ('raise RuntimeError("boom")\n', "[vanex.plugins]\nbroken = broken_raises\n", "RuntimeError: boom"),
    "clash": (
        "from vanex.engine.mitigation import Mitigation\nfrom vanex.registry import MITIGATIONS\n\n\n"
        '@MITIGATIONS.register("relu")\nclass Relu(Mitigation):\n    pass\n',
        "[vanex.plugins]\nbroken = broken_clash\n",
        "ValueError: duplicate mitigation name 'relu'",
    ),
    "register": (
        'def register():\n    raise KeyError("inside")\n',
        "[vanex.plugins]\nbroken = broken_register:register\n",
        "failed (KeyError: 'inside')",
    ),
    "conf": ("", "[vanex.conf]\nbroken = broken_conf.nosuch\n", "No module named 'broken_conf.nosuch'"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_PLUGINS))
def test_a_broken_third_party_plugin_is_named_in_one_line(kind, tmp_path):
    """A plugin that cannot be imported, registers a name vanex has, raises when registering, or names a
    config root that does not exist gave a traceback from every command that loads its group."""
    source, entry_points, said = BROKEN_PLUGINS[kind]
    info = tmp_path / "site" / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    (tmp_path / "site" / f"broken_{kind}.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    listing = ["list", "studies" if kind == "conf" else "mitigations"]  # a command that loads the plugin's group
    for args in (listing, ["run", *TINY, f"results_dir={tmp_path / 'r'}"]):
        out = vanex(*args, env=env)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
        assert lines[0].startswith("vanex: error: plugin 'broken = broken_") and "from broken-plugin" in lines[0]
        assert said in lines[0] and lines[0].endswith("fix it or `pip uninstall broken-plugin`")
        assert not (tmp_path / "r").exists()


def test_a_third_party_claim_without_a_field_vanex_reads_is_named_in_one_line(tmp_path):
    """A plugin's claim class without `paper` (or `cells`) gave a traceback from `vanex list` and `vanex
    claims`: the attribute is read in vanex's code, so no frame of the plugin's was there to blame."""
    info = tmp_path / "site" / "bad_claims-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-claims\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vanex.claims]\nbad = bad_claims\n")
    (tmp_path / "site" / "bad_claims.py").write_text(
        "from vanex.registry import CLAIMS\nfrom vanex.report.claims import Claim\n\n\n"
        '@CLAIMS.register("bad_claim")\nclass Bad(Claim):\n    where, statement = "Fig. 1", "nothing"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    (tmp_path / "r").mkdir()
    for args, lacks in [(["list", "claims"], "'paper'"), (["claims", "--results", "r", "--allow-missing"], "'cells'")]:
        out = vanex(*args, env=env, cwd=tmp_path)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
        assert lines[0].startswith("vanex: error: plugin 'bad = bad_claims' (vanex.claims, from bad-claims): a class")
        assert f"has no attribute {lacks}" in lines[0] and lines[0].endswith("`pip uninstall bad-claims`")


def test_every_command_takes_profile_and_says_bad_flags_in_one_line(results):
    out = vanex("run", "--profile", "smoke", f"results_dir={results}", "task.depth=2", "progress=false")
    assert out.returncode == 0, out.stderr
    (record,) = _records(results)
    assert record["settings"]["profile.name"] == "smoke"
    for args, expected in [
        (["study", "mlp_meanfield", "--jobs", "abc"], "vanex study: argument --jobs: invalid int value: 'abc'"),
        (["claims", "--bogus"], "vanex claims: unrecognized arguments: --bogus"),
        (["run", "--profile"], "--profile needs a name: one of full, quick, smoke"),
        (["run", "--profile=smok"], "unknown profile 'smok' (did you mean 'smoke'?)"),
        (["report", "--out", ""], "--out is empty; give a folder"),
        (["claims", "--results", ""], "--results is empty; give a folder"),
        (["--version", "x"], "--version takes no arguments"),
        (["study", "mlp_meanfield", "--jobs", "100000"], "--jobs must be a number of processes from 1 to 256"),
        (["run", "--bogus"], "unknown option '--bogus' of vanex run; valid: --profile NAME, -m/--multirun"),
        (["run", "results_dir=/tmp/résultats"], "cannot parse the override 'results_dir=/tmp/résultats': a value"),
        (["study", "rnn_init", "results_dir=/tmp/é"], "must be quoted, e.g. results_dir=\"'/tmp/é'\""),
        (["run", "--cfg", "nope"], "--cfg takes job, hydra or all, not 'nope'"),  # Hydra: its usage text
        (["run", "-m", "task.depth=2,3", "hydra/launcher=nope"], "unknown launcher 'nope'; valid launchers: basic"),
    ]:
        bad = vanex_here(*args)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("vanex: error: "), bad.stderr
        assert expected in bad.stderr, bad.stderr
    info = vanex("run", "--info", "searchpath")  # Hydra's flag and its value, not an override "searchpath"
    assert info.returncode == 0 and "Config search path" in info.stdout, info.stderr
    helped = vanex("run", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: vanex run [--profile NAME]")
    assert "profile              full, quick, smoke" in helped.stdout and "Hydra" not in helped.stdout.splitlines()[0]
    assert "one of full, quick, smoke" in " ".join(vanex("study", "-h").stdout.split())  # whatever the wrap width


def test_version_names_the_release_and_the_commit():
    out = vanex("--version")
    assert out.returncode == 0 and re.fullmatch(r"vanex \d+\.\d+\.\d+ \(git [0-9a-f]{12}(\+dirty)?\)\n", out.stdout)


def test_list_studies_under_a_profile_counts_runs_and_finished_ones(tmp_path, smoke_records):
    """`vanex list studies --profile NAME` plans each study as `vanex study` does: its runs and how many
    of them are finished in the results folder; an unknown profile is one line."""
    from vanex.cli import _planned

    results = tmp_path / "x" / "r"
    assert _planned("rnn_init", "smoke", str(results), []) == f"smoke: 50 runs, 0 finished in {results}"
    assert not (tmp_path / "x").exists()  # a listing creates no folder (it left the parents of a nested one)
    smoke_records("rnn_init", results)
    assert _planned("rnn_init", "smoke", str(results), []) == f"smoke: 50 runs, 50 finished in {results}"
    bad = vanex("list", "--profile", "smok")  # refused before anything is listed
    expected = "vanex: error: unknown profile 'smok' (did you mean 'smoke'?); valid profiles: full, quick, smoke\n"
    assert bad.returncode == 2 and bad.stderr == expected


def test_one_study_file_that_cannot_be_planned_is_named_and_the_others_are_still_listed(tmp_path):
    """A plugin's study file without a grid aborted `vanex list studies --profile NAME` at that study:
    now its row says why, the other studies are planned, and the exit status is 1."""
    site = tmp_path / "site"
    info = site / "bad_study-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-study\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vanex.conf]\nbad = bad_conf\n")
    (site / "bad_conf" / "study").mkdir(parents=True)
    (site / "bad_conf" / "__init__.py").write_text("")
    (site / "bad_conf" / "study" / "aaa_broken.yaml").write_text("task: deep_mlp\nseeds: 2\n")
    unresolved = (
        'task: deep_mlp\nseeds: [0]\noverrides: ["task.width=${oc.env:VANEX_UNSET_X}"]\ngrid: [{mitigations: [[]]}]\n'
    )
    (site / "bad_conf" / "study" / "aab_unresolved.yaml").write_text(unresolved)  # OmegaConf's error, not vanex's
    out = vanex(
        "list",
        "studies",
        "--profile",
        "smoke",
        f"--results={tmp_path / 'r'}",
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert out.returncode == 1
    assert out.stderr == "vanex list: 2 study file(s) cannot be planned: aaa_broken, aab_unresolved\n"
    assert "Environment variable 'VANEX_UNSET_X' not found" in rows["aab_unresolved"]
    assert "[bad-study]  smoke: cannot be planned: " in rows["aaa_broken"] and "'grid' is missing" in rows["aaa_broken"]
    assert rows["rnn_init"].endswith(f"smoke: 50 runs, 0 finished in {tmp_path / 'r'}")


def test_list_gives_each_item_its_first_paragraph_not_a_line_cut_mid_sentence():
    """A docstring's first line ended "…with the residual up-weighted by" (deepnorm): the listing now
    joins the first paragraph and marks where it shortens it."""
    from vanex.cli import _listing

    rows = {name: text for name, _, text in _listing("mitigations")}
    assert rows["deepnorm"].startswith("DeepNorm (Wang et al. 2022, DeepNet): Post-LN with the residual up-weighted")
    assert rows["deepnorm"].endswith(" …") and len(rows["deepnorm"]) <= 110
    assert rows["batchnorm"] == "Batch normalisation before each nonlinearity (Ioffe & Szegedy 2015)."


def test_a_bad_numerics_variable_is_one_line(results):
    out = vanex("list", "tasks", env={**os.environ, "VANEX_NUMERICS": "foo"})
    assert (
        out.returncode == 2
        and out.stderr.strip() == "vanex: error: VANEX_NUMERICS='foo' is not one of pinned, generic, native"
    )


@pytest.mark.parametrize("override", ["profile=smoke", "seed=7", "+seed=7"])
def test_a_study_refuses_overrides_that_would_rewrite_it_silently(override, results):
    out = vanex("study", "mlp_meanfield", override, f"results_dir={results}")
    assert out.returncode == 2 and "would rewrite every cell of the study silently" in out.stderr, out.stderr
    assert not results.exists() or not list(results.iterdir())


@pytest.mark.parametrize("override", ["task.width=16", "numerics=generic", "optim.lr=0.1"])
def test_a_study_refuses_settings_that_would_change_its_cells_under_the_same_manifest(override, results):
    out = vanex("study", "mlp_meanfield", override, f"results_dir={results}")
    assert out.returncode == 2 and "would change every cell of study mlp_meanfield" in out.stderr, out.stderr
    assert not results.exists() or not list(results.iterdir())


@pytest.mark.parametrize("jobs", ["0", "-2"])
def test_a_study_refuses_a_job_count_below_one(jobs, results):
    out = vanex("study", "mlp_meanfield", "--jobs", jobs, f"results_dir={results}")
    assert (
        out.returncode == 2
        and out.stderr.strip() == f"vanex: error: --jobs must be a number of processes from 1 to 256, not {jobs}"
    )
    assert not results.exists() or not list(results.iterdir())
    assert not results.exists() or not _records(results)


def test_same_config_gives_identical_records(tmp_path):
    for name in ("a", "b"):
        out = vanex("run", "mitigation=[batchnorm]", f"results_dir={tmp_path / name}", *TINY)
        assert out.returncode == 0, out.stderr
    (a,), (b,) = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert a["run_id"] == b["run_id"] and a["summary"] == b["summary"]
    probes = [(tmp_path / n / a["run_id"] / "probes.csv").read_bytes() for n in ("a", "b")]
    assert probes[0] == probes[1]


def test_diverging_run_is_recorded_not_crashed(results):
    out = vanex("run", "optim.lr=1e6", "mitigation=[relu]", "task.depth=3", f"results_dir={results}", *TINY)
    assert out.returncode == 0, out.stderr
    (record,) = _records(results)
    assert record["status"] == "diverged"
    assert record["diagnosis"]["training"]["verdict"] == "diverged"


def test_hydra_multirun_sweeps_mitigation_sets(results):
    out = vanex("run", "-m", "mitigation=[relu,he_init],[tanh]", "task.depth=3", f"results_dir={results}", *TINY)
    assert out.returncode == 0, out.stderr
    assert sorted(r["mitigations"] for r in _records(results)) == [["relu", "he_init"], ["tanh"]]


@pytest.mark.slow
def test_study_resumes_and_reports(tmp_path):
    results, reports = tmp_path / "results", tmp_path / "reports"
    args = ("study", "mlp_vanishing", "--profile", "smoke", "--jobs", "2", f"results_dir={results}")
    first = vanex(*args)
    assert first.returncode == 0, first.stderr
    n = len(_records(results))
    assert n >= 30 and f"{n} runs, 0 already finished" in first.stderr
    victim = sorted(results.glob("*/run.json"))[0].parent
    mtimes = {p: p.stat().st_mtime_ns for p in results.glob("*/run.json") if p.parent != victim}
    shutil.rmtree(victim)  # as if the run had never finished
    second = vanex(*args)
    assert second.returncode == 0, second.stderr
    assert f"{n} runs, {n - 1} already finished" in second.stderr and len(TRAINED.findall(second.stderr)) == 1
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # finished runs were not redone
    out = vanex("report", "--results", str(results), "--out", str(reports), "--profile", "smoke")
    assert out.returncode == 0, out.stderr
    summary = (reports / "summary.md").read_text()
    assert "| mitigations | numerics | lr | depth | steps | n (done/div/fail) |" in summary  # steps at its scale
    assert (
        "| baseline | pinned | 0.05 | 20 | 10 | 5/0/0 |" in summary
        and "| baseline | generic | 0.05 | 20 | 10 | 5/0/0 |" in summary
    )
    csv = pd.read_csv(reports / "summary.csv")
    assert list(csv.columns) == [
        *("run_id", "profile", "git_commit", "study", "task", "mitigations", "seed", "status"),
        *("numerics", "optim.lr", "task.depth", "task.steps", "metric", "value"),
    ]
    assert ((csv["mitigations"] == "relu+he_init") & (csv["task.depth"] == 40)).any()
    assert len(csv[(csv["mitigations"] == "baseline") & (csv["task.depth"] == 20) & (csv["seed"] == 0)]) > 0
    manifest = json.loads((results / "_studies" / "mlp_vanishing-smoke.json").read_text())
    assert len(manifest["cells"]) == n and manifest["swept"] == ["numerics", "optim.lr", "task.depth", "task.steps"]
    assert {p.name for p in (reports / "figures").glob("*.png")} >= {
        "mlp_vanishing_trainability_depth.png",
        "mlp_vanishing_gradient_flow.png",
        "mlp_vanishing_loss.png",
        "mlp_vanishing_task_depth.png",
        "mlp_vanishing_optim_lr.png",
    }
    assert "Learning rate per mitigation set" in summary and "## Published claims" in summary


@pytest.mark.slow
def test_interrupted_study_resumes_without_redoing_runs(results):
    command = [
        str(Path(sys.executable).with_name("vanex")),
        "study",
        "mlp_exploding",  # short runs: ~20 s on one core
        "--profile",
        "smoke",
        "--jobs",
        "1",
        f"results_dir={results}",
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    deadline = time.time() + 120
    while len(list(results.glob("*/run.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    done = len(_records(results))
    assert done >= 3 and not any(p.name.startswith(".") for p in results.iterdir() if p.is_dir())
    again = vanex("study", "mlp_exploding", "--profile", "smoke", "--jobs", "2", f"results_dir={results}")
    assert again.returncode == 0, again.stderr
    assert f"{done} already finished" in again.stderr


def study_manifest(results: Path, name: str, profile: str = "smoke") -> str:
    return (results / "_studies" / f"{name}-{profile}.json").read_text()


@pytest.mark.slow
def test_example_plugin_installs_lists_and_runs_beside_builtins(tmp_path):
    env = install_example("vanex-agc", tmp_path / "site")
    listing = vanex("list", env=env)
    assert listing.returncode == 0, listing.stderr
    # a mitigation, a probe, a claim, a report section and a study, each credited to the plugin
    for name in ("agc", "unit_grad_ratio", "brock2021_agc", "agc_unit_ratio", "agc_mlp"):
        assert re.search(rf"^  {name} +\[vanex-agc\]", listing.stdout, re.M), name
    assert re.search(r"^  he_init +\[vanex\]", listing.stdout, re.M)
    results, reports = tmp_path / "results", tmp_path / "reports"
    study = vanex("study", "agc_mlp", "--profile", "smoke", "--jobs", "1", f"results_dir={results}", env=env)
    assert study.returncode == 0, study.stderr
    sets = {tuple(r["mitigations"]) for r in _records(results) if r["status"] == "completed"}
    assert {("agc",), ("relu", "he_init", "agc"), ("clip_norm",), ()} <= sets
    assert all(r["settings"]["mitigation.agc.clipping"] == 0.01 for r in _records(results) if "agc" in r["mitigations"])
    assert all("unit_grad_ratio" in (results / r["run_id"] / "probes.csv").read_text() for r in _records(results))
    claims = vanex("claims", "--results", str(results), "--profile", "smoke", env=env)
    assert re.search(r"^(✓|✗|fragile) +brock2021_agc", claims.stdout, re.M), claims.stdout
    out = vanex("report", "--results", str(results), "--out", str(reports), "--profile", "smoke", env=env)
    assert out.returncode == 0, out.stderr
    text = (reports / "summary.md").read_text()
    assert "**Unit-wise gradient/weight ratio** (`unit_grad_ratio`" in text and "| brock2021_agc |" in text
    # a built-in study with the plugin's mitigation added (in a folder of its own: the report below is of agc_mlp)
    other = tmp_path / "with"
    extra = vanex(
        "study", "mlp_exploding", "--profile", "smoke", "--with", "agc", "--jobs", "1", f"results_dir={other}", env=env
    )
    assert extra.returncode == 0, extra.stderr
    manifest = json.loads((other / "_studies" / "mlp_exploding-smoke.json").read_text())
    assert sum(c["mitigations"] == ["agc"] for c in manifest["cells"]) == 5  # the --with cells are listed (5 seeds)
    base = vanex("study", "mlp_exploding", "--profile", "smoke", "--jobs", "1", f"results_dir={other}", env=env)
    count = int(base.stderr.split(" runs,")[0].split()[-1])
    with_agc = vanex("study", "mlp_exploding", "--profile", "smoke", "--with", "agc", f"results_dir={other}", env=env)
    assert f"{count + 5} runs, {count + 5} already finished" in with_agc.stderr
    # editing the installed plugin's mitigation makes the records it trained stale: the study reruns them
    # (and only them), --keep-stale keeps them, and report and claims mark them
    agc_cells = sum("agc" in c["mitigations"] for c in json.loads(study_manifest(results, "agc_mlp"))["cells"])
    source = tmp_path / "site" / "vanex_agc" / "agc.py"
    source.write_text(source.read_text() + "\n# edited\n")
    kept = vanex("study", "agc_mlp", "--profile", "smoke", "--keep-stale", f"results_dir={results}", env=env)
    assert f"{agc_cells} finished record(s) made by other code (vanex_agc.agc changed)" in kept.stderr, kept.stderr
    assert "0 to run here" in kept.stderr
    claims = vanex("claims", "--results", str(results), "--profile", "smoke", "--claim", "brock2021_agc", env=env)
    assert "study agc_mlp: " in claims.stderr and "marked stale" in claims.stderr, claims.stderr
    assert "of these records are stale: made by other code" in claims.stdout, claims.stdout
    out = vanex("report", "--results", str(results), "--out", str(reports), "--profile", "smoke", env=env)
    assert out.returncode == 0 and " stale)" in (reports / "summary.md").read_text()
    rerun = vanex("study", "agc_mlp", "--profile", "smoke", "--jobs", "1", f"results_dir={results}", env=env)
    assert rerun.returncode == 0 and f"{agc_cells} to run here" in rerun.stderr, rerun.stderr
    again = vanex("study", "agc_mlp", "--profile", "smoke", f"results_dir={results}", env=env)
    assert "0 to run here" in again.stderr and "made by other code" not in again.stderr


@pytest.mark.slow
def test_example_task_plugin_installs_lists_runs_a_study_and_reports(tmp_path):
    env = install_example("vanex-deeplinear", tmp_path / "site")
    listing = vanex("list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert len(re.findall(r"^  deep_linear +\[vanex-deeplinear\]", listing.stdout, re.M)) == 2  # task and study
    results, reports = tmp_path / "results", tmp_path / "reports"
    study = vanex("study", "deep_linear", "--profile", "smoke", "--jobs", "1", f"results_dir={results}", env=env)
    assert study.returncode == 0, study.stderr
    records = _records(results)
    assert len(records) == 18 and all(r["status"] == "completed" for r in records)
    assert {r["settings"]["task.init"] for r in records} == {"default", "xavier", "orthogonal"}
    out = vanex("report", "--results", str(results), "--out", str(reports), "--profile", "smoke", env=env)
    assert out.returncode == 0, out.stderr
    assert "## Study `deep_linear` (task `deep_linear`)" in (reports / "summary.md").read_text()


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("task.depth=2,0", "deep_mlp.depth must be from 1 to 1,000, got 0"),
        ("optim.lr=0.1,nan", "optim.lr must be > 0 and at most 1e+38, got nan"),
        ("hydra.job.chdir=true", "hydra.job.chdir=true: vanex keeps the working folder"),
    ],
)
def test_a_sweep_with_one_bad_value_is_refused_before_any_run(sweep, expected, results):
    out = vanex("run", "-m", f"results_dir={results}", *TINY, sweep, "seed=0,1")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and expected in lines[0], out.stderr
    assert not list(Path(results).glob("*/run.json"))  # refused before any run trained


def test_a_setting_of_an_unselected_or_unknown_mitigation_says_what_to_select(results):
    out = vanex("run", "mitigation=[relu]", "mitigation.clip_norm.max_norm=1", f"results_dir={results}")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "vanex: error: mitigation 'clip_norm' is not selected (selected: relu), so its settings cannot be set: "
        "add it, e.g. mitigation=[relu,clip_norm]"
    ]
    out = vanex("run", "mitigation.nopey.x=1", f"results_dir={results}")
    assert out.returncode == 2 and "unknown mitigation 'nopey' in a setting; valid mitigations: " in out.stderr
    assert not results.exists()  # a refused run leaves no folder behind


def test_a_study_without_a_name_asks_for_the_name_alone():
    out = vanex("study")
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == "vanex: error: vanex study: the following arguments are required: name (see vanex study -h)"
    )


def test_a_studys_time_left_counts_the_workers_and_the_last_run():
    """The estimate printed after each run: the runs left spread over the workers, but one run left
    still takes a run's time (on 2 workers, the third of three 650-s runs is ~650 s away, not 325)."""
    from vanex.engine.study import _duration, _time_left

    assert _time_left([650.0, 650.0], 1, 2) == 650.0
    assert _time_left([392.0], 19, 2) == 392.0 * 9.5
    assert _time_left([10.0, 30.0], 4, 1) == 80.0
    assert _time_left([], 5, 2) == 0.0 and _time_left([5.0], 0, 2) == 0.0
    assert _duration(_time_left([650.0, 650.0], 1, 2)) == "11 min"
