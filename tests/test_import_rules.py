"""Module boundaries: no module imports another's private names, and no two modules import each other.

Imports inside functions count too: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("node", "sync", "tiers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def enclosing_module(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path) -> list[tuple[str, str | None, str]]:
    """(module, imported name or None, local name) for every import of our packages, at any depth."""
    found: list[tuple[str, str | None, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and ours(node.module):
            found.extend((node.module, alias.name, alias.asname or alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((alias.name, None, alias.asname or alias.name) for alias in node.names if ours(alias.name))
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for name, path in MODULES.items():
        module_aliases = {}
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, imported, local in imports(path):
            if imported is not None and private(imported):
                offenders.append(f"{name}: from {module} import {imported}")
            if imported is None or f"{module}.{imported}" in MODULES:
                module_aliases[local] = module
        for node in ast.walk(tree):
            # `from pkg import module` then `module._hook`: the same reach into another module's privates.
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and private(node.attr)
                and node.value.id in module_aliases
            ):
                offenders.append(f"{name}: {node.value.id}.{node.attr}")
    assert offenders == []


def dependencies() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = set()
        for module, imported, _local in imports(path):
            full = f"{module}.{imported}" if imported else module
            target = full if full in MODULES else enclosing_module(module)
            # A package's __init__ that imports its own submodules is no circle.
            if target and target != name and not (path.name == "__init__.py" and target.startswith(name + ".")):
                targets.add(target)
        graph[name] = targets
    return graph


def test_no_import_circles() -> None:
    graph = dependencies()
    circles = []
    for start in graph:
        # Depth-first from each module: any path back to it is a circle.
        stack, seen = [(start, [start])], set()
        while stack:
            current, path = stack.pop()
            for target in graph.get(current, ()):
                if target == start:
                    circles.append(" → ".join([*path, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert circles == []
