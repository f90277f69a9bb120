"""The core is closed (DESIGN.md, "Architecture"), checked on the source by parsing its imports with ``ast``:

- nothing outside ``erasekit.world`` and the ShapeWorld backbone imports ``erasekit.world``: generic code reaches
  the embedded world only through the interfaces a backbone offers (``backbones/base.py``: its ``World``, the
  ``LearnedTokens`` capability);
- the modules' module-level imports form no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "erasekit"
WORLD = "erasekit.world"
WORLD_OWNERS = ("erasekit.world", "erasekit.backbones.shapeworld")


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def is_package(module: str) -> bool:
    path = modules().get(module)
    return path is not None and path.name == "__init__.py"


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imported(module: str, node: ast.stmt) -> Iterator[str]:
    """The erasekit modules an import statement loads: ``from a import b`` names module ``a.b`` when it is one."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name.startswith("erasekit"))
    elif isinstance(node, ast.ImportFrom):
        source = resolve(module, node)
        if source.startswith("erasekit"):
            for alias in node.names:
                yield f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules() else source


def tree(module: str) -> ast.Module:
    return ast.parse(modules()[module].read_text(), filename=str(modules()[module]))


def all_imports(module: str) -> set[str]:
    """Every erasekit module imported anywhere in the file (module level, in functions, under TYPE_CHECKING)."""
    return {name for node in ast.walk(tree(module)) for name in imported(module, node)}


def is_type_checking(node: ast.stmt) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def top_level(statements: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements run when the module is imported (into if / try blocks; not under TYPE_CHECKING)."""
    for node in statements:
        if is_type_checking(node):
            continue
        yield node
        for block in ("body", "orelse", "finalbody"):
            if isinstance(node, ast.If | ast.Try | ast.With) and hasattr(node, block):
                yield from top_level(getattr(node, block))
        for handler in getattr(node, "handlers", []):
            yield from top_level(handler.body)


def module_level_imports(module: str) -> set[str]:
    found = {name for node in top_level(tree(module).body) for name in imported(module, node)}
    return {name for name in found if name in modules() and name != module}


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_parser_sees_relative_function_local_and_from_imports():
    source = "from . import render\nfrom ..backbones.base import Backbone\n"
    node = ast.parse(source + "def f():\n    import erasekit.world.factors\n")
    module = "erasekit.world.tasks"
    found = {name for statement in ast.walk(node) for name in imported(module, statement)}
    assert found == {"erasekit.world.render", "erasekit.backbones.base", "erasekit.world.factors"}


def test_nothing_outside_the_world_and_its_backbone_imports_the_world():
    leaks = {
        module: sorted(name for name in all_imports(module) if within(name, (WORLD,)))
        for module in modules()
        if not within(module, WORLD_OWNERS)
    }
    assert {module: names for module, names in leaks.items() if names} == {}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_module_level_imports_form_no_cycle():
    graph = {module: module_level_imports(module) for module in modules()}
    assert find_cycle(graph) is None
