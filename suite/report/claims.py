"""Published claims, checked against the records: the claims registry and its judge.

A claim is a registered class (``@CLAIMS.register("name")`` in a module named by a ``vanex.claims``
entry point, torch-free; the built-in ones come the same way) naming its paper, the figure or
table, the statement, the study it reads, the cell groups it needs (``Cells``: a mitigation list
and settings that must match), the probe metrics its predicate reads (``metrics``) and a predicate
over those groups. ``evaluate`` judges it on every seed of each group (a claim rests on the
distribution: all-seed agreement or a confidence interval, never one run), then again with the
learning rate halved and doubled where those cells were run:

- ``✓``: holds at the study's setting and at every neighbour that ran;
- ``fragile``: holds at one setting and not at another of the neighbourhood;
- ``✗``: fails at the setting and at every neighbour that ran;
- ``not run``: a group has fewer than two finished seeds (its study, profile or cells are missing).

The neighbourhood column says which neighbours ran, so a ✓ checked at ×0.5 and ×2 is never confused
with one whose neighbours were not run. Like the reporter, this module imports no torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from vanex import conf
from vanex.errors import UserError
from vanex.records.reader import FINISHED, StudyData, read_study
from vanex.records.store import manifest_path, read_manifest
from vanex.registry import CLAIMS
from vanex.report.tables import interval_text, markdown_table
from vanex.science.stats import TRAINED_FRACTION, t_interval

STATUSES = ("✓", "fragile", "✗", "not run")
DEFAULT_NUMERICS = str(conf.value("numerics"))  # the numeric path a claim is judged on first
SECOND_PATH = "generic"  # the path it is judged on again (vanex.numerics): a verdict that differs is fragile
MIN_SEEDS = 2


@dataclass(frozen=True)
class Cells:
    """One cell group of a study: its ordered mitigations and the settings that must match."""

    mitigations: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, cell: dict[str, Any], scale: float = 1.0) -> bool:
        """Same mitigations, the given settings, and the default numeric path unless one is given.
        ``task.steps`` is given at the quick profile's scale and matched times the profile's
        ``scale`` (its steps_scale), as a study's sweep of it is scaled."""
        if tuple(cell["mitigations"]) != tuple(self.mitigations):
            return False
        settings = {"numerics": DEFAULT_NUMERICS, **self.settings}
        return all(
            _same(cell["settings"].get(k, DEFAULT_NUMERICS if k == "numerics" else None), _scaled(k, v, scale))
            for k, v in settings.items()
        )

    def on(self, **settings: Any) -> Cells:
        """The same group with ``settings`` changed (another learning rate, another numeric path)."""
        return Cells(self.mitigations, {**self.settings, **settings})


def _scaled(key: str, value: Any, scale: float) -> Any:
    """A claim's setting as a run of a profile with ``scale`` (its steps_scale) has it (vanex.engine.config)."""
    return max(1, int(round(value * scale))) if key == "task.steps" and isinstance(value, int) else value


def manifest_scale(manifest: dict[str, Any]) -> float:
    """The steps_scale of the profile that ``manifest``'s study ran (1 for a profile vanex does not ship)."""
    return conf.steps_scale(str(manifest.get("profile"))) or 1.0


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


class Group:
    """The finished seeds of one cell group: summary metrics, verdicts and probe rows per seed."""

    def __init__(self, rows: pd.DataFrame, probes: pd.DataFrame) -> None:
        self.rows, self.probes = rows.reset_index(drop=True), probes
        self._parts: dict[tuple[str, str], pd.DataFrame] | None = None

    def _rows_of(self, rid: str, metric: str) -> pd.DataFrame:
        """The probe rows of run ``rid`` and ``metric``, in their order (the study's probes split once, by
        run and metric: filtering all of them per seed took most of `vanex claims`' time)."""
        if self._parts is None:
            mine = self.probes[self.probes["run_id"].isin(set(self.rows["run_id"]))]
            self._parts = dict(list(mine.groupby(["run_id", "metric"], sort=False)))
        return self._parts.get((rid, metric), self.probes.iloc[:0])

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def chance(self) -> float:
        """The task's chance loss (the same for every seed of a group)."""
        return float(self.rows["chance_loss"].iloc[0]) if "chance_loss" in self.rows else math.nan

    def values(self, metric: str) -> np.ndarray:
        """One value per seed; a diverged seed (no finite value) is +inf: worse than any loss."""
        col = pd.to_numeric(self.rows.get(metric, pd.Series(np.nan, index=self.rows.index)), errors="coerce")
        out = col.to_numpy(dtype=float)
        return np.where(np.isfinite(out), out, np.inf)

    def verdicts(self, part: str = "training") -> list[str]:
        return [str(v) for v in self.rows.get(part, pd.Series(["n/a"] * len(self.rows)))]

    def series(self, metric: str) -> list[pd.DataFrame]:
        """Per seed, the probe series ``metric`` at every probed step: a frame of steps x layers."""
        out = []
        for rid in self.rows["run_id"]:
            rows = self._rows_of(rid, metric)
            out.append(rows.pivot_table(index="step", columns="layer", values="value", aggfunc="first"))
        return out

    def step0(self, metric: str) -> list[pd.Series]:
        """Per seed, the step-0 probe series ``metric`` indexed by layer (or time step)."""
        out = []
        for rid in self.rows["run_id"]:
            rows = self._rows_of(rid, metric)
            rows = rows[rows["step"] == rows["step"].min()] if not rows.empty else rows
            out.append(rows.set_index("layer")["value"])
        return out


