"""Inference on new rows from a trained run's saved artifacts: nothing is refitted.

Works on a single-model run (``moakit train``), on a workflow run (``moakit run``) and on
a blend folder (``moakit blend RUN... --out DIR``): for a blend, every model predicts with
:func:`moakit.runner.predict_run` and the predictions are combined with the saved weights
(``RUN/blend/blend.json`` of a workflow; ``DIR/blend.json`` of a blend folder, which also
records where each model's run folder is). Control rows
(``ctl_vehicle``) are predicted 0. The output is checked before it is returned or written:
``sig_id`` in the input's order, the scored target columns in training order, finite values
in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moakit import metrics, runner
from moakit.artifacts import atomic_file, read_json
from moakit.blend import prediction_weights
from moakit.data import schema
from moakit.data.dataset import Dataset
from moakit.manifest import read_manifest
from moakit.runs import layout

# Throughput sweet spots from the write-up ("Inference Efficiency"): larger batches do
# not help once CPU / GPU / I/O saturate.
NN_BATCH_SIZE = 2048
CNN_BATCH_SIZE = 512
# Blend weights below this are treated as 0 and their models not run: the predictions
# change by less than the sum of the skipped weights (probabilities are <= 1).
NEGLIGIBLE_WEIGHT = 1e-9
DEFAULT_CHUNK_ROWS = 20_000  # rows predicted at a time (moakit predict --chunk-rows)


class InferenceError(ValueError):
    """A run folder or input that cannot be predicted on, or an invalid prediction."""


def _dataset(features: str | Path | Dataset) -> Dataset:
    if isinstance(features, Dataset):
        return features
    from moakit.data.io import read_features

    return read_features(features)


def _scored_names(model_dir: Path) -> list[str]:
    return list(_columns(model_dir)["scored"])


def _read(path: Path):
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise InferenceError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def _columns(model_dir: Path) -> dict:
    path = model_dir / layout.COLUMNS
    if not path.exists():  # runs of a moakit before columns.json
        from moakit.runs.records import unsupported

        raise InferenceError(str(unsupported(model_dir, f"no {layout.COLUMNS}")))
    saved = _read(path)
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), list) for k in ("genes", "cells", "scored")):
        raise InferenceError(f"{path}: damaged (it must list the genes, cells and scored targets)")
    return saved


def _check_model_dir(model_dir: Path) -> None:
    """A complete run folder whose config can be read and whose artifacts are all there
    (each stage and seed's features/, each fold's estimator/), checked before any work."""
    if not (model_dir / layout.CONFIG).exists():
        raise InferenceError(f"{model_dir}: not a moakit run folder (no {layout.CONFIG})")
    if (model_dir / layout.MANIFEST).exists():
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
    config = _config(model_dir)
    try:
        stages = runner.build_model(config).stages()
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


def _config(model_dir: Path):
    from pydantic import ValidationError

    from moakit.config import RunConfig

    raw = _read(model_dir / layout.CONFIG)
    try:
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return RunConfig(**raw)
    except (ValidationError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise InferenceError(f"{model_dir / layout.CONFIG}: not a valid run config ({' '.join(first[:3])})") from None


def _damaged_file(model_dir: Path) -> tuple[Path, str] | None:
    """After a failed prediction: the first saved artifact that cannot be read (JSON,
    arrays, weights; read as data only), and why, or None when all can."""
    import torch

    for path in sorted((model_dir / layout.STAGES_DIR).rglob("*")):
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
            return path, f"{type(exc).__name__}: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def _predict_chunks(model_dir: Path, ds: Dataset, batch_size: int | None, chunk_rows: int | None,
                    advance=None) -> np.ndarray:
    """runner.predict_run's result, computed ``chunk_rows`` rows at a time with the artifacts
    loaded once (:class:`moakit.streaming.RunPredictor`): the same values bit for bit."""
    from moakit.streaming import RunPredictor, chunks, umap_rows_hint

    predictor = RunPredictor(model_dir, batch_size)
    out = None
    with umap_rows_hint(len(ds)):
        for rows in chunks(len(ds), chunk_rows):
            part = predictor.predict(ds.subset(rows))
            if out is None:
                out = np.empty((len(ds), part.shape[1]), part.dtype)
            out[rows] = part
            if advance is not None:
                advance(rows.stop - rows.start)
    return out


def _predict_model(model_dir: Path, ds: Dataset, batch_size: int | None, chunk_rows: int | None = None,
                   advance=None) -> np.ndarray:
    """runner.predict_run (in chunks: :func:`_predict_chunks`), with any failure of the saved
    artifacts as an InferenceError naming the file (a run folder is data: it may be damaged,
    never trusted to run code)."""
    from moakit.artifacts import PickleFormatError
    from moakit.features.safe_state import StateError
    from moakit.runs.records import RunFileError
    from moakit.validate import ArtifactError

    try:
        return _predict_chunks(model_dir, ds, batch_size, chunk_rows, advance)
    except (PickleFormatError, StateError, ArtifactError, RunFileError) as exc:  # RunFileError: unsupported format
        raise InferenceError(str(exc)) from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        damaged = _damaged_file(model_dir)
        if damaged is not None:
            path, why = damaged
            raise InferenceError(f"{path}: cannot be read ({why}); the run folder is damaged: retrain it, or copy "
                                 "the whole run folder again") from None
        if isinstance(exc, FileNotFoundError) and exc.filename:
            raise InferenceError(f"{exc.filename}: missing; the run folder is incomplete or damaged") from None
        raise InferenceError(f"{model_dir}: its saved artifacts do not fit its config.json (was the folder edited?): "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None


def _check_inputs(model_dir: Path, ds: Dataset, where: str) -> None:
    """The new rows must have the gene / cell columns the run was trained on."""
    saved = _columns(model_dir)
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
    saved = _columns(model_dir) if (model_dir / layout.COLUMNS).exists() else {}
    return saved.get("panel") or {"meta": list(schema.META_COLUMNS),
                                  "vocab": {k: list(v) for k, v in schema.LISH_MOA_VOCAB.items()}}


def run_panel_dataset(model_dir: Path, ds: Dataset, where: str) -> Dataset:
    """``ds`` encoded as the run's training rows were (:func:`moakit.data.io.apply_panel`)."""
    from moakit.data.io import apply_panel

    return apply_panel(ds, run_panel(model_dir), where)


