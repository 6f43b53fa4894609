"""Leases: a run is claimed before it trains, so sweeps sharing a results folder never train it twice.

A lease is ``<results>/_leases/<run_id>.lease``, created with ``O_CREAT | O_EXCL`` (atomic on a
local disk and on NFS v3+), holding its owner (host, pid) and renewed by a heartbeat that touches
its modification time every quarter of the timeout. A lease is stale when its heartbeat is older
than the timeout (``VANEX_LEASE_TIMEOUT`` seconds, default 120) or its owner is a process of
this host that no longer runs: the next claimant renames it away (only one rename of the same file
succeeds) and claims the run afresh. A lease is removed when its run ends, whatever the outcome.
Leases only coordinate work: they never change a record.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from vanex.errors import UserError
from vanex.records.store import pid_alive

LEASES_DIR = "_leases"


def timeout() -> float:
    """Seconds without a heartbeat after which a lease is stale."""
    value = os.environ.get("VANEX_LEASE_TIMEOUT", "120")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:  # inf: a dead sweep's lease would hold its run for ever
        from vanex.errors import UserError

        raise UserError(f"VANEX_LEASE_TIMEOUT must be a positive, finite number of seconds, not {value!r}")
    return seconds


class Lease:
    """The claim on one run; ``acquire`` returns None when this process holds it, else the holder."""

    def __init__(self, results_dir: str | Path, rid: str) -> None:
        self.path = Path(results_dir) / LEASES_DIR / f"{rid}.lease"
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.timeout = timeout()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"owner": self.owner, "claimed_at": time.time()}, f)
        except OSError:  # a full disk: leave no empty claim that would hold the run until it ages out
            self.path.unlink(missing_ok=True)
            raise
        return True

    def _read(self, path: Path) -> tuple[str, float] | None:
        """(owner, age in seconds) of the lease file at ``path``; None if it is gone or unreadable."""
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        try:
            return str(json.loads(path.read_text()).get("owner", "unknown")), age
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # created, not yet written by its claimant: held until it ages out
            return "a sweep writing its claim", age

    def _stale(self, owner: str, age: float) -> bool:
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        dead = host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))
        return dead or age > self.timeout

    def holder(self) -> str | None:
        """The live lease's owner, or None if there is none or it is stale: no heartbeat within the
        timeout, or its owner is a process of this host that no longer runs (killed, interrupted)."""
        found = self._read(self.path)
        return None if found is None or self._stale(*found) else found[0]

    def acquire(self) -> str | None:
        folder(self.path.parent.parent).mkdir(parents=True, exist_ok=True)
        if not self._create():
            found = self._read(self.path)
            if found is not None and not self._stale(*found):
                return found[0]
            tomb = self.path.with_name(f"{self.path.name}.stale.{uuid.uuid4().hex[:8]}")
            try:
                os.rename(self.path, tomb)  # reclaim the stale lease: one claimant wins the rename
                moved = self._read(tomb)
                if found is not None and moved is not None and moved[0] != found[0]:
                    # a fresh lease replaced the stale one before the rename: put it back, untouched
                    try:
                        os.link(tomb, self.path)
                    except FileExistsError:
                        pass
                    tomb.unlink()
                    return moved[0]
                tomb.unlink()
            except FileNotFoundError:
                pass  # another claimant reclaimed it first
            if not self._create():
                return self.holder() or "another sweep"
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.timeout / 4):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still this one."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            if json.loads(self.path.read_text()).get("owner") == self.owner:
                self.path.unlink()
        except (OSError, ValueError):
            pass


def folder(results_dir: str | Path) -> Path:
    """Where ``results_dir`` keeps its leases; refused in one line where a file stands there."""
    path = Path(results_dir) / LEASES_DIR
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is not a folder; vanex keeps its run leases there: move it away")
    return path


def clear_stale(results_dir: str | Path, run_ids: list[str]) -> int:
    """Remove the stale leases of ``run_ids`` (runs already finished, whose owner died between
    writing the record and removing its lease); returns how many were removed."""
    folder(results_dir)  # a study refuses a damaged folder before it trains anything
    removed = 0
    for rid in run_ids:
        if (Path(results_dir) / LEASES_DIR / f"{rid}.lease").exists():
            lease = Lease(results_dir, rid)
            if lease.acquire() is None:
                lease.release()
                removed += 1
    return removed
