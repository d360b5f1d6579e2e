"""Compound-level predictions: the signatures of one compound (its doses, times, cell lines,
replicates) averaged into one row.

The group of a signature is its compound id: a ``drug_id`` (lish-moa, moakit dataset
folders) or ``pert_id`` (LINCS) column of the features, or ids given explicitly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from moakit.data import schema
from moakit.data.io import DataError

GROUP_COLUMNS = (schema.DRUG_COLUMN, "pert_id")


def group_ids(X, groups, index: pd.Index, what: str = "X") -> tuple[np.ndarray, str]:
    """(one group id per prediction row, the ids' name).

    ``groups``: a pandas Series matched to the rows by its index (the rows' sig_ids, or
    X's own index when X has no sig_id), or a list / array in X's row order; None: the
    ``drug_id`` or ``pert_id`` column of ``X``. A row without a group is a DataError naming it."""
    if groups is None:
        column = next((c for c in GROUP_COLUMNS if isinstance(X, pd.DataFrame) and c in X.columns), None)
        if column is None:
            raise DataError(f"{what}: grouping by compound needs each row's compound: a "
                            f"{' or '.join(GROUP_COLUMNS)} column in {what}, or groups=")
        values, name = X[column].to_numpy(dtype=object), column
    elif isinstance(groups, pd.Series):
        name = str(groups.name) if groups.name is not None else schema.DRUG_COLUMN
        if groups.index.has_duplicates:
            dup = groups.index[groups.index.duplicated()][0]
            raise DataError(f"groups: index value {dup!r} appears more than once")
        keyed = groups.copy()
        keyed.index = keyed.index.astype(str) if index.dtype == object else keyed.index
        missing = index[~index.isin(keyed.index)]
        if len(missing):
            raise DataError(f"groups: no group for {len(missing)} row(s) of {what}, e.g. "
                            f"{missing[0]!r} (a Series is matched to the rows by its index)")
        values = keyed.reindex(index).to_numpy(dtype=object)
    else:
        values, name = np.asarray(groups, dtype=object), schema.DRUG_COLUMN
        if values.ndim != 1 or len(values) != len(index):
            raise DataError(f"groups: expected one group per row of {what} ({len(index)}), got shape {values.shape}")
    empty = pd.isna(values) | (pd.Series(values, dtype=object).astype(str).str.strip() == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DataError(f"{what}: row {row + 1} ({index[row]!r}) has no compound (group) id")
    return values.astype(str), name


def mean_by_group(proba: pd.DataFrame, ids: np.ndarray, name: str = schema.DRUG_COLUMN) -> pd.DataFrame:
    """Per group, the mean of its rows' probabilities: a DataFrame indexed by the group id
    (named ``name``; groups in order of first appearance), one column per target."""
    if len(ids) != len(proba):
        raise ValueError(f"{len(ids)} group ids for {len(proba)} prediction rows")
    values = proba.reset_index(drop=True)
    out = values.groupby(pd.Index(np.asarray(ids, dtype=str), name=name), sort=False).mean()
    return out.astype(np.float64)


def n_per_group(ids: np.ndarray, name: str = schema.DRUG_COLUMN) -> pd.Series:
    """How many rows each group has, in order of first appearance."""
    return pd.Series(np.asarray(ids, dtype=str)).value_counts(sort=False).rename_axis(name).rename("n_signatures")
