"""Structure of ``tpv_core``: no import circle among its modules (imports inside functions and under
``TYPE_CHECKING`` included), no Streamlit import, and no module longer than ~350 lines unless its
docstring says why (the marker phrase ``SIZE_MARKER``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tpv_core"
MAX_LINES = 350
SIZE_MARKER = "Longer than 350 lines because"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(mod: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``mod``)."""
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_package else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(mod: str, path: Path, known: set[str]) -> set[str]:
    """Every tpv_core module that ``mod`` imports anywhere in its source (functions included).

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(mod, path.name == "__init__.py", node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import tpv_core.tasks.data.x` -> the longest known prefix
                t = t.rpartition(".")[0]
            if t and t != mod:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "tpv_core.tasks.spec" in graph["tpv_core.tasks.data"]
    assert "tpv_core.tasks.spec" in graph["tpv_core.backbones.base"]
    # tpv_core.plots imports tpv_core.atomic inside a function
    assert "tpv_core.atomic" in graph["tpv_core.plots"]


def test_cycle_finder_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circles_in_tpv_core():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_task_modules_import_downwards():
    """spec <- custom <- data <- registry: each task module imports only those before it."""
    graph = import_graph()
    order = ["tpv_core.tasks.spec", "tpv_core.tasks.custom", "tpv_core.tasks.data", "tpv_core.tasks.registry"]
    for i, mod in enumerate(order):
        above = set(order[i + 1:]) | {"tpv_core.tasks"}
        assert not graph[mod] & above, f"{mod} imports {sorted(graph[mod] & above)}"
    assert not {m for m in graph["tpv_core.tasks.spec"] if m.startswith("tpv_core.backbones")}


def test_core_never_imports_streamlit():
    for mod, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "streamlit" for n in names), f"{mod} imports streamlit"


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("mod", sorted(modules()))
def test_module_size(mod):
    path = modules()[mod]
    n = _lines(path)
    if n <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert SIZE_MARKER in doc, (f"{path.relative_to(ROOT)} has {n} lines (> {MAX_LINES}): split it by concern, or "
                                f"say in its docstring why not, starting with {SIZE_MARKER!r}")

