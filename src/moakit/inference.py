"""Prediction on new rows as files: ``open_run(path).predict(data)`` plus writing.

What a run folder predicts, and how (which models, their checks, the blend's weights and
calibration, chunk after chunk) is :mod:`moakit.runs.predict` (through
:meth:`moakit.runs.Run.predict`); this module streams it into a submission file:
:func:`predict_file` (``moakit predict``) reads the input chunk by chunk (a features table,
a GCTX / GCT file or a dataset folder: :mod:`moakit.data.chunked`,
:mod:`moakit.predict_inputs`), predicts each chunk and appends it to the output (CSV,
compressed CSV or Parquet), written to a temporary file renamed at the end, so that a bad
row in a late chunk leaves nothing half-written. Control rows (``ctl_vehicle``) are
predicted 0. Each chunk is checked before it is written: ``sig_id`` in the input's order,
the scored target columns in training order, finite values in [0, 1].

:func:`predict`, :func:`predict_arrays` and :func:`predict_to_file` are the in-memory entry
points (a frame or arrays of every row); the names re-exported from
:mod:`moakit.runs.predict` keep older imports working.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from moakit.data import schema
from moakit.data.dataset import Dataset
from moakit.runs.predict import (  # noqa: F401 (NEGLIGIBLE_WEIGHT: re-exported)
    NEGLIGIBLE_WEIGHT, InferenceError, Predictor, run_panel, submission_frame, validate_submission)

# Throughput sweet spots from the write-up ("Inference Efficiency"): larger batches do
# not help once CPU / GPU / I/O saturate.
NN_BATCH_SIZE = 2048
CNN_BATCH_SIZE = 512
DEFAULT_CHUNK_ROWS = 20_000  # rows predicted at a time (moakit predict --chunk-rows)


class PredictUsageError(ValueError):
    """Options of ``moakit predict`` that do not go together (``option``: which)."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


def run_panel_dataset(model_dir: Path, ds: Dataset, where: str) -> Dataset:
    """``ds`` encoded as the run's training rows were (:func:`moakit.data.io.apply_panel`)."""
    from moakit.data.io import apply_panel

    return apply_panel(ds, run_panel(model_dir), where)


def source_of(features: str | Path | Dataset):
    """Rows to predict as a source of chunks: a Dataset in memory, or a features table
    (CSV / Parquet) read chunk by chunk."""
    from moakit.data.chunked import TableChunks
    from moakit.streaming import DatasetRows

    if isinstance(features, Dataset):
        return DatasetRows(features)
    return TableChunks(features)


def open_run_for_predict(run_dir: str | Path):
    """``moakit.runs.open_run(run_dir)``, a folder that is none an InferenceError."""
    from moakit.runs import RunFileError, open_run

    try:
        return open_run(run_dir)
    except RunFileError as exc:
        raise InferenceError(str(exc)) from None


def predict_arrays(run_dir: str | Path, features: str | Path | Dataset, batch_size: int | None = None,
                   per_model: bool = False, chunk_rows: int | None = DEFAULT_CHUNK_ROWS, progress: bool = False):
    """(dataset, predictions, scored target names[, per-model predictions]), every row in
    memory. The models predict ``chunk_rows`` rows at a time (None / 0: all at once; the
    values are the same), with a progress bar on stderr when ``progress``."""
    from moakit.data.io import read_features

    run = open_run_for_predict(run_dir)
    ds = features if isinstance(features, Dataset) else read_features(features)
    where = "features" if isinstance(features, Dataset) else str(features)
    out, preds, scored = run.predict_arrays(ds, batch_size=batch_size, chunk_rows=chunk_rows, progress=progress,
                                            where=where)
    return (ds, out, scored, preds) if per_model else (ds, out, scored)


def predict(run_dir: str | Path, features: str | Path | Dataset, batch_size: int | None = None,
            chunk_rows: int | None = DEFAULT_CHUNK_ROWS, progress: bool = False) -> pd.DataFrame:
    """Predictions for ``features`` (a features file, read chunk by chunk, or a Dataset) as a
    validated submission frame: sig_id + the scored targets, rows in the input's order."""
    run = open_run_for_predict(run_dir)
    return run.predict(features, batch_size=batch_size, chunk_rows=chunk_rows, progress=progress)


