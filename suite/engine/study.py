"""Running a study: write its manifest, then train every unfinished planned run (``vanex.engine.plan``)
on the local processes of ``--jobs N`` or as the jobs of a Hydra launcher, with leases so that two
sweeps on one results folder never train a run twice, and one progress line per finished run.
Where a run trains never changes its record.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import multiprocessing
import os
import pickle
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from vanex import numerics
from vanex.engine.config import prepare
from vanex.engine.plan import PlannedRun, plan
from vanex.errors import UserError
from vanex.records import code
from vanex.records.store import (
    FINISHED,
    KEEP_STALE,
    OldRecord,
    clean_stale,
    is_finished,
    load_run,
    record_dir,
    write_manifest,
)

CLAIMED, ELSEWHERE = "claimed", "finished elsewhere"  # outcomes of a run another sweep holds or did


def _execute(config: dict[str, Any]) -> dict[str, Any]:
    """Worker entry point: one run, no per-step progress (many run side by side). The run is leased
    first: if another sweep holds it the outcome is ``claimed`` (with the holder), if another sweep
    finished it meanwhile ``finished elsewhere``; neither trains."""
    from vanex.engine.leases import Lease
    from vanex.engine.runner import run

    try:
        spec = prepare(OmegaConf.create({**config, "progress": False}))
        lease = Lease(spec.run.results_dir, spec.run_id)
        holder = lease.acquire()
        if holder is not None:
            return {"status": CLAIMED, "holder": holder}
        try:
            if is_finished(spec.run.results_dir, spec.run_id):
                return {"status": ELSEWHERE}
            return run(spec)
        finally:
            lease.release()
    except Exception as exc:  # anything the run itself did not record: reported as failed, the sweep goes on
        return _failed(f"{type(exc).__name__}: {exc}")


def _failed(error: str) -> dict[str, Any]:
    """The outcome of a run that failed before it could write its own record."""
    return {"status": "failed", "error": error, "summary": {}, "diagnosis": None, "provenance": {"wall_time_s": 0}}


LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm", "ray")
LAUNCHER_PACKAGES = {
    "joblib": "hydra-joblib-launcher",
    "submitit_local": "hydra-submitit-launcher",
    "submitit_slurm": "hydra-submitit-launcher",
    "ray": "hydra-ray-launcher (pip install 'vanex[ray]')",
}


def split_launcher(extra: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra launcher overrides, the cells' own overrides) of a study's command line."""
    launcher = [o for o in extra if o.startswith(("hydra/launcher=", "hydra.launcher."))]
    return launcher, [o for o in extra if o not in launcher]


def run_study(name: str, profile: str, extra: list[str], jobs: int, with_sets: list[list[str]] | None = None) -> int:
    """Write the study's manifest, then run every unfinished cell; returns the number of failed runs.

    Cells run as the jobs of the Hydra launcher ``extra`` selects (``hydra/launcher=basic|joblib|
    submitit_local|submitit_slurm|ray`` and its ``hydra.launcher.*`` settings); without one, in
    ``jobs`` worker processes (:func:`_local`). Where a run trains never changes its record."""
    from vanex.engine.leases import timeout

    timeout()  # a bad VANEX_LEASE_TIMEOUT is refused before anything is planned
    launcher, extra = split_launcher(extra)
    if launcher and not any(o.startswith("hydra/launcher=") for o in launcher):
        raise UserError(f"{launcher[0]} needs a launcher: add hydra/launcher=NAME ({', '.join(LAUNCHERS)})")
    local = not launcher and not (jobs < 2 and os.environ.get(IN_PROCESS) == "1")
    with _warm_workers(min(jobs, os.cpu_count() or 1) if local else 0):
        return _plan_then_run(name, profile, extra, jobs, with_sets, launcher)


