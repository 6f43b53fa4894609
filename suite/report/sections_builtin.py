"""The report sections every study gets (registered through vanex's own ``vanex.sections`` entry
point, like a plugin's): the study table, the per-set tuned learning rate, the generic figures."""

from __future__ import annotations

from pathlib import Path

from vanex.records.reader import StudyData
from vanex.registry import SECTIONS
from vanex.report.figures import figure_links, write_figures
from vanex.report.sections import Section, sections
from vanex.report.tables import cell_frame, lr_table, study_latex, study_table


@SECTIONS.register("study_table")
class StudyTable(Section):
    """One row per cell: seeds, means with 95% intervals, both diagnosis parts, the claims that read it."""

    order = 10
    writes = ("tables/{study}.csv", "tables/{study}.tex")

    def write(self, study: StudyData, out: Path) -> list[str]:
        frame = cell_frame(study.cells, study.manifest, study.headline, study.cell_claims)
        (out / "tables").mkdir(exist_ok=True)
        frame.to_csv(out / "tables" / f"{study.name}.csv", index=False)
        (out / "tables" / f"{study.name}.tex").write_text(study_latex(frame, study.manifest, study.headline))
        return [
            study_table(frame, study.manifest, study.headline) + "\n",
            f"Table files: [CSV](tables/{study.name}.csv) · [LaTeX (booktabs)](tables/{study.name}.tex)\n",
        ]


@SECTIONS.register("tuned_lr")
class TunedLearningRate(Section):
    """The learning rate tuned per mitigation set on the held-out metric, where a study sweeps it."""

    order = 20

    def applies(self, study: StudyData) -> bool:
        return "optim.lr" in study.swept

    def write(self, study: StudyData, out: Path) -> list[str]:
        table = lr_table(study.cells, study.manifest, study.validation_metric)
        return [table + "\n"] if table else []


@SECTIONS.register("figures")
class Figures(Section):
    """Gradient flow at init, per block, the ratio and heatmap over training, sweeps, trainability, loss."""

    order = 30
    metrics = ("grad_norm", "grad_ratio", "batch_loss")
    writes = ("figures/{study}_*.png",)

    def write(self, study: StudyData, out: Path) -> list[str]:
        drawn = {k for s in sections() if s.name != self.name and s.applies(study) for k in s.draws}
        return [part for path in write_figures(study, out / "figures", drawn) for part in figure_links(path)]
