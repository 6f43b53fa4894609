"""The house: the import structure of the package, drawn from every import statement in it.

Layers, lowest first; a module imports only its own layer or lower ones, and the engine and the
report (the same layer) never import each other. Report, records and science modules import
neither torch nor the engine nor a task; the graph of module imports has no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

FOLDERS = {"suite": "vanex", "tasks": "vanex.tasks", "conf": "vanex.conf"}  # pyproject's package-dir
LAYERS = {
    "vanex": 0,  # the package root pins numerics: nothing else
    "vanex.errors": 0,
    "vanex.registry": 0,
    "vanex.numerics": 0,
    "vanex.conf": 0,
    "vanex.science": 1,
    "vanex.records": 2,
    "vanex.engine": 3,
    "vanex.report": 3,
    "vanex.mitigations": 4,
    "vanex.tasks": 4,
    "vanex.cli": 5,
}
TORCH_FREE = ("vanex.science", "vanex.records", "vanex.report")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((package, *parts))] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function, resolved to the modules
    of the package where it names one (``from vanex.engine import study`` -> ``vanex.engine.study``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found


def _layer(module: str) -> str | None:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return max(prefixes, key=len) if prefixes else None


GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_every_module_sits_in_a_layer():
    assert len(MODULES) > 40 and [m for m in MODULES if _layer(m) is None] == []


def wrong_way(module: str, target: str) -> bool:
    """Whether ``module`` importing ``target`` breaks the layering: an import upwards, or across between
    two layers of one rank other than the foundation's (the engine and the report)."""
    mine, theirs = _layer(module), _layer(target)
    return LAYERS[theirs] > LAYERS[mine] or (LAYERS[theirs] == LAYERS[mine] > 0 and mine != theirs)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    return next((c for m in sorted(graph) if m not in state and (c := visit(m, []))), None)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_and_never_across_between_engine_and_report(module):
    bad = sorted(t for t in GRAPH[module] if wrong_way(module, t))
    assert bad == [], f"{module} ({_layer(module)}) imports {bad}: not a lower layer"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(TORCH_FREE)))
def test_report_records_and_science_import_no_torch_engine_or_task(module):
    banned = ("torch", "hydra", "vanex.engine", "vanex.tasks", "vanex.mitigations")
    bad = sorted(m for m in _imports(MODULES[module]) if m.split(".")[0] in banned[:2] or m.startswith(banned[2:]))
    assert bad == [], f"{module} imports {bad}"


def test_the_module_graph_has_no_cycle():
    assert find_cycle(GRAPH) is None


def test_the_checks_can_fail(tmp_path):
    """A records module importing the report, the engine importing the report, a deferred torch import
    and a two-module cycle are all seen."""
    path = tmp_path / "bad.py"
    path.write_text("from vanex.report import build\n\ndef f():\n    import torch\n")
    assert {"vanex.report.build", "torch"} <= _imports(path)
    assert wrong_way("vanex.records.store", "vanex.report.build")
    assert wrong_way("vanex.engine.runner", "vanex.report.figures")
    assert not wrong_way("vanex.tasks.rnn_copy_report", "vanex.report.figures")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_reporting_with_every_claim_and_section_loads_no_torch_and_no_task():
    code = (
        "import sys\n"
        "from vanex.report.build import write_report\n"
        "from vanex.report.claims import evaluate_all\n"
        "from vanex.report.sections import report_metrics\n"
        "from vanex.registry import CLAIMS, SECTIONS\n"
        "assert CLAIMS.names() and SECTIONS.names() and report_metrics()\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'hydra') or m.startswith("
        "('vanex.engine', 'vanex.mitigations')) or (m.startswith('vanex.tasks.') and not m.endswith('_report')))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_installed_package_is_vanex_and_nothing_named_suite_or_tasks(tmp_path):
    """From a folder outside the checkout: vanex and vanex.tasks import, suite and tasks do not."""

    def imports(name: str) -> int:
        return subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True).returncode

    assert imports("vanex, vanex.tasks, vanex.conf") == 0
    assert imports("suite") != 0 and imports("tasks") != 0
