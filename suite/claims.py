"""Published claims, checked against the records: the claims registry and its judge.

A claim is a registered class (``@CLAIMS.register("name")``; third parties register theirs from a
``gradbench.plugins`` entry point, like a mitigation) naming its paper, the figure or table, the
statement, the study it reads, the cell groups it needs (``Cells``: a mitigation list and settings
that must match) and a predicate over those groups. ``evaluate`` judges it on every seed of each
group (a claim rests on the distribution: all-seed agreement or a confidence interval, never one
run), then again with the learning rate halved and doubled where those cells were run:

- ``✓``: holds at the study's setting and at every neighbour that ran;
- ``fragile``: holds at one setting and not at another of the neighbourhood;
- ``✗``: fails at the setting and at every neighbour that ran;
- ``not run``: a group has fewer than two finished seeds (its study, profile or cells are missing).

The neighbourhood column says which neighbours ran, so a ✓ checked at ×0.5 and ×2 is never confused
with one whose neighbours were not run. Like the reporter, this module imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from suite.errors import UserError
from suite.registry import CLAIMS

STATUSES = ("✓", "fragile", "✗", "not run")
MIN_SEEDS = 2


@dataclass(frozen=True)
class Cells:
    """One cell group of a study: its ordered mitigations and the settings that must match."""

    mitigations: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, cell: dict[str, Any]) -> bool:
        if tuple(cell["mitigations"]) != tuple(self.mitigations):
            return False
        return all(_same(cell["settings"].get(k), v) for k, v in self.settings.items())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


class Group:
    """The finished seeds of one cell group: summary metrics, verdicts and probe rows per seed."""

    def __init__(self, rows: pd.DataFrame, probes: pd.DataFrame, chance: float | None) -> None:
        self.rows, self.probes, self.chance = rows.reset_index(drop=True), probes, chance

    def __len__(self) -> int:
        return len(self.rows)

    def values(self, metric: str) -> np.ndarray:
        """One value per seed; a diverged seed (no finite value) is +inf: worse than any loss."""
        if metric == "loss_vs_chance":
            return self.values("final_train_loss") / (self.chance or math.nan)
        col = pd.to_numeric(self.rows.get(metric, pd.Series(np.nan, index=self.rows.index)), errors="coerce")
        out = col.to_numpy(dtype=float)
        return np.where(np.isfinite(out), out, np.inf)

    def verdicts(self, part: str = "training") -> list[str]:
        return [str(v) for v in self.rows.get(part, pd.Series(["n/a"] * len(self.rows)))]

    def step0(self, metric: str) -> list[pd.Series]:
        """Per seed, the step-0 probe series ``metric`` indexed by layer (or time step)."""
        out = []
        for rid in self.rows["run_id"]:
            rows = self.probes[(self.probes["run_id"] == rid) & (self.probes["metric"] == metric)]
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
    neighbourhood: ClassVar[str | None] = "optim.lr"  # re-checked at x0.5 and x2 (None: not applicable)

    def predicate(self, g: dict[str, Group]) -> Outcome:
        raise NotImplementedError


@dataclass
class Result:
    name: str
    paper: str
    where: str
    statement: str
    status: str
    numbers: str
    neighbourhood: str


# -- statistics for predicates -------------------------------------------------------------------


def mean_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t confidence interval); inf values give an infinite mean."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    if len(x) < 2 or not np.isfinite(x).all():
        return float(np.mean(x)), math.inf
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()), half


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


def fmt(x: np.ndarray) -> str:
    """'0.412±0.031 (n=5)': mean and 95% t half-width; diverged seeds are counted, not averaged."""
    x = np.asarray(x, dtype=float)
    finite = x[np.isfinite(x)]
    bad = f", {len(x) - len(finite)} diverged" if len(finite) < len(x) else ""
    if len(finite) == 0:
        return f"all {len(x)} diverged"
    mean, half = mean_ci(finite)
    spread = f"±{half:.3g}" if math.isfinite(half) else ""
    return f"{mean:.3g}{spread} (n={len(x)}{bad})"


def count(verdicts: list[str], accepted: set[str]) -> str:
    return f"{sum(v in accepted for v in verdicts)}/{len(verdicts)}"


def trains(g: Group, fraction: float = 0.5) -> bool:
    """Every seed ends finite and below ``fraction`` of the task's chance loss."""
    return bool((g.values("loss_vs_chance") < fraction).all())


def stalls(g: Group) -> bool:
    """Every seed is diagnosed stalled or diverged (learned nothing)."""
    return all(v in ("stalled", "diverged") for v in g.verdicts())


# -- the judge -----------------------------------------------------------------------------------


