"""No moakit module reaches into another moakit module's private (leading-underscore) names.

A name that another module needs is part of the package's internal API and gets a public name
in its defining module. Checked with ``ast`` on the source, so imports inside functions, relative
imports and parenthesised multi-line imports count, and so does ``module._name`` where
``module`` was imported as a moakit module (``from moakit.data import simulate_profiles as base``).
Dunder names (``__version__``) are allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import moakit

SRC = Path(moakit.__file__).resolve().parent  # src/moakit
ROOT = SRC.parent

# (importing module, "defining.module:_name") pairs allowed for now, each with its reason.
ALLOWED: dict[tuple[str, str], str] = {}  # (module, "defining module:name") -> why; keep it empty


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _is_module(dotted: str, root: Path) -> bool:
    rel = Path(*dotted.split("."))
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def private_uses(source: str, module: str, is_package: bool, root: Path) -> list[tuple[int, str]]:
    """(line, "defining.module:_name") for every private moakit name ``module`` takes from another module."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    aliases: dict[str, str] = {}  # local name -> moakit module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            if target.split(".")[0] != "moakit" or target == module:
                continue
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, f"{target}:{alias.name}"))
                elif _is_module(f"{target}.{alias.name}", root):
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "moakit":
                    aliases[alias.asname or alias.name] = alias.name  # no asname: the full dotted name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = _dotted(node.value)
            if base is None:
                continue
            head, _, rest = base.partition(".")
            target = aliases.get(base)
            if target is None and head in aliases and rest and _is_module(f"{aliases[head]}.{rest}", root):
                target = f"{aliases[head]}.{rest}"
            if target is not None and target != module and _is_module(target, root):
                found.append((node.lineno, f"{target}:{node.attr}"))
    return found


def test_no_module_imports_another_modules_private_names():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        module, is_package = _module_name(path, ROOT)
        for line, what in private_uses(path.read_text(encoding="utf-8"), module, is_package, ROOT):
            if (module, what) not in ALLOWED:
                problems.append(f"{path.relative_to(ROOT)}:{line}: uses {what}")
    assert not problems, "private names used across moakit modules (make them public):\n" + "\n".join(problems)


def test_allow_list_is_current():
    """Every allowed entry still exists, so the list shrinks when a name is made public."""
    seen = set()
    for path in sorted(SRC.rglob("*.py")):
        module, is_package = _module_name(path, ROOT)
        seen.update((module, what) for _, what in private_uses(path.read_text(encoding="utf-8"), module,
                                                                 is_package, ROOT))
    assert set(ALLOWED) <= seen, f"stale ALLOWED entries: {sorted(set(ALLOWED) - seen)}"


@pytest.mark.parametrize("source, expected", [
    ("from moakit.data.io import _align\n", ["moakit.data.io:_align"]),
    ("from moakit.data.io import (\n    DataError,\n    _align,\n)\n", ["moakit.data.io:_align"]),
    ("def f():\n    from .io import _align\n", ["moakit.data.io:_align"]),
    ("from ..cli.common import _fail\n", ["moakit.cli.common:_fail"]),
    ("from moakit.data import simulate_profiles as base\nbase._round4(1)\n", ["moakit.data.simulate_profiles:_round4"]),
    ("import moakit.data.io\nmoakit.data.io._align\n", ["moakit.data.io:_align"]),
    ("import moakit.data.io as dio\ndio._align\n", ["moakit.data.io:_align"]),
    ("from moakit._version import __version__\n", []),
    ("from moakit.data.io import DataError\nfrom numpy import _private\n", []),
    ("from moakit.data.chunked import _local\n", []),  # its own module
    ("class A:\n    def f(self):\n        return self._x\n", []),
])
def test_checker_sees_every_form(source, expected):
    """The checker itself: the import forms it must catch, and the ones it must let pass."""
    found = [what for _, what in private_uses(source, "moakit.data.chunked", False, ROOT)]
    assert found == expected


# ---------------------------------------------------------------------------- private method calls
# ``obj._name(...)`` calls a private method of another object: allowed on ``self``, ``cls`` and
# ``super()`` only. Which class ``obj`` is cannot be told from the source, so the rule is strict
# (a fresh instance of the method's own class counts too: use a module function there); it flags
# third-party private methods as well, which need a reason here.
ALLOWED_CALLS: dict[tuple[str, str], str] = {  # (module, "obj._name") -> why
    ("moakit.models.two_stage_tabnet", "template._set_network"):
        "pytorch-tabnet has no public call that builds a regressor's network without fitting; its "
        "own load_model calls _set_network after __init__ the same way (version pinned in constraints.txt)",
}


def private_calls(source: str) -> list[tuple[int, str]]:
    """(line, "obj._name") for every call of a private method on anything but self / cls / super()."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _private(node.func.attr)):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue
        found.append((node.lineno, f"{ast.unparse(owner)}.{node.func.attr}"))
    return found


def _all_private_calls() -> list[tuple[str, int, str, str]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        module, _ = _module_name(path, ROOT)
        out += [(module, line, what, str(path.relative_to(ROOT)))
                for line, what in private_calls(path.read_text(encoding="utf-8"))]
    return out


def test_no_private_method_is_called_on_another_object():
    problems = [f"{file}:{line}: calls {what}" for module, line, what, file in _all_private_calls()
                if (module, what) not in ALLOWED_CALLS]
    assert not problems, ("private methods called on objects other than self / cls / super() (give the "
                          "method a public, documented name, or make it a module function):\n" + "\n".join(problems))


def test_allowed_calls_are_current():
    seen = {(module, what) for module, _, what, _ in _all_private_calls()}
    assert set(ALLOWED_CALLS) <= seen, f"stale ALLOWED_CALLS entries: {sorted(set(ALLOWED_CALLS) - seen)}"


@pytest.mark.parametrize("source, expected", [
    ("step._groups()\n", ["step._groups"]),
    ("x = Pipeline(c)._external_inputs()\n", ["Pipeline(c)._external_inputs"]),
    ("self.executor._remote(1)\n", ["self.executor._remote"]),
    ("est = cls()\nest._set_fitted(p)\n", ["est._set_fitted"]),
    ("base._round4(1)\n", ["base._round4"]),
    ("self._check()\ncls._saved(p)\nsuper()._init()\n", []),
    ("obj.__repr__()\nobj.public()\nobj._attr\n", []),  # dunders, public names, no call
])
def test_call_checker_sees_every_form(source, expected):
    assert [what for _, what in private_calls(source)] == expected
