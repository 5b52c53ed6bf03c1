"""The import graph: no import cycles between modules, and the wire needs msgspec alone.

lint-imports checks the layers of docs/architecture.md ([tool.importlinter] in pyproject.toml); this adds what its
contracts cannot say: cycles between single modules, including those through a package's ``__init__`` (its
``acyclic_siblings`` contract compares sibling packages only), and the wire's third-party imports as an allow-list.
A cycle allowed for a while goes in that contract's ``ignore_imports``, one list for both checks (none today).
"""

from __future__ import annotations

import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

# The graph is checked where import-linter is installed (the models env); upstream's pinned env has neither.
grimp = pytest.importorskip("grimp")
read_configuration = pytest.importorskip("importlinter.api").read_configuration

ROOT = Path(__file__).resolve().parent.parent
ROOT_PACKAGES = ("host", "rpcworker", "instantmesh")
WIRE = "rpcworker.wire"
WIRE_MAY_IMPORT = frozenset({"msgspec"}) | sys.stdlib_module_names


def known_cycle_imports() -> list[tuple[str, str]]:
    """The `importer -> imported` lines the acyclic_siblings contract ignores (plain names, no wildcards)."""
    contracts = read_configuration(str(ROOT / "pyproject.toml"))["contracts_options"]
    acyclic = next(c for c in contracts if c["type"] == "acyclic_siblings")
    pairs = []
    for line in acyclic.get("ignore_imports", []):
        importer, imported = (part.strip() for part in line.split("->"))
        pairs.append((importer, imported))
    return pairs


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*ROOT_PACKAGES, include_external_packages=True, cache_dir=None)


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def find_cycle(imports: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `imports` (module -> the modules it imports), in import order, its first module repeated last."""
    try:
        TopologicalSorter(imports).prepare()
    except CycleError as error:
        return list(reversed(error.args[1]))  # graphlib lists each module after the one it imports
    return None


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    steps = []
    for importer, imported in zip(cycle, cycle[1:], strict=False):
        lines = ",".join(str(d["line_number"]) for d in graph.get_import_details(importer=importer, imported=imported))
        steps.append(f"{importer} (line {lines})")
    return " -> ".join(steps) + f" -> {cycle[-1]}"


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    ours = {m for m in graph.modules if m.split(".")[0] in ROOT_PACKAGES}
    imports = {m: graph.find_modules_directly_imported_by(m) & ours for m in ours}
    for importer, imported in known_cycle_imports():
        assert imported in imports.get(importer, set()) and graph.chain_exists(importer=imported, imported=importer), (
            f"{importer} -> {imported} no longer closes a cycle: delete it from the acyclic_siblings contract's "
            "ignore_imports in pyproject.toml"
        )
        imports[importer].discard(imported)
    cycle = find_cycle(imports)
    assert cycle is None, f"import cycle: {describe(graph, cycle)}"


def test_the_wire_imports_msgspec_and_the_standard_library_alone(graph: grimp.ImportGraph) -> None:
    outside = sorted(
        f"{module} imports {imported}"
        for module in graph.modules
        if in_package(module, WIRE)
        for imported in graph.find_modules_directly_imported_by(module)
        if not in_package(imported, WIRE) and imported.split(".")[0] not in WIRE_MAY_IMPORT
    )
    assert not outside, outside
