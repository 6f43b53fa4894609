"""AGC's published claim and its report section, torch-free (loaded by the reporter and ``vanex claims``
through the ``vanex.claims`` and ``vanex.sections`` entry points, without any model code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from vanex.records.reader import StudyData
from vanex.registry import CLAIMS, SECTIONS
from vanex.report.claims import Cells, Claim, Group, Outcome, fmt, trains
from vanex.report.sections import Section
from vanex.report.tables import markdown_table

HIGH_LR = {"optim.lr": 0.5}  # fixed before the study was run: 10x the built-in studies' SGD rate


@CLAIMS.register("brock2021_agc")
class AGCStability(Claim):
    paper = "Brock, De, Smith & Simonyan 2021, High-performance large-scale image recognition without normalization"
    where = "Sec. 4.1"
    statement = (
        "Adaptive gradient clipping lets an unnormalised network train stably at a learning rate where it is "
        "unstable without clipping."
    )
    study = "agc_mlp"
    cells = {"plain": Cells(("relu", "he_init"), HIGH_LR), "agc": Cells(("relu", "he_init", "agc"), HIGH_LR)}
    control = "plain"  # the same net without clipping isolates what AGC does

    def predicate(self, g: dict[str, Group]) -> Outcome:
        plain, agc = g["plain"], g["agc"]
        numbers = (
            f"loss/chance: relu+he_init {fmt(plain.values('loss_vs_chance'))}, +agc {fmt(agc.values('loss_vs_chance'))}"
        )
        return Outcome(not trains(plain) and trains(agc), numbers)


@SECTIONS.register("agc_unit_ratio")
class UnitRatioTable(Section):
    """The largest unit-wise gradient/weight ratio (what AGC bounds) at step 0 and at the last sampled step."""

    order = 45
    metrics = ("unit_grad_ratio",)

    def applies(self, study: StudyData) -> bool:
        return not study.probes.empty and (study.probes["metric"] == "unit_grad_ratio").any()

    def write(self, study: StudyData, out: Path) -> list[str]:
        rows = study.probes[study.probes["metric"] == "unit_grad_ratio"]
        per_run = rows.groupby(["mitigations", "setting", "run_id", "step"])["value"].max().reset_index()
        first = per_run[per_run["step"] == per_run.groupby("run_id")["step"].transform("min")]
        last = per_run[per_run["step"] == per_run.groupby("run_id")["step"].transform("max")]
        table = []
        for (mitigations, setting), group in first.groupby(["mitigations", "setting"], sort=False):
            end = last[(last["mitigations"] == mitigations) & (last["setting"] == setting)]["value"]
            table.append([mitigations, setting or "–", len(group), np.median(group["value"]), np.median(end)])
        header = ["mitigations", "setting", "seeds", "max ||G_i||/||W_i|| at step 0", "at the last sampled step"]
        caption = (
            "**Unit-wise gradient/weight ratio** (`unit_grad_ratio`, from the vanex-agc plugin): per run the "
            "largest over layers and units of ||G_i|| / ||W_i|| before clipping, median over seeds; AGC rescales "
            "each unit's gradient so that this ratio is at most λ.\n"
        )
        return [caption, markdown_table(header, table) + "\n"]
