"""The shape of the code: layering, no import cycles, no channel names in the core, short functions.

These hold the lines docs/architecture.md draws, so adding a channel or a
provider stays one module plus its entry point.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.registry import load_entry_points

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, Path]:
    found = {}
    for package in ("bot", "channels"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(name: str, path: Path) -> Iterator[str]:
    """What a module imports when it is imported: not in functions, not for type checking."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    pending: list[ast.stmt] = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {_resolve(target) for target in _module_level_imports(name, path)}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def folder(module: str) -> str:
    """``bot.providers.openai`` -> ``bot.providers``; a top-level module is its own node."""
    parts = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    return ".".join(parts[:2]) if len(parts) > 2 or (is_package and len(parts) == 2) else module


def test_no_import_cycles_between_modules() -> None:
    assert cycles(import_graph()) == []


def test_no_import_cycles_between_folders() -> None:
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        for target in targets:
            if folder(module) != folder(target):
                graph.setdefault(folder(module), set()).add(folder(target))
    assert cycles(graph) == []


# The root of bot/ holds the leaves every folder may use, and the modules that put the
# folders together (runtime, dispatch, wiring...), which no folder imports.
ROOT_LEAVES = {"bot", "bot.messages", "bot.registry", "bot.config", "bot.events"}


def _root_module(name: str) -> bool:
    return name.count(".") == 1 and name.startswith("bot.") and MODULES[name].name != "__init__.py"


def test_folders_import_only_the_leaves_of_the_root() -> None:
    for module, targets in import_graph().items():
        if module.startswith("bot.") and not _root_module(module):
            up = {t for t in targets if _root_module(t)}
            assert up <= ROOT_LEAVES, f"{module} imports {sorted(up - ROOT_LEAVES)}"


def test_the_core_never_imports_a_channel() -> None:
    for module, targets in import_graph().items():
        if module.startswith("bot"):
            assert not [t for t in targets if t.startswith("channels")], module


def test_the_checks_above_can_fail() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _functions(path: Path) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_is_longer_than_80_lines(module: str) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in _functions(MODULES[module])
        if node.end_lineno is not None and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def _strings(path: Path) -> Iterator[tuple[int, str]]:
    """String constants, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def test_no_channel_name_in_the_core() -> None:
    channels = set(load_entry_points("chatlane.channels"))
    assert {"telegram", "slack", "web"} <= channels
    named = [
        f"{path.relative_to(ROOT)}:{line} {value!r}"
        for name, path in MODULES.items()
        if name.startswith("bot")
        for line, value in _strings(path)
        if value.lower() in channels
    ]
    assert named == []
