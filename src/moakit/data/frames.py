"""The API's tables as moakit's data and back: :class:`MoADataset` (a data folder as
DataFrames), and the estimators' arguments (X / Y / Y_nonscored / drug_id / X_test as
DataFrames or arrays) turned into a :class:`~moakit.data.dataset.MoAData`, rows matched by
sig_id (:mod:`moakit.validate`). Every value is checked by :mod:`moakit.data.io`'s checks,
so an argument gets the same :class:`~moakit.data.io.DataError` message as a file would,
with the argument's name where a file's path would be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from moakit.data import schema
from moakit.data.dataset import Dataset, MoAData
from moakit.data.io import (DataError, align_to_ids, check_binary, numeric_block, parse_features, require_columns,
                            target_columns, unify_panels)

FEATURE_COLUMNS_HINT = "cp_type, cp_time, cp_dose, then the g-* and c-* columns"


@dataclass
class MoADataset:
    """A lish-moa dataset as DataFrames, in the files' layout (``sig_id`` first).

    ``X`` / ``X_test``: train / test features; ``Y`` / ``Y_nonscored``: scored / non-scored
    training targets; ``drug_id``: a Series of drug ids aligned with ``X`` (None if the
    folder has no train_drug); ``Y_test``: the test answers where known (a simulated
    folder's ``answers/``), else None. Any panel (a moakit dataset folder): ``X`` holds the
    columns the data has (genes, cells if any, cp_* if any; ``X_test`` has 0 rows when the
    folder has no test_features); ``test_drug_id``: the test rows' compounds where known
    (``answers/test_drug``, for ``predict_proba(..., by="compound", groups=...)``);
    ``genes``: column, entrez_id, symbol of each gene column where known; ``info``: the
    folder's dataset.json."""

    X: pd.DataFrame
    Y: pd.DataFrame
    X_test: pd.DataFrame
    Y_nonscored: pd.DataFrame | None = None
    drug_id: pd.Series | None = None
    Y_test: pd.DataFrame | None = None
    source: str = ""
    test_drug_id: pd.Series | None = None
    genes: pd.DataFrame | None = None
    info: dict = field(default_factory=dict)

    @property
    def fit_args(self) -> dict[str, Any]:
        """Keyword arguments for ``estimator.fit(**data.fit_args)``."""
        return {"X": self.X, "Y": self.Y, "Y_nonscored": self.Y_nonscored, "drug_id": self.drug_id,
                "X_test": self.X_test if len(self.X_test) else None}

    def __repr__(self) -> str:
        parts = [f"X={self.X.shape}", f"Y={self.Y.shape}", f"X_test={self.X_test.shape}"]
        if self.Y_nonscored is not None:
            parts.append(f"Y_nonscored={self.Y_nonscored.shape}")
        if self.drug_id is not None:
            parts.append(f"drugs={self.drug_id.nunique()}")
        if self.Y_test is not None:
            parts.append(f"Y_test={self.Y_test.shape}")
        return f"MoADataset({', '.join(parts)})"


def features_frame(ds: Dataset) -> pd.DataFrame:
    """A Dataset's features as a features table: sig_id, its cp_* columns, genes, cells."""
    columns: dict[str, Any] = {
        schema.ID_COLUMN: ds.sig_id,
        "cp_type": np.asarray(schema.CP_TYPES, dtype=object)[ds.cp_type.astype(np.int64)],
        "cp_time": np.asarray(ds.vocab.get("cp_time") or (0,))[ds.cp_time.astype(np.int64)],
        "cp_dose": np.asarray(ds.vocab.get("cp_dose") or ("",), dtype=object)[ds.cp_dose.astype(np.int64)],
    }
    frame = pd.DataFrame({k: v for k, v in columns.items() if k == schema.ID_COLUMN or k in ds.meta})
    numbers = pd.DataFrame(np.concatenate([ds.genes, ds.cells], axis=1).astype(np.float64),
                           columns=[*ds.gene_names, *ds.cell_names])
    return pd.concat([frame, numbers], axis=1)


def targets_frame(sig_id: np.ndarray, values: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """A targets table: sig_id + one 0/1 column per target."""
    frame = pd.DataFrame(np.asarray(values).astype(np.int64), columns=list(names))
    frame.insert(0, schema.ID_COLUMN, sig_id)
    return frame


# --------------------------------------------------------------------------- arguments -> Dataset


def as_frame(X, what: str) -> pd.DataFrame:
    """A features table: a DataFrame as read from a features file, or an array with the
    same columns (without sig_id)."""
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, (str, Path)):
        raise TypeError(f"{what}: expected a DataFrame or an array, not a path; read the folder with "
                        f"moakit.load_dataset(path)")
    arr = np.asarray(X, dtype=object)
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a 2-D table, got an array of shape {arr.shape}")
    width = 3 + schema.N_GENES + schema.N_CELLS
    if arr.shape[1] != width:
        raise DataError(f"{what}: an array must have {width} columns ({FEATURE_COLUMNS_HINT}), "
                        f"this one has {arr.shape[1]}; pass a DataFrame for other column sets")
    return pd.DataFrame(arr, columns=[*schema.META_COLUMNS, *schema.GENE_COLUMNS, *schema.CELL_COLUMNS])


def features_dataset(X, what: str, prefix: str) -> tuple[Dataset, pd.Index]:
    """(Dataset, output index). Rows keep their order; the output index is the sig_id
    column (or an index named sig_id) when there is one, else the DataFrame's own index
    (or 0..n-1 for an array)."""
    from moakit.validate import sig_ids_of

    frame = as_frame(X, what)
    ids = sig_ids_of(X)
    if ids is not None:  # a sig_id column, or an index named sig_id
        index = pd.Index(ids, name=schema.ID_COLUMN)
        if schema.ID_COLUMN not in frame.columns:
            frame = frame.copy()
            frame.insert(0, schema.ID_COLUMN, ids)
    else:
        index = frame.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(frame))
        frame = frame.copy()
        frame.insert(0, schema.ID_COLUMN, [f"{prefix}_{i}" for i in range(len(frame))])
    if len(frame) == 0:
        raise DataError(f"{what}: no rows")
    return parse_features(what, frame.reset_index(drop=True)), index