def _plan_then_run(
    name: str, profile: str, extra: list[str], jobs: int, with_sets: list[list[str]] | None, launcher: list[str]
) -> int:
    from vanex.engine.leases import clear_stale

    manifest, runs = plan(name, profile, extra, with_sets)
    only = os.environ.get(ONLY_PATH)  # this process runs one numeric path of a study another process planned
    if only is not None and only not in numerics.MODES:
        raise UserError(
            f"{ONLY_PATH}='{only}' is not one of {', '.join(numerics.MODES)} (vanex sets it for its own use)"
        )
    runs = [r for r in runs if r.settings["numerics"] == only] if only else runs
    if only and (parent := os.environ.get(PARENT, "")).isdigit():
        _exit_when_gone(int(parent))  # that study killed (kill -9, a signal to it alone): train no further
    todo = [r for r in runs if not r.finished]
    here = numerics.active_mode()
    elsewhere = sorted({r.settings["numerics"] for r in todo} - {here})
    if _one_path_a_process(launcher, jobs):  # another path: a study process of its own
        todo = [r for r in todo if r.settings["numerics"] == here]
    else:  # this path's cells first, then each other path's, on workers started on that path
        todo.sort(key=lambda r: (r.settings["numerics"] != here, r.settings["numerics"]))
        elsewhere = []
    if launcher:
        execute = _HydraLauncher(launcher, jobs, runs[0].results_dir if runs else ".", profile, extra)
    else:
        execute = functools.partial(_local, jobs=jobs)
    for folder in {r.results_dir for r in runs}:
        if (removed := clean_stale(folder)) > 0:
            print(f"study {name}: removed {removed} temporary folder(s) left by interrupted writes", file=sys.stderr)
        clear_stale(folder, [r.run_id for r in runs if r.finished and r.results_dir == folder])
    if runs and not only:
        path = write_manifest(runs[0].results_dir, manifest)
        print(f"study {name}: manifest {path}", file=sys.stderr)
    finished = sum(r.finished for r in runs)
    stale = [why for r in runs if (record := _finished_record(r)) is not None and (why := code.stale(record))]
    if stale:
        then = "kept (--keep-stale); report and claims mark them"
        if os.environ.get(KEEP_STALE) != "1":
            then = "they run again; --keep-stale keeps them"
        print(f"study {name}: {len(stale)} finished record(s) made by other code ({stale[0]}): {then}", file=sys.stderr)
    if lacking := _lacking_probes(runs):
        probe, count = lacking
        print(
            f"study {name}: {count} finished record(s) hold no series of probe '{probe}' that this study asks for "
            "(probes are not part of a run's identity: another study made them without it); delete those records "
            "to train them again with it, or claims and sections that read it will say it is missing",
            file=sys.stderr,
        )
    print(
        f"study {name} ({profile}{', numerics=' + here if only or elsewhere else ''}): {len(runs)} runs, "
        f"{finished} already finished, {len(todo)} to run here"
        + (f", then the cells on numerics {', '.join(elsewhere)} in their own process" if elsewhere else "")
        + "".join(
            f" ({n} of them on numerics {mode}, in workers of their own)"
            for mode in sorted({r.settings["numerics"] for r in todo} - {here})
            if (n := sum(r.settings["numerics"] == mode for r in todo))
        ),
        file=sys.stderr,
    )
    start = time.perf_counter()
    failed, claimed = _report_progress(execute(todo), len(todo), start, jobs=getattr(execute, "n_jobs", jobs))
    failed += _wait_for(name, claimed, start, execute)
    for mode in elsewhere:
        argv = [name, "--profile", profile, "--jobs", str(jobs), *launcher, *extra]
        argv += [f"--with={','.join(s)}" for s in with_sets or []]
        failed += _on_path(mode, argv, [r for r in runs if r.settings["numerics"] == mode])
    print(f"study {name}: done in {time.perf_counter() - start:.0f}s, {failed} failed", file=sys.stderr)
    if not only:  # what to run next (a second-path study process leaves this to the study that started it)
        print(
            f"study {name}: next, `vanex report --profile {profile}` and `vanex claims --profile {profile}`"
            + (
                f" (with results_dir={runs[0].results_dir}: --results {shlex.quote(str(runs[0].results_dir))})"
                if runs and str(runs[0].results_dir) != "results"
                else ""
            ),
            file=sys.stderr,
        )
    return failed


SOLO_LAUNCHERS = ("hydra/launcher=basic", "hydra/launcher=joblib")  # their jobs train in a _Solo worker process


def _one_path_a_process(launcher: list[str], jobs: int) -> bool:
    """Whether this study process trains only the cells of its own numeric code path: where its runs
    train in processes that fixed their path when they started (a launcher's own job processes:
    submitit, Ray; a study that trains in-process). ``--jobs`` workers and the worker of a ``basic``
    or ``joblib`` job (``_Solo``) are started on each run's path, so those studies train every path."""
    if os.environ.get(IN_PROCESS) == "1" and (launcher or jobs < 2):
        return True
    return bool(launcher) and not any(o in launcher for o in SOLO_LAUNCHERS)


def _lacking_probes(runs: list[PlannedRun]) -> tuple[str, int] | None:
    """(an opt-in probe this study asks for, how many finished records lack every metric of it), or None.
    Only probes outside the default list are checked (the defaults ran in every record that serves them)."""
    import yaml
    from vanex import conf
    from vanex.registry import PROBES

    default = set(yaml.safe_load((conf.HERE / "probe" / f"{conf.default('probe')}.yaml").read_text())["names"])
    for probe in dict.fromkeys(n for r in runs for n in r.config["probe"]["names"] if n not in default):
        metrics = set(PROBES.get(probe).metrics)
        count = 0
        for r in runs:
            path = Path(r.results_dir) / r.run_id / "probes.csv"
            if r.finished and probe in r.config["probe"]["names"] and path.is_file():
                with path.open() as f:
                    count += not any(line.split(",", 2)[1] in metrics for line in itertools.islice(f, 1, None))
        if count:
            return probe, count
    return None