# file name endings of a compressed CSV, as pandas names the compression
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip", ".zst": "zstd"}


def output_format(out: str | Path) -> str:
    """How a submission named ``out`` is written: "parquet" (``.parquet``), a compressed CSV
    ("gzip", "zip" ... for ``.csv.gz``, ``.csv.zip`` ...) or "csv" (any other name)."""
    suffix = Path(out).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    return _COMPRESSION.get(suffix, "csv")


@contextlib.contextmanager
def _compressed(fh, fmt: str, out: Path) -> Iterator:
    """A binary stream over ``fh`` compressing as pandas' ``compression=fmt`` does."""
    import bz2
    import gzip
    import lzma
    import zipfile

    if fmt == "zip":  # one member: the CSV's name inside the archive
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as archive, \
                archive.open(Path(out.stem).name, "w", force_zip64=True) as member:
            yield member
        return
    if fmt == "zstd":
        try:
            import zstandard
        except ImportError:
            raise InferenceError(f"{out}: writing .zst needs the zstandard package (pip install zstandard)") from None
        with zstandard.ZstdCompressor().stream_writer(fh, closefd=False) as stream:
            yield stream
        return
    opener = {"gzip": lambda: gzip.GzipFile(fileobj=fh, mode="wb"), "bz2": lambda: bz2.BZ2File(fh, "wb"),
              "xz": lambda: lzma.LZMAFile(fh, "wb")}[fmt]
    with opener() as stream:
        yield stream


@contextlib.contextmanager
def _sink(fh, out: Path) -> Iterator[Callable[[pd.DataFrame, bool], None]]:
    """``write(frame, first)`` appending a chunk of the submission in ``out``'s format."""
    fmt = output_format(out)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = []

        def write_parquet(frame: pd.DataFrame, first: bool) -> None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if first:
                writer.append(pq.ParquetWriter(fh, table.schema))
            writer[0].write_table(table.cast(writer[0].schema))

        try:
            yield write_parquet
        finally:
            if writer:
                writer[0].close()
        return
    with (_compressed(fh, fmt, out) if fmt != "csv" else contextlib.nullcontext(fh)) as stream:
        yield lambda frame, first: frame.to_csv(stream, index=False, header=first, float_format="%.8g")


@contextlib.contextmanager
def submission_writer(out: str | Path, names: list[str]) -> Iterator[Callable[[np.ndarray, np.ndarray], int]]:
    """``write(sig_id, values)`` appending validated chunks of a submission to ``out``; the
    file appears (renamed from a temporary one) only when the block ends without an error.
    ``write`` returns the rows written so far."""
    from moakit.artifacts import atomic_file

    out = Path(out)
    names = list(names)
    rows = [0]
    with atomic_file(out, "wb") as fh, _sink(fh, out) as append:
        def write(sig_id: np.ndarray, values: np.ndarray) -> int:
            frame = submission_frame(sig_id, values, names)
            validate_submission(frame, sig_id, names)
            append(frame, rows[0] == 0)
            rows[0] += len(frame)
            return rows[0]

        yield write
        if rows[0] == 0:  # no rows: the header alone
            append(submission_frame(np.array([], dtype=str), np.zeros((0, len(names))), names), True)


def write_submission(frame: pd.DataFrame, out: str | Path, sig_id: np.ndarray | None = None) -> Path:
    """Validate and write a submission atomically (nothing is written if it is invalid), in
    the format its name says (:func:`output_format`): CSV, compressed CSV or Parquet."""
    names = [str(c) for c in frame.columns if c != schema.ID_COLUMN]
    ids = frame[schema.ID_COLUMN].to_numpy()
    validate_submission(frame, ids if sig_id is None else sig_id, names)
    with submission_writer(out, names) as write:
        write(ids, frame[names].to_numpy(dtype=np.float64))
    return Path(out)


