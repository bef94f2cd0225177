"""The package's layering: a module imports only from layers below it, no chapter from another."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "hypernets"

#: Rank of every module; a module may import only modules of a lower rank.
RANKS = {
    "hypernets.validation": 0, "hypernets.seeding": 0, "hypernets.numerics": 0, "hypernets.memory": 0,
    "hypernets.data": 1, "hypernets.targets": 1,
    "hypernets.likelihoods": 2, "hypernets.metrics": 2,
    "hypernets.methods.base": 3,
    "hypernets.methods.hypergan_blocks": 4,
    **{f"hypernets.methods.{name}": 5 for name in (
        "map", "mc_dropout", "ensemble", "bayes_by_backprop", "bayes_by_hypernet",
        "bayesian_hypernetwork", "hypergan", "hypergan_mi", "mnf", "apd")},
    "hypernets.methods": 6, "hypernets.methods.registry": 6,
    "hypernets.training": 7, "hypernets.published": 7, "hypernets.reference_posterior": 7,
    "hypernets.store": 8,
    "hypernets.records": 9,
    "hypernets.runs": 10,
    "hypernets.evaluation": 11, "hypernets.adversarial": 11, "hypernets.plots": 11,
    **{f"hypernets.experiments.{name}": 12 for name in (
        "mnist", "toy", "correlations", "diversity", "adversarial", "cifar", "anomaly",
        "couplings", "hypergan_tables", "active_learning")},
    "hypernets.experiments": 12,
    "hypernets.book": 13, "hypernets.plans": 13,
    "hypernets.runner": 14,
    "hypernets": 15,
}


def module_name(path: pathlib.Path) -> str:
    parts = ("hypernets", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every hypernets module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # ``from hypernets import metrics`` imports the module hypernets.metrics.
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if f"{node.module}.{alias.name}" in RANKS}
    return {name for name in found if name.split(".")[0] == "hypernets"}


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert {module_name(path) for path in SOURCES} == set(RANKS)


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_imports_come_from_lower_layers_only(path):
    name = module_name(path)
    for imported in imported_modules(path) - {name}:
        if imported == "hypernets" or imported in RANKS and RANKS[imported] < RANKS[name]:
            continue
        pytest.fail(f"{name} (layer {RANKS[name]}) imports {imported} "
                    f"(layer {RANKS.get(imported, 'unknown')})")


def test_no_chapter_imports_another():
    for path in SOURCES:
        name = module_name(path)
        if name.startswith("hypernets.experiments."):
            chapters = {m for m in imported_modules(path) if m.startswith("hypernets.experiments")}
            assert not chapters, f"{name} imports {sorted(chapters)}"
