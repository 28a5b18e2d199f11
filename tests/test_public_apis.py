"""No private name of a dependency anywhere in ``src/``: public APIs only.

A private attribute or module (a leading underscore) of httpx, pathspec,
pydantic-settings, the standard library or any other dependency changes in a
patch release, in a user's install we never see. An AST scan of every module
of the package refuses:

- ``x._name`` where ``_name`` is not a name our own code defines (our own
  private helpers and attributes are ours to use);
- ``getattr(x, "_name")`` and ``hasattr``/``setattr`` alike, with a name we do not define;
- importing a private module (``from pkg._mod import``, ``import_module("re._parser")``);
- a method of ours named like a private method of a third-party base class
  (overriding ``EnvSettingsSource._load_env_vars``, say).

The allow-list is short and says why for each entry.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "cntr_sync"

# Documented public API despite the underscore.
ALLOWED_ATTRIBUTES = {
    # namedtuple's documented methods (urllib.parse.SplitResult is one).
    "_replace",
    "_asdict",
    "_fields",
}


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _our_names(trees: list[ast.Module]) -> set[str]:
    """Every private name our own code defines: functions, classes, attributes, slots."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
            elif (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)
                and isinstance(node.value, ast.Tuple | ast.List)
            ):
                names.update(
                    item.value
                    for item in node.value.elts
                    if isinstance(item, ast.Constant) and isinstance(item.value, str)
                )
    return {name for name in names if _is_private(name)}


def _third_party_bases(tree: ast.Module) -> dict[str, type]:
    """Names imported from other packages that are classes: possible base classes."""
    found: dict[str, type] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "cntr_sync":
                continue
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                continue
            for alias in node.names:
                value = getattr(module, alias.name, None)
                if isinstance(value, type):
                    found[alias.asname or alias.name] = value
    return found


def _violations(path: Path, tree: ast.Module, ours: set[str]) -> Iterator[str]:
    where = path.relative_to(SRC.parent)
    bases = _third_party_bases(tree)
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            if node.attr not in ours and node.attr not in ALLOWED_ATTRIBUTES:
                yield f"{line}: .{node.attr} is not ours"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = node.args
            if (
                node.func.id in ("getattr", "hasattr", "setattr")
                and len(args) >= 2
                and isinstance(args[1], ast.Constant)
                and isinstance(args[1].value, str)
                and _is_private(args[1].value)
                and args[1].value not in ours
            ):
                yield f"{line}: {node.func.id}(..., {args[1].value!r})"
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "import_module" and node.args:
                target = node.args[0]
                if isinstance(target, ast.Constant) and "._" in f".{target.value}":
                    yield f"{line}: import_module({target.value!r})"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "cntr_sync" and any(_is_private(part) for part in parts):
                yield f"{line}: from {node.module} import"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != "cntr_sync" and any(_is_private(part) for part in parts):
                    yield f"{line}: import {alias.name}"
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                base_class = bases.get(base.id) if isinstance(base, ast.Name) else None
                if base_class is None:
                    continue
                for item in node.body:
                    if (
                        isinstance(item, ast.FunctionDef)
                        and _is_private(item.name)
                        and hasattr(base_class, item.name)
                    ):
                        yield (
                            f"{where}:{item.lineno}: {node.name}.{item.name} overrides a "
                            f"private method of {base_class.__module__}.{base_class.__name__}"
                        )


def test_the_package_reaches_no_private_name_of_a_dependency() -> None:
    trees = [ast.parse(path.read_text(encoding="utf-8")) for path in _modules()]
    ours = _our_names(trees)
    found = [
        violation
        for path, tree in zip(_modules(), trees, strict=True)
        for violation in _violations(path, tree, ours)
    ]
    assert not found, "private names of dependencies:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import atexit\natexit._run_exitfuncs()\n", "._run_exitfuncs is not ours"),
        ("import os\nos._exit(0)\n", "._exit is not ours"),
        ("def f(c):\n    return getattr(c, '_transport_for_url')\n", "getattr"),
        ("import importlib\nimportlib.import_module('re._parser')\n", "import_module"),
        ("from pydantic_settings.sources._x import y\n", "from pydantic_settings"),
        (
            "from pydantic_settings import EnvSettingsSource\n"
            "class S(EnvSettingsSource):\n"
            "    def _load_env_vars(self):\n        return {}\n",
            "overrides a private method",
        ),
    ],
)
def test_the_scan_catches_each_kind(source: str, expected: str) -> None:
    path = SRC / "probe.py"  # only named, never written
    tree = ast.parse(source)
    found = list(_violations(path, tree, ours={"_ours"}))
    assert any(expected in violation for violation in found), found


def test_our_own_private_names_are_allowed() -> None:
    source = "class A:\n    def _helper(self):\n        return self._helper\n"
    tree = ast.parse(source)
    assert list(_violations(SRC / "probe.py", tree, _our_names([tree]))) == []