class _Study:
    """One study's manifest, cell table and probe rows under a profile, read once."""

    def __init__(self, results: Path, name: str, profile: str) -> None:
        from suite.records import manifest_path
        from suite.report import collect

        path = manifest_path(results, name, profile)
        self.missing = None if path.is_file() else f"no manifest {path} (run `gradbench study {name}`)"
        if self.missing:
            return
        import json

        self.manifest = json.loads(path.read_text())
        self.cells, self.probes, records, _ = collect(self.manifest, results)
        first = next(iter(records.values()), None)
        self.chance = {rid: r["task_info"].get("chance_loss") for rid, r in records.items()}
        self.first = first

    def group(self, cells: Cells) -> Group | None:
        ids = [c["run_id"] for c in self.manifest["cells"] if cells.matches(c)]
        rows = self.cells[self.cells["run_id"].isin(ids) & self.cells["status"].isin(["completed", "diverged"])]
        if len(rows) < MIN_SEEDS:
            return None
        chance = self.chance.get(rows["run_id"].iloc[0])
        return Group(rows, self.probes if not self.probes.empty else _empty_probes(), chance)

    def setting(self, cells: Cells, key: str) -> Any:
        values = {repr(c["settings"].get(key)) for c in self.manifest["cells"] if cells.matches(c)}
        if len(values) != 1:
            return None
        return next(c["settings"].get(key) for c in self.manifest["cells"] if cells.matches(c))


def _empty_probes() -> pd.DataFrame:
    return pd.DataFrame(columns=["step", "metric", "layer", "value", "run_id"])


def _judge(claim: Claim, study: _Study, cells: dict[str, Cells]) -> Outcome | str:
    """The predicate's outcome, or the name of a group with fewer than ``MIN_SEEDS`` finished seeds."""
    groups = {name: study.group(c) for name, c in cells.items()}
    for name, g in groups.items():
        if g is None:
            return name
    return claim.predicate(groups)


def evaluate(claim: Claim, results: str | Path, profile: str, cache: dict | None = None) -> Result:
    cache = {} if cache is None else cache
    key = (str(results), claim.study, profile)
    if key not in cache:
        cache[key] = _Study(Path(results), claim.study, profile)
    study = cache[key]

    def result(status: str, numbers: str, neighbourhood: str) -> Result:
        return Result(claim.name, claim.paper, claim.where, claim.statement, status, numbers, neighbourhood)

    if study.missing:
        return result("not run", study.missing, "–")
    base = _judge(claim, study, claim.cells)
    if isinstance(base, str):
        where = f"study {claim.study}, profile {profile}"
        return result("not run", f"cell group '{base}' has fewer than {MIN_SEEDS} finished seeds ({where})", "–")
    if claim.neighbourhood is None:
        return result("✓" if base.holds else "✗", base.numbers, "n/a (at initialisation)")
    k = claim.neighbourhood
    values = {study.setting(c, k) for c in claim.cells.values()}
    if len(values) != 1 or not isinstance(next(iter(values)), (int, float)):
        return result("✓" if base.holds else "✗", base.numbers, f"not run ({k} differs across groups)")
    center = float(next(iter(values)))
    ran = []
    for factor in (0.5, 2.0):
        shifted = {n: Cells(c.mitigations, {**c.settings, k: center * factor}) for n, c in claim.cells.items()}
        outcome = _judge(claim, study, shifted)
        if isinstance(outcome, Outcome):
            ran.append((factor, outcome))
    agree = all(o.holds == base.holds for _, o in ran)
    status = ("✓" if base.holds else "✗") if agree else "fragile"
    if not ran:
        return result(status, base.numbers, f"not run in this profile ({k} ×0.5, ×2)")
    detail = "; ".join(f"×{f:g} {'✓' if o.holds else '✗'}: {o.numbers}" for f, o in ran)
    missing = [f"×{f:g}" for f in (0.5, 2.0) if f not in dict(ran)]
    return result(status, base.numbers, detail + (f"; {', '.join(missing)} not run" if missing else ""))


def evaluate_all(results: str | Path, profile: str, names: list[str] | None = None) -> list[Result]:
    known = CLAIMS.names()
    for name in names or []:
        if name not in known:
            raise UserError(f"unknown claim '{name}'; valid claims: {', '.join(known)}")
    cache: dict = {}
    return [evaluate(CLAIMS.get(n)(), results, profile, cache) for n in (names or known)]


def cell_claims(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """run_id -> the registered claims whose cell groups (at the claim's own settings, not the
    learning-rate neighbourhood) include that cell of ``manifest``."""
    out: dict[str, list[str]] = {}
    for name in CLAIMS.names():
        claim = CLAIMS.get(name)
        if claim.study != manifest["study"]:
            continue
        for cell in manifest["cells"]:
            if any(c.matches(cell) for c in claim.cells.values()):
                out.setdefault(cell["run_id"], []).append(name)
    return out


def claims_frame(results: list[Result]) -> pd.DataFrame:
    return pd.DataFrame([r.__dict__ for r in results])


def claims_markdown(results: list[Result]) -> str:
    """The claims table of a report: status, paper, statement and the numbers behind it."""
    head = "| claim | paper | where | statement | status | numbers | lr ×0.5 / ×2 |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in results:
        cells = [r.name, r.paper, r.where, r.statement, f"**{r.status}**", r.numbers, r.neighbourhood]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    counts = ", ".join(f"{s} {sum(r.status == s for r in results)}" for s in STATUSES)
    return f"{counts}.\n\n" + "\n".join(lines)
