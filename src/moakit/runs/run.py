"""Run folders as objects: :func:`open_run` returns a :class:`ModelRun`, :class:`WorkflowRun`
or :class:`BlendRun` (by :func:`moakit.runs.layout.kind_of`), each with its manifest,
config, OOF / test predictions (frames indexed by ``sig_id``), completeness and
``predict(data)``; :func:`check_resume` is the one rule for writing into an existing folder.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moakit.runs import layout, records
from moakit.runs.records import RunFileError


class Run:
    """What every run folder has. ``kind``: "model", "workflow" or "blend"."""

    kind: str = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @cached_property
    def manifest(self):
        """The folder's :class:`moakit.manifest.Manifest` (None where it has none)."""
        from moakit.manifest import read_manifest

        if not (self.path / layout.MANIFEST).exists():
            return None
        return read_manifest(self.path)

    @property
    def status(self) -> str:
        """"running", "complete" or "failed" as its manifest says ("missing" without one)."""
        return self.manifest.status if self.manifest is not None else "missing"

    @property
    def is_complete(self) -> bool:
        return self.status == "complete"

    @property
    def oof_path(self) -> Path:
        return self.path / layout.OOF_PREDICTIONS

    @property
    def test_path(self) -> Path:
        return self.path / layout.TEST_PREDICTIONS

    @cached_property
    def oof(self) -> pd.DataFrame:
        """OOF predictions: one row per training sig_id (the index), one column per target."""
        return records.read_predictions(self.oof_path)

    @cached_property
    def test(self) -> pd.DataFrame:
        """Test predictions, as :attr:`oof`."""
        return records.read_predictions(self.test_path)

    def predictor(self, batch_size: int | None = None):
        """The run's models checked and loaded once, ready to predict chunk after chunk
        (:class:`moakit.runs.predict.Predictor`; InferenceError when the folder cannot)."""
        from moakit.runs.predict import Predictor

        return Predictor(self.path, batch_size)

    def predict(self, data, batch_size: int | None = None, chunk_rows: int | None = 20_000,
                progress: bool = False) -> pd.DataFrame:
        """Predictions for new rows (a features file, read ``chunk_rows`` rows at a time, or
        a Dataset) from the saved artifacts, nothing refitted: a validated submission frame
        (sig_id + scored targets, rows in the input's order; controls 0). The values do not
        depend on ``chunk_rows`` (None / 0: all rows at once)."""
        from moakit.data.chunked import TableChunks
        from moakit.data.dataset import Dataset
        from moakit.runs.predict import collect, submission_frame, validate_submission
        from moakit.streaming import DatasetRows

        predictor = self.predictor(batch_size)
        source = DatasetRows(data) if isinstance(data, Dataset) else TableChunks(data)
        sig_id, out, _ = collect(predictor, source, chunk_rows, progress)
        frame = submission_frame(sig_id, out, predictor.scored)
        validate_submission(frame, sig_id, predictor.scored)
        return frame

    def predict_arrays(self, ds, batch_size: int | None = None, chunk_rows: int | None = 20_000,
                       progress: bool = False, where: str = "features"
                       ) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
        """(predictions float64, per model, scored target names) for the rows of the
        Dataset ``ds``, as :meth:`predict`."""
        from moakit.runs.predict import collect
        from moakit.streaming import DatasetRows

        predictor = self.predictor(batch_size)
        _, out, per_model = collect(predictor, DatasetRows(ds, where), chunk_rows, progress)
        return out, per_model, predictor.scored


