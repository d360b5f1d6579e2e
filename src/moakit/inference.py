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
from moakit.manifest import MANIFEST_FILE, read_manifest
from moakit.workflow import WORKFLOW_FILE

# Throughput sweet spots from the write-up ("Inference Efficiency"): larger batches do
# not help once CPU / GPU / I/O saturate.
NN_BATCH_SIZE = 2048
CNN_BATCH_SIZE = 512
# Blend weights below this are treated as 0 and their models not run: the predictions
# change by less than the sum of the skipped weights (probabilities are <= 1).
NEGLIGIBLE_WEIGHT = 1e-9


class InferenceError(ValueError):
    """A run folder or input that cannot be predicted on, or an invalid prediction."""


def _dataset(features: str | Path | Dataset) -> Dataset:
    if isinstance(features, Dataset):
        return features
    from moakit.data.io import read_features

    return read_features(features)


def _scored_names(model_dir: Path) -> list[str]:
    columns = model_dir / "columns.json"
    if columns.exists():
        return list(_columns(model_dir)["scored"])
    oof = model_dir / "oof_predictions.csv"
    if oof.exists():  # runs made before columns.json existed
        return [c for c in pd.read_csv(oof, nrows=0).columns if c != schema.ID_COLUMN]
    raise InferenceError(f"{model_dir}: no columns.json or oof_predictions.csv; is the run complete?")


def _read(path: Path):
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise InferenceError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def _columns(model_dir: Path) -> dict:
    path = model_dir / "columns.json"
    saved = _read(path)
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), list) for k in ("genes", "cells", "scored")):
        raise InferenceError(f"{path}: damaged (it must list the genes, cells and scored targets)")
    return saved


def _check_model_dir(model_dir: Path) -> None:
    """A complete run folder whose config can be read and whose artifacts are all there
    (each stage and seed's features/, each fold's estimator/), checked before any work."""
    if not (model_dir / "config.json").exists():
        raise InferenceError(f"{model_dir}: not a moakit run folder (no config.json)")
    if (model_dir / MANIFEST_FILE).exists():
        try:
            status = read_manifest(model_dir).status
        except ValueError as exc:
            raise InferenceError(str(exc)) from None
        if status != "complete":
            raise InferenceError(f"{model_dir}: the run is not complete (status {status!r}); finish it with the "
                                 "same command first")
    config = _config(model_dir)
    try:
        stages = runner.build_model(config).stages()
    except ValueError as exc:
        raise InferenceError(f"{model_dir / 'config.json'}: {exc}") from None
    for stage in stages:
        for seed in config.seeds:
            stage_dir = model_dir / "stages" / stage.name / f"seed_{seed}"
            needed = [stage_dir / "features"] + [stage_dir / f"fold_{k}" / "estimator" for k in range(config.cv.n_folds)]
            for path in needed:
                if not path.is_dir():
                    raise InferenceError(f"{path}: missing; the run folder is incomplete or damaged (retrain it, or "
                                         "copy the whole run folder again)")


def _config(model_dir: Path):
    from pydantic import ValidationError

    from moakit.config import RunConfig

    raw = _read(model_dir / "config.json")
    try:
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return RunConfig(**raw)
    except (ValidationError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise InferenceError(f"{model_dir / 'config.json'}: not a valid run config ({' '.join(first[:3])})") from None


def _damaged_file(model_dir: Path) -> tuple[Path, str] | None:
    """After a failed prediction: the first saved artifact that cannot be read (JSON,
    arrays, weights; read as data only), and why, or None when all can."""
    import torch

    for path in sorted((model_dir / "stages").rglob("*")):
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


def _predict_model(model_dir: Path, ds: Dataset, batch_size: int | None) -> np.ndarray:
    """runner.predict_run, with any failure of the saved artifacts as an InferenceError
    naming the file (a run folder is data: it may be damaged, never trusted to run code)."""
    from moakit.artifacts import PickleFormatError
    from moakit.features.safe_state import StateError

    try:
        return runner.predict_run(model_dir, ds, batch_size=batch_size)
    except (PickleFormatError, StateError) as exc:
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
    columns = model_dir / "columns.json"
    if not columns.exists():
        if len(ds.gene_names) != len(schema.GENE_COLUMNS) or len(ds.cell_names) != len(schema.CELL_COLUMNS):
            raise InferenceError(f"{where}: {len(ds.gene_names)} gene / {len(ds.cell_names)} cell columns; "
                                 f"the run cannot tell which it was trained on (no columns.json)")
        return
    saved = _columns(model_dir)
    for key, have, kind in (("genes", ds.gene_names, "gene"), ("cells", ds.cell_names, "cell")):
        want = list(saved[key])
        if list(have) != want:
            missing = [c for c in want if c not in set(have)]
            extra = [c for c in have if c not in set(want)]
            detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                      else "same columns in another order")
            raise InferenceError(f"{where}: {kind} columns differ from the training data's "
                                 f"({len(have)} vs {len(want)}; {detail})")