@dataclass(frozen=True)
class Outcome:
    holds: bool
    numbers: str  # the numbers behind the verdict, one short line


class Claim:
    """Base class of a published claim; subclasses fill the class attributes and ``predicate``."""

    name: ClassVar[str]
    paper: ClassVar[str]  # authors, year, short title
    where: ClassVar[str]  # figure, table or section
    statement: ClassVar[str]  # what the paper says, one sentence
    study: ClassVar[str]  # the study whose manifest and records it reads
    cells: ClassVar[dict[str, Cells]]  # named groups the predicate reads
    metrics: ClassVar[tuple[str, ...]] = ()  # probe series the predicate reads (Group.step0, Group.series)
    neighbourhood: ClassVar[str | None] = "optim.lr"  # re-checked at x0.5 and x2 (None: not applicable)
    control: ClassVar[str | None] = None  # the group that isolates the mechanism (the effect-absent test copies it)
    version: ClassVar[int] = 1  # bumped with every change of the definition (claims.lock.json holds it)
    superseded: ClassVar[tuple[Superseded, ...]] = ()  # earlier versions still shown beside this one

    def predicate(self, g: dict[str, Group]) -> Outcome:
        raise NotImplementedError


@dataclass(frozen=True)
class Superseded:
    """An earlier version of a claim, judged and shown beside the current one with the reason it
    changed, until it is retired (removed from ``Claim.superseded``)."""

    version: int
    definition: type[Claim]  # the old definition: an unregistered Claim subclass
    reason: str


@dataclass
class Result:
    name: str
    paper: str
    where: str
    statement: str
    status: str
    numbers: str
    neighbourhood: str
    version: int = 1
    cells: str = ""  # the cell groups it reads, the control marked
    second_path: str = ""  # the verdict on the second numeric code path
    previous: str = ""  # earlier versions' verdicts and why the claim changed
    measured: list = field(default_factory=list)  # (mean, ci_low, ci_high, n) of each interval in numbers, in order


# -- fixed in advance: a fingerprint of each definition, locked with its version -------------------

LOCK = Path(__file__).with_name("claims.lock.json")


def fingerprint(claim: type[Claim]) -> str:
    """A hash of everything that decides a claim's verdict: its statement, study, cell groups (with
    their settings), probe metrics, neighbourhood and the source of its predicate."""
    import hashlib
    import inspect

    definition = {
        "statement": claim.statement,
        "study": claim.study,
        "cells": {
            k: [list(c.mitigations), sorted((s, repr(v)) for s, v in c.settings.items())]
            for k, c in claim.cells.items()
        },
        "metrics": list(claim.metrics),
        "neighbourhood": claim.neighbourhood,
        "predicate": inspect.getsource(claim.predicate),
    }
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def lock_problems(lock: dict[str, dict[str, Any]], origin: str = "vanex") -> list[str]:
    """One line per registered claim of ``origin`` whose definition does not match the lock: changed
    without a version bump, bumped without relocking, or missing from the lock."""
    problems = []
    for name in CLAIMS.names():
        claim = CLAIMS.get(name)
        if claim.origin != origin:
            continue
        entry, now = lock.get(name), fingerprint(claim)
        if entry is None:
            problems.append(f"{name}: not in {LOCK.name}; add it with `vanex claims --lock`")
        elif claim.version == entry["version"] and now != entry["fingerprint"]:
            problems.append(f"{name}: its definition changed but its version is still {claim.version}; bump it")
        elif claim.version != entry["version"]:
            problems.append(f"{name}: version {claim.version}, locked {entry['version']}; run `vanex claims --lock`")
    return problems


