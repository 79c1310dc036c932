"""The package's shape (issue 14): no import cycle, counting imports inside functions; no module over 400 lines;
every module says in its docstring what it owns.

Imports are read from each module's ast, so an import inside a function counts as much as one at the top. An
import is an edge to the module it names: `from . import x` to the module `x` of the package (the package itself
when x is a name defined in its __init__), `from .a import b` to `a.b` if that is a module, else to `a`; and, since
Python runs a package's __init__ before any module inside it, also to every package above that module that the
importing module is not itself inside (importing `smoothcert` itself from inside it is an edge like any other).
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "smoothcert"
MAX_LINES = 400


def _modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, packages named by their folder."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name,) + path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _targets(node, module: str, is_package: bool, modules) -> set[str]:
    """The modules of the package that one import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            here = module.split(".") if is_package else module.split(".")[:-1]
            base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    found = set()
    for name in names:
        while name and name not in modules:            # a name inside a module: the module
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (at import time or inside functions)."""
    modules = _modules(root)
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, module, path.name == "__init__.py", modules):
                    parts = target.split(".")
                    above = {".".join(parts[:i]) for i in range(1, len(parts))}      # __init__s run on the way
                    inside = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
                    edges |= {target} | {p for p in above - inside if p in modules}
        graph[module] = edges - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each in a readable order."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path(graph, group: list[str]) -> str:
    """One cycle through the component's first module, for the message: a -> b -> ... -> a."""
    start, members = group[0], set(group)
    seen, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while seen[path[-1]] is not None:
                    path.append(seen[path[-1]])
                return " -> ".join([start] + path[::-1][1:] + [start]) if v != start else f"{start} -> {start}"
            if w not in seen:
                seen[w] = v
                queue.append(w)
    return ", ".join(group)


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (imports inside functions count): " + "; ".join(_path(graph, g) for g in found)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_size_and_docstring(module):
    path = _modules()[module]
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT.parent)} has {lines} lines (at most {MAX_LINES}): split it"
    assert ast.get_docstring(ast.parse(text)), f"{path.relative_to(ROOT.parent)} has no docstring saying what it owns"


def test_the_graph_reader_sees_what_it_must(tmp_path):
    """The reader itself: a cycle hidden in a function, a relative import of a package's submodule, and the
    __init__ run on the way to a module are all edges; a package importing its own submodule is not a cycle."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""p."""\nfrom .low import x\n')
    (pkg / "low.py").write_text('"""l."""\nx = 1\n')
    (pkg / "high.py").write_text('"""h."""\nfrom .sub import deep\n')
    (pkg / "sub" / "__init__.py").write_text('"""s."""\n')
    (pkg / "sub" / "deep.py").write_text('"""d."""\ndef f():\n    from ..high import g\n')
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.low"} and graph["pkg.low"] == set()
    assert graph["pkg.high"] == {"pkg.sub", "pkg.sub.deep"} and graph["pkg.sub.deep"] == {"pkg.high"}
    assert cycles(graph) == [["pkg.high", "pkg.sub.deep"]]
    (pkg / "low.py").write_text('"""l."""\nimport pkg\nx = 1\n')        # the package's __init__ from below it
    assert ["pkg", "pkg.low"] in cycles(import_graph(pkg))