class ModelRun(Run):
    """One model's training run (``moakit train``; ``models/<name>`` of a workflow)."""

    kind = "model"

    @cached_property
    def config(self):
        """The resolved :class:`moakit.config.RunConfig`."""
        from pydantic import ValidationError

        from moakit.config import RunConfig

        path = self.path / layout.CONFIG
        raw = records.read_object(path)
        try:
            return RunConfig(**raw)
        except (ValidationError, ValueError, TypeError) as exc:
            why = records.format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise RunFileError(f"{path}: not a valid run config ({why})") from None

    @cached_property
    def columns(self) -> records.Columns:
        """The gene / cell input columns and the scored targets the run was trained on."""
        path = self.path / layout.COLUMNS
        if not path.exists():
            raise records.unsupported(self.path, f"no {layout.COLUMNS}")
        return records.Columns.read(path)

    @cached_property
    def metrics(self) -> records.Metrics:
        return records.Metrics.read(self.path / layout.METRICS)

    @cached_property
    def folds(self) -> np.ndarray:
        from moakit.artifacts import read_npy

        return read_npy(self.path / layout.FOLDS)

    def stage_dir(self, stage: str, seed: int) -> Path:
        return layout.stage_dir(self.path, stage, seed)

    def fold_dirs(self) -> list[tuple[str, int, int, Path]]:
        """(stage, seed, fold, folder) of every fold folder on disk, in a stable order."""
        out = []
        for sdir in sorted((self.path / layout.STAGES_DIR).glob("*/seed_*")):
            if not sdir.is_dir() or sdir.name.startswith("."):
                continue
            seed = int(sdir.name.removeprefix("seed_"))
            for fdir in sorted(sdir.glob("fold_*"), key=lambda p: int(p.name.removeprefix("fold_"))):
                if fdir.is_dir():
                    out.append((sdir.parent.name, seed, int(fdir.name.removeprefix("fold_")), fdir))
        return out

    def feature_sources(self) -> list[tuple[str, int, "records.FeaturesKey"]]:
        """(stage, seed, features_key.json) of every stage-seed that has one, in a stable order."""
        out = []
        for sdir in sorted((self.path / layout.STAGES_DIR).glob(f"*/{layout.SEED_PREFIX}*")):
            path = sdir / layout.FEATURES_KEY
            if sdir.is_dir() and not sdir.name.startswith(".") and path.is_file():
                out.append((sdir.parent.name, layout.seed_of(sdir.name), records.FeaturesKey.read(path)))
        return out

    @property
    def histories(self) -> pd.DataFrame:
        """Every fold's epoch records as one frame: columns stage, seed, fold, then the
        records' own (epoch, train_loss, valid_loss, ...); empty when no fold has one."""
        frames = []
        for stage, seed, fold, fdir in self.fold_dirs():
            path = fdir / layout.HISTORY
            if not path.exists():
                continue
            epochs = records.History.read(path).epochs
            frame = pd.DataFrame(epochs)
            frame.insert(0, "fold", fold)
            frame.insert(0, "seed", seed)
            frame.insert(0, "stage", stage)
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["stage", "seed", "fold", "epoch"])
        return pd.concat(frames, ignore_index=True)


class BlendRun(Run):
    """A blend folder (``moakit blend RUN... --out DIR``, or ``RUN/blend`` of a workflow)."""

    kind = "blend"

    @property
    def test_path(self) -> Path:
        return self.path / layout.BLEND_TEST

    @cached_property
    def summary(self) -> records.BlendSummary:
        return records.BlendSummary.read(self.path / layout.BLEND)

    @property
    def status(self) -> str:
        return "complete" if (self.path / layout.BLEND).exists() else "missing"

    @property
    def names(self) -> list[str]:
        return list(self.summary.names)

    def model_dirs(self) -> dict[str, Path]:
        """Model name -> its run folder, as blend.json records it (relative to this folder)."""
        out = {}
        for name in self.names:
            recorded = (self.summary.models.get(name) or {}).get("run_dir")
            if not recorded:
                raise RunFileError(f"{self.path / layout.BLEND}: no run folder recorded for model {name!r}")
            out[name] = Path(recorded) if Path(recorded).is_absolute() else Path(os.path.normpath(self.path / recorded))
        return out

    @property
    def models(self) -> dict[str, ModelRun]:
        return {name: ModelRun(d) for name, d in self.model_dirs().items()}