ONLY_PATH = "VANEX_STUDY_NUMERICS"  # set for a study process that runs one numeric path's cells
PARENT = "VANEX_STUDY_PARENT"  # ... with the pid of the study that started it
CHILD = "import sys; del sys.path[0]; from vanex.cli import main; sys.exit(main(sys.argv[1:]))"


def _on_path(mode: str, argv: list[str], runs: list[PlannedRun]) -> int:
    """Run a study's cells of numeric code path ``mode`` in a study process of their own (the code
    paths are fixed before torch loads, so one process cannot train two); returns how many failed."""
    # not `python -m`: it puts the working directory first on sys.path, so a source checkout of another
    # vanex there (its package or its .egg-info's entry points) would train in place of the installed one
    with _spawning(mode):  # the environment a fresh `vanex` on that path starts from (native: the user's)
        env = {**os.environ, ONLY_PATH: mode, PARENT: str(os.getpid())}
        child = subprocess.Popen([sys.executable, "-c", CHILD, "study", *argv], env=env)

    received: list[int] = []

    def stop(signum: int, frame: Any) -> None:  # a TERM to this study stops that one too: nothing trains on
        received.append(signum)
        child.send_signal(signum)  # (no wait here: the interrupted child.wait() holds its lock, and resumes)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received:
        raise SystemExit(128 + received[0])
    if child.returncode == 130:
        raise KeyboardInterrupt
    if child.returncode not in (0, 1):
        raise UserError(f"the study process for numerics={mode} failed (exit {child.returncode}); see above")
    return sum(not is_finished(r.results_dir, r.run_id) for r in runs)


IN_PROCESS = "VANEX_IN_PROCESS"  # "1": a serial study trains in its own process (for a debugger)


def _local(todo: list[PlannedRun], jobs: int) -> Iterator[tuple[PlannedRun, dict[str, Any]]]:
    """``--jobs N``: the cells in N worker processes, started once and reused, each outcome as it ends.
    A worker that dies in a run (a native crash: SIGSEGV in a library) is replaced; its run gets a
    ``failed`` record naming the signal, and the sweep goes on. With ``VANEX_IN_PROCESS=1`` and one
    job, the cells train in this process instead (a native crash then ends the study)."""
    if jobs < 2 and os.environ.get(IN_PROCESS) == "1":
        with _noting_interrupts() as interrupted:
            for planned in todo:
                outcome = _execute(planned.config)
                if interrupted():  # a Ctrl-C that a library turned into an error of its own
                    raise KeyboardInterrupt
                yield planned, outcome
        return
    if not todo:
        return
    from multiprocessing.connection import wait

    os.environ[STUDY_PID] = str(os.getpid())
    pending, busy = list(range(len(todo))), {}

    def path(index: int) -> str:
        return todo[index].settings["numerics"]

    workers = [_new_worker(path(0)) for _ in range(min(jobs, len(todo)))]
    idle, retired = list(workers), []
    with _stopped_on_interrupt(todo):
        try:
            while pending or busy:
                while idle and pending:
                    worker = idle.pop()
                    index = next((i for i in pending if path(i) == worker.mode), pending[0])
                    pending.remove(index)
                    if path(index) != worker.mode:  # nothing left on its path: a worker on the next one
                        worker.stop()
                        workers.remove(worker)
                        retired.append(worker)
                        worker = _new_worker(path(index))
                        workers.append(worker)
                    worker.send(index, todo[index].config)
                    busy[worker] = index
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in list(busy):
                    outcome = worker.outcome()
                    if outcome is not None:
                        idle.append(worker)
                        yield todo[busy.pop(worker)], outcome
                    elif not worker.process.is_alive():
                        index = busy.pop(worker)
                        workers.remove(worker)
                        yield todo[index], _crashed(todo[index], worker.reap())
                        if pending:
                            workers.append(_new_worker(path(pending[0])))
                            idle.append(workers[-1])
        finally:
            for worker in workers:
                worker.stop()
            for worker in workers + retired:
                worker.reap(timeout=10)


_SPARE: list[_Worker] = []  # workers started on this process's path while the study plans (_warm_workers)


@contextlib.contextmanager
def _warm_workers(count: int) -> Iterator[None]:
    """Start ``count`` workers on this process's numeric path now, so that they import torch while the
    study plans its cells (the first run then starts as planning ends); ``_local`` takes them before it
    starts any of its own. Those it did not take (everything finished already, fewer cells than jobs,
    another path first) are ended on the way out: they never trained."""
    if count:
        os.environ[STUDY_PID] = str(os.getpid())
        _SPARE.extend(_Worker() for _ in range(count))
    try:
        yield
    finally:
        spare = list(_SPARE)
        _SPARE.clear()
        for worker in spare:
            worker.process.terminate()
        for worker in spare:
            worker.reap(timeout=10)