def relock(lock: dict[str, dict[str, Any]], origin: str = "vanex") -> dict[str, dict[str, Any]]:
    """The lock with every changed claim of ``origin`` recorded at its new version; refuses
    (``UserError``) a definition that changed without a version bump."""
    out = {}  # a retired claim leaves the lock with its class
    for name in CLAIMS.names():
        claim = CLAIMS.get(name)
        if claim.origin != origin:
            continue
        entry, now = lock.get(name), fingerprint(claim)
        if entry is not None and claim.version <= entry["version"] and now != entry["fingerprint"]:
            raise UserError(f"claim {name} changed without a version bump (locked at version {entry['version']})")
        out[name] = {"version": claim.version, "fingerprint": now}
    return dict(sorted(out.items()))


# -- statistics for predicates -------------------------------------------------------------------


def less(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> bool:
    """True when a is smaller than b beyond doubt: a's worst seed beats b's best (all-seed
    agreement), or, all finite, the Welch confidence interval of mean(a) - mean(b) lies below 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.max() < b.min():
        return True
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    from scipy import stats

    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return bool(a.mean() < b.mean())
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return bool(a.mean() - b.mean() + stats.t.ppf(0.5 + level / 2, df) * se < 0)


_MEASURED: list[tuple[float, float, float, int]] | None = None  # what fmt formats while a verdict is judged


def fmt(x: np.ndarray) -> str:
    """'0.412 [0.381, 0.443] (n=5)': mean and 95% Student-t interval (the one convention of the report's
    tables); diverged seeds are counted, not averaged. Each is also kept as numbers for claims.csv."""
    x = np.asarray(x, dtype=float)
    finite = x[np.isfinite(x)]
    bad = f", {len(x) - len(finite)} diverged" if len(finite) < len(x) else ""
    if len(finite) == 0:
        return f"all {len(x)} diverged"
    mean, low, high = t_interval(finite)
    if _MEASURED is not None:
        _MEASURED.append((mean, low, high, len(x)))
    return f"{interval_text(mean, low, high)} (n={len(x)}{bad})"


def count(verdicts: list[str], accepted: set[str]) -> str:
    return f"{sum(v in accepted for v in verdicts)}/{len(verdicts)}"


def trains(g: Group, fraction: float = TRAINED_FRACTION) -> bool:
    """Every seed trained (``vanex.science.stats.trained``; a claim may name a stricter ``fraction``)."""
    return bool((g.values("loss_vs_chance") < fraction).all())


STALLED = ("stalled", "unstable", "diverged")  # training verdicts of a run that learned nothing


def stalls(g: Group) -> bool:
    """Every seed is diagnosed stalled, unstable or diverged (learned nothing)."""
    return all(v in STALLED for v in g.verdicts())


# -- the judge -----------------------------------------------------------------------------------


class _Study:
    """One study's records under a profile, read once, as the claims see them."""

    def __init__(self, results: Path, name: str, profile: str) -> None:
        path = manifest_path(results, name, profile)
        manifest = read_manifest(path) if path.is_file() else None
        where = path.relative_to(results).as_posix()  # not the temporary folder of a report's shipped records
        self.missing = None if manifest else f"no valid manifest {where} (run `vanex study {name}`)"
        if manifest is None and name not in (known := conf.studies()):
            self.missing = f"its study '{name}' is not one vanex has; valid studies: {', '.join(known)}"
        if manifest is None:
            return
        metrics = {m for n in CLAIMS.names() for m in CLAIMS.get(n).metrics}
        self.data: StudyData = read_study(manifest, results, metrics)

    @property
    def scale(self) -> float:
        return manifest_scale(self.data.manifest)

    def group(self, cells: Cells) -> Group | None:
        ids = [c["run_id"] for c in self.data.manifest["cells"] if cells.matches(c, self.scale)]
        rows = self.data.cells[self.data.cells["run_id"].isin(ids) & self.data.cells["status"].isin(FINISHED)]
        if len(rows) < MIN_SEEDS:
            return None
        return Group(rows, self.data.probes)

    def stale(self, groups: dict[str, Cells]) -> int:
        """How many records of ``groups`` were made by other code than the installed one."""
        ids = {
            c["run_id"] for c in self.data.manifest["cells"] if any(g.matches(c, self.scale) for g in groups.values())
        }
        cells = self.data.cells
        return int(cells[cells["run_id"].isin(ids)]["stale"].notna().sum()) if "stale" in cells else 0

    def setting(self, cells: Cells, key: str) -> Any:
        matching = [c["settings"].get(key) for c in self.data.manifest["cells"] if cells.matches(c, self.scale)]
        return matching[0] if len({repr(v) for v in matching}) == 1 else None


def _judge(claim: Claim, study: _Study, cells: dict[str, Cells]) -> Outcome | str:
    """The predicate's outcome, or why there is none: a group with fewer than ``MIN_SEEDS`` finished
    seeds, or records that lack what the predicate reads (it raised: never a crash of the judge)."""
    groups = {name: study.group(c) for name, c in cells.items()}
    for name, g in groups.items():
        if g is None:
            return f"cell group '{name}' has fewer than {MIN_SEEDS} finished seeds"
    try:
        return claim.predicate(groups)
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError) as exc:
        return f"its records lack what the predicate reads ({type(exc).__name__}: {exc})"


