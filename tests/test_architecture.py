"""The import graph of ``kdscope``: no cycles, and every import points down the layers.

Every module under ``src/kdscope`` is parsed with :mod:`ast` (nothing is imported) and every
``import``/``from ... import`` of a ``kdscope`` module is collected at any depth: module level,
inside functions and classes, in ``try``/``if`` blocks. Relative imports are resolved, ``from
kdscope import x`` counts as an import of ``kdscope.x`` when ``x`` is a submodule (else of the
package ``kdscope`` itself), and a package's ``__init__.py`` is the module named after the
package. Imports under ``if TYPE_CHECKING:`` never run, so they are left out of the runtime graph.

An edge is the module that an import names; the parent packages that Python runs first are not
added (``kdscope/__init__.py`` re-exports the public API, so every module would otherwise sit in
one cycle with it).

A cycle fails with a concrete loop and the line of each import in it; an import from a lower
layer (see :data:`LAYERS`) into a higher one fails with the offending line.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "src" / "kdscope"

Graph = dict[str, dict[str, int]]
"""importer -> {imported: line of the first such import}."""

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "errors",
            "version",
            "registry",
            "io",
            "seeding",
            "stats",
            "correlation",
            "verdicts",
            "render",
            "progress",
            "plugins",
            "device",
        ),
    ),
    ("data", ("datasets", "augment")),
    ("models", ("models",)),
    ("methods", ("methods",)),
    ("config", ("config",)),
    ("training", ("trainer", "trajectory", "evaluation")),
    ("studies", ("study", "runs", "given", "weight_search", "executor", "null_studies")),
    ("analyses", ("analyses", "knowledge_points", "teacher_knowledge", "property_transfer")),
    ("report", ("report", "summary_table")),
    ("entry", ("pipeline", "cli", "bench", "")),
)
"""The intended layers, lowest first, each with the top-level names under ``kdscope`` it holds
(``""`` is the package ``kdscope`` itself, the public facade). A module may import its own layer
and any lower one."""


def module_name(path: Path) -> str:
    """The dotted name of the module in ``path`` (a package's ``__init__.py`` names the package)."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` condition is ``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class ImportCollector(ast.NodeVisitor):
    """Collects the ``kdscope`` imports of one module, split into runtime and type-only ones."""

    def __init__(self, name: str, is_package: bool, modules: frozenset[str]) -> None:
        self.name = name
        self.package = name if is_package else name.rpartition(".")[0]
        self.modules = modules
        self.runtime: dict[str, int] = {}
        self.type_only: dict[str, int] = {}
        self._type_checking = 0

    def _add(self, target: str, line: int) -> None:
        if not (target == "kdscope" or target.startswith("kdscope.")):
            return
        while target not in self.modules:  # ``kdscope.x.name``: the name lives in ``kdscope.x``
            target = target.rpartition(".")[0]
        if target == self.name:
            return
        found = self.type_only if self._type_checking else self.runtime
        found.setdefault(target, line)

    def visit_If(self, node: ast.If) -> None:
        if not is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking += 1
        for child in node.body:
            self.visit(child)
        self._type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            self._add(submodule if submodule in self.modules else source, node.lineno)


def source_files() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def runtime_graph() -> Graph:
    """The import graph of the package without the imports made only for type checkers."""
    files = source_files()
    modules = frozenset(files)
    graph: Graph = {}
    for name, path in files.items():
        collector = ImportCollector(name, path.name == "__init__.py", modules)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        graph[name] = collector.runtime
    return graph


def strongly_connected(graph: Mapping[str, Mapping[str, int]]) -> list[frozenset[str]]:
    """The components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    members = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.add(member)
                        if member == node:
                            break
                    if len(members) > 1:
                        components.append(frozenset(members))
    return components


def loop_through(graph: Graph, members: frozenset[str], start: str) -> str:
    """A shortest loop ``start -> ... -> start`` inside one component, with the import lines."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph[node]):
            if succ not in members or succ in previous:
                continue
            previous[succ] = node
            if succ == start:
                queue.clear()
                break
            queue.append(succ)
    path = [start]
    while len(path) == 1 or path[-1] != start:
        path.append(previous[path[-1]])
    path.reverse()
    return (
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:], strict=False))
        + f" -> {start}"
    )


def layer_of(module: str) -> int:
    """The position in :data:`LAYERS` of a module (by its top-level name under ``kdscope``)."""
    top = module.split(".")[1] if "." in module else ""
    for position, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return position
    raise AssertionError(f"{module} is in no layer: add {top!r} to LAYERS in {__file__}")


def upward_imports(graph: Graph) -> dict[str, int]:
    """``importer -> imported`` for every runtime import into a higher layer, with its line."""
    return {
        f"{importer} -> {imported}": line
        for importer, targets in sorted(graph.items())
        for imported, line in sorted(targets.items())
        if layer_of(imported) > layer_of(importer)
    }


def test_collector_resolves_relative_and_submodule_imports() -> None:
    modules = frozenset({"kdscope", "kdscope.a", "kdscope.a.b", "kdscope.a.c", "kdscope.d"})
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import c\n"
        "from .. import d\n"
        "from kdscope import a, __version__\n"
        "if TYPE_CHECKING:\n"
        "    from kdscope.a.c import Thing\n"
        "    import kdscope.d\n"
        "def f():\n"
        "    from kdscope.a.c import other\n"
        "from kdscope.a.b import itself\n"
    )
    collector = ImportCollector("kdscope.a.b", False, modules)
    collector.visit(ast.parse(source))
    assert collector.runtime == {"kdscope.a.c": 2, "kdscope.d": 3, "kdscope.a": 4, "kdscope": 4}
    assert collector.type_only == {"kdscope.a.c": 6, "kdscope.d": 7}
    package = ImportCollector("kdscope.a", True, modules)
    package.visit(ast.parse("from . import b\nfrom .c import x\n"))
    assert package.runtime == {"kdscope.a.b": 1, "kdscope.a.c": 2}


def test_strongly_connected_finds_loops() -> None:
    graph: Graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"e": 5}}
    assert strongly_connected(graph) == [frozenset({"a", "b", "c"})]
    loop = loop_through(graph, frozenset({"a", "b", "c"}), "a")
    assert loop == "a (line 1) -> b (line 2) -> c (line 3) -> a"


def test_no_import_cycles() -> None:
    runtime = runtime_graph()
    loops = [
        loop_through(runtime, members, min(members)) for members in strongly_connected(runtime)
    ]
    assert not loops, "import cycles:\n" + "\n".join(loops)


def test_layers_point_down() -> None:
    layer_names = [name for name, _ in LAYERS]
    upward = [
        f"{edge} (line {line}): layer {layer_names[layer_of(edge.split()[0])]} imports layer "
        f"{layer_names[layer_of(edge.split()[-1])]}"
        for edge, line in upward_imports(runtime_graph()).items()
    ]
    assert not upward, "imports into a higher layer:\n" + "\n".join(upward)


def test_every_module_has_a_layer() -> None:
    for module in source_files():
        layer_of(module)


def test_import_leaves_heavy_libraries_for_later() -> None:
    """``import kdscope`` (what every spawned worker pays) imports neither matplotlib (figures:
    only when a report is drawn) nor scipy.stats (only where a test statistic is computed)."""
    import subprocess
    import sys

    code = (
        "import sys, kdscope; "
        "print(sorted(m for m in ('matplotlib', 'scipy.stats', 'captum') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