def _model_dirs(run_dir: Path) -> tuple[list[str], list[Path], dict[str, float | np.ndarray] | None]:
    """(names, model run folders, blend weights or None for a single-model run)."""
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
    names, dirs = list(weights), []
    for name in names:
        if kind == "workflow":
            d = layout.model_dir(run_dir, name)
            if not d.is_dir():
                raise InferenceError(f"{run_dir}: {layout.BLEND} weighs model {name!r}, but {d} does not exist")
        else:  # a folder of `moakit blend RUN... --out DIR`
            recorded = summary.get("models", {}).get(name, {}).get("run_dir")
            if not recorded:
                raise InferenceError(f"{blend_json}: no run folder recorded for model {name!r}")
            d = Path(recorded) if Path(recorded).is_absolute() else run_dir / recorded
            if not d.is_dir():
                raise InferenceError(f"{blend_json}: the run folder of model {name!r} ({d}) does not exist "
                                     f"({layout.BLEND} records it relative to the blend folder)")
        dirs.append(d)
    return names, dirs, weights


def predict_arrays(run_dir: str | Path, features: str | Path | Dataset, batch_size: int | None = None,
                   per_model: bool = False, chunk_rows: int | None = DEFAULT_CHUNK_ROWS, progress: bool = False):
    """(dataset, predictions, scored target names[, per-model predictions]). Each model
    predicts ``chunk_rows`` rows at a time (None / 0: all at once; the values are the same),
    with a progress bar on stderr when ``progress``."""
    from moakit.streaming import row_progress

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InferenceError(f"{run_dir}: run folder not found")
    names, dirs, weights = _model_dirs(run_dir)
    ds = _dataset(features)
    where = str(features) if not isinstance(features, Dataset) else "features"
    scored = None
    preds: dict[str, np.ndarray] = {}
    running = [n for n in names if weights is None or np.max(np.abs(weights[n])) >= NEGLIGIBLE_WEIGHT]
    with row_progress(len(ds) * len(running), progress) as advance:
        for name, model_dir in zip(names, dirs):
            if name in running:
                scored = _predict_one(name, model_dir, ds, where, dirs[0], scored, preds, batch_size, chunk_rows,
                                      advance)
    return _combine(run_dir, ds, names, weights, scored, preds, per_model)


def _predict_one(name, model_dir, ds, where, first_dir, scored, preds, batch_size, chunk_rows, advance):
    """One model's checks and predictions (into ``preds``); returns the scored names."""
    _check_model_dir(model_dir)
    _check_inputs(model_dir, ds, where)
    model_ds = run_panel_dataset(model_dir, ds, where)
    model_scored = _scored_names(model_dir)
    if scored is None:
        scored = model_scored
    elif model_scored != scored:
        raise InferenceError(f"{model_dir}: predicts other targets than {first_dir}")
    preds[name] = _predict_model(model_dir, model_ds, batch_size, chunk_rows, advance).astype(np.float64)
    return scored


