"""The package's imports point one way: the graph of ``src/labelsmooth`` has no cycle.

The graph is read from the source with :mod:`ast`, not from ``sys.modules``, so
an import inside a function counts as much as one at the top. An edge
``a -> b`` means module ``a`` imports ``b``; ``from p import name`` is an edge
to ``p.name`` when that is a module, else to ``p``. Importing ``p.q.m`` also
runs ``p/q/__init__.py``, so a module outside ``p.q`` gets an edge to ``p.q``
too (the root package, the entry point of every import, is left out).
Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "labelsmooth"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``module`` imports (relative imports resolved)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            # ``from p import name``: the submodule p.name, or an attribute of p (p's init runs).
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    names = _module_names()
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        targets: set[str] = set()
        for name in _imported(ast.parse(path.read_text()), module, path.name == "__init__.py", set(names)):
            targets.add(name)
            parts = name.split(".")
            for depth in range(2, len(parts)):
                parent = ".".join(parts[:depth])
                if not (module == parent or module.startswith(parent + ".")):
                    targets.add(parent)
        targets.discard(module)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module, each sorted."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return sorted(found)


def test_the_checker_finds_cycles_and_accepts_a_chain():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d", "a"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports():
    source = "def f():\n    from labelsmooth.soft_targets import SoftTargets\nfrom . import _validation\n"
    tree = ast.parse(source)
    modules = {"labelsmooth", "labelsmooth.soft_targets", "labelsmooth._validation", "labelsmooth.losses"}
    names = _imported(tree, "labelsmooth.targets", False, modules)
    assert names == {"labelsmooth.soft_targets", "labelsmooth._validation"}
    guarded = ast.parse("if TYPE_CHECKING:\n    import labelsmooth.losses\n")
    assert _imported(guarded, "labelsmooth.targets", False, modules) == set()
    attribute = ast.parse("from labelsmooth import cross_entropy\n")
    assert _imported(attribute, "labelsmooth.targets", False, modules) == {"labelsmooth"}


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert f"{PACKAGE}.targets" in graph["labelsmooth.functional"]
    assert f"{PACKAGE}.soft_targets" in graph[f"{PACKAGE}.targets"]
    assert len(graph) > 40


#: The README's architecture list, top to bottom: a module imports only from its own layer or below.
LAYERS = [
    ("__main__",),
    ("cli", "_cli"),
    # The trainers' record writers (SaveRun, save_run) write the records experiments/ defines.
    ("integrations",),
    ("experiments",),
    ("algorithms",),
    ("schedules",),
    ("metrics",),
    ("losses",),
    ("functional",),
    ("tensor_parallel", "distributed"),
    ("binary",),
    ("dice",),
    ("kernels",),
    ("targets",),
    ("soft_targets",),
    ("_smoothing", "_dtypes", "_reduction"),
    ("_validation",),
    ("_lazy",),
]


def _layer(module: str) -> int:
    """The index of ``module``'s layer (the root package, which only re-exports, is above all)."""
    if module == PACKAGE:
        return -1
    top = module.split(".")[1]
    (index,) = [i for i, names in enumerate(LAYERS) if top in names]
    return index


def test_imports_point_down_the_layers():
    graph = import_graph()
    assert {m.split(".")[1] for m in graph if m != PACKAGE} == {n for names in LAYERS for n in names}
    upward = [(m, t) for m, targets in graph.items() for t in targets if _layer(t) < _layer(m)]
    assert upward == []


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph()) == []