def _new_worker(mode: str) -> _Worker:
    """A started worker on numeric path ``mode``: a spare one if there is one, else a new one."""
    spare = next((w for w in _SPARE if w.mode == mode and w.process.is_alive()), None)
    if spare is None:
        return _Worker(mode)
    _SPARE.remove(spare)
    return spare


class _Worker:
    """One worker process, a fresh interpreter (spawned: no fork of torch's threads) that trains each
    config it is sent, one at a time, until it is stopped; shared by ``--jobs`` (a pool of them) and
    the launchers' jobs (``_Solo``). Ctrl-C is ignored in it: the study decides what a Ctrl-C does."""

    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode or numerics.active_mode()
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_worker, args=(theirs,), name="vanex-worker", daemon=True)
        with _spawning(self.mode):  # its code paths, fixed as a `vanex` started with that mode fixes them
            _start_deaf(self.process)
        theirs.close()

    def send(self, index: int, config: dict[str, Any]) -> None:
        self.conn.send((index, config))

    def outcome(self) -> dict[str, Any] | None:
        """The outcome of the run it was sent, once it has sent it back; None while it trains, or when
        the pipe ended because the process died (a native crash)."""
        with contextlib.suppress(EOFError, OSError):
            if self.conn.poll():
                return self.conn.recv()[1]
        return None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)

    def reap(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end (at most ``timeout`` seconds); its exit code."""
        self.process.join(timeout=timeout)
        return self.process.exitcode


@contextlib.contextmanager
def _spawning(mode: str) -> Iterator[None]:
    """While a process is started inside: the environment a fresh ``vanex`` on numeric path ``mode``
    starts from (the code-path variables as this process inherited them, ``VANEX_NUMERICS=mode``), for
    the ``vanex`` import in it to apply; this process's own environment is restored afterwards."""
    keys = (*numerics.PINNED, numerics.MODE_ENV)
    saved = {k: os.environ.get(k) for k in keys}
    try:
        for key, value in (*_inherited().items(), (numerics.MODE_ENV, mode)):
            _set_env(key, value)
        yield
    finally:
        for key, value in saved.items():
            _set_env(key, value)


STUDY_INHERITED = "VANEX_STUDY_INHERITED"  # the study's code-path variables as it inherited them (JSON)


def _inherited() -> dict[str, str | None]:
    """The code-path variables as the study process inherited them: a joblib job's process imported
    vanex under the study's settings, so what it inherited is the study's choice, not the user's."""
    given = os.environ.get(STUDY_INHERITED)
    return json.loads(given) if given else dict(numerics._INHERITED)


def _set_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _start_deaf(worker: Any) -> None:
    """Start ``worker`` with Ctrl-C ignored from its first instruction (an ignored signal stays ignored
    across exec, and Python then installs no handler): a Ctrl-C while it still imports would print a
    traceback from it. The study decides what a Ctrl-C does, and ends its workers."""
    if threading.current_thread() is not threading.main_thread():
        worker.start()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker.start()
    finally:
        signal.signal(signal.SIGINT, previous)


class _Solo:
    """The worker process of the cells a launcher runs in the study's own process (``basic``) or in
    joblib's pool: a run's native crash fails that run only, as with ``--jobs``; the study and the
    pool go on. Started on first use on the run's numeric path, reused by the process's later jobs
    on that path (a run on another path replaces it)."""

    def __init__(self) -> None:
        self.worker: _Worker | None = None

    def run(self, config: dict[str, Any]) -> dict[str, Any]:
        from multiprocessing.connection import wait

        mode = config.get("numerics") or numerics.active_mode()
        if self.worker is not None and self.worker.mode != mode:
            self.close()
        if self.worker is None:
            if multiprocessing.get_start_method(allow_none=True) not in multiprocessing.get_all_start_methods():
                multiprocessing.set_start_method("spawn", force=True)  # a loky worker's own 'loky': unknown to a child
            self.worker = _Worker(mode)
        planned = PlannedRun(None, config, {}, "", config["results_dir"])  # what _crashed and a Ctrl-C need
        with _stopped_on_interrupt([planned]):
            self.worker.send(0, config)
            wait([self.worker.conn, self.worker.process.sentinel])
            outcome = self.worker.outcome()
        if outcome is not None:
            return outcome
        worker, self.worker = self.worker, None
        return _crashed(planned, worker.reap())

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker.reap(timeout=10)
            self.worker = None


_SOLO = _Solo()


def _worker(conn: Any) -> None:
    """The process of a ``_Worker``: runs each (index, config) it is sent, until it is sent None."""
    _exit_with_the_study()
    try:
        while (job := conn.recv()) is not None:
            index, config = job
            conn.send((index, _execute(config)))
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the study ended (killed, or stopped by Ctrl-C)
        sys.exit(1)  # its run's record is already written; no traceback for the study's terminal


def _crashed(planned: PlannedRun, exitcode: int | None) -> dict[str, Any]:
    """The failed record of a run whose worker process died, written in its place."""
    from vanex.engine.leases import Lease
    from vanex.engine.runner import crashed

    how = f"signal {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0 else f"exit {exitcode}"
    error = f"the run's process died ({how}): a native crash in a library, or killed"
    spec = prepare(OmegaConf.create({**planned.config, "progress": False}))
    lease = Lease(spec.run.results_dir, spec.run_id)
    lease.acquire()  # the dead worker's claim: reclaimed at once (its process no longer runs)
    try:
        return crashed(spec, error)
    finally:
        lease.release()


@contextlib.contextmanager
def _noting_interrupts() -> Iterator[Any]:
    """Note every Ctrl-C while cells train in this process: the KeyboardInterrupt may surface inside a
    library that re-raises it as its own error (OmegaConf does), which would read as a failed run and
    let the study go on. Yields a function that says whether one came."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # ignored, or someone else's
    ):
        yield lambda: False
        return

    def note(signum: int, frame: Any) -> None:
        seen.append(signum)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield lambda: bool(seen)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _finished_record(planned: PlannedRun) -> dict[str, Any] | None:
    """``planned``'s record if it is finished (completed or diverged), else None."""
    try:
        record = load_run(record_dir(planned.results_dir, planned.run_id))
    except OldRecord:
        return None
    if record is None or record.get("run_id") != planned.run_id:  # a record of another run is no result of this one
        return None
    return record if record.get("status") in FINISHED else None


@contextlib.contextmanager
def _stopped_on_interrupt(todo: list[PlannedRun]) -> Iterator[None]:
    """On Ctrl-C (any exception), terminate this process's job processes (its workers) at once
    and remove what their unfinished writes left; a job started otherwise exits with the study."""
    try:
        yield
    except BaseException:
        children = multiprocessing.active_children()
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=10)
        for folder in {r.results_dir for r in todo}:
            clean_stale(folder)
        raise


