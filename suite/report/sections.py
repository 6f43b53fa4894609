"""The Section extension point: one part of a study's page in the report.

A section is a registered class (``@SECTIONS.register("name")`` in a module named by a
``vanex.sections`` entry point, torch-free) that declares

- ``order``: where it goes on the study's page (lower first; the study table is 10);
- ``metrics``: the probe series it reads, so the reader keeps them (a plugin probe's rows reach
  the report by a section or claim that names them);
- ``writes``: what it writes, as path patterns under the report folder (``{study}`` filled in);
- ``draws``: swept settings it draws its own figure against (the generic figures then leave them out);
- ``applies(study)``: whether it has anything to say about a study (by what the records hold:
  settings, probe metrics, task_info; never by the task's name alone);

and ``write(study, out)`` returns the Markdown parts, writing its files under ``out``. The report
runs every registered section that applies, in ``order``; built-in, task and plugin sections alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from vanex.records.reader import StudyData
from vanex.registry import CLAIMS, SECTIONS


class Section:
    """Base class of a report section; subclasses fill the class attributes and ``write``."""

    name: ClassVar[str]
    origin: ClassVar[str]
    order: ClassVar[int] = 50
    metrics: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    draws: ClassVar[tuple[str, ...]] = ()

    def applies(self, study: StudyData) -> bool:
        return True

    def write(self, study: StudyData, out: Path) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError


def sections() -> list[Section]:
    """Every registered section, in page order (then by name)."""
    return sorted((SECTIONS.get(n)() for n in SECTIONS.names()), key=lambda s: (s.order, s.name))


def report_metrics() -> set[str]:
    """The probe metrics a report keeps: those the registered sections and claims declare (each
    study's flow metric is kept by the reader)."""
    wanted = {m for s in sections() for m in s.metrics}
    return wanted | {m for n in CLAIMS.names() for m in CLAIMS.get(n).metrics}
