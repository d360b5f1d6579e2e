"""Predicting new rows from a run folder's saved artifacts (nothing is refitted): the folder
side of ``open_run(path).predict(data)``.

:class:`Predictor` opens any kind of run folder (a ``moakit train`` run, a ``moakit run``
workflow, a ``moakit blend --out`` folder), checks every model it needs before any work
(complete, artifacts present, the same targets), loads each model's saved transforms and
estimators once (:class:`moakit.streaming.RunPredictor`) and predicts a chunk of rows at a
time: every model, then the blend's weighted average with its saved weights and kept
calibration, control rows 0. Chunks are independent (every shipped transform is
row-independent at inference, computed on fixed row blocks that chunks are whole multiples
of, UMAP's epochs pinned to the whole input's row count), so a stream of chunks gives the
values of one pass bit for bit. A run folder is data: a damaged
or crafted artifact is an :class:`InferenceError` naming the file, never code that runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from moakit.runs import layout

T = TypeVar("T")
# Blend weights below this are treated as 0 and their models not run: the predictions
# change by less than the sum of the skipped weights (probabilities are <= 1).
NEGLIGIBLE_WEIGHT = 1e-9


class InferenceError(ValueError):
    """A run folder or input that cannot be predicted on, or an invalid prediction."""


def _read(path: Path):
    from moakit.artifacts import read_json

    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise InferenceError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def columns(model_dir: Path) -> dict:
    """A model run's columns.json: the genes, cells and scored targets it was trained on."""
    path = Path(model_dir) / layout.COLUMNS
    if not path.exists():  # runs of a moakit before columns.json
        from moakit.runs.records import unsupported

        raise InferenceError(str(unsupported(model_dir, f"no {layout.COLUMNS}")))
    saved = _read(path)
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), list) for k in ("genes", "cells", "scored")):
        raise InferenceError(f"{path}: damaged (it must list the genes, cells and scored targets)")
    return saved


def scored_names(model_dir: Path) -> list[str]:
    return list(columns(model_dir)["scored"])


