"""``vanex verify``: recorded runs, retrained from the settings in their records, come out bit for
bit on the CPU model that made them (what pinned numerics promise), within the cross-CPU step-0
tolerance elsewhere; a record that moved is named, and nothing in the folder read is written."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers import ROOT, vanex
from vanex.engine.verify import Rebuilder, overrides, select, step0_moves, twins
from vanex.errors import UserError
from vanex.records.store import run_id

SMOKE = ["--profile", "smoke", "progress=false"]  # a profile whose step scale the record holds, not its steps
SENSITIVE = ["task=deep_mlp", "task.depth=50", "mitigation=[relu,he_init,batchnorm]"]  # step 0 moves ~2% by path


@pytest.fixture(scope="session")
def made(shared) -> Path:
    """A smoke run of every built-in task; the deep_mlp one and a rounding-sensitive configuration
    (a 50-layer batch-normalised ReLU net) also on the second numeric path (~25 s), made once for
    the tests here, which only read it or copy it."""

    def make(root: Path) -> None:
        for args in (
            ["-m", "task=deep_mlp,rnn_copy,resnet,transformer"],
            ["-m", "numerics=generic", "task=rnn_digits,deep_mlp"],
            ["numerics=pinned", *SENSITIVE],
            ["numerics=generic", *SENSITIVE],
        ):
            multirun = [a for a in args if a == "-m"]  # Hydra's parser takes -m before the overrides only
            out = vanex("run", *multirun, *SMOKE, *(a for a in args if a != "-m"), f"results_dir={root / 'results'}")
            assert out.returncode == 0, out.stderr

    return shared("verify-made", make) / "results"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _edit(record: Path, change) -> None:
    data = json.loads((record / "run.json").read_text())
    change(data)
    (record / "run.json").write_text(json.dumps(data, indent=2))


def _runs(folder: Path) -> dict[tuple[str, str, int], Path]:
    """(task, numeric path, depth) -> the record's folder."""
    out = {}
    for path in folder.iterdir():
        if (path / "run.json").is_file():
            settings = json.loads((path / "run.json").read_text())["settings"]
            out[settings["task"], settings["numerics"], settings.get("task.depth")] = path
    return out


def _said(stderr: str, record: Path) -> str:
    """The verdict line of ``record``'s run and the line after it."""
    lines = stderr.splitlines()
    index = next(i for i, line in enumerate(lines) if f"] {record.name} " in line or f"  {record.name} " in line)
    return "\n".join(lines[index : index + 2])


def test_every_task_s_record_comes_out_bit_for_bit_and_nothing_is_written(made):
    before = _files(made)
    out = vanex("verify", str(made), "--sample", "0", "--max-seconds", "1000", "--jobs", "2")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count(": same bits") == 8 and "generic: same bits" in out.stderr, out.stderr
    assert "all 8 runs came out as recorded" in out.stderr and "passed over" not in out.stderr
    assert _files(made) == before


