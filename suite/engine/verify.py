"""``vanex verify``: retrain recorded runs and check that they come out as recorded.

Each selected record is rebuilt from its own settings (every setting is in ``run.json``; the
rebuilt run must have the record's run id), trained again in a temporary folder on the record's
numeric path (in ``--jobs`` worker processes, as a study trains), and compared with the record:

- where this machine has the CPU model, ``torch`` version and GPU that trained it (``provenance``):
  **bit for bit**: status, error, settings, task info, summary, diagnosis, and every probe value the
  record holds (a report's bundle holds the series its claims and diagnosis read; a results folder
  holds them all). This is the promise of pinned numerics; a record that moves is a bug, or, for a
  record made by other code (*stale*), a sign that the change moved it.
- elsewhere: the step-0 values (the untrained network's gradient ratios and norm) within
  ``tolerance.STEP0_REL_TOL``, as ``vanex compare`` holds them across CPU models, except for a run
  that is *rounding-sensitive here*: its twin on the other numeric path (every other setting
  equal) is retrained too, and the two differ at step 0 beyond that tolerance on this machine, so
  rounding alone moves it that far. Measured here, not read from the records, so that a record
  cannot excuse itself. Trained values are not held run by run across CPU models (``vanex
  compare`` judges them per cell); a status flip and the final loss's change are shown.

A record that cannot be checked here (damaged, settings this installation cannot rebuild, a GPU run
on a machine without one) is named and counts as not reproduced. Nothing in the folder read is
written. Exit 0 when every selected run came out as recorded, 1 when one did not, 2 on bad input.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from vanex.engine.config import compose, prepare
from vanex.engine.plan import PlannedRun
from vanex.engine.study import IN_PROCESS, _local
from vanex.errors import UserError
from vanex.records import code
from vanex.records.bundle import records_of
from vanex.records.store import (
    FINISHED,
    SCHEMA_VERSION,
    OldRecord,
    dumps,
    identity_settings,
    load_run,
    read_probes,
    run_id,
    set_label,
)
from vanex.records.tolerance import STEP0_REL_TOL, equal

GROUPS = {"task": "task", "optim.name": "optim", "profile.name": "profile"}  # settings that name a config group
COMPARED = ("status", "error", "task", "mitigations", "seed", "settings", "task_info", "summary", "diagnosis")
PLATFORM = ("cpu", "torch", "gpu")  # provenance that must match for a record to come out bit for bit
STEP0 = (  # (section, key): the untrained network's values, equal across CPU models within the tolerance
    ("summary", "grad_ratio_init"),
    ("init", "grad_ratio"),
    ("init", "log10_grad_ratio"),
    ("init", "log10_backward_ratio"),
    ("init", "grad_norm_global"),
)
SHOWN = 6  # differences listed per run


def _value(v: Any) -> str:
    """``v`` as a Hydra override value that parses back to the same Python value (a string stays
    literal: no ``${...}`` in it is resolved)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return json.dumps(str(v)).replace("${", "\\${")


def overrides(settings: dict[str, Any], results_dir: str) -> list[str]:
    """The overrides that compose the run whose flat ``settings`` a record holds. A profile's step
    scale was applied to ``task.steps`` before it was recorded, so the scaled steps are given back
    unscaled (the scale itself is only a record of the profile)."""
    settings = dict(settings)
    scale = settings.get("profile.steps_scale", 1.0)
    steps = settings.get("task.steps")
    if isinstance(steps, int) and isinstance(scale, (int, float)) and scale > 0 and scale != 1.0:
        unscaled = round(steps / scale)
        if max(1, round(unscaled * scale)) == steps:
            settings["task.steps"] = unscaled
    out = [f"mitigation=[{','.join(settings.pop('mitigations', []))}]"]
    for key, group in GROUPS.items():
        if key in settings:
            out.append(f"{group}={settings.pop(key)}")
    out += [f"{k}={_value(v)}" for k, v in settings.items()]
    return [*out, f"results_dir={results_dir}", "progress=false"]


class Rebuilder:
    """Planned runs from records' settings. The seeds of one configuration share its composition
    (the rest is the seed: as ``plan`` does), so thousands of records rebuild in seconds."""

    def __init__(self, results_dir: str) -> None:
        self.results_dir = results_dir
        self.composed: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def __call__(self, record: dict[str, Any]) -> PlannedRun:
        settings = record["settings"]
        key = json.dumps({k: v for k, v in settings.items() if k != "seed"}, sort_keys=True, default=str)
        if key in self.composed:
            config, rebuilt = (copy.deepcopy(d) for d in self.composed[key])
            config["seed"] = rebuilt["seed"] = settings.get("seed")
        else:
            cfg = compose(overrides(settings, self.results_dir))
            rebuilt = prepare(cfg, training=False).settings
            config = OmegaConf.to_container(cfg, resolve=True)
            self.composed[key] = (config, rebuilt)
        rid = run_id(rebuilt)
        if rid != record["run_id"] or dumps(rebuilt) != dumps(settings):
            moved = sorted(k for k in set(rebuilt) | set(settings) if dumps(rebuilt.get(k)) != dumps(settings.get(k)))
            raise UserError(
                f"its settings rebuild as run {rid} (differing: {', '.join(moved) or 'none'}): made by a vanex whose "
                "settings differ from this one's"
            )
        return PlannedRun(None, config, rebuilt, rid, self.results_dir)