def targets_matrix(Y, ds: Dataset, has_ids: bool, what: str,
                   default_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """A 0/1 target matrix aligned with ``ds`` and its column names: a DataFrame (its
    sig_id column, if any, matches its rows to X's) or a 2-D array in X's row order
    (columns named ``default_names`` when as many, else target_0, target_1 ...). Checked
    by :mod:`moakit.data.io`'s checks: the messages of a targets file's."""
    if isinstance(Y, pd.DataFrame):
        names = target_columns(what, Y.columns)
        frame = Y.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        values = numeric_block(what, frame, names)
        if schema.ID_COLUMN in frame.columns:
            if not has_ids:
                raise DataError(f"{what}: has a sig_id column but X has none, so its rows cannot be matched; "
                                "drop the column to match rows by position")
            values = align_to_ids(what, frame[schema.ID_COLUMN].astype(str).to_numpy(), values, ds.sig_id, Path("X"))
    else:
        array = np.asarray(Y)
        if array.ndim != 2:
            raise DataError(f"{what}: expected a 2-D (rows, targets) table, got shape {array.shape}")
        names = (default_names if array.shape[1] == len(default_names)
                 else [f"target_{j}" for j in range(array.shape[1])])
        values = numeric_block(what, pd.DataFrame(array, columns=names), names)
    if len(values) != len(ds):
        raise DataError(f"{what}: {len(values)} rows, X has {len(ds)}")
    check_binary(what, values, names)
    return values.astype(np.float32), names


def drug_ids(drug_id, ds: Dataset) -> np.ndarray:
    """Drug ids in X's row order (``drug_id`` was matched to X's rows by sig_id before)."""
    if isinstance(drug_id, pd.DataFrame):  # a train_drug table: sig_id (column or index) + drug_id
        require_columns("drug_id", drug_id, [schema.DRUG_COLUMN])
        drug_id = drug_id[schema.DRUG_COLUMN]
    values = np.asarray(drug_id, dtype=object).astype(str)
    if values.ndim != 1 or len(values) != len(ds):
        raise DataError(f"drug_id: expected one drug id per row of X ({len(ds)}), got shape {values.shape}")
    return values


def training_data(X, Y, Y_nonscored, drug_id, X_test) -> tuple[MoAData, pd.Index, pd.Index | None, tuple]:
    """(data, X's output index, X_test's, (train_back, test_back)). Every argument's rows
    are matched to X's by sig_id (moakit.validate.align_rows); rows carrying sig_ids are
    then put in sig_id order (``train_back[i]``: where input row i is in ``data.train``), so
    the fit does not depend on the order the rows come in."""
    from moakit.validate import align_rows, canonical_order, same_columns, sig_ids_of

    train, train_index = features_dataset(X, "X", "train")
    has_ids = sig_ids_of(X) is not None
    Y, Y_nonscored, drug_id = (align_rows(what, arg, X) for what, arg in
                               (("Y", Y), ("Y_nonscored", Y_nonscored), ("drug_id", drug_id)))
    train.scored, train.scored_names = targets_matrix(Y, train, has_ids, "Y", schema.scored_target_names())
    if Y_nonscored is not None:
        train.nonscored, train.nonscored_names = targets_matrix(Y_nonscored, train, has_ids, "Y_nonscored",
                                                                schema.nonscored_target_names())
    if drug_id is not None:
        train.drug_id = drug_ids(drug_id, train)
    test_index = None
    if X_test is not None:
        test, test_index = features_dataset(X_test, "X_test", "test")
        test = same_columns(test, train, "X_test", "X")  # matched by name; names the columns one lacks
        train, test = unify_panels(train, test, "X_test")
    else:  # no test rows: the transforms are fitted on the training rows only
        test = train.subset(np.zeros(len(train), bool))
        test.scored = test.nonscored = test.drug_id = None
    test.scored_names = list(train.scored_names)
    test.nonscored_names = list(train.nonscored_names)
    orders = [canonical_order(ds.sig_id) if ids else np.arange(len(ds))
              for ds, ids in ((train, has_ids), (test, X_test is not None and sig_ids_of(X_test) is not None))]
    data = MoAData(train=train.subset(orders[0]), test=test.subset(orders[1]))
    back = tuple(np.argsort(order) for order in orders)  # input row -> its position in data
    return data, train_index, test_index, back
