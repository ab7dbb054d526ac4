"""The package's structure, read from its imports (those inside functions too), so it stays as designed.

Rules (README, "Layout"): no import cycle; nothing outside `hadskip.cli` imports the CLI; only `hadskip.sweep`
imports Ray, and core/data/baselines/run/results import without it; each folder imports only the layers
below it (ALLOWED); method names live in the registry only.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "hadskip"

# group -> the groups its modules may import (a group is a top-level module or folder of hadskip)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "storage": set(),
    "tables": set(),
    "registry": {"errors"},
    "config": {"errors", "registry", "data"},
    "data": {"errors"},
    "core": {"errors", "config", "data", "tables"},
    "baselines": {"errors", "config", "data", "core", "registry"},
    "results": {"errors", "config", "data", "registry", "storage", "tables"},
    "run": {"errors", "config", "data", "core", "baselines", "checkpoint", "registry", "results", "storage"},
    "checkpoint": {"errors", "core", "baselines"},
    "sweep": {"errors", "config", "data", "core", "registry", "results", "run", "storage", "tables"},
    "cli": {
        "errors",
        "config",
        "data",
        "core",
        "checkpoint",
        "registry",
        "results",
        "run",
        "sweep",
        "tables",
    },
    "__init__": {"core", "checkpoint"},
    "__main__": {"cli"},
}
RAY_FREE = ("core", "data", "baselines", "run", "results")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between the package's modules, external top-level names each module imports), counting
    imports anywhere in a module, inside functions included."""
    name = root.name
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    external: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` names a module; `from pkg.mod import func` resolves to pkg.mod below
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != name:
                    external[mod].add(target.split(".")[0])
                    continue
                while target not in files and "." in target:  # `from pkg.mod import func` -> pkg.mod
                    target = target.rsplit(".", 1)[0]
                if target != mod:
                    edges[mod].add(target)
    return edges, external


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations(edges: dict[str, set[str]], external: dict[str, set[str]]) -> list[str]:
    """Every broken rule, as one readable line each."""
    out = [f"import cycle among {', '.join(c)}" for c in cycles(edges)]
    for mod, targets in sorted(edges.items()):
        g = group(mod)
        for t in sorted(targets):
            tg = group(t)
            if tg == g:
                continue
            if tg == "cli" and g not in ("cli", "__main__"):
                out.append(f"{mod} imports the CLI ({t}); the CLI calls the library, never the reverse")
            elif tg not in ALLOWED.get(g, set()):
                out.append(f"{mod} ({g}/) imports {t} ({tg}/), which {g}/ may not import")
        if "ray" in external[mod] and g != "sweep":
            out.append(f"{mod} imports ray; only hadskip.sweep may")
    return out


def test_the_package_keeps_its_layers():
    found = violations(*import_graph(PACKAGE))
    assert not found, "\n".join(found)


def test_the_checker_catches_a_cycle_a_cli_import_ray_and_an_upward_import(tmp_path):
    root = tmp_path / "hadskip"
    for folder in ("core", "results", "cli"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "core" / "a.py").write_text("def f():\n    from hadskip.core.b import g\n")  # inside a function
    (root / "core" / "b.py").write_text("from hadskip.core import a\nimport ray\n")
    (root / "results" / "c.py").write_text("from hadskip.core.a import f\nfrom hadskip.cli.main import x\n")
    (root / "cli" / "main.py").write_text("x = 1\n")
    found = violations(*import_graph(root))
    assert "import cycle among hadskip.core.a, hadskip.core.b" in found
    assert any("hadskip.core.b imports ray" in v for v in found)
    assert any("hadskip.results.c (results/) imports hadskip.core.a (core/)" in v for v in found)
    assert any("hadskip.results.c imports the CLI" in v for v in found)


def test_layers_below_the_sweep_import_without_ray():
    graph = import_graph(PACKAGE)[0]
    modules = [m for layer in RAY_FREE for m in sorted(graph) if group(m) == layer]
    code = (
        "import sys\n"
        f"for m in {modules!r}:\n"
        "    __import__(m)\n"
        "    if 'ray' in sys.modules:\n"
        "        print(m)\n"
        "        break\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {out.stdout.strip()} loads ray"


def test_results_import_without_torch():
    code = "import sys, hadskip.results, hadskip.sweep.settings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_method_names_are_listed_in_the_registry_only():
    from typing import get_args

    from hadskip.baselines.training import EXIT_LOSSES
    from hadskip.config import RunSettings
    from hadskip.registry import EXIT_METHODS, METHOD_NAMES, RESULT_METHODS
    from hadskip.results.schema import ResultRow

    assert get_args(RunSettings.model_fields["method"].annotation) == METHOD_NAMES
    assert get_args(ResultRow.model_fields["method"].annotation) == RESULT_METHODS
    assert set(EXIT_LOSSES) == set(EXIT_METHODS)
    # no other module spells out a list of method names
    names = set(METHOD_NAMES)
    for path in PACKAGE.rglob("*.py"):
        if path.name == "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                listed = {e.value for e in node.elts if isinstance(e, ast.Constant)} & names
                assert len(listed) < 3, (
                    f"{path.relative_to(REPO)}:{node.lineno} lists methods {sorted(listed)}"
                )