class WorkflowRun(Run):
    """A workflow run (``moakit run`` / ``demo``; a saved MoABlend): models, blend, report."""

    kind = "workflow"

    @cached_property
    def workflow(self) -> records.WorkflowRecord:
        return records.WorkflowRecord.read(self.path / layout.WORKFLOW)

    @cached_property
    def config(self):
        """The resolved :class:`moakit.workflow.BlendConfig`."""
        from moakit.workflow import BlendConfig

        return BlendConfig(**self.workflow.blend_config)

    @property
    def names(self) -> list[str]:
        return [str(e["name"]) for e in self.workflow.blend_config.get("models", [])]

    @property
    def models(self) -> dict[str, ModelRun]:
        return {name: ModelRun(layout.model_dir(self.path, name)) for name in self.names}

    @property
    def blend(self) -> BlendRun:
        return BlendRun(layout.blend_dir(self.path))

    @property
    def oof_path(self) -> Path:
        return self.blend.oof_path

    @property
    def test_path(self) -> Path:
        return self.blend.test_path

    @property
    def submission_path(self) -> Path:
        return self.path / layout.SUBMISSION


_CLASSES: dict[str, type[Run]] = {"model": ModelRun, "workflow": WorkflowRun, "blend": BlendRun}


def open_run(path: str | Path) -> ModelRun | WorkflowRun | BlendRun:
    """The run folder at ``path`` as the object of its kind; RunFileError when it is none."""
    path = Path(path)
    if not path.is_dir():
        raise RunFileError(f"{path}: run folder not found")
    kind = layout.kind_of(path)
    if kind is None:
        raise RunFileError(f"{path}: not a moakit run folder (no {layout.WORKFLOW}, {layout.CONFIG} or "
                           f"{layout.BLEND})")
    return _CLASSES[kind](path)


def check_resume(out: str | Path, kind: str, fingerprint: str, identity: Any = None,
                 error: type[Exception] = ValueError) -> None:
    """The one rule for writing a run of ``kind`` into ``out``: a new or empty folder is
    fine; a folder of another kind, of another config (``identity``, compared with
    :func:`resume_identity` for a model run), other data (``fingerprint``) or
    another moakit version is refused with ``error`` naming it."""
    from moakit._version import __version__
    from moakit.manifest import read_manifest

    out = Path(out)
    have = layout.kind_of(out)
    if have is None:
        return
    if have != kind:
        raise error(f"{out}: holds {layout.describe_kind(have)}, not {layout.describe_kind(kind)}; "
                    "use another --out")
    if identity is not None:
        _check_identity(out, identity, error)
    try:
        manifest = read_manifest(out) if (out / layout.MANIFEST).exists() else None
    except ValueError as exc:
        raise error(f"{out}: its {layout.MANIFEST} cannot be read ({exc}); use another --out or delete it") from None
    if manifest is None:
        return
    if manifest.kind != kind:
        raise error(f"{out}: holds a {manifest.kind} run, not a {kind}'s; use another --out")
    if manifest.data_fingerprint != fingerprint:
        raise error(f"{out}: holds a {kind} run on different data; use another --out or delete it")
    version = manifest.moakit_version
    if version is not None and version != __version__:
        raise error(f"{out}: holds a run of moakit {version} (this is {__version__}); its artifacts may "
                    f"not match: use another --out, delete it, or resume it with moakit {version}")


def resume_identity(config: Any) -> dict:
    """What a run folder must match to be resumed: the resolved config's content (a
    RunConfig or its JSON), never the path it was read from (``source``), so a copied or
    moved run resumes."""
    from moakit.config import RunConfig

    dumped = config.model_dump(mode="json") if isinstance(config, RunConfig) else dict(config)
    dumped.pop("source", None)
    return dumped


def _check_identity(out: Path, identity: Any, error: type[Exception]) -> None:
    try:
        previous = records.read_object(out / layout.CONFIG)
    except RunFileError as exc:
        raise error(f"{out}: its {layout.CONFIG} cannot be read ({exc}); use another --out or delete it") from None
    if resume_identity(previous) != resume_identity(identity):
        raise error(f"{out}: holds a run of a different config; use another --out or delete it")
