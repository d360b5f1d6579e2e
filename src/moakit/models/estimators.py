"""One loader for every saved fold estimator: its ``spec.json`` names its kind.

Each estimator class registers under a kind key (``@register_estimator("torch")``) and
writes that key as the ``"kind"`` field of the ``spec.json`` in the folder it saves;
:func:`load_estimator` reads the field and hands the folder to that class's ``load``. No
caller needs to know which model trained a fold. A folder whose ``spec.json`` names no kind
(or that has none) is of an unsupported format: one clear error, retrain.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from moakit.runs import layout
from moakit.registry import Registry

SPEC = layout.ESTIMATOR_SPEC  # inside an estimator folder: its kind and what rebuilds it
WEIGHTS = layout.ESTIMATOR_WEIGHTS  # a torch estimator's state dict (loaded with weights_only=True)

# kind -> estimator class; importing moakit.models runs every model module's decorators
ESTIMATORS: Registry[type] = Registry("estimator kind", loader=lambda: importlib.import_module("moakit.models"))


def register_estimator(kind: str) -> Callable[[type], type]:
    """Class decorator: ``cls`` saves ``{"kind": kind, ...}`` as its spec.json and is what
    :func:`load_estimator` builds (``cls.load(path)``) for a folder of that kind."""

    def deco(cls: type) -> type:
        cls.kind = kind
        return ESTIMATORS.add(kind, cls)

    return deco


def estimator_kind(path: str | Path) -> str:
    """The kind an estimator folder's spec.json names (RunFileError: none, or unknown)."""
    from moakit.runs.records import RunFileError, read_object, unsupported

    spec_path = Path(path) / SPEC
    if not spec_path.is_file():
        raise RunFileError(f"{spec_path}: missing (it names the estimator's kind); the folder is damaged or of an "
                           "unsupported format: retrain the run with this moakit version")
    kind = read_object(spec_path).get("kind")
    if not isinstance(kind, str) or not kind:
        raise unsupported(spec_path, "no 'kind' field: written before estimators named their kind")
    if kind not in ESTIMATORS:
        raise RunFileError(f"{spec_path}: unknown estimator kind {kind!r}; known: {', '.join(ESTIMATORS.names())}")
    return kind


def load_estimator(path: str | Path) -> Any:
    """Reload any saved fold estimator (a folder ``save`` wrote): the class its spec.json's
    ``kind`` names."""
    return ESTIMATORS.get(estimator_kind(path)).load(Path(path))
