"""Atomic writes of run artifacts: a reader never sees a half-written file or folder.

Also: paths recorded relative to a run folder (:func:`recorded_path`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``target``; on success rename it onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_file(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_file(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def read_npy(path: str | Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


# --------------------------------------------------------------------------- recorded paths


def recorded_path(path: str | Path, run_dir: str | Path) -> str:
    """A path as a manifest records it: relative to ``run_dir`` when it lies inside it
    (so the run folder can be moved or copied), else absolute. "" stays ""."""
    if not path:
        return ""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    try:
        return path.relative_to(run_dir).as_posix() or "."
    except ValueError:
        return str(path)


def resolve_recorded(value: str | None, run_dir: str | Path) -> str:
    """The path a manifest recorded (see :func:`recorded_path`), made usable: relative
    ones are taken from ``run_dir``. "" or None gives ""."""
    if not value:
        return ""
    path = Path(value)
    return str(path if path.is_absolute() else Path(run_dir) / path)

