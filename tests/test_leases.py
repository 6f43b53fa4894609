"""Leases: two sweeps on one results folder never train a run twice, and a dead sweep's claims
are taken over."""

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

import pytest
from helpers import vanex
from vanex.engine.leases import Lease


def _lease_file(results: Path, rid: str, owner: str, age: float) -> Path:
    path = results / "_leases" / f"{rid}.lease"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"owner": owner}))
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def test_a_held_lease_is_refused_until_released(tmp_path):
    first, second = Lease(tmp_path, "abc"), Lease(tmp_path, "abc")
    assert first.acquire() is None
    assert second.acquire() == first.owner
    first.release()
    assert not first.path.exists() and second.acquire() is None
    second.release()


def test_the_heartbeat_keeps_a_long_run_claimed(tmp_path, monkeypatch):
    monkeypatch.setenv("VANEX_LEASE_TIMEOUT", "0.4")
    lease = Lease(tmp_path, "abc")
    assert lease.acquire() is None
    time.sleep(1.0)  # 2.5 timeouts: only the heartbeat keeps it fresh
    assert Lease(tmp_path, "abc").acquire() == lease.owner
    lease.release()


def test_a_lease_without_heartbeat_is_reclaimed(tmp_path, monkeypatch):
    monkeypatch.setenv("VANEX_LEASE_TIMEOUT", "5")
    _lease_file(tmp_path, "abc", "other-node:123:x", age=2)
    assert Lease(tmp_path, "abc").acquire() == "other-node:123:x"  # fresh: another node's sweep holds it
    _lease_file(tmp_path, "abc", "other-node:123:x", age=10)
    lease = Lease(tmp_path, "abc")
    assert lease.acquire() is None and json.loads(lease.path.read_text())["owner"] == lease.owner
    lease.release()
    assert list((tmp_path / "_leases").iterdir()) == []  # nothing left behind


def test_a_lease_of_a_dead_process_on_this_host_is_reclaimed_at_once(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lease_file(tmp_path, "abc", f"{socket.gethostname()}:{dead.pid}:x", age=0)
    lease = Lease(tmp_path, "abc")
    assert lease.acquire() is None
    lease.release()


def test_a_claim_that_a_full_disk_cut_short_leaves_no_empty_lease(tmp_path, monkeypatch):
    """The lease file is created, then its write fails (ENOSPC): it is removed, so the next sweep can
    claim the run at once instead of waiting the lease timeout on a 0-byte claim."""
    import errno

    from vanex.engine import leases

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(leases.json, "dump", full)
    with pytest.raises(OSError, match="No space left"):
        Lease(tmp_path, "abc").acquire()
    assert not list((tmp_path / leases.LEASES_DIR).iterdir())
    monkeypatch.undo()
    lease = Lease(tmp_path, "abc")
    assert lease.acquire() is None
    lease.release()


def test_a_bad_lease_timeout_is_one_clear_error(tmp_path):
    env = {**os.environ, "VANEX_LEASE_TIMEOUT": "soon"}
    out = vanex("study", "mlp_meanfield", "--profile", "smoke", f"results_dir={tmp_path}", env=env)
    assert out.returncode == 2 and "VANEX_LEASE_TIMEOUT must be a positive, finite number" in out.stderr
    env["VANEX_LEASE_TIMEOUT"] = "inf"
    infinite = vanex("study", "rnn_init", "--profile", "smoke", f"results_dir={tmp_path}", env=env)
    assert infinite.returncode == 2 and "not 'inf'" in infinite.stderr


TRAINED = re.compile(r"^\[\d+/\d+\] .*: (completed|diverged|failed) \(", re.M)


@pytest.mark.slow
def test_two_sweeps_on_one_folder_train_every_run_exactly_once(tmp_path):
    results = tmp_path / "results"
    command = [
        str(Path(sys.executable).with_name("vanex")),
        *("study", "mlp_meanfield", "--profile", "smoke", "--jobs", "1", f"results_dir={results}"),
    ]
    sweeps = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in sweeps]
    assert all(p.returncode == 0 for p in sweeps), errs
    runs = len(list(results.glob("*/run.json")))
    trained = [len(TRAINED.findall(err)) for err in errs]
    assert sum(trained) == runs == 205, trained  # each run trained by exactly one of the two (95 on the generic path)
    assert all(n > 0 for n in trained)  # and both did work
    assert "claimed by another sweep" in errs[0] + errs[1]
    assert list((results / "_leases").iterdir()) == []


@pytest.mark.slow
def test_a_killed_sweep_leaves_a_lease_that_the_next_one_reclaims(tmp_path, twice):
    for attempt in range(5):  # a smoke run is ~0.1 s: on a loaded machine it may end between the look and the kill
        results = tmp_path / f"results{attempt}"
        command = [
            str(Path(sys.executable).with_name("vanex")),
            *("study", "mlp_meanfield", "--profile", "smoke", "--jobs", "1", f"results_dir={results}"),
        ]
        proc = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:  # kill it while it trains a run (two finished, one leased)
            if len(list(results.glob("*/run.json"))) >= 2 and list(results.glob("_leases/*.lease")):
                break
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # the study and its worker, as a lost machine: no clean-up at all
        proc.wait()
        leases = list((results / "_leases").glob("*.lease"))
        if leases:
            break
    assert len(leases) == 1, leases
    held = leases[0].stem
    written = (results / held / "run.json").is_file()  # killed between writing its record and releasing it
    for run in (twice / "a").iterdir():  # the other runs finished elsewhere (the shared smoke records, same code)
        if (run / "run.json").is_file() and run.name != held and not (results / run.name).exists():
            shutil.copytree(run, results / run.name)
    again = vanex("study", "mlp_meanfield", "--profile", "smoke", "--jobs", "1", f"results_dir={results}")
    to_run = [int(n) for n in re.findall(r"(\d+) to run here", again.stderr)]  # per numeric path
    assert again.returncode == 0 and sum(to_run) == (not written), again.stderr  # the dead sweep's run alone
    assert "claimed by another sweep" not in again.stderr  # the dead owner's claim was taken over at once
    assert json.loads((results / held / "run.json").read_text())["status"] in ("completed", "diverged")
    assert list((results / "_leases").iterdir()) == []


def test_clear_stale_removes_dead_claims_and_keeps_live_ones(tmp_path, monkeypatch):
    from vanex.engine.leases import clear_stale

    monkeypatch.setenv("VANEX_LEASE_TIMEOUT", "5")
    _lease_file(tmp_path, "old", "other-node:1:x", age=60)
    live = _lease_file(tmp_path, "new", "other-node:2:x", age=1)
    assert clear_stale(tmp_path, ["old", "new", "none"]) == 1
    assert [p.name for p in (tmp_path / "_leases").iterdir()] == [live.name]


def test_a_lease_still_being_written_is_held_until_it_ages_out(tmp_path, monkeypatch):
    monkeypatch.setenv("VANEX_LEASE_TIMEOUT", "5")
    path = _lease_file(tmp_path, "abc", "x", age=0)
    path.write_text("")  # created with O_EXCL, its owner not yet written: read as garbage, not as stale
    assert Lease(tmp_path, "abc").acquire() == "a sweep writing its claim"
    past = time.time() - 60
    os.utime(path, (past, past))  # a claimant that died between the two steps: reclaimed after the timeout
    lease = Lease(tmp_path, "abc")
    assert lease.acquire() is None
    lease.release()