def evaluate(claim: Claim, results: str | Path, profile: str, cache: dict | None = None) -> Result:
    """The verdict on ``claim`` (with its earlier versions' verdicts beside it)."""
    if claim.control not in claim.cells:  # the effect-absent test and the report's "(control)" read it (an
        # earlier version, judged below, may lack one: it is shown, not tested)
        groups = ", ".join(claim.cells)
        problem = (
            f"it names no control: set `control` to one of its cell groups ({groups})"
            if claim.control is None
            else f"its control {claim.control!r} is not one of its cell groups ({groups})"
        )
        result = _result(claim, "not run", problem, "–")
    else:
        result = _evaluate(claim, results, profile, {} if cache is None else cache)
    result.version, result.cells = claim.version, describe_cells(claim)
    previous = []
    for old in claim.superseded:
        r = _evaluate(old.definition(), results, profile, cache if cache is not None else {})
        previous.append(f"v{old.version} {r.status} ({r.numbers}); changed because {old.reason}")
    result.previous = " | ".join(previous)
    return result


def describe_cells(claim: Claim) -> str:
    """'name (control): mitigations, key=value; ...' for every cell group of ``claim``."""
    parts = []
    for name, c in claim.cells.items():
        settings = ", ".join(f"{k}={v}" for k, v in c.settings.items())
        mark = " (control)" if name == claim.control else ""
        parts.append(f"{name}{mark}: {'+'.join(c.mitigations) or 'baseline'}" + (f", {settings}" if settings else ""))
    return "; ".join(parts)


def _result(claim: Claim, status: str, numbers: str, neighbourhood: str, second: str = "–") -> Result:
    name = getattr(claim, "name", type(claim).__name__)  # an earlier version's class is not registered
    r = Result(name, claim.paper, claim.where, claim.statement, status, numbers, neighbourhood)
    r.second_path = second
    return r


def _evaluate(claim: Claim, results: str | Path, profile: str, cache: dict) -> Result:
    key = (str(results), claim.study, profile)
    if key not in cache:
        cache[key] = _Study(Path(results), claim.study, profile)
    study = cache[key]

    if study.missing:
        return _result(claim, "not run", study.missing, "–")
    global _MEASURED
    _MEASURED = []
    try:
        base = _judge(claim, study, claim.cells)
    finally:
        measured, _MEASURED = _MEASURED, None
    if isinstance(base, str):
        return _result(claim, "not run", f"{base} (study {claim.study}, profile {profile})", "–")
    checks: list[tuple[str, Outcome]] = []  # (which neighbour or path, its outcome)
    other = _judge(claim, study, {n: c.on(numerics=SECOND_PATH) for n, c in claim.cells.items()})
    if isinstance(other, Outcome):
        checks.append((f"numerics={SECOND_PATH}", other))
        second = f"{'✓' if other.holds else '✗'}: {other.numbers}"
    else:
        second = f"not run: no cells of its groups on numerics={SECOND_PATH} ({other})"
    neighbourhood = "n/a (at initialisation, or the claim's own cells set the learning rate)"
    k = claim.neighbourhood
    values = {study.setting(c, k) for c in claim.cells.values()} if k else set()
    if k and (len(values) != 1 or not isinstance(next(iter(values)), (int, float))):
        neighbourhood = f"not run ({k} differs across groups)"
    elif k:
        center, ran = float(next(iter(values))), []
        for factor in (0.5, 2.0):
            outcome = _judge(claim, study, {n: c.on(**{k: center * factor}) for n, c in claim.cells.items()})
            if isinstance(outcome, Outcome):
                ran.append((factor, outcome))
                checks.append((f"{k} ×{factor:g}", outcome))
        missing = [f"×{f:g}" for f in (0.5, 2.0) if f not in dict(ran)]
        if not ran:
            neighbourhood = f"not run in this profile ({k} ×0.5, ×2)"
        else:
            neighbourhood = "; ".join(f"×{f:g} {'✓' if o.holds else '✗'}: {o.numbers}" for f, o in ran)
            neighbourhood += f"; {', '.join(missing)} not run" if missing else ""
    agree = all(o.holds == base.holds for _, o in checks)
    status = ("✓" if base.holds else "✗") if agree else "fragile"
    stale = study.stale(claim.cells)
    numbers = base.numbers + (f" [{stale} of these records are stale: made by other code]" if stale else "")
    out = _result(claim, status, numbers, neighbourhood, second)
    out.measured = measured
    return out


