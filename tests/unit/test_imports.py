"""The package's imports (issue #11): no cycle, and no stage imports a later one.

Every ``import`` and ``from ... import`` of a dicomtrace module counts, also those inside
functions (a deferred import is still a dependency).  A new top-level module or package
must be given its place in STAGES."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dicomtrace"

# the direction data flows in; a module may import its own stage, earlier stages and
# the foundation (-1), never a later stage
STAGES = {
    "__init__": -1, "config": -1, "settings": -1, "uids": -1, "ports": -1, "schema": -1,
    "capture": 0,
    "net": 1, "pipeline": 1,
    "tcp": 2,
    "tls": 3,
    "ul": 4,
    "dimse": 5,
    "model": 6,
    "findings": 7,
    "redact": 8, "export": 8, "output": 8, "report": 8, "compare": 8, "logs": 8, "correlate": 7,
    "engine": 9, "parallel": 9, "probe": 9, "distributed": 9, "scale": 9, "live": 9,
    "cli": 10, "analysis_cli": 10, "__main__": 10,
}


MODULE_STAGES: dict[str, int] = {}  # modules whose place is not their package's


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The dicomtrace modules a file imports (``from a import b`` counts a.b when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "dicomtrace")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "dicomtrace":
                continue
            out.add(mod)
            for a in node.names:
                out.add(f"{mod}.{a.name}")
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {x for x in imports_of(p) if x in files and x != m} for m, p in files.items()}


def stage(module: str) -> int:
    if module in MODULE_STAGES:
        return MODULE_STAGES[module]
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in STAGES:
        pytest.fail(f"{module}: top-level module {top!r} has no place in STAGES (tests/unit/test_imports.py)")
    return STAGES[top]


def test_no_stage_imports_a_later_one():
    wrong = sorted(f"{m} (stage {stage(m)}) imports {x} (stage {stage(x)})"
                   for m, xs in graph().items() for x in xs if stage(x) > stage(m) and stage(m) >= 0)
    wrong += sorted(f"{m} (foundation) imports {x}" for m, xs in graph().items() for x in xs
                    if stage(m) < 0 and m != "dicomtrace" and stage(x) >= 0)
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, path):
        state[m] = 1
        for x in sorted(g[m]):
            if state.get(x) == 1:
                cycles.append(" -> ".join(path[path.index(x):] + [x]))
            elif x not in state:
                visit(x, path + [x])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    # a package's __init__ re-exporting its own modules is not a cycle between stages
    cycles = [c for c in cycles if not _within_one_package_init(c)]
    assert not cycles, "\n".join(cycles)


def _within_one_package_init(cycle: str) -> bool:
    mods = cycle.split(" -> ")
    pkgs = {m for m in mods if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    return bool(pkgs) and all(any(m == p or m.startswith(p + ".") for p in pkgs) for m in mods)


def test_the_walker_sees_imports():
    g = graph()
    assert "dicomtrace.ul.stream" in g["dicomtrace.dimse.assembler"]
    assert "dicomtrace.engine" in g["dicomtrace.parallel"]