def _model_dirs(run_dir: Path) -> tuple[list[str], list[Path], dict[str, float | np.ndarray] | None]:
    """(names, model run folders, blend weights or None for a single-model run)."""
    if (run_dir / WORKFLOW_FILE).exists():
        blend_json = run_dir / "blend" / "blend.json"
        if not blend_json.exists():
            raise InferenceError(f"{run_dir}: the workflow has no blend/blend.json yet; finish it with `moakit run` first")
        weights = prediction_weights(_read(blend_json))
        if not weights:
            raise InferenceError(f"{blend_json}: no blend weights found")
        names = list(weights)
        dirs = [run_dir / "models" / n for n in names]
        for name, d in zip(names, dirs):
            if not d.is_dir():
                raise InferenceError(f"{run_dir}: blend.json weighs model {name!r}, but {d} does not exist")
        return names, dirs, weights
    if (run_dir / "config.json").exists():
        return [run_dir.name], [run_dir], None
    if (run_dir / "blend.json").exists():  # a folder of `moakit blend RUN... --out DIR`
        summary = _read(run_dir / "blend.json")
        weights = prediction_weights(summary)
        if not weights:
            raise InferenceError(f"{run_dir / 'blend.json'}: no blend weights found")
        names, dirs = list(weights), []
        for name in names:
            recorded = summary.get("models", {}).get(name, {}).get("run_dir")
            if not recorded:
                raise InferenceError(f"{run_dir / 'blend.json'}: no run folder recorded for model {name!r}")
            d = Path(recorded) if Path(recorded).is_absolute() else run_dir / recorded
            if not d.is_dir():
                raise InferenceError(f"{run_dir / 'blend.json'}: the run folder of model {name!r} ({d}) "
                                     "does not exist (blend.json records it relative to the blend folder)")
            dirs.append(d)
        return names, dirs, weights
    raise InferenceError(f"{run_dir}: not a moakit run folder (no {WORKFLOW_FILE}, config.json or blend.json)")


def predict_arrays(run_dir: str | Path, features: str | Path | Dataset, batch_size: int | None = None,
                   per_model: bool = False):
    """(dataset, predictions, scored target names[, per-model predictions])."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InferenceError(f"{run_dir}: run folder not found")
    names, dirs, weights = _model_dirs(run_dir)
    ds = _dataset(features)
    where = str(features) if not isinstance(features, Dataset) else "features"
    scored = None
    preds: dict[str, np.ndarray] = {}
    for name, model_dir in zip(names, dirs):
        if weights is not None and np.max(np.abs(weights[name])) < NEGLIGIBLE_WEIGHT:
            continue  # a model the blend dropped (SLSQP leaves ~1e-16) is not run at all
        _check_model_dir(model_dir)
        _check_inputs(model_dir, ds, where)
        model_scored = _scored_names(model_dir)
        if scored is None:
            scored = model_scored
        elif model_scored != scored:
            raise InferenceError(f"{model_dir}: predicts other targets than {dirs[0]}")
        preds[name] = _predict_model(model_dir, ds, batch_size).astype(np.float64)
    if scored is None:
        raise InferenceError(f"{run_dir}: every blend weight is (nearly) 0")
    if weights is None:
        out = preds[names[0]]
    else:  # the blend's own weighted average, as it made RUN/blend/submission.csv
        from moakit.blend import blend_predictions

        used = list(preds)
        out = blend_predictions([preds[n] for n in used], [weights[n] for n in used])
    out = metrics.zero_controls(out, ds.is_control)
    return (ds, out, scored, preds) if per_model else (ds, out, scored)


def predict(run_dir: str | Path, features: str | Path | Dataset, batch_size: int | None = None) -> pd.DataFrame:
    """Predictions for ``features`` (a test_features file or a Dataset) as a validated
    submission frame: sig_id + the scored targets, rows in the input's order."""
    ds, pred, scored = predict_arrays(run_dir, features, batch_size)
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
                    batch_size: int | None = None) -> tuple[Path, pd.DataFrame]:
    frame = predict(run_dir, features, batch_size)
    return write_submission(frame, out), frame