def evaluate_all(
    results: str | Path, profile: str, names: list[str] | None = None, problems: list[str] | None = None
) -> list[Result]:
    """Every claim (or ``names``) judged on ``profile``'s records; studies with unreadable records are
    named in ``problems``."""
    known = CLAIMS.names()
    for name in names or []:
        if name not in known:
            raise UserError(f"unknown claim '{name}'; valid claims: {', '.join(known)}")
    cache: dict = {}
    out = [evaluate(CLAIMS.get(n)(), results, profile, cache) for n in (names or known)]
    for (_, study, _), s in sorted(cache.items()):
        if not s.missing and s.data.unreadable and problems is not None:
            problems.append(f"study {study}: {s.data.unreadable} record(s) could not be read (named above)")
    return out


def cell_claims(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """run_id -> the registered claims whose cell groups (at the claim's own settings, not the
    learning-rate neighbourhood) include that cell of ``manifest``."""
    out: dict[str, list[str]] = {}
    scale = manifest_scale(manifest)
    for name in CLAIMS.names():
        claim = CLAIMS.get(name)
        if claim.study != manifest["study"]:
            continue
        for cell in manifest["cells"]:
            if any(
                c.matches(cell, scale) or c.on(numerics=SECOND_PATH).matches(cell, scale) for c in claim.cells.values()
            ):
                out.setdefault(cell["run_id"], []).append(name)
    return out


def metrics_read(manifest: dict[str, Any]) -> dict[str, set[str]]:
    """run_id -> the probe metrics that some claim, or an earlier version of one still shown, reads of
    that cell of ``manifest``, at any learning rate of its neighbourhood and on either numeric path."""
    out: dict[str, set[str]] = {}
    scale = manifest_scale(manifest)
    for name in CLAIMS.names():
        claim = CLAIMS.get(name)
        for definition in (claim, *(s.definition for s in claim.superseded)):
            if definition.study != manifest["study"] or not definition.metrics:
                continue
            free = {definition.neighbourhood, "numerics"}  # any value of these
            for cell in manifest["cells"]:
                if any(_matches_but(c, cell, free, scale) for c in definition.cells.values()):
                    out.setdefault(cell["run_id"], set()).update(definition.metrics)
    return out


def _matches_but(cells: Cells, cell: dict[str, Any], free: set[str | None], scale: float) -> bool:
    return tuple(cell["mitigations"]) == tuple(cells.mitigations) and all(
        _same(cell["settings"].get(k), _scaled(k, v, scale)) for k, v in cells.settings.items() if k not in free
    )


def claims_frame(results: list[Result]) -> pd.DataFrame:
    """One row per claim; each mean [95% CI] (n) of ``numbers`` also as numbers, in the order they appear
    there: ``mean_1``, ``ci_low_1``, ``ci_high_1``, ``n_1``, ``mean_2``, ..."""
    rows = []
    for r in results:
        row = {k: v for k, v in r.__dict__.items() if k != "measured"}
        for i, (mean, low, high, n) in enumerate(r.measured, 1):
            row.update({f"mean_{i}": mean, f"ci_low_{i}": low, f"ci_high_{i}": high, f"n_{i}": n})
        rows.append(row)
    return pd.DataFrame(rows)


def claims_markdown(results: list[Result]) -> str:
    """The claims table of a report: status, paper, statement, the cells read (the control marked), the
    numbers behind it, and its verdicts on the second numeric path and at the learning rate's neighbours."""
    header = [
        "claim",
        "version",
        "paper",
        "where",
        "statement",
        "cells",
        "status",
        "numbers",
        "second numeric path",
        "lr ×0.5 / ×2",
        "earlier versions",
    ]
    rows = [
        [
            r.name,
            r.version,
            r.paper,
            r.where,
            r.statement,
            r.cells or "–",
            f"**{r.status}**",
            r.numbers,
            r.second_path or "–",
            r.neighbourhood,
            r.previous or "–",
        ]
        for r in results
    ]
    counts = ", ".join(f"{s} {sum(r.status == s for r in results)}" for s in STATUSES)
    return f"{counts}.\n\n" + markdown_table(header, rows)