def _problem(record: dict[str, Any], folder: Path) -> str | None:
    """Why ``record`` (read from ``folder``) cannot be checked, or None."""
    settings, prov = record.get("settings"), record.get("provenance")
    if record.get("run_id") != folder.name:
        return f"its run_id {record.get('run_id')!r} is not its folder's name"
    if not all(isinstance(x, dict) for x in (settings, prov, record.get("summary"), record.get("diagnosis") or {})):
        return "its settings, provenance, summary or diagnosis is not an object"
    mitigations = settings.get("mitigations")
    if not isinstance(mitigations, list) or not all(isinstance(m, str) for m in mitigations):
        return "its settings.mitigations is not a list of names"
    if not isinstance(record.get("task"), str) or not isinstance(record.get("seed"), int):
        return "its task or seed is missing"
    if not isinstance(prov.get("wall_time_s"), (int, float)) or isinstance(prov.get("wall_time_s"), bool):
        return "its provenance.wall_time_s is not a number"
    return None


def read_records(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Path], Counter]:
    """The finished records of ``folder`` that can be checked, their folders, and how many were
    passed over, by reason (each damaged one is also warned about, once, by the reader)."""
    records, paths, skipped = [], {}, Counter()
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        try:
            record = load_run(path)
        except OldRecord:
            skipped[f"of another schema than this vanex's ({SCHEMA_VERSION})"] += 1
            continue
        if record is None:
            skipped["unreadable"] += 1
        elif record.get("status") not in FINISHED:
            skipped[f"not finished ({record.get('status')})"] += 1
        elif (problem := _problem(record, path)) is not None:
            print(f"vanex: warning: {path}: {problem}; not checked", file=sys.stderr)
            skipped["malformed"] += 1
        else:
            records.append(record)
            paths[record["run_id"]] = path
    return records, paths, skipped


def select(
    records: list[dict[str, Any]], runs: list[str], sample: int, max_seconds: float, seed: int
) -> list[dict[str, Any]]:
    """The records named by ``runs`` (ids or unique prefixes, each once), else ``sample`` of those
    that trained within ``max_seconds``, drawn with ``seed`` in turn from each task (0: all of them)."""
    if runs:
        chosen: dict[str, dict[str, Any]] = {}
        for prefix in runs:
            if not prefix:
                raise UserError("--run is empty; give a run id or the first characters of one")
            found = [r for r in records if r["run_id"].startswith(prefix)]
            if len(found) != 1:
                what = "no finished record's id starts" if not found else f"the ids of {len(found)} records start"
                raise UserError(f"--run {prefix}: {what} with it; give a run id (or enough of it to name one)")
            chosen.setdefault(found[0]["run_id"], found[0])
        return list(chosen.values())
    short = [r for r in records if r["provenance"]["wall_time_s"] <= max_seconds]
    if not sample:
        return short
    rng = random.Random(seed)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(short, key=lambda r: r["run_id"]):
        by_task.setdefault(record["task"], []).append(record)
    for group in by_task.values():
        rng.shuffle(group)
    chosen_list, queues = [], [by_task[t] for t in sorted(by_task)]
    while len(chosen_list) < sample and any(queues):
        for queue in queues:
            if queue and len(chosen_list) < sample:
                chosen_list.append(queue.pop())
    return chosen_list


def same_platform(record: dict[str, Any], here: dict[str, Any]) -> bool:
    """Whether ``here`` (a provenance) is the CPU model, torch and GPU that made ``record``."""
    prov = record.get("provenance") or {}
    return prov.get("cpu") is not None and all(prov.get(k) == here.get(k) for k in PLATFORM)


def _rows(path: Path) -> dict[tuple[int, str, str], float]:
    return {(s, m, layer): v for s, m, layer, v in read_probes(path)}


