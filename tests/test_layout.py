"""The import layout of docs/architecture.md, checked on the source: who may import whom, no cycle
between modules, and nothing private taken from another module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("storage", "extract", "temporal", "pipeline")
# a package's module-level imports of the project's packages (function-level ones are allowed
# where the table says so: temporal/predict.py imports extract inside the functions that extract)
ALLOWED = {"storage": {"storage"}, "extract": {"extract", "storage"}, "temporal": {"temporal", "storage"},
           "pipeline": set(PACKAGES)}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, anywhere: bool = False) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) of the statements at module level (`anywhere`: in
    functions too)."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree) if anywhere else tree.body:
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, [a.name for a in node.names]))
    return found


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def graph(anywhere: bool = False) -> dict[str, set[str]]:
    """module -> project modules it imports at module level (`anywhere`: in functions too); `from
    pkg import name` counts as the submodule pkg.name when there is one."""
    mods = project_modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for target, names in top_level_imports(path, anywhere):
            if target.split(".")[0] not in PACKAGES:
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            for t in subs or [target]:
                if t in mods and t != m:
                    edges[m].add(t)
    return edges


def test_packages_import_only_what_the_layout_table_allows():
    bad = [(m, t) for m, ts in graph().items() for t in ts
           if t.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert not bad


def test_no_module_imports_itself_back_through_others():
    edges = graph(anywhere=True)  # an import inside a function closes a cycle just the same
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycles.append([*path[path.index(t):], t])
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_nothing_private_is_imported_across_modules():
    private = [(m, t, n) for m, path in project_modules().items() for t, names in top_level_imports(path)
               if t.split(".")[0] in PACKAGES for n in names if n.startswith("_")]
    assert not private