def predict_to_file(run_dir: str | Path, features: str | Path | Dataset, out: str | Path,
                    batch_size: int | None = None, chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
                    progress: bool = False) -> tuple[Path, pd.DataFrame]:
    """Stream ``features`` through the run into ``out`` (:func:`stream_to_file`) and return
    (path, the submission frame) (the frame holds every row's predictions)."""
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    predictor = open_run_for_predict(run_dir).predictor(batch_size)
    stream_to_file(predictor, source_of(features), out, chunk_rows, progress,
                   keep=lambda ds, pred: parts.append((ds.sig_id, pred)))
    frame = submission_frame(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                             predictor.scored)
    return Path(out), frame


def stream_to_file(predictor: Predictor, source, out: str | Path, chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
                   progress: bool = False, keep: Callable | None = None) -> int:
    """Every chunk of ``source`` predicted and appended to ``out``; ``keep(ds, pred)`` sees
    each chunk (e.g. to sum per compound). Returns the rows written."""
    written = 0
    with submission_writer(out, predictor.scored) as write:
        for _, ds, pred, _ in predictor.stream(source, chunk_rows, progress):
            written = write(ds.sig_id, pred)
            if keep is not None:
                keep(ds, pred)
    if written != source.n_rows:
        raise InferenceError(f"{source.where}: {written} rows predicted of {source.n_rows}")
    return written


def predict_file(run_dir: str | Path, features: str | Path, out: str | Path, batch_size: int | None = None,
                 chunk_rows: int | None = DEFAULT_CHUNK_ROWS, progress: bool = False,
                 allow_missing_genes: bool = False, siginfo: Path | None = None, cp_time: float | None = None,
                 cp_dose: str | None = None, by_compound: bool = False, top: int = 5,
                 groups_file: Path | None = None, log: Callable[[str], None] | None = None) -> dict:
    """``moakit predict``: ``features`` (a features table, a GCTX / GCT file or a dataset
    folder) streamed through the run into ``out``; with ``by_compound`` the per-compound
    top MoAs beside it (:func:`moakit.predict_inputs.compound_file`), from sums and counts
    kept across chunks. Returns {"submission", "rows", "targets"[, "by_compound"]}.
    PredictUsageError for options that do not go together (before any work)."""
    from moakit.predict_inputs import CompoundMeans, compound_file, is_matrix_file, open_input, read_groups

    features = Path(features)
    matrix = features.is_dir() or is_matrix_file(features)
    if not matrix and (cp_time is not None or cp_dose is not None):
        raise PredictUsageError("only with a GCTX / GCT file or a dataset folder as --features",
                                "--cp-time / --cp-dose")
    source = None
    if matrix:  # the input's checks first, as they name the input
        source = open_input(features, Path(run_dir), allow_missing_genes=allow_missing_genes, siginfo=siginfo,
                            cp_time=cp_time, cp_dose=cp_dose)
        for note in source.notes:
            (log or (lambda _: None))(note)
    groups = source.groups if source is not None else None
    if by_compound and groups_file is None and groups is None:
        raise PredictUsageError("no compound id for the signatures (no siginfo pert_id, no drug ids in the folder); "
                                "give --groups FILE (sig_id, drug_id)", "--by")
    predictor = open_run_for_predict(run_dir).predictor(batch_size)
    source = source or source_of(features)  # a table: the run's checks before a pass over it
    if by_compound and groups_file is not None and source.sig_id is not None:  # checked before any prediction
        groups = read_groups(groups_file, source.sig_id)
    means, seen = (CompoundMeans(predictor.scored) if by_compound else None), [0]

    def keep(ds: Dataset, pred: np.ndarray) -> None:  # the chunk's rows' sums and counts per compound
        means.add(pred, groups[seen[0]:seen[0] + len(ds)], ds.is_control)
        seen[0] += len(ds)

    rows = stream_to_file(predictor, source, out, chunk_rows, progress, keep=keep if means is not None else None)
    result = {"submission": str(out), "rows": rows, "targets": len(predictor.scored)}
    if means is not None:
        from moakit.artifacts import atomic_file

        path = compound_file(Path(out))
        with atomic_file(path, "w") as fh:
            means.calls(top).to_csv(fh, index=False, float_format="%.6g")
        result["by_compound"] = str(path)
    return result