def _leaves(a: Any, b: Any, where: str) -> Iterator[str]:
    """Where ``a`` and ``b`` differ, down to the single values (``diagnosis.training.chance_loss``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            yield from _leaves(a.get(k), b.get(k), f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _leaves(x, y, f"{where}[{i}]")
    elif dumps(a) != dumps(b):
        yield f"{where}: {_short(a)} -> {_short(b)}"


def bitwise(old: dict[str, Any], old_rows: dict, new: dict[str, Any], new_rows: dict) -> list[str]:
    """Where ``new`` differs from ``old`` in a single bit, in the record and in the probe values ``old`` holds."""
    moved = [line for key in COMPARED for line in _leaves(old.get(key), new.get(key), key)]
    rows = [k for k, v in old_rows.items() if k not in new_rows or not equal(v, new_rows[k])]
    if rows:
        s, m, layer = rows[0]
        first = f"{m}[{layer or '-'}] at step {s}: {old_rows[rows[0]]!r} -> {new_rows.get(rows[0], 'absent')!r}"
        moved.append(f"{len(rows)} of {len(old_rows)} probe values, first {first}")
    return moved


def _short(v: Any) -> str:
    text = repr(v) if isinstance(v, float) else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def step0(record: dict[str, Any]) -> dict[str, float]:
    """The record's step-0 values that are numbers."""
    out = {}
    for section, key in STEP0:
        holder = record.get("summary") if section == "summary" else ((record.get("diagnosis") or {}).get(section) or {})
        value = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{section}.{key}"] = float(value)
    return out


