"""``vanex verify``: retrain recorded runs and check that they come out as recorded.

Each selected record is rebuilt from its own settings (every setting is in ``run.json``; the
rebuilt run must have the record's run id), trained again in a temporary folder on the record's
numeric path (in ``--jobs`` worker processes, as a study trains), and compared with the record:

- on the CPU model and ``torch`` version that trained it (``provenance``): **bit for bit**: status,
  error, settings, task info, summary, diagnosis, and every probe value the record holds (a report's
  bundle holds the series its claims and diagnosis read; a results folder holds them all). This is
  the promise of pinned numerics; a record that moves is a bug, or, for a record made by other code
  (*stale*), a sign that the change moved it.
- elsewhere: the step-0 values (the untrained network's gradient ratios and norm) within
  ``tolerance.STEP0_REL_TOL``, as ``vanex compare`` holds them across CPU models, except for a
  *rounding-sensitive* run (its twin on the other numeric path, in the same records, differs from it
  beyond that tolerance: rounding alone moves it that far). Trained values are not expected to
  agree run by run across CPU models (``vanex compare`` judges them per cell); what moved is shown.

Nothing in the folder read is written. Exit 0 when every run reproduced, 1 when one did not, 2 on
bad input.
"""

from __future__ import annotations

import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from vanex.engine.config import compose, prepare
from vanex.engine.plan import PlannedRun
from vanex.engine.study import _local
from vanex.errors import UserError
from vanex.records import code
from vanex.records.bundle import records_of
from vanex.records.store import FINISHED, OldRecord, dumps, identity_settings, load_run, read_probes, set_label
from vanex.records.tolerance import STEP0_REL_TOL, equal

GROUPS = {"task": "task", "optim.name": "optim", "profile.name": "profile"}  # settings that name a config group
COMPARED = ("status", "error", "task", "mitigations", "seed", "settings", "task_info", "summary", "diagnosis")
STEP0 = (  # (section, key): the untrained network's values, equal across CPU models within the tolerance
    ("summary", "grad_ratio_init"),
    ("init", "grad_ratio"),
    ("init", "log10_grad_ratio"),
    ("init", "log10_backward_ratio"),
    ("init", "grad_norm_global"),
)


def _value(v: Any) -> str:
    """``v`` as a Hydra override value that parses back to the same Python value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))


def overrides(settings: dict[str, Any], results_dir: str) -> list[str]:
    """The overrides that compose the run whose flat ``settings`` a record holds. A profile's step
    scale was applied to ``task.steps`` before it was recorded, so the scaled steps are given back
    unscaled (the scale itself is only a record of the profile)."""
    settings = dict(settings)
    scale = settings.get("profile.steps_scale", 1.0)
    steps = settings.get("task.steps")
    if isinstance(steps, int) and scale and scale != 1.0:
        unscaled = round(steps / scale)
        if max(1, round(unscaled * scale)) == steps:
            settings["task.steps"] = unscaled
    out = [f"mitigation=[{','.join(settings.pop('mitigations', []))}]"]
    for key, group in GROUPS.items():
        if key in settings:
            out.append(f"{group}={settings.pop(key)}")
    out += [f"{k}={_value(v)}" for k, v in settings.items()]
    return [*out, f"results_dir={results_dir}", "progress=false"]


def rebuild(record: dict[str, Any], results_dir: str) -> PlannedRun:
    """The planned run that trains ``record``'s configuration again into ``results_dir``."""
    cfg = compose(overrides(record["settings"], results_dir))
    spec = prepare(cfg, training=False)
    if spec.run_id != record["run_id"]:
        moved = sorted(
            k for k in set(spec.settings) | set(record["settings"]) if spec.settings.get(k) != record["settings"].get(k)
        )
        raise UserError(
            f"run {record['run_id']}: its settings rebuild as run {spec.run_id} (differing: "
            f"{', '.join(moved) or 'none'}); the record was made by a vanex whose settings differ from this one's"
        )
    return PlannedRun(None, OmegaConf.to_container(cfg, resolve=True), spec.settings, spec.run_id, results_dir)