def test_a_moved_record_is_named_and_fails(made, tmp_path):
    """One bit of a summary, one probe value, and a step-0 ratio of a record from another CPU model
    moved beyond the cross-CPU tolerance: each is found; a record from another CPU model whose
    step 0 is within it passes, its trained values not held run by run."""
    folder = tmp_path / "results"
    shutil.copytree(made, folder)
    runs = _runs(folder)
    mlp, rnn = runs["deep_mlp", "pinned", 20], runs["rnn_copy", "pinned", None]
    transformer, resnet = runs["transformer", "pinned", 6], runs["resnet", "pinned", 20]
    _edit(
        mlp, lambda r: r["diagnosis"]["training"].update(chance_loss=r["diagnosis"]["training"]["chance_loss"] + 1e-12)
    )
    rows = list(csv.reader((rnn / "probes.csv").open()))
    rows[5][3] = repr(float(rows[5][3]) + 1.0)
    with (rnn / "probes.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)

    def elsewhere(shift: float):
        def change(r):
            r["provenance"]["cpu"] = "Another CPU model"
            r["summary"]["grad_ratio_init"] *= 1 + shift
            r["summary"]["final_train_loss"] *= 1.01  # trained values are not held run by run across CPU models

        return change

    _edit(transformer, elsewhere(1e-3))
    _edit(resnet, elsewhere(1e-6))
    picked = [f"--run={p.name}" for p in (mlp, rnn, transformer, resnet)]
    out = vanex("verify", str(folder), *picked, "--jobs", "2")
    assert out.returncode == 1, out.stderr
    assert ": MOVED" in _said(out.stderr, mlp) and "diagnosis.training.chance_loss" in _said(out.stderr, mlp)
    assert ": MOVED" in _said(out.stderr, rnn) and "1 of" in _said(out.stderr, rnn)
    assert "MOVED at step 0" in _said(out.stderr, transformer) and "summary.grad_ratio_init" in out.stderr
    assert "step 0 within tolerance" in _said(out.stderr, resnet) and "final loss" in _said(out.stderr, resnet)
    assert "3 of 4 runs did not come out as recorded" in out.stderr


def test_across_cpu_models_rounding_sensitivity_is_measured_here_not_read_from_the_records(made, tmp_path):
    """A record from another CPU model whose step 0 moved is excused only if its twin on the other
    numeric path, retrained here too, differs from it beyond the tolerance: a 50-layer batch-normalised
    ReLU net is (its paths differ ~2% at step 0); a plain MLP is not, though its tampered record now
    differs from its recorded twin by far more."""
    folder = tmp_path / "results"
    shutil.copytree(made, folder)
    runs = _runs(folder)
    sensitive, plain = runs["deep_mlp", "pinned", 50], runs["deep_mlp", "pinned", 20]

    def moved(r):
        r["provenance"]["cpu"] = "Another CPU model"
        r["summary"]["grad_ratio_init"] *= 1.05

    _edit(sensitive, moved)
    _edit(plain, moved)
    out = vanex("verify", str(folder), f"--run={sensitive.name}", f"--run={plain.name}", "--jobs", "2")
    assert out.returncode == 1, out.stderr
    assert "their 2 twins on the other path too" in out.stderr
    assert "rounding-sensitive here" in _said(out.stderr, sensitive)
    assert "MOVED at step 0" in _said(out.stderr, plain)
    assert "1 of 2 runs did not come out as recorded" in out.stderr


def test_damaged_or_foreign_records_are_named_never_a_traceback(made, tmp_path):
    folder = tmp_path / "results"
    shutil.copytree(made, folder)
    runs = _runs(folder)
    shutil.copytree(runs["rnn_copy", "pinned", None], folder / "copy_of_a_record")  # its id is not its folder's
    cut = runs["transformer", "pinned", 6]
    (cut / "probes.csv").write_text((cut / "probes.csv").read_text()[:300])
    foreign = runs["resnet", "pinned", 20]
    _edit(foreign, lambda r: r["settings"].update(mitigations=["not_installed_here"]))
    _edit(runs["rnn_digits", "generic", None], lambda r: r.pop("seed"))
    out = vanex("verify", str(folder), f"--run={cut.name}", f"--run={foreign.name}", f"--run={cut.name[:6]}")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "passed over 2 records: 2 malformed" in out.stderr and "copy_of_a_record" in out.stderr
    assert "NOT CHECKED" in _said(out.stderr, foreign) and "not_installed_here" in _said(out.stderr, foreign)
    assert "NOT CHECKED" in _said(out.stderr, cut) and "probes.csv" in _said(out.stderr, cut)
    assert "2 of 2 runs did not come out as recorded" in out.stderr  # the repeated --run is one run


@pytest.mark.slow
def test_the_committed_report_s_records_come_out_as_recorded_here():
    """A sample of the runs behind reports/, one or more of every task, retrained on this machine:
    bit for bit on the CPU model that made the report, within the step-0 tolerance on any other."""
    out = vanex("verify", str(ROOT / "reports"), "--sample", "5", "--max-seconds", "5", "--jobs", "2")
    assert out.returncode == 0, out.stderr
    assert "all 5 runs came out as recorded" in out.stderr, out.stderr
    tasks = {line.split()[2] for line in out.stderr.splitlines() if line.lstrip().startswith("[")}
    assert tasks == {"deep_mlp", "rnn_copy", "resnet", "transformer"}, out.stderr


def test_a_record_rebuilds_as_the_same_run_whatever_its_profile_scaled(made):
    """Each record's settings compose its run again (its run id, its settings), also where a seed
    reuses another seed's composition, as a study's plan does."""
    rebuild = Rebuilder(str(made.parent / "elsewhere"))
    for path in sorted(made.iterdir()):
        if (path / "run.json").is_file():
            record = json.loads((path / "run.json").read_text())
            assert record["settings"]["profile.steps_scale"] == 0.01
            for seed in (record["seed"], 7):  # the second from the first's composition
                settings = {**record["settings"], "seed": seed}
                planned = rebuild({**record, "settings": settings, "run_id": run_id(settings)})
                assert (
                    planned.run_id == run_id(settings)
                    and planned.settings == settings
                    and planned.config["seed"] == seed
                )
    assert len(rebuild.composed) == 8  # one composition a configuration
    with pytest.raises(UserError, match="rebuild as run"):
        rebuild({**record, "run_id": "0" * 16})
    assert "task.steps=300" in overrides({"task.steps": 3, "profile.steps_scale": 0.01}, "r")
    assert "task.steps=1" in overrides({"task.steps": 1, "profile.steps_scale": 1.0}, "r")


def _record(rid: str, task: str, wall: float, ratio: float = 1.0, numerics: str = "pinned") -> dict:
    return {
        "run_id": rid,
        "task": task,
        "settings": {"task": task, "task.depth": 3, "seed": 0, "numerics": numerics},
        "provenance": {"wall_time_s": wall},
        "summary": {"grad_ratio_init": ratio},
    }


def test_a_sample_is_drawn_in_turn_from_every_task_among_short_runs():
    records = [_record(f"a{i}", "deep_mlp", 0.1) for i in range(20)] + [_record("b0", "rnn_copy", 1.0)]
    records += [_record("c0", "resnet", 50.0)]  # too long for the default bound
    chosen = select(records, [], 3, 10.0, seed=0)
    assert [r["task"] for r in chosen].count("rnn_copy") == 1 and len(chosen) == 3
    assert all(r["task"] != "resnet" for r in chosen)
    assert select(records, [], 3, 10.0, seed=0) == chosen and select(records, [], 3, 10.0, seed=1) != chosen
    assert len(select(records, [], 0, 10.0, seed=0)) == 21
    assert select(records, ["c0"], 3, 10.0, seed=0) == [records[-1]]  # named: whatever its length
    with pytest.raises(Exception, match="20 records"):
        select(records, ["a"], 3, 10.0, seed=0)


def test_a_run_s_twin_is_its_other_numeric_path_and_step_0_is_held_to_the_tolerance():
    close = [_record("p", "deep_mlp", 0.1, 1.0), _record("g", "deep_mlp", 0.1, 1.0 + 1e-6, "generic")]
    far = [_record("P", "resnet", 0.1, 1.0), _record("G", "resnet", 0.1, 1.06, "generic")]
    far = [{**r, "settings": {**r["settings"], "task": "resnet"}} for r in far]
    alone = {**_record("q", "deep_mlp", 0.1), "settings": {**close[0]["settings"], "task.depth": 4}}
    assert {k: v["run_id"] for k, v in twins(close + far + [alone], [close[0], far[1], alone]).items()} == {
        "p": "g",
        "G": "P",
    }
    assert step0_moves(close[0], close[1]) == [] and step0_moves(far[0], far[1])


@pytest.mark.parametrize(
    "args, says",
    [
        (["/nonexistent/folder"], "is not a folder"),
        ([""], "FOLDER is empty"),
        (["--run", "zzzz"], "--run zzzz: no finished record's id starts with it"),
        (["--run", ""], "--run is empty"),
        (["--sample", "-1"], "--sample must be 0 (all) or more"),
        (["--jobs", "0"], "--jobs must be a number of processes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(made, args, says):
    out = vanex("verify", *(args if args[0].startswith("/") or not args[0] else [str(made), *args]))
    assert out.returncode == 2 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