STUDY_PID = "VANEX_STUDY_PID"  # set for the jobs a study launches: the pid of the study process
_watchdog: list[threading.Thread] = []


def _exit_with_the_study() -> None:
    """In a job process the study started on this machine (a worker, a submitit_local job),
    exit as soon as the study is gone (kill -9, a closed terminal) instead of training on. A job
    elsewhere (a SLURM node, a Ray worker) or in the study's own process is left alone."""
    study = os.environ.get(STUDY_PID, "")
    if _watchdog or not study.isdigit() or os.getppid() != int(study):
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the study decides
    _exit_when_gone(int(study))


def _exit_when_gone(parent: int) -> None:
    """Exit this process once ``parent`` is no longer its parent (no clean-up: a record is written whole
    or not at all, and the next study removes what an unfinished write left and takes over its lease)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    _watchdog.append(threading.Thread(target=watch, name="vanex-watchdog", daemon=True))
    _watchdog[-1].start()


SWEEP_MARKS = "VANEX_SWEEP_MARKS"  # set for a launcher's jobs: the folder where each marks a run it trained
# "1" for the basic launcher (jobs in the study's process) and joblib's (in processes of a pool that
# gives up on a native crash in any job): each job trains in a worker of its process (_Solo)
ISOLATE = "VANEX_ISOLATE_JOBS"


def _mark_trained(record: dict[str, Any]) -> None:
    """Tell the study watching this launch (``_HydraLauncher._watched``) that this job trained the
    run whose record it wrote; a job on a machine that cannot reach the folder is reported at the end."""
    marks = os.environ.get(SWEEP_MARKS)
    if marks and record.get("run_id") and record.get("status") in FINISHED:
        with contextlib.suppress(OSError):
            open(os.path.join(marks, record["run_id"]), "w").close()


BATCH = "vanex_batch"  # a job's override: the file of the planned runs it trains (joblib's jobs)
BATCHES_PER_PROCESS = 8  # joblib: so few that Hydra's per-job cost is small, so many that the processes end together


def _launched(cfg) -> dict[str, Any] | list[dict[str, Any]]:
    """The task function a Hydra launcher runs for each cell (in its own process, on a cluster
    node...): lease, train, write the record; returns what the sweep prints of it. A job given a
    batch (``+vanex_batch=FILE``) trains each planned run in that file in turn and returns a list."""
    _exit_with_the_study()
    isolated = os.environ.get(ISOLATE) == "1" and os.environ.get(IN_PROCESS) != "1"
    if cfg.get(BATCH) is not None:
        with open(cfg[BATCH], "rb") as f:
            configs = pickle.load(f)  # written by the study into its scratch folder (_HydraLauncher._launch)
        return [_launched_one(config, isolated) for config in configs]
    return _launched_one(OmegaConf.to_container(cfg, resolve=True), isolated)


def _launched_one(config: dict[str, Any], isolated: bool) -> dict[str, Any]:
    record = _SOLO.run(config) if isolated else _execute(config)
    _mark_trained(record)
    summary = record.get("summary") or {}
    slim = {k: record.get(k) for k in ("status", "holder", "error", "diagnosis")}
    return {
        **slim,
        "summary": {"final_train_loss": summary.get("final_train_loss")},
        "provenance": {"wall_time_s": (record.get("provenance") or {}).get("wall_time_s", 0.0)},
    }


def _launcher_error(overrides: list[str], exc: Exception) -> str:
    """One line for a launcher Hydra cannot load: unknown, or its plugin not installed."""
    chosen = next((o.partition("=")[2] for o in overrides if o.startswith("hydra/launcher=")), "?")
    if chosen not in LAUNCHERS:
        return f"unknown launcher '{chosen}'; valid launchers: {', '.join(LAUNCHERS)}"
    if chosen in LAUNCHER_PACKAGES and "could not find 'hydra/launcher/" in str(exc).lower():
        return f"launcher '{chosen}' is not installed: pip install {LAUNCHER_PACKAGES[chosen]}"
    return f"launcher '{chosen}': {str(exc).splitlines()[0]}"


def _quoted(path: str) -> str:
    """``path`` as a quoted value of a Hydra override (a folder may hold spaces, quotes, '=')."""
    return "'" + path.replace("'", "\\'") + "'"


class _HydraLauncher:
    """Runs planned cells as the jobs of a Hydra launcher plugin (Hydra's launcher API, as its
    sweepers use it): the launcher gets one override list per cell and runs :func:`_launched`."""

    def __init__(self, launcher: list[str], jobs: int, results_dir: str, profile: str, extra: list[str]) -> None:
        self.results_dir = os.path.abspath(results_dir)  # a job's working folder may not be ours (Ray)
        self.results = _quoted(self.results_dir)  # as an override's value
        self.overrides = [*launcher, f"results_dir={self.results}"]
        self.profile, self.extra = profile, extra
        self.joblib, self.ray = "hydra/launcher=joblib" in launcher, "hydra/launcher=ray" in launcher
        self.submitit = any(o.startswith("hydra/launcher=submitit") for o in launcher)
        # submitit_local starts every job it is given at once (it has no parallelism setting; 180
        # cells took a 2-core machine to a load of 320): it is given waves of --jobs cells
        self.wave = jobs if "hydra/launcher=submitit_local" in launcher else None
        self.marks = os.path.join(self.results_dir, ".sweeps", f"{socket.gethostname()}-{os.getpid()}")
        n_jobs = next((o.partition("=")[2] for o in launcher if o.startswith("hydra.launcher.n_jobs=")), None)
        self.n_jobs = jobs
        if self.joblib and n_jobs is None:
            self.overrides.append(f"hydra.launcher.n_jobs={jobs}")  # --jobs N is joblib's n_jobs
        elif self.joblib and n_jobs.strip() in ("0", "+0", "-0"):
            raise UserError("hydra.launcher.n_jobs=0 runs nothing; give a number of processes, or -1 for every core")
        elif self.joblib:
            with contextlib.suppress(ValueError):
                self.n_jobs = int(n_jobs) if int(n_jobs) > 0 else os.cpu_count() or 1
        self.next_index = 0
        self._with_launcher(lambda launcher: None)  # refuses an unknown or uninstalled launcher before any work

    def _with_launcher(self, use):
        """``use(launcher)`` inside a Hydra context: the selected launcher plugin, set up to run
        :func:`_launched` with the primary config and the launcher overrides."""
        from hydra import compose as hydra_compose
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.plugins import Plugins
        from hydra.errors import HydraException
        from hydra.types import HydraContext
        from vanex.engine.config import conf_dir, hydra_private, searchpath_override

        safe_path = os.environ.get("PYTHONSAFEPATH")
        os.environ[STUDY_PID] = str(os.getpid())
        os.environ[SWEEP_MARKS] = self.marks
        os.environ[ISOLATE] = "1" if any(o in self.overrides for o in SOLO_LAUNCHERS) else "0"
        os.environ[STUDY_INHERITED] = json.dumps(_inherited())  # for the workers of joblib's processes
        # Jobs start Python with `-m` (submitit) or `-c` (joblib), which puts the working folder first
        # on sys.path: started in a source checkout, they would import its `suite`, not the installed
        # one the study runs. PYTHONSAFEPATH (Python 3.11+) keeps the working folder off sys.path.
        os.environ["PYTHONSAFEPATH"] = "1"
        try:
            with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="vanex_study"):
                cfg = hydra_compose("config", [*self.overrides, *searchpath_override()], return_hydra_config=True)
                context = HydraContext(
                    config_loader=GlobalHydra.instance().config_loader(), callbacks=hydra_private().Callbacks(cfg)
                )
                launcher = Plugins.instance().instantiate_launcher(
                    hydra_context=context, task_function=_launched, config=cfg
                )
                return use(launcher)
        except HydraException as exc:
            raise UserError(_launcher_error(self.overrides, exc)) from None
        finally:
            if safe_path is None:
                os.environ.pop("PYTHONSAFEPATH", None)
            else:
                os.environ["PYTHONSAFEPATH"] = safe_path

    def __call__(self, todo: list[PlannedRun]) -> Iterator[tuple[PlannedRun, dict[str, Any]]]:
        """Outcomes of ``todo``: with the in-process ``basic`` launcher, one launch per cell; with any
        other, one launch of all cells (the launcher schedules them), each reported as its record appears."""
        if "hydra/launcher=basic" in self.overrides:
            try:
                with _noting_interrupts() as interrupted:
                    for planned in todo:
                        outcomes = self._launch([planned])
                        if interrupted():  # as in a serial study without a launcher
                            raise KeyboardInterrupt
                        yield from outcomes
            finally:
                _SOLO.close()
        else:
            wave = self.wave or max(1, len(todo))
            for start in range(0, len(todo), wave):
                yield from self._watched(todo[start : start + wave])

    def _watched(self, todo: list[PlannedRun]) -> Iterator[tuple[PlannedRun, dict[str, Any]]]:
        """Launch ``todo`` in a thread (a launcher returns only when every job has ended) and yield each
        finished record as it appears on disk, then the outcomes of the rest (failed, held elsewhere).
        A record is reported as it appears only if one of this launch's jobs marked it as trained
        (``_mark_trained``): a record another sweep writes meanwhile is that sweep's, reported as such."""
        ended: dict[str, Any] = {}
        os.makedirs(self.marks, exist_ok=True)

        def launch() -> None:
            try:
                ended["outcomes"] = self._launch(todo)
            except BaseException as exc:  # re-raised in the caller's thread
                ended["error"] = exc

        thread = threading.Thread(target=launch, name="vanex-launch", daemon=True)
        thread.start()
        reported: set[str] = set()
        try:
            with _stopped_on_interrupt(todo):
                while True:
                    running = thread.is_alive()  # read before the scan, so nothing written before the end is missed
                    for planned in todo:
                        if planned.run_id in reported or not os.path.exists(os.path.join(self.marks, planned.run_id)):
                            continue
                        if (record := _finished_record(planned)) is not None:
                            reported.add(planned.run_id)
                            yield planned, record
                    if not running:
                        break
                    thread.join(timeout=1.0)
        finally:
            shutil.rmtree(self.marks, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(self.marks))  # .sweeps, unless another sweep's marks are there
        if "error" in ended:
            raise ended["error"]
        yield from ((p, outcome) for p, outcome in ended["outcomes"] if p.run_id not in reported)

    def _batches(self, todo: list[PlannedRun]) -> list[list[PlannedRun]]:
        """joblib's jobs: about 8 batches a process, since each job costs Hydra a composition and an
        output folder (~0.5 s; a 100-step deep_mlp run trains in ~1.5 s), each of one numeric path
        (its process's worker then stays on that path), the path's runs dealt round the batches so that
        a cell's long runs do not end up in one batch that the other processes wait for; every other
        launcher's: one run a job (a SLURM array task or a Ray task per run)."""
        if not self.joblib:
            return [[planned] for planned in todo]
        size = max(1, len(todo) // (BATCHES_PER_PROCESS * self.n_jobs))
        batches = []
        for _, group in itertools.groupby(todo, key=lambda planned: planned.settings["numerics"]):
            runs = list(group)
            count = math.ceil(len(runs) / size)
            batches += [runs[i::count] for i in range(count)]
        return batches

    def _launch(self, todo: list[PlannedRun]) -> list[tuple[PlannedRun, dict[str, Any]]]:
        batches = self._batches(todo)
        with tempfile.TemporaryDirectory(prefix="vanex-sweep-") as scratch:
            jobs = []
            for number, batch in enumerate(batches):
                jobs.append([*batch[0].cell.hydra_overrides(self.profile, self.extra), f"results_dir={self.results}"])
                if self.joblib:
                    path = os.path.join(scratch, f"batch-{number}.pkl")
                    with open(path, "wb") as f:
                        pickle.dump([planned.config for planned in batch], f)
                    jobs[-1].append(f"+{BATCH}={_quoted(path)}")
            # Hydra's sweep folder holds only empty job folders, except submitit's logs
            scratch_dirs = [] if self.submitit else [f"hydra.sweep.dir={_quoted(scratch)}"]
            if self.joblib:
                scratch_dirs.append(f"hydra.launcher.temp_folder={_quoted(scratch)}")
            if self.ray:  # Ray puts the driver's working folder first on its workers' sys.path unless a
                # working_dir is given: run in a source checkout, they would import its `suite`
                scratch_dirs.append(f"++hydra.launcher.ray.init.runtime_env.working_dir={_quoted(scratch)}")
            overrides, self.overrides = self.overrides, self.overrides + scratch_dirs
            try:
                returns = self._with_launcher(lambda launcher: launcher.launch(jobs, initial_job_idx=self.next_index))
            except (UserError, KeyboardInterrupt):
                raise
            except Exception as exc:  # the launcher gave up (joblib: a job's process died of a signal)
                error = f"the launcher stopped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                return [(planned, _failed(error)) for planned in todo]  # finished records are reported as such
            finally:
                self.overrides = overrides
        self.next_index += len(batches)
        outcomes = []
        for batch, job in zip(batches, returns, strict=True):
            try:
                value = job.return_value
                outcomes.extend(zip(batch, value if isinstance(value, list) else [value], strict=True))
            except Exception as exc:  # the job itself failed outside the run (the launcher, the node...)
                error = f"{type(exc).__name__}: {exc}"
                outcomes.extend((planned, _failed(error)) for planned in batch)
        return outcomes


def _wait_for(name: str, claimed: list[PlannedRun], start: float, execute) -> int:
    """Wait for the runs another sweep holds: each ends finished by it, or, if its lease goes stale
    (the other sweep died), is claimed and run here. Returns the number of those that failed here."""
    from vanex.engine.leases import timeout

    if claimed:
        print(f"study {name}: waiting for {len(claimed)} run(s) another sweep is training", file=sys.stderr)
    failed, poll = 0, min(5.0, timeout() / 4)
    while claimed:
        time.sleep(poll)
        again = list(execute(claimed))
        more_failed, claimed = _report_progress(again, len(again), start, quiet_claimed=True)
        failed += more_failed
    return failed


def _duration(seconds: float) -> str:
    """'45s', '12 min' or '1.5 h': an estimate of the time left, as a person reads it."""
    return (
        f"{seconds:.0f}s"
        if seconds < 90
        else f"{seconds / 60:.0f} min"
        if seconds < 5400
        else f"{seconds / 3600:.1f} h"
    )


def _time_left(walls: list[float], remaining: int, jobs: int) -> float:
    """Seconds the ``remaining`` runs take on ``jobs`` workers, each a finished run's mean wall time:
    spread over the workers, but never less than one run while one is left (the last run alone on a
    worker is not sped up by the idle ones)."""
    return statistics.fmean(walls) * max(remaining / max(1, jobs), min(remaining, 1)) if walls else 0.0


def _report_progress(
    results, total: int, start: float, quiet_claimed: bool = False, jobs: int = 1
) -> tuple[int, list[PlannedRun]]:
    """Print one line per finished run; returns (how many failed, the runs another sweep holds)."""
    failed, claimed, walls = 0, [], []
    for i, (planned, record) in enumerate(results, 1):
        cell = planned.cell
        where = f"[{i}/{total}] {cell.label} {' '.join(cell.overrides)} seed={cell.seed}"
        if record["status"] == CLAIMED:
            claimed.append(planned)
            if not quiet_claimed:
                print(f"{where}: claimed by another sweep ({record['holder']}); will wait for it", file=sys.stderr)
            continue
        if record["status"] == ELSEWHERE:
            print(f"{where}: finished by another sweep", file=sys.stderr)
            continue
        diagnosis = record.get("diagnosis") or {}
        verdict = "/".join(diagnosis[part]["verdict"] for part in ("init", "training")) if diagnosis else "-"
        loss = record["summary"].get("final_train_loss")
        loss_text = "" if loss is None else f" final_train_loss={loss:.4g}"
        elapsed, wall = time.perf_counter() - start, float(record["provenance"]["wall_time_s"])
        walls += [wall] if wall > 0 else []  # a run that failed to start took no time a run left will take
        # the pace so far (it counts what runs cost beyond training) or, when fewer runs are left than
        # workers, the time of the last run itself, whichever is longer
        seconds = max(elapsed / i * (total - i), _time_left(walls, total - i, jobs))
        left = f", ~{_duration(seconds)} left" if i < total else ""
        print(
            f"{where}: {record['status']} (init/training {verdict})"
            f"{loss_text} ({wall:.1f}s, {elapsed:.0f}s total{left})",
            file=sys.stderr,
        )
        if record["status"] == "failed":
            failed += 1
            print(f"    error: {record['error']}", file=sys.stderr)
    return failed, claimed
