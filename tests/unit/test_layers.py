"""The package's imports run one way: no cycle, and each layer imports only the layers before it.

Every import is read from the source (at module level and inside functions alike), so an import moved into a
function to hide a cycle is found too. Importing a submodule from outside its package runs the package's
``__init__`` as well, and counts as an import of it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "prefinetune"

# The layers, lowest first: a module may import its own layer and those listed before it.
LAYERS = [
    ["tasks"],
    ["batch"],
    ["families"],  # the package and every module in it
    ["data", "heads", "batching"],
    ["training"],
    ["evaluation"],
    ["stages"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from . import x` imports module x
    return {m for m in found if m in MODULES}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        targets = set()
        for target in imports(path):
            targets.add(target)
            parent = target.rpartition(".")[0]
            while parent and parent != "prefinetune" and not name.startswith(parent + "."):
                targets.add(parent)  # a package's __init__ runs first, unless the importer is inside it
                parent = parent.rpartition(".")[0]
        edges[name] = targets - {name, "prefinetune"}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def layer_of(module: str) -> int | None:
    short = module.removeprefix("prefinetune.").split(".")[0]
    return next((i for i, names in enumerate(LAYERS) if short in names), None)


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_each_layer_imports_only_the_layers_before_it():
    wrong = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
             for a, targets in graph().items() for b in targets
             if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)]
    assert wrong == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    # and the parser sees an import inside a function
    source = PACKAGE / "families" / "classification.py"
    assert "prefinetune.families.layers" in imports(source)  # imported inside make_head and losses

