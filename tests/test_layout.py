"""The package's shape holds: no import cycles, no module reaching into another's private names,
mitmproxy only in addons/, and the library never importing the command line.

Every module of shadow/, addons/ and analyzers/ is parsed with `ast` (nothing is imported). An
import counts wherever it stands — module level or inside a function (a lazy import still ties the
two modules together) — except under `if TYPE_CHECKING:`, which never runs.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shadow", "addons", "analyzers")



@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported from (or the module imported)
    name: str | None  # the name imported from it; None for `import x.y`
    line: int


def module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """(statement, absolute module it imports from) for every import that runs, at any depth."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                stack.append(ast.Module(body=child.orelse, type_ignores=[]))  # the else branch runs
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child, alias.name
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    package = package[: len(package) - (child.level - 1)]
                    base = ".".join([*package, base] if base else package)
                yield child, base
            stack.append(child)


@functools.cache
def collect() -> tuple[dict[str, set[str]], list[Import], list[str]]:
    """The import graph among our modules, the imports of private names, the mitmproxy imports."""
    modules = module_files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private: list[Import] = []
    mitmproxy: list[str] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        module_aliases: dict[str, str] = {}  # local name -> our module it is bound to
        for statement, base in _imports(tree, module, path.name == "__init__.py"):
            where = f"{path.relative_to(ROOT)}:{statement.lineno}"
            if base == "mitmproxy" or base.startswith("mitmproxy."):
                mitmproxy.append(where)
            if isinstance(statement, ast.Import):
                for alias in statement.names:
                    if alias.name in modules:
                        graph[module].add(alias.name)
                        if alias.asname:
                            module_aliases[alias.asname] = alias.name
                continue
            for alias in statement.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    graph[module].add(submodule)
                    module_aliases[alias.asname or alias.name] = submodule
                elif base in modules:
                    graph[module].add(base)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(Import(module, base, alias.name, statement.lineno))
        # `from shadow.capture import writer` then `writer._x`: a private name all the same
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                private.append(Import(module, module_aliases[node.value.id], node.attr, node.lineno))
        graph[module].discard(module)
    return graph, private, mitmproxy


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def a_cycle_in(component: frozenset[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete loop a → b → … → a inside a strongly connected component, for the message."""
    start = min(component)
    path, seen = [start], {start}
    while True:
        following = sorted(n for n in graph[path[-1]] if n in component)
        if start in following and len(path) > 1:
            return [*path, start]
        fresh = [n for n in following if n not in seen]
        if not fresh:  # closes on an earlier module: cut the path there
            back = following[0]
            return [*path[path.index(back):], back]
        path.append(fresh[0])
        seen.add(fresh[0])


def test_no_import_cycles() -> None:
    graph, _, _ = collect()
    assert len(graph) > 60, "the module scan found too few modules: wrong root?"
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" → ".join(a_cycle_in(c, graph)) for c in found)


def test_no_private_name_imported_from_another_module() -> None:
    _, private, _ = collect()
    assert not private, "private names used across modules: " + "; ".join(
        f"{p.importer} (line {p.line}) uses {p.target}.{p.name}" for p in private)


def test_mitmproxy_only_in_addons() -> None:
    _, _, mitmproxy = collect()
    outside = [where for where in mitmproxy if not where.startswith("addons/")]
    assert not outside, "mitmproxy imported outside addons/: " + ", ".join(outside)
    assert mitmproxy, "the scan found no mitmproxy import at all, not even in addons/"


def test_library_never_imports_the_command_line() -> None:
    graph, _, _ = collect()
    wrong = sorted(f"{m} → {t}" for m, targets in graph.items() if not m.startswith("shadow.cli")
                   for t in targets if t == "shadow.cli" or t.startswith("shadow.cli."))
    assert not wrong, "library modules importing shadow.cli: " + ", ".join(wrong)


def test_the_checks_catch_what_they_guard() -> None:
    """The detectors themselves: a cycle, a lazy import, a TYPE_CHECKING import, a private name."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    assert a_cycle_in(frozenset({"a", "b", "c"}), graph) == ["a", "b", "c", "a"]
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from x import y\nelse:\n    import z\n"
              "def f():\n    from p.q import _r\n")
    found = [(base, [a.name for a in s.names]) for s, base in _imports(ast.parse(source), "m", False)]
    assert ("x", ["y"]) not in found
    assert ("p.q", ["_r"]) in found
    assert ("z", ["z"]) in found