def run_config(model_dir: Path):
    """A model run's resolved RunConfig (InferenceError naming config.json otherwise)."""
    from pydantic import ValidationError

    from moakit.config import RunConfig

    raw = _read(Path(model_dir) / layout.CONFIG)
    try:
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return RunConfig(**raw)
    except (ValidationError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise InferenceError(f"{model_dir / layout.CONFIG}: not a valid run config ({' '.join(first[:3])})") from None


def check_model_dir(model_dir: Path) -> None:
    """A complete run folder whose config can be read and whose artifacts are all there
    (each stage and seed's features/, each fold's estimator/), checked before any work."""
    from moakit.models.checks import build_model

    model_dir = Path(model_dir)
    if not (model_dir / layout.CONFIG).exists():
        raise InferenceError(f"{model_dir}: not a moakit run folder (no {layout.CONFIG})")
    if (model_dir / layout.MANIFEST).exists():
        _check_manifest(model_dir)
    config = run_config(model_dir)
    try:
        stages = build_model(config).stages()
    except ValueError as exc:
        raise InferenceError(f"{model_dir / layout.CONFIG}: {exc}") from None
    for stage in stages:
        for seed in config.seeds:
            stage_dir = layout.stage_dir(model_dir, stage.name, seed)
            needed = [stage_dir / layout.FEATURES_DIR] + [layout.estimator_dir(stage_dir, k)
                                                          for k in range(config.cv.n_folds)]
            for path in needed:
                if not path.is_dir():
                    raise InferenceError(f"{path}: missing; the run folder is incomplete or damaged (retrain it, or "
                                         "copy the whole run folder again)")


def _check_manifest(model_dir: Path) -> None:
    from moakit.manifest import read_manifest
    from moakit.validate import check_config_unchanged

    try:
        manifest = read_manifest(model_dir)
        status = manifest.status
    except ValueError as exc:
        raise InferenceError(str(exc)) from None
    if status != "complete":
        raise InferenceError(f"{model_dir}: the run is not complete (status {status!r}); finish it with the "
                             "same command first")
    try:
        check_config_unchanged(model_dir, manifest.config_digest)
    except ValueError as exc:
        raise InferenceError(str(exc)) from None


def damaged_file(model_dir: Path) -> tuple[Path, str] | None:
    """After a failed prediction: the first saved artifact that cannot be read (JSON,
    arrays, weights; read as data only), and why, or None when all can."""
    import torch

    from moakit.artifacts import read_json

    for path in sorted((Path(model_dir) / layout.STAGES_DIR).rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            if path.suffix == ".json":
                read_json(path)
            elif path.suffix == ".npy":
                np.load(path, allow_pickle=False)
            elif path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    for key in z.files:
                        z[key]
            elif path.suffix == ".pt":
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged or crafted: reading it as data fails, nothing runs
            return path, f"{type(exc).__name__}: {first_line(exc)}"
    return None


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def guarded(model_dir: Path, work: Callable[[], T]) -> T:
    """``work()`` (loading or running a model's saved artifacts), with any failure of those
    artifacts as an InferenceError naming the file."""
    from moakit.artifacts import PickleFormatError
    from moakit.features.safe_state import StateError
    from moakit.runs.records import RunFileError
    from moakit.validate import ArtifactError

    try:
        return work()
    except (PickleFormatError, StateError, ArtifactError, RunFileError) as exc:  # RunFileError: unsupported format
        raise InferenceError(str(exc)) from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        damaged = damaged_file(model_dir)
        if damaged is not None:
            path, why = damaged
            raise InferenceError(f"{path}: cannot be read ({why}); the run folder is damaged: retrain it, or copy "
                                 "the whole run folder again") from None
        if isinstance(exc, FileNotFoundError) and exc.filename:
            raise InferenceError(f"{exc.filename}: missing; the run folder is incomplete or damaged") from None
        raise InferenceError(f"{model_dir}: its saved artifacts do not fit its config.json (was the folder edited?): "
                             f"{type(exc).__name__}: {first_line(exc)}") from None


def check_inputs(model_dir: Path, ds, where: str) -> None:
    """The new rows must have the gene / cell columns the run was trained on."""
    saved = columns(model_dir)
    if not ds.cell_names and saved["cells"] and saved["genes"]:
        raise InferenceError(f"{where}: has no cell (c-) columns; the run was trained with {len(saved['cells'])} "
                             "cell columns and needs them")
    for key, have, kind in (("genes", ds.gene_names, "gene"), ("cells", ds.cell_names, "cell")):
        want = list(saved[key])
        if list(have) != want:
            missing = [c for c in want if c not in set(have)]
            extra = [c for c in have if c not in set(want)]
            detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                      else "same columns in another order")
            raise InferenceError(f"{where}: {kind} columns differ from the training data's "
                                 f"({len(have)} vs {len(want)}; {detail})")


def run_panel(model_dir: Path) -> dict:
    """The panel (meta columns, cp_time / cp_dose vocabularies) a run was trained on:
    columns.json's ``panel``, lish-moa's when it has none (runs of lish-moa data)."""
    from moakit.data import schema

    saved = columns(model_dir) if (Path(model_dir) / layout.COLUMNS).exists() else {}
    return saved.get("panel") or {"meta": list(schema.META_COLUMNS),
                                  "vocab": {k: list(v) for k, v in schema.LISH_MOA_VOCAB.items()}}


def model_dirs(run_dir: Path) -> tuple[list[str], list[Path], dict[str, float | np.ndarray] | None]:
    """(names, model run folders, blend weights or None for a single-model run)."""
    from moakit.blend import prediction_weights

    run_dir = Path(run_dir)
    kind = layout.kind_of(run_dir)
    if kind == "model":
        return [run_dir.name], [run_dir], None
    if kind is None:
        raise InferenceError(f"{run_dir}: not a moakit run folder (no {layout.WORKFLOW}, {layout.CONFIG} or "
                             f"{layout.BLEND})")
    blend_json = (layout.blend_dir(run_dir) if kind == "workflow" else run_dir) / layout.BLEND
    if not blend_json.exists():
        raise InferenceError(f"{run_dir}: the workflow has no {layout.BLEND_DIR}/{layout.BLEND} yet; finish it with "
                             "`moakit run` first")
    summary = _read(blend_json)
    weights = prediction_weights(summary)
    if not weights:
        raise InferenceError(f"{blend_json}: no blend weights found")
    names = list(weights)
    return names, [_member_dir(run_dir, kind, name, summary, blend_json) for name in names], weights


def _member_dir(run_dir: Path, kind: str, name: str, summary: dict, blend_json: Path) -> Path:
    if kind == "workflow":
        d = layout.model_dir(run_dir, name)
        if not d.is_dir():
            raise InferenceError(f"{run_dir}: {layout.BLEND} weighs model {name!r}, but {d} does not exist")
        return d
    recorded = summary.get("models", {}).get(name, {}).get("run_dir")  # a folder of `moakit blend --out`
    if not recorded:
        raise InferenceError(f"{blend_json}: no run folder recorded for model {name!r}")
    d = Path(recorded) if Path(recorded).is_absolute() else run_dir / recorded
    if not d.is_dir():
        raise InferenceError(f"{blend_json}: the run folder of model {name!r} ({d}) does not exist "
                             f"({layout.BLEND} records it relative to the blend folder)")
    return d


class Predictor:
    """A run folder (any kind) ready to predict: every model it needs checked and loaded
    once; :meth:`predict` on a chunk of rows, :meth:`stream` over a source of chunks.

    ``names`` / ``dirs``: the models that run (a blend's models of weight >= NEGLIGIBLE_WEIGHT);
    ``scored``: the target names, in training order."""

    def __init__(self, run_dir: str | Path, batch_size: int | None = None) -> None:
        from moakit.streaming import RunPredictor

        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise InferenceError(f"{self.run_dir}: run folder not found")
        names, dirs, self.weights = model_dirs(self.run_dir)
        running = [(n, d) for n, d in zip(names, dirs)
                   if self.weights is None or np.max(np.abs(self.weights[n])) >= NEGLIGIBLE_WEIGHT]
        if not running:
            raise InferenceError(f"{self.run_dir}: every blend weight is (nearly) 0")
        self.names, self.dirs = [n for n, _ in running], [d for _, d in running]
        self.scored: list[str] = []
        for d in self.dirs:
            check_model_dir(d)
            model_scored = scored_names(d)
            if self.scored and model_scored != self.scored:
                raise InferenceError(f"{d}: predicts other targets than {self.dirs[0]}")
            self.scored = self.scored or model_scored
        self.panels = [run_panel(d) for d in self.dirs]
        self.models = [guarded(d, lambda d=d: RunPredictor(d, batch_size)) for d in self.dirs]
        kind = layout.kind_of(self.run_dir)
        self.blend_dir = layout.blend_dir(self.run_dir) if kind == "workflow" else self.run_dir

    def aligned_chunk_rows(self, chunk_rows: int | None) -> int | None:
        """``chunk_rows`` rounded up to a whole number of the models' prediction blocks
        (:func:`moakit.streaming.row_blocks`), so that every chunk is cut into the blocks of a
        one-pass prediction, row for row (None / 0: unchanged, all rows at once)."""
        if not chunk_rows:
            return chunk_rows
        step = self.models[0].block_rows  # the same for every model (the batch size given)
        return -(-int(chunk_rows) // step) * step

    def predict(self, ds, where: str, n_rows: int | None = None, first_row: int = 0
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(predictions float64, per model float64) for the rows of ``ds``: rows
        ``first_row`` .. of an input of ``n_rows`` rows (None: ``ds`` is all of it), which
        UMAP's epochs and the row numbers of errors refer to."""
        from moakit.data.chunked import at_rows
        from moakit.data.io import apply_panel
        from moakit.streaming import umap_rows_hint

        preds: dict[str, np.ndarray] = {}
        needed = any(guarded(d, lambda m=m: m.reads_row_count) for d, m in zip(self.dirs, self.models))
        with umap_rows_hint(len(ds) if n_rows is None else n_rows) if needed else contextlib.nullcontext():
            for name, d, panel, model in zip(self.names, self.dirs, self.panels, self.models):
                check_inputs(d, ds, where)
                model_ds = at_rows(first_row, where, lambda: apply_panel(ds, panel, where))
                preds[name] = guarded(d, lambda: model.predict(model_ds)).astype(np.float64)
        return self._combine(ds, preds), preds

    def _combine(self, ds, preds: dict[str, np.ndarray]) -> np.ndarray:
        """The model's predictions, or the blend's weighted average of its models'."""
        from moakit import metrics

        if self.weights is None:
            out = preds[self.names[0]]
        else:  # the blend's own weighted average, as it made RUN/blend/submission.csv
            from moakit.blend import apply_saved_calibration, blend_predictions

            out = blend_predictions([preds[n] for n in self.names], [self.weights[n] for n in self.names])
            out = apply_saved_calibration(self.blend_dir, out, self.scored)  # when the blend kept a calibration
        return metrics.zero_controls(out, ds.is_control)

    def stream(self, source, chunk_rows: int | None, progress: bool = False
               ) -> Iterator[tuple[int, object, np.ndarray, dict[str, np.ndarray]]]:
        """(first row, chunk Dataset, predictions, per model) for every chunk of ``source``
        (``n_rows``, ``where`` and ``datasets(chunk_rows)`` yielding (first row, Dataset)),
        with a progress bar over the rows (rows/s) on stderr when ``progress``."""
        from moakit.streaming import row_progress

        chunk_rows = self.aligned_chunk_rows(chunk_rows)
        with row_progress(source.n_rows, progress) as advance:
            for start, ds in source.datasets(chunk_rows):
                out, preds = self.predict(ds, source.where, source.n_rows, start)
                yield start, ds, out, preds
                advance(len(ds))


def submission_frame(sig_id: np.ndarray, values: np.ndarray, names: list[str]) -> "pd.DataFrame":
    """sig_id + one float64 column per target: the rows of a submission."""
    import pandas as pd

    from moakit.data import schema

    frame = pd.DataFrame(np.asarray(values, np.float64), columns=list(names))
    frame.insert(0, schema.ID_COLUMN, sig_id)
    return frame


def collect(predictor: Predictor, source, chunk_rows: int | None, progress: bool = False
            ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(sig_id, predictions, per model) of every row of ``source``, predicted chunk by chunk."""
    ids, outs, per_model = [], [], {name: [] for name in predictor.names}
    for _, ds, out, preds in predictor.stream(source, chunk_rows, progress):
        ids.append(np.asarray(ds.sig_id))
        outs.append(out)
        for name, pred in preds.items():
            per_model[name].append(pred)
    return (np.concatenate(ids), np.concatenate(outs),
            {name: np.concatenate(parts) for name, parts in per_model.items()})


def validate_submission(frame, sig_id: np.ndarray, names: list[str]) -> None:
    """Raise InferenceError unless ``frame`` is a valid submission for rows ``sig_id``."""
    from moakit.data import schema

    expected = [schema.ID_COLUMN, *names]
    columns_ = [str(c) for c in frame.columns]
    if columns_ != expected:
        if len(columns_) != len(expected):
            raise InferenceError(f"prediction has {len(columns_) - 1} target columns, expected {len(names)}")
        j = next(i for i, (a, b) in enumerate(zip(columns_, expected)) if a != b)
        raise InferenceError(f"prediction column {j + 1} is {columns_[j]!r}, expected {expected[j]!r}")
    ids = frame[schema.ID_COLUMN].astype(str).to_numpy()
    if len(ids) != len(sig_id):
        raise InferenceError(f"prediction has {len(ids)} rows, the input {len(sig_id)}")
    differ = np.flatnonzero(ids != np.asarray(sig_id, dtype=str))
    if differ.size:
        row = int(differ[0])
        raise InferenceError(f"prediction row {row + 1} is sig_id {ids[row]!r}, the input's is {sig_id[row]!r}")
    values = frame[names].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, j = (int(v[0]) for v in np.nonzero(bad))
        raise InferenceError(f"prediction for sig_id {ids[row]!r}, target {names[j]!r} is {values[row, j]} "
                             "(not finite)")
    outside = (values < 0) | (values > 1)
    if outside.any():
        row, j = (int(v[0]) for v in np.nonzero(outside))
        raise InferenceError(f"prediction for sig_id {ids[row]!r}, target {names[j]!r} is {values[row, j]}, "
                             f"outside [0, 1]")
