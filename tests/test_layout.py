"""The repository's shape: no import cycles between simloop's modules, the layering
(kernels <- engine <- algos <- bench / experiments / peers: nothing imports upward), and no source file over
``MAX_LINES`` lines. Every import counts, including those inside functions, read with ``ast`` from the
files (nothing is imported)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "engine", "algos", "bench", "experiments", "peers")
"""Top-level packages checked (those present)."""
LAYER = {"kernels": 0, "engine": 1, "algos": 2, "bench": 3, "experiments": 3, "peers": 3}
"""A module may import modules of its own layer or lower ones only."""
MAX_LINES = 600
"""A source file longer than this does more than one job."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    """Module name -> file, for every .py under the checked packages."""
    files = [p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in sorted((ROOT / pkg).rglob("*.py"))]
    return {_module_name(p): p for p in files}


def _resolve(name: str, modules: set[str]) -> str | None:
    """The project module an import of ``name`` loads: ``name`` itself or its longest prefix that is one."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """The project modules ``module`` imports anywhere in its file. ``from pkg import x`` counts as an import
    of ``pkg.x`` where that is a module, else of ``pkg``; relative imports are resolved against the package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            full = [f"{base}.{alias.name}" for alias in node.names]
            names = [n for n in full if n in modules] + ([base] if any(n not in modules for n in full) else [])
        else:
            continue
        found |= {m for m in (_resolve(n, modules) for n in names) if m is not None and m != module}
    return found


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    modules = set(sources)
    return {m: _imports(m, p, modules) for m, p in sources.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_inside_functions_and_from_imports():
    """The checks below mean something only if the parser finds these known edges."""
    graph = _graph()
    assert "engine.mjx_eval" in graph["engine.evaluate"]  # a late import inside ``evaluate``
    assert "kernels.native" in graph["kernels.rollout_step_cpu"]  # ``from kernels import native``
    assert "engine.data.registry" in graph["engine.data"]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_layering():
    upward = [
        f"{m} imports {dep}"
        for m, deps in _graph().items()
        for dep in sorted(deps)
        if LAYER[dep.split(".")[0]] > LAYER[m.split(".")[0]]
    ]
    assert upward == []


def test_no_file_over_max_lines():
    long = {m: n for m, p in _sources().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_engine_data_and_dynamics_do_not_import_the_sac_trainer():
    code = "import sys, engine.data, engine.dynamics; assert 'engine.sac' not in sys.modules, 'engine.sac imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