def step0_moves(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The step-0 values of ``new`` that differ from ``old``'s by more than the cross-CPU tolerance."""
    a, b = step0(old), step0(new)
    return [
        f"{k}: {a[k]!r} -> {b.get(k)!r} (beyond a relative {STEP0_REL_TOL:g})"
        for k in sorted(a)
        if k not in b or not equal(a[k], b[k], False, k)
    ]


def _twin_key(record: dict[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in identity_settings(record["settings"]).items() if k != "numerics"}, sort_keys=True, default=str
    )


def twins(records: list[dict[str, Any]], chosen: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each of ``chosen``, its twin on another numeric path among ``records`` (if there is one)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_key.setdefault(_twin_key(record), []).append(record)
    out = {}
    for record in chosen:
        other = [r for r in by_key.get(_twin_key(record), []) if r["run_id"] != record["run_id"]]
        if other:
            out[record["run_id"]] = other[0]
    return out


def judge(
    old: dict[str, Any], old_at: Path, new: dict[str, Any], new_at: Path, twin: dict[str, Any] | None
) -> tuple[str, list[str]]:
    """The verdict on retrained run ``new`` against its record ``old`` (their folders ``new_at``,
    ``old_at``) and what moved: every bit on the platform that made it, step 0 elsewhere unless
    ``twin`` (the retrained run on the other numeric path) shows rounding alone moves it further."""
    if same_platform(old, new["provenance"]):
        moved = bitwise(old, _rows(old_at), new, _rows(new_at))
        return ("MOVED" if moved else "same bits"), moved
    notes: list[str] = []

    def noted(verdict: str) -> str:
        return verdict + (f" ({'; '.join(notes)})" if notes else "")

    if old.get("status") != new.get("status"):
        notes.append(f"{old.get('status')} -> {new.get('status')}")
    a, b = (r["summary"].get("final_train_loss") for r in (old, new))
    if all(isinstance(x, float) and math.isfinite(x) for x in (a, b)) and a:
        notes.append("final loss equal" if a == b else f"final loss {abs(b - a) / abs(a):.1e} relative")
    if not step0(old):
        return noted("no step-0 values to hold across CPU models"), []
    if twin is not None and step0_moves(new, twin):
        notes.insert(0, "its other numeric path differs beyond the tolerance here: step 0 not held")
        return noted("rounding-sensitive here"), []
    moved = step0_moves(old, new)
    if moved:
        return "MOVED at step 0", moved
    return noted("step 0 within tolerance"), []


def _label(record: dict[str, Any]) -> str:
    return (
        f"{record['run_id']} {record['task']} {set_label(record['settings']['mitigations'])} "
        f"seed {record['seed']}, {record['settings'].get('numerics', 'pinned')}"
    )


def verify(folder: str, runs: list[str], sample: int, max_seconds: float, seed: int, jobs: int) -> int:
    """Retrain the selected records of ``folder`` and say, run by run, whether they came out as recorded."""
    if not Path(folder).is_dir():
        raise UserError(f"'{folder}' is not a folder; give a results folder or a report that ships records.tar.gz")
    with records_of(folder) as source:
        records, paths, skipped = read_records(Path(source))
        passed_over = "; ".join(f"{n} {why}" for why, n in skipped.items())
        if skipped:
            print(f"vanex verify: passed over {sum(skipped.values())} records: {passed_over}", file=sys.stderr)
        if not records:
            raise UserError(
                f"'{folder}' holds no finished record this vanex can check ({passed_over or 'none at all'})"
            )
        chosen = select(records, runs, sample, max_seconds, seed)
        if not chosen:
            raise UserError(f"no record in '{folder}' trained within --max-seconds {max_seconds:g}; raise it")
        return _retrain(folder, records, paths, chosen, jobs)


def _retrain(folder: str, records: list, paths: dict[str, Path], chosen: list, jobs: int) -> int:
    import torch
    from vanex.engine.provenance import provenance

    here = provenance(torch.device("cpu"), 0.0)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    elsewhere = [
        r for r in chosen if not same_platform(r, {**here, "gpu": gpu if r["provenance"].get("gpu") else None})
    ]
    pairs = twins(records, elsewhere)  # retrained too: rounding sensitivity is measured here
    stale = sum(code.stale(r) is not None for r in chosen)
    twinned = f"; their {len(pairs)} twins on the other path too" if pairs else ""
    stale_note = f"; {stale} made by other code (stale)" if stale else ""
    print(
        f"vanex verify: retraining {len(chosen)} of {len(records)} records of {folder}: {len(chosen) - len(elsewhere)} "
        f"made on this CPU model with this torch (bit for bit), {len(elsewhere)} elsewhere or on an unknown one "
        f"(step 0 within a relative {STEP0_REL_TOL:g}{twinned}){stale_note}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vanex-verify-") as scratch:
        rebuild, todo, unchecked, ids = Rebuilder(scratch), {}, 0, {r["run_id"] for r in chosen}
        for record in [*chosen, *pairs.values()]:
            if record["run_id"] in todo:
                continue
            try:
                if record["settings"].get("device") == "cuda" and gpu is None:
                    raise UserError("trained on a GPU; this machine has none")
                todo[record["run_id"]] = rebuild(record)
            except (UserError, ValueError, TypeError) as exc:  # settings this installation cannot compose
                if record["run_id"] in ids:
                    print(f"  {_label(record)}: NOT CHECKED: {exc}", file=sys.stderr)
                    unchecked += 1
        if time.perf_counter() - start > 2:
            print(
                f"vanex verify: {len(todo)} runs rebuilt from their settings ({len(rebuild.composed)} configurations, "
                f"{time.perf_counter() - start:.0f} s); training",
                file=sys.stderr,
            )
        saved = os.environ.pop(IN_PROCESS, None)  # each numeric path needs worker processes of its own
        try:
            bad = _judged(chosen, todo, pairs, paths, Path(scratch), jobs)
        finally:
            if saved is not None:
                os.environ[IN_PROCESS] = saved
    took, bad = time.perf_counter() - start, bad + unchecked
    if bad:
        print(f"vanex verify: {bad} of {len(chosen)} runs did not come out as recorded ({took:.0f} s)", file=sys.stderr)
        return 1
    runs = f"all {len(chosen)} runs" if len(chosen) > 1 else "the run"
    print(f"vanex verify: {runs} came out as recorded ({took:.0f} s)", file=sys.stderr)
    return 0


def _judged(
    chosen: list, todo: dict[str, PlannedRun], pairs: dict, paths: dict[str, Path], scratch: Path, jobs: int
) -> int:
    """Train ``todo``; say of each chosen run, as soon as it (and its twin) has trained, whether it
    came out as recorded. How many did not."""
    retrained: dict[str, dict[str, Any]] = {}
    waiting = [r for r in chosen if r["run_id"] in todo]
    total, done, bad = len(waiting), 0, 0
    for planned, outcome in _local(list(todo.values()), jobs):
        retrained[planned.run_id] = load_run(scratch / planned.run_id) or {"error": outcome.get("error")}
        for old in [r for r in waiting if r["run_id"] in retrained]:
            twin = pairs.get(old["run_id"])
            if twin is not None and twin["run_id"] in todo and twin["run_id"] not in retrained:
                continue
            waiting.remove(old)
            new = retrained[old["run_id"]]
            if "provenance" not in new:
                verdict, moved = "NOT RETRAINED", [f"its run failed: {new.get('error')}"]
            else:
                other = retrained.get(twin["run_id"]) if twin is not None else None
                try:
                    verdict, moved = judge(old, paths[old["run_id"]], new, scratch / old["run_id"], other)
                except (OSError, ValueError) as exc:  # its probes.csv: cut, missing, not text
                    verdict, moved = "NOT CHECKED", [f"its probes.csv cannot be read: {exc}"]
            done, bad = done + 1, bad + bool(moved)
            why = f" (stale: {code.stale(old)})" if code.stale(old) else ""
            wall = new.get("provenance", {}).get("wall_time_s", 0.0)
            print(f"  [{done}/{total}] {_label(old)}: {verdict}{why} ({wall:.1f} s)", file=sys.stderr)
            for line in moved[:SHOWN]:
                print(f"      {line}", file=sys.stderr)
            if len(moved) > SHOWN:
                print(f"      ... and {len(moved) - SHOWN} more", file=sys.stderr)
    return bad
