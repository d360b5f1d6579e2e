"""Fold assignment: the "old" multilabel-stratified CV and the drug-aware "new" CV.

Both return an int array ``folds`` with one fold id per training row (0..k-1); rows of
fold k are the validation rows of fold k.
"""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from moakit.choices import CVScheme
from moakit.data.dataset import Dataset

Scheme = CVScheme


def multilabel_folds(targets: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Old CV: MultilabelStratifiedKFold over rows, stratified on the scored targets."""
    targets = np.asarray(targets)
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if len(targets) < n_folds:
        raise ValueError(f"cannot split {len(targets)} rows into {n_folds} folds")
    folds = np.full(len(targets), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, valid) in enumerate(splitter.split(np.zeros((len(targets), 1)), targets)):
        folds[valid] = k
    return folds


def drug_aware_folds(
    targets: np.ndarray, drug_id: np.ndarray, n_folds: int, seed: int, max_replicates: int = 18,
    is_control: np.ndarray | None = None,
) -> np.ndarray:
    """New CV ("double stratified"): whole drugs per fold, except very frequent drugs.

    Drugs with at most ``max_replicates`` rows are assigned to folds as whole drugs,
    stratified on drug-level targets (the mean over the drug's rows), so a model is never
    validated on a drug it has seen. The few drugs with more rows (a handful of reference
    compounds in lish-moa) are split row-wise with multilabel stratification, since holding
    each out whole would unbalance the folds.

    As the winners' new-CV scripts (``simple-nn-new-split-train.py``): only treated rows
    take part (``is_control``: the control rows, which the scripts drop, get folds of their
    own, a seeded even split); drugs are counted on the treated rows and enter the split in
    pandas ``value_counts`` order; the frequent drugs' rows in data order; both splits use
    ``seed``. On the same data the fold of every treated row equals the script's.
    """
    import pandas as pd

    targets = np.asarray(targets)
    drug_id = np.asarray(drug_id).astype(str)
    if len(drug_id) != len(targets):
        raise ValueError(f"drug_id has {len(drug_id)} rows, targets have {len(targets)}")
    control = np.zeros(len(targets), bool) if is_control is None else np.asarray(is_control, bool)
    folds = np.full(len(targets), -1, dtype=np.int64)
    treated = np.flatnonzero(~control)
    counts = pd.Series(drug_id[treated]).value_counts()  # the scripts' order (most rows first)
    few_drugs = counts.index[counts <= max_replicates]
    few = np.isin(drug_id[treated], few_drugs)  # treated rows of those drugs
    if few.any():
        drug_targets = (pd.DataFrame(targets[treated]).groupby(drug_id[treated]).mean()
                        .loc[few_drugs].to_numpy())
        drug_fold = pd.Series(multilabel_folds(drug_targets, n_folds, seed), index=few_drugs)
        folds[treated[few]] = drug_fold.loc[drug_id[treated[few]]].to_numpy()
    many_rows = treated[~few]
    if len(many_rows):
        folds[many_rows] = multilabel_folds(targets[many_rows], n_folds, seed)
    ctl_rows = np.flatnonzero(control)
    if len(ctl_rows):
        folds[ctl_rows] = np.random.default_rng(seed).permutation(len(ctl_rows)) % n_folds
    return folds


def assign_folds(
    data: Dataset, scheme: Scheme = "old", n_folds: int = 5, seed: int = 0, max_replicates: int = 18
) -> np.ndarray:
    """Fold ids for every training row of ``data`` under the chosen CV scheme."""
    if data.scored is None:
        raise ValueError("fold assignment needs the scored targets (train_targets_scored)")
    if scheme == "old":
        return multilabel_folds(data.scored, n_folds, seed)
    if scheme == "drug":
        if data.drug_id is None:
            raise ValueError("the drug-aware CV needs drug ids: add train_drug.csv to the data folder")
        return drug_aware_folds(data.scored, data.drug_id, n_folds, seed, max_replicates, data.is_control)
    raise ValueError(f"unknown CV scheme {scheme!r} (use 'old' or 'drug')")


HOLDOUT_MAX_PARTS = 20  # a holdout is whole parts of a split in at most 20 parts (or 1/fraction, if more)


def holdout_parts(fraction: float) -> tuple[int, int]:
    """(parts taken, parts in all) that realise a holdout ``fraction``: the fraction nearest
    to it with at most max(:data:`HOLDOUT_MAX_PARTS`, round(1 / fraction)) parts. Every
    multiple of 0.05 and every 1/k is exact (0.1 -> 1 of 10, 0.15 -> 3 of 20, 0.3 -> 3 of
    10, 0.01 -> 1 of 100); any other is rounded (0.123 -> 1 of 8)."""
    from fractions import Fraction

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"a holdout fraction must lie between 0 and 1, got {fraction}")
    ratio = Fraction(fraction).limit_denominator(max(HOLDOUT_MAX_PARTS, int(round(1.0 / fraction))))
    return max(ratio.numerator, 1), ratio.denominator


def holdout_mask(
    data: Dataset, rows: np.ndarray, scheme: Scheme, fraction: float, seed: int, max_replicates: int = 18
) -> np.ndarray:
    """A held-out subset of ``rows`` (indices into ``data``) to judge epochs on, split like
    the CV: multilabel-stratified rows (old), or whole drugs (drug). Returns a boolean mask
    over ``rows``: ``taken`` parts of an ``n_parts``-way split (:func:`holdout_parts`), so
    ``fraction`` of them (0.15: 3 of 20 parts; as the CV's folds, the parts are equal up to
    the stratification, and whole drugs under the drug-aware CV)."""
    rows = np.asarray(rows)
    taken, n_parts = holdout_parts(fraction)
    if len(rows) < n_parts:
        raise ValueError(f"cannot carve a holdout of {fraction:.0%} ({taken} of {n_parts} parts) from "
                         f"{len(rows)} training rows")
    part = assign_folds(data.subset(rows), scheme, n_parts, seed, max_replicates)
    return part < taken
