"""``manifest.json``: one schema for every run folder.

A run folder is one model's training run (``kind: model``, written by ``moakit train``
and by every entry of a workflow under ``models/<name>``) or a workflow run (``kind:
workflow``: models, blend, submission and report, written by ``moakit run`` / ``demo``).
Both record the same facts in the same fields:

* ``kind``, ``status`` (running / complete / failed), ``error`` when it failed;
* ``versions``: moakit, python, torch, numpy, scikit_learn, optuna (ray when installed),
  platform; resuming needs the same moakit version;
* ``profile``, ``config_source`` (the config file or shipped name it was made from);
* ``data_fingerprint`` (resuming needs the same data), ``data_source`` (relative to the run
  folder when the data lies inside it), ``n_train``, ``n_test``;
* ``created``, ``updated``; ``timings`` (seconds: ``stage_<name>_seconds``,
  ``total_seconds``, ``node_seconds`` of what ran in the last session);
* a model run: ``model`` (the registered model name);
* a workflow run: ``executor``, ``config`` (the resolved blend and model configs),
  ``models`` (entry name -> its status, run folder, sizes and scores) and ``blend``.

:func:`read_manifest` refuses a manifest of an older layout (no ``schema_version``) or of
another schema version: unsupported format, retrain (nothing was ever released in it).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from moakit._version import __version__
from moakit.artifacts import read_json, write_json
from moakit.runs import layout
from moakit.runs.records import SCHEMA_VERSION, check_schema_version, unsupported

MANIFEST_FILE = layout.MANIFEST
Status = Literal["running", "complete", "failed"]


def versions() -> dict[str, str]:
    """The versions a run records (and the platform)."""
    import optuna
    import sklearn
    import torch

    out = {"moakit": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "scikit_learn": sklearn.__version__, "optuna": optuna.__version__,
           "platform": platform.platform()}
    try:
        import ray

        out["ray"] = ray.__version__
    except ImportError:
        pass
    return out


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class ModelEntry(BaseModel):
    """A workflow's record of one of its model entries (its run folder has its own manifest)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["pending", "running", "complete", "failed"] = "pending"
    model: str | None = None
    profile: str | None = None
    run_dir: str | None = None  # relative to the workflow folder
    seeds: list[int] | None = None
    folds: int | None = None
    cv: str | None = None
    seconds: float | None = None  # wall seconds of its nodes in the last session
    training_seconds: float | None = None
    log_loss: float | None = None
    log_loss_treated: float | None = None
    error: str | None = None


class Manifest(BaseModel):
    """The content of ``manifest.json`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    kind: Literal["model", "workflow"]
    status: Status = "running"
    error: str | None = None
    versions: dict[str, str]
    profile: str
    config_source: str | None = None
    data_fingerprint: str
    data_source: str
    n_train: int
    n_test: int
    created: str | None = None
    updated: str | None = None
    timings: dict[str, float] = {}
    # kind: model
    model: str | None = None
    config_digest: str | None = None  # of config.json's content at training (moakit.validate)
    # kind: workflow
    executor: str | None = None
    config: dict[str, Any] | None = None
    models: dict[str, ModelEntry] = {}
    blend: dict[str, Any] | None = None

    @property
    def moakit_version(self) -> str | None:
        return self.versions.get("moakit")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def write(self, run_dir: str | Path) -> None:
        """Write ``run_dir/manifest.json`` (atomically), stamping ``updated``."""
        self.updated = now()
        write_json(Path(run_dir) / MANIFEST_FILE, self.to_json())


def new_manifest(kind: Literal["model", "workflow"], **fields: Any) -> Manifest:
    """A manifest of a run starting now, with this process's versions."""
    return Manifest(kind=kind, versions=versions(), created=fields.pop("created", None) or now(), **fields)


def read_manifest(run_dir: str | Path) -> Manifest:
    """The manifest of ``run_dir``. A missing, invalid or unrecognisable file raises
    ValueError naming it; one of an older moakit (no ``schema_version``, or another),
    RunFileError: unsupported format, retrain."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.exists():
        raise ValueError(f"{path}: missing (not a complete moakit run folder)")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a manifest (a JSON object was expected)")
    if "schema_version" not in raw:
        raise unsupported(path, "no schema_version: a manifest of an older moakit")
    check_schema_version(raw, path)
    try:
        return Manifest(**raw)
    except ValidationError as exc:
        from moakit.config import format_errors

        problems = format_errors(exc, limit=5)
        raise ValueError(f"{path}: not a valid moakit manifest ({problems})") from None