def _records(folder: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        try:
            record = load_run(path)
        except OldRecord:
            continue
        if record is not None and record.get("status") in FINISHED and isinstance(record.get("settings"), dict):
            yield record, path


def select(
    records: list[dict[str, Any]], runs: list[str], sample: int, max_seconds: float, seed: int
) -> list[dict[str, Any]]:
    """The records named by ``runs`` (ids or unique prefixes), else ``sample`` of those that trained
    within ``max_seconds``, drawn with ``seed`` in turn from each task (0: all of them)."""
    if runs:
        chosen = []
        for prefix in runs:
            found = [r for r in records if r["run_id"].startswith(prefix)]
            if len(found) != 1:
                what = "no finished record" if not found else f"{len(found)} records"
                raise UserError(f"--run {prefix}: {what} in the folder has that id; give a run id (or a unique prefix)")
            chosen.append(found[0])
        return chosen
    short = [r for r in records if float((r.get("provenance") or {}).get("wall_time_s") or 0) <= max_seconds]
    if not sample:
        return short
    rng = random.Random(seed)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(short, key=lambda r: r["run_id"]):
        by_task.setdefault(record["task"], []).append(record)
    for group in by_task.values():
        rng.shuffle(group)
    chosen, queues = [], [by_task[t] for t in sorted(by_task)]
    while len(chosen) < sample and any(queues):
        for queue in queues:
            if queue and len(chosen) < sample:
                chosen.append(queue.pop())
    return chosen


def _same_platform(record: dict[str, Any], here: dict[str, Any]) -> bool:
    prov = record.get("provenance") or {}
    return all(prov.get(k) is not None and prov.get(k) == here.get(k) for k in ("cpu", "torch"))


def _rows(path: Path) -> dict[tuple[int, str, str], float]:
    return {(s, m, layer): v for s, m, layer, v in read_probes(path)}


def bitwise(old: dict[str, Any], old_rows: dict, new: dict[str, Any], new_rows: dict) -> list[str]:
    """Where ``new`` differs from ``old`` in a single bit, in the record and in the probe values ``old`` holds."""
    moved = []
    for key in COMPARED:
        a, b = old.get(key), new.get(key)
        if dumps(a) != dumps(b):
            if isinstance(a, dict) and isinstance(b, dict):
                keys = sorted(k for k in set(a) | set(b) if dumps(a.get(k)) != dumps(b.get(k)))
                moved += [f"{key}.{k}: {_short(a.get(k))} -> {_short(b.get(k))}" for k in keys]
            else:
                moved.append(f"{key}: {_short(a)} -> {_short(b)}")
    rows = [k for k, v in old_rows.items() if k not in new_rows or not _same(v, new_rows[k])]
    if rows:
        s, m, layer = rows[0]
        first = f"{m}[{layer or '-'}] at step {s}: {old_rows[rows[0]]!r} -> {new_rows.get(rows[0], 'absent')!r}"
        moved.append(f"{len(rows)} of {len(old_rows)} probe values, first {first}")
    return moved


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _short(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, float) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _step0(record: dict[str, Any]) -> dict[str, float]:
    out = {}
    for section, key in STEP0:
        holder = record.get("summary") if section == "summary" else ((record.get("diagnosis") or {}).get(section) or {})
        value = (holder or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{section}.{key}"] = float(value)
    return out


def step0_moves(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The step-0 values of ``new`` that differ from ``old``'s by more than the cross-CPU tolerance."""
    a, b = _step0(old), _step0(new)
    return [
        f"{k}: {a[k]!r} -> {b.get(k)!r} (beyond a relative {STEP0_REL_TOL:g})"
        for k in sorted(a)
        if k not in b or not equal(a[k], b[k], False, k)
    ]


def rounding_sensitive(records: list[dict[str, Any]]) -> set[str]:
    """Run ids whose twin on another numeric path (every identity setting equal but ``numerics``)
    differs from them at step 0 beyond the cross-CPU tolerance."""
    twins: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        key = {k: v for k, v in identity_settings(record["settings"]).items() if k != "numerics"}
        twins.setdefault(json.dumps(key, sort_keys=True, default=str), []).append(record)
    out: set[str] = set()
    for group in twins.values():
        if len(group) > 1 and any(step0_moves(x, y) for x in group for y in group):
            out |= {r["run_id"] for r in group}
    return out


def _label(record: dict[str, Any]) -> str:
    settings = record["settings"]
    return (
        f"{record['run_id']} {record['task']} {set_label(record.get('mitigations') or [])} "
        f"seed {record['seed']}, {settings.get('numerics', 'pinned')}"
    )


def verify(folder: str, runs: list[str], sample: int, max_seconds: float, seed: int, jobs: int) -> int:
    """Retrain the selected records of ``folder`` and say, run by run, whether they came out as recorded."""
    from vanex.engine.provenance import provenance  # imports torch: after the cheap checks

    if not Path(folder).is_dir():
        raise UserError(f"'{folder}' is not a folder; give a results folder or a report that ships records.tar.gz")
    with records_of(folder) as source:
        found = list(_records(Path(source)))
        records = [r for r, _ in found]
        paths = {r["run_id"]: p for r, p in found}
        if not records:
            raise UserError(f"'{folder}' holds no finished record (a results folder, or a report with records.tar.gz)")
        chosen = select(records, runs, sample, max_seconds, seed)
        if not chosen:
            raise UserError(f"no record in '{folder}' trained within --max-seconds {max_seconds:g}; raise it")
        sensitive = rounding_sensitive(records)
        import torch

        here = provenance(torch.device("cpu"), 0.0)
        same = sum(_same_platform(r, here) for r in chosen)
        stale = sum(code.stale(r) is not None for r in chosen)
        print(
            f"vanex verify: retraining {len(chosen)} of {len(records)} records of {folder} ({same} on this CPU "
            f"model and torch, bit for bit; {len(chosen) - same} made elsewhere, step-0 values within a relative "
            f"{STEP0_REL_TOL:g}){f'; {stale} made by other code (stale)' if stale else ''}",
            file=sys.stderr,
        )
        with tempfile.TemporaryDirectory(prefix="vanex-verify-") as scratch:
            todo = [rebuild(r, scratch) for r in chosen]
            by_id = {r["run_id"]: r for r in chosen}
            bad, start = 0, time.perf_counter()
            for done, (planned, outcome) in enumerate(_local(todo, jobs), 1):
                old = by_id[planned.run_id]
                where = Path(scratch) / planned.run_id
                new = load_run(where) if (where / "run.json").is_file() else None
                if new is None:
                    verdict, moved = "FAILED", [f"not retrained: {outcome.get('error')}"]
                else:
                    verdict, moved = judge(old, paths[old["run_id"]], new, where, old["run_id"] in sensitive)
                bad += bool(moved)
                why = f" (stale: {code.stale(old)})" if code.stale(old) else ""
                wall = (new or {}).get("provenance", {}).get("wall_time_s", 0.0)
                print(f"  [{done}/{len(todo)}] {_label(old)}: {verdict}{why} ({wall:.1f} s)", file=sys.stderr)
                for line in moved[:6]:
                    print(f"      {line}", file=sys.stderr)
                if len(moved) > 6:
                    print(f"      ... and {len(moved) - 6} more", file=sys.stderr)
    took = time.perf_counter() - start
    if bad:
        print(f"vanex verify: {bad} of {len(chosen)} runs did not come out as recorded ({took:.0f} s)", file=sys.stderr)
        return 1
    runs = f"all {len(chosen)} runs" if len(chosen) > 1 else "the run"
    print(f"vanex verify: {runs} came out as recorded ({took:.0f} s)", file=sys.stderr)
    return 0


def judge(
    old: dict[str, Any], old_at: Path, new: dict[str, Any], new_at: Path, sensitive: bool
) -> tuple[str, list[str]]:
    """The verdict on retrained run ``new`` against its record ``old`` (their folders ``new_at``,
    ``old_at``) and what moved: every bit on the platform that made it, step 0 elsewhere."""
    if _same_platform(old, new["provenance"]):
        moved = bitwise(old, _rows(old_at), new, _rows(new_at))
        return ("MOVED" if moved else "same bits"), moved
    moved = [] if sensitive else step0_moves(old, new)
    if moved:
        return "MOVED at step 0", moved
    return "step 0 within tolerance" + _elsewhere_note(old, new, sensitive), []


def _elsewhere_note(old: dict[str, Any], new: dict[str, Any], sensitive: bool) -> str:
    """What moved in a run retrained on another CPU model, where only step 0 is held to a tolerance."""
    notes = ["rounding-sensitive: step 0 not held"] if sensitive else []
    if old.get("status") != new.get("status"):
        notes.append(f"{old.get('status')} -> {new.get('status')}")
    a, b = (r.get("summary", {}).get("final_train_loss") for r in (old, new))
    if isinstance(a, float) and isinstance(b, float) and math.isfinite(a) and math.isfinite(b) and a:
        notes.append("final loss equal" if a == b else f"final loss {abs(b - a) / abs(a):.1e} relative")
    return f" ({'; '.join(notes)})" if notes else ""
