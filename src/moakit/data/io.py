"""Reading and validating a lish-moa folder.

Every problem is reported as a :class:`DataError` whose message names the file, and where
it applies the column and the (1-based, header excluded) row, so that a user can open the
file and see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moakit.data import schema
from moakit.data.dataset import Dataset, MoAData


class DataError(ValueError):
    """Invalid or inconsistent input data; the message says where."""


def find_file(folder: Path, stem: str, required: bool = True) -> Path | None:
    """The file ``stem`` in ``folder`` with one of the supported extensions."""
    found = [folder / f"{stem}{ext}" for ext in schema.EXTENSIONS if (folder / f"{stem}{ext}").exists()]
    if len(found) > 1:
        raise DataError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep one")
    if not found:
        if required:
            allowed = ", ".join(f"{stem}{ext}" for ext in schema.EXTENSIONS)
            raise DataError(f"{folder}: missing {stem} (expected one of {allowed})")
        return None
    return found[0]


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV / zipped CSV / parquet file, with errors that name the file."""
    path = Path(path)
    try:
        if path.name.endswith(".parquet"):
            frame = pd.read_parquet(path)
        else:
            # The raw header is read first: pandas would silently rename a duplicated
            # column "x" to "x.1".
            raw_header = pd.read_csv(path, nrows=1, header=None, dtype=str).iloc[0].tolist()
            _check_duplicates(path, [str(c) for c in raw_header])
            frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    except DataError:
        raise
    except Exception as exc:  # parser errors, bad zip, bad parquet
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    _check_duplicates(path, [str(c) for c in frame.columns])
    if frame.shape[0] == 0:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def _show(value) -> str:
    """A cell value as a user would write it (no numpy type names)."""
    if hasattr(value, "item"):
        value = value.item()
    return repr(value)


def _check_duplicates(path: Path, columns: list[str]) -> None:
    seen: set[str] = set()
    for col in columns:
        if col in seen:
            raise DataError(f"{path}: column {col!r} appears more than once")
        seen.add(col)