def _combine(run_dir, ds, names, weights, scored, preds, per_model):
    """The model's predictions, or the blend's weighted average of its models'."""
    if scored is None:
        raise InferenceError(f"{run_dir}: every blend weight is (nearly) 0")
    if weights is None:
        out = preds[names[0]]
    else:  # the blend's own weighted average, as it made RUN/blend/submission.csv
        from moakit.blend import blend_predictions

        from moakit.blend import apply_saved_calibration

        used = list(preds)
        out = blend_predictions([preds[n] for n in used], [weights[n] for n in used])
        blend_dir = layout.blend_dir(run_dir) if layout.kind_of(run_dir) == "workflow" else run_dir
        out = apply_saved_calibration(blend_dir, out, scored)  # when the blend kept a calibration
    out = metrics.zero_controls(out, ds.is_control)
    return (ds, out, scored, preds) if per_model else (ds, out, scored)


def predict(run_dir: str | Path, features: str | Path | Dataset, batch_size: int | None = None,
            chunk_rows: int | None = DEFAULT_CHUNK_ROWS, progress: bool = False) -> pd.DataFrame:
    """Predictions for ``features`` (a test_features file or a Dataset) as a validated
    submission frame: sig_id + the scored targets, rows in the input's order; computed
    ``chunk_rows`` rows at a time (:func:`predict_arrays`)."""
    ds, pred, scored = predict_arrays(run_dir, features, batch_size, chunk_rows=chunk_rows, progress=progress)
    frame = pd.DataFrame(pred.astype(np.float64), columns=scored)
    frame.insert(0, schema.ID_COLUMN, ds.sig_id)
    validate_submission(frame, ds.sig_id, scored)
    return frame


def validate_submission(frame: pd.DataFrame, sig_id: np.ndarray, names: list[str]) -> None:
    """Raise InferenceError unless ``frame`` is a valid submission for rows ``sig_id``."""
    expected = [schema.ID_COLUMN, *names]
    columns = [str(c) for c in frame.columns]
    if columns != expected:
        if len(columns) != len(expected):
            raise InferenceError(f"prediction has {len(columns) - 1} target columns, expected {len(names)}")
        j = next(i for i, (a, b) in enumerate(zip(columns, expected)) if a != b)
        raise InferenceError(f"prediction column {j + 1} is {columns[j]!r}, expected {expected[j]!r}")
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
        raise InferenceError(f"prediction for sig_id {ids[row]!r}, target {names[j]!r} is {values[row, j]} (not finite)")
    outside = (values < 0) | (values > 1)
    if outside.any():
        row, j = (int(v[0]) for v in np.nonzero(outside))
        raise InferenceError(f"prediction for sig_id {ids[row]!r}, target {names[j]!r} is {values[row, j]}, "
                             f"outside [0, 1]")


# file name endings of a compressed CSV, as pandas names the compression
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip", ".zst": "zstd"}


def output_format(out: str | Path) -> str:
    """How a submission named ``out`` is written: "parquet" (``.parquet``), a compressed CSV
    ("gzip", "zip" ... for ``.csv.gz``, ``.csv.zip`` ...) or "csv" (any other name)."""
    suffix = Path(out).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    return _COMPRESSION.get(suffix, "csv")


def write_submission(frame: pd.DataFrame, out: str | Path, sig_id: np.ndarray | None = None) -> Path:
    """Validate and write a submission atomically (nothing is written if it is invalid), in
    the format its name says (:func:`output_format`): CSV, compressed CSV or Parquet."""
    names = [str(c) for c in frame.columns if c != schema.ID_COLUMN]
    validate_submission(frame, frame[schema.ID_COLUMN].to_numpy() if sig_id is None else sig_id, names)
    out = Path(out)
    fmt = output_format(out)
    with atomic_file(out, "wb") as fh:
        if fmt == "parquet":
            frame.to_parquet(fh, index=False)
        elif fmt == "csv":
            frame.to_csv(fh, index=False, float_format="%.8g")
        else:
            compression = {"method": fmt}
            if fmt == "zip":  # the CSV's name inside the archive
                compression["archive_name"] = Path(out.stem).name
            frame.to_csv(fh, index=False, float_format="%.8g", compression=compression)
    return out


def predict_to_file(run_dir: str | Path, features: str | Path | Dataset, out: str | Path,
                    batch_size: int | None = None, chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
                    progress: bool = False) -> tuple[Path, pd.DataFrame]:
    frame = predict(run_dir, features, batch_size, chunk_rows=chunk_rows, progress=progress)
    return write_submission(frame, out), frame