def _require_columns(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{path}: missing column(s) {shown}{more}")


def _check_ids(path: Path, frame: pd.DataFrame) -> np.ndarray:
    _require_columns(path, frame, [schema.ID_COLUMN])
    ids = frame[schema.ID_COLUMN].astype(str).to_numpy()
    dup = pd.Series(ids).duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: row {row + 1}: sig_id {ids[row]!r} appears more than once")
    return ids


def _numeric_block(path: Path, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """float32 matrix of ``columns``; non-numeric, NaN and inf values are errors."""
    for col in columns:
        series = frame[col]
        if not pd.api.types.is_numeric_dtype(series):
            converted = pd.to_numeric(series, errors="coerce")
            bad = converted.isna() & series.notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"{path}: column {col!r}, row {row + 1}: non-numeric value {_show(series.iloc[row])}")
    numeric = frame[columns]
    if not all(pd.api.types.is_numeric_dtype(numeric[c]) for c in columns):
        numeric = numeric.apply(pd.to_numeric, errors="coerce")
    values = numeric.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row, j = (int(v[0]) for v in np.nonzero(~finite))
        raise DataError(f"{path}: column {columns[j]!r}, row {row + 1}: value {values[row, j]} is not finite (NaN or inf)")
    return values.astype(np.float32)


def _encode(path: Path, frame: pd.DataFrame, column: str, allowed: tuple) -> np.ndarray:
    values = frame[column]
    if column == "cp_time":
        values = pd.to_numeric(values, errors="coerce")
    lookup = {v: i for i, v in enumerate(allowed)}
    codes = values.map(lookup)
    if codes.isna().any():
        row = int(np.flatnonzero(codes.isna().to_numpy())[0])
        raise DataError(
            f"{path}: column {column!r}, row {row + 1}: unknown value {_show(frame[column].iloc[row])} "
            f"(allowed: {', '.join(map(str, allowed))})"
        )
    return codes.to_numpy(dtype=np.int8)


def parse_features(path: Path, frame: pd.DataFrame) -> Dataset:
    """Validate a features table and turn it into a Dataset without targets."""
    gene_cols = [c for c in frame.columns if str(c).startswith(schema.GENE_PREFIX)]
    cell_cols = [c for c in frame.columns if str(c).startswith(schema.CELL_PREFIX)]
    _require_columns(path, frame, [schema.ID_COLUMN, *schema.META_COLUMNS])
    if not gene_cols:
        raise DataError(f"{path}: no gene expression columns (names starting with {schema.GENE_PREFIX!r})")
    if not cell_cols:
        raise DataError(f"{path}: no cell viability columns (names starting with {schema.CELL_PREFIX!r})")
    ids = _check_ids(path, frame)
    return Dataset(
        sig_id=ids,
        genes=_numeric_block(path, frame, gene_cols),
        cells=_numeric_block(path, frame, cell_cols),
        cp_type=_encode(path, frame, "cp_type", schema.CP_TYPES),
        cp_time=_encode(path, frame, "cp_time", schema.CP_TIMES),
        cp_dose=_encode(path, frame, "cp_dose", schema.CP_DOSES),
        gene_names=[str(c) for c in gene_cols],
        cell_names=[str(c) for c in cell_cols],
    )


def read_features(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return parse_features(path, read_table(path))


def _id_and_target_columns(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(sig_ids, target column names, numeric values) of a targets or submission file."""
    frame = read_table(path)
    ids = _check_ids(path, frame)
    names = [str(c) for c in frame.columns if c != schema.ID_COLUMN]
    if not names:
        raise DataError(f"{path}: no target columns besides sig_id")
    return ids, names, _numeric_block(path, frame, names)


def _read_targets(path: Path, sig_ids: np.ndarray, features_path: Path) -> tuple[np.ndarray, list[str]]:
    """Target matrix aligned to ``sig_ids`` (the features' order)."""
    ids, names, values = _id_and_target_columns(path)
    not_binary = (values != 0) & (values != 1)
    if not_binary.any():
        row, j = (int(v[0]) for v in np.nonzero(not_binary))
        raise DataError(f"{path}: column {names[j]!r}, row {row + 1}: target {values[row, j]} is not 0 or 1")
    return _align(path, ids, values, sig_ids, features_path), names


def _align(path: Path, ids: np.ndarray, values: np.ndarray, sig_ids: np.ndarray, features_path: Path) -> np.ndarray:
    """Reorder ``values`` (rows keyed by ``ids``) into the order of ``sig_ids``."""
    position = pd.Index(ids)
    order = position.get_indexer(sig_ids)
    if (order < 0).any():
        missing = sig_ids[order < 0]
        raise DataError(
            f"{path}: {len(missing)} sig_id(s) of {features_path.name} have no row here, e.g. {missing[0]!r}"
        )
    if len(ids) != len(sig_ids):
        extra = np.setdiff1d(ids, sig_ids)
        raise DataError(f"{path}: {len(extra)} sig_id(s) are not in {features_path.name}, e.g. {extra[0]!r}")
    return values[order]


def load(folder: str | Path) -> MoAData:
    """Read and validate a lish-moa folder into train and test Datasets.

    Targets and drug ids are aligned to the feature files' row order by sig_id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    train_path = find_file(folder, "train_features")
    test_path = find_file(folder, "test_features")
    train = read_features(train_path)
    test = read_features(test_path)
    for attr, kind in (("gene_names", "gene"), ("cell_names", "cell")):
        if getattr(train, attr) != getattr(test, attr):
            raise DataError(f"{test_path}: {kind} columns differ from those of {train_path.name}")

    scored_path = find_file(folder, "train_targets_scored")
    train.scored, train.scored_names = _read_targets(scored_path, train.sig_id, train_path)
    nonscored_path = find_file(folder, "train_targets_nonscored", required=False)
    if nonscored_path is not None:
        train.nonscored, train.nonscored_names = _read_targets(nonscored_path, train.sig_id, train_path)
    drug_path = find_file(folder, "train_drug", required=False)
    if drug_path is not None:
        frame = read_table(drug_path)
        _require_columns(drug_path, frame, [schema.ID_COLUMN, schema.DRUG_COLUMN])
        ids = _check_ids(drug_path, frame)
        drugs = frame[schema.DRUG_COLUMN].astype(str).to_numpy()
        train.drug_id = _align(drug_path, ids, drugs, train.sig_id, train_path)
    submission_path = find_file(folder, "sample_submission", required=False)
    if submission_path is not None:
        frame = read_table(submission_path)
        columns = [str(c) for c in frame.columns if c != schema.ID_COLUMN]
        if columns != train.scored_names:
            raise DataError(f"{submission_path}: target columns differ from those of {scored_path.name}")
    test.scored_names = list(train.scored_names)
    test.nonscored_names = list(train.nonscored_names)
    return MoAData(train=train, test=test, source=str(folder))


def read_answers(path: str | Path, sig_ids: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """A 0/1 target table (e.g. answers/test_targets_scored.csv) aligned to ``sig_ids``."""
    path = Path(path)
    values, file_names = _read_targets(path, sig_ids, path)
    if names is not None and file_names != names:
        raise DataError(f"{path}: target columns differ from the expected scored targets")
    return values


class Submission:
    """A parsed submission file: sig_ids, target names and a float matrix."""

    def __init__(self, sig_id: np.ndarray, names: list[str], values: np.ndarray) -> None:
        self.sig_id, self.names, self.values = sig_id, names, values


def read_submission(path: str | Path) -> Submission:
    """Read and validate a submission: unique sig_ids, numeric finite values in [0, 1]."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    ids, names, values = _id_and_target_columns(path)
    outside = (values < 0) | (values > 1)
    if outside.any():
        row, j = (int(v[0]) for v in np.nonzero(outside))
        raise DataError(f"{path}: column {names[j]!r}, row {row + 1}: probability {values[row, j]} outside [0, 1]")
    return Submission(ids, names, values)
