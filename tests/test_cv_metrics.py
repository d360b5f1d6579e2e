"""Fold assignment (both schemes) and the competition metric."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from moakit import metrics
from moakit.cv import drug_aware_folds, multilabel_folds


def _labels(n_drugs=120, reps=6, n_targets=12, seed=0):
    rng = np.random.default_rng(seed)
    drug_targets = (rng.random((n_drugs, n_targets)) < 0.08).astype(np.float32)
    counts = np.full(n_drugs, reps)
    counts[:3] = [40, 25, 19]  # a few very frequent drugs
    drug_id = np.repeat([f"d{i:03d}" for i in range(n_drugs)], counts)
    targets = np.repeat(drug_targets, counts, axis=0)
    return targets, drug_id


def test_old_cv_is_seeded_balanced_and_stratified():
    targets, _ = _labels()
    a = multilabel_folds(targets, 5, seed=1)
    b = multilabel_folds(targets, 5, seed=1)
    c = multilabel_folds(targets, 5, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    sizes = np.bincount(a)
    assert sizes.max() - sizes.min() <= 2
    # every target with >= 5 positives has a positive in every fold
    for j in np.flatnonzero(targets.sum(0) >= 5):
        assert len(np.unique(a[targets[:, j] == 1])) == 5


def test_drug_cv_never_splits_a_drug_with_few_replicates():
    targets, drug_id = _labels()
    folds = drug_aware_folds(targets, drug_id, n_folds=5, seed=0, max_replicates=18)
    assert set(np.unique(folds)) == set(range(5))
    for drug in np.unique(drug_id):
        rows = drug_id == drug
        if rows.sum() <= 18:
            assert len(np.unique(folds[rows])) == 1, drug
    # the very frequent drugs are spread over folds
    assert len(np.unique(folds[drug_id == "d000"])) == 5
    assert len(np.unique(folds[drug_id == "d001"])) == 5


def test_drug_cv_threshold_is_configurable():
    targets, drug_id = _labels()
    folds = drug_aware_folds(targets, drug_id, n_folds=5, seed=0, max_replicates=50)
    assert len(np.unique(folds[drug_id == "d000"])) == 1


def test_metric_matches_sklearn_column_by_column():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 7)) < 0.1).astype(float)
    y[:, 0] = 0  # a column with no positive
    p = rng.random((200, 7))
    p[0, 1] = 0.0  # clipped, not infinite
    p[1, 2] = 1.0
    expected = [log_loss(y[:, j], np.clip(p[:, j], 1e-15, 1 - 1e-15), labels=[0, 1]) for j in range(7)]
    np.testing.assert_allclose(metrics.per_target_log_loss(y, p), expected, rtol=1e-10)
    assert metrics.mean_log_loss(y, p) == pytest.approx(np.mean(expected), rel=1e-10)


def test_score_zeroes_controls_and_reports_treated_rows():
    y = np.array([[1, 0], [0, 0], [0, 1], [0, 0]], float)
    p = np.full_like(y, 0.3)
    control = np.array([False, True, False, True])
    result = metrics.score(y, p, control)
    manual = p.copy()
    manual[control] = 0
    assert result["log_loss"] == pytest.approx(metrics.mean_log_loss(y, manual))
    assert result["log_loss_treated"] == pytest.approx(metrics.mean_log_loss(y[~control], p[~control]))


def test_prior_uses_treated_rows_only():
    y = np.array([[1.0], [0.0], [0.0], [0.0]])
    control = np.array([False, False, True, True])
    assert metrics.prior_predictions(y, control, 3)[:, 0].tolist() == [0.5, 0.5, 0.5]


def test_sigmoid_is_stable_float32_and_matches_torch():
    import warnings

    import torch

    z = np.array([[-1000.0, -50.0, -1.5, 0.0, 2.0, 40.0, 1000.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning for very negative logits
        p = metrics.sigmoid(z)
    assert p.dtype == np.float32 and p.shape == z.shape
    np.testing.assert_allclose(p, torch.sigmoid(torch.from_numpy(z).double()).numpy(), rtol=1e-6, atol=1e-30)
    assert p[0, 0] == 0.0 and p[0, -1] == 1.0 and p[0, 3] == 0.5


def test_drug_cv_treated_folds_ignore_the_control_rows():
    """As the winners' new-CV scripts, which drop the controls before splitting: the control
    rows change no treated row's fold and get an even seeded split of their own."""
    targets, drug_id = _labels()
    treated_only = drug_aware_folds(targets, drug_id, n_folds=5, seed=34)
    n_ctl = 37
    with_ctl = drug_aware_folds(np.vstack([np.zeros((n_ctl, targets.shape[1]), targets.dtype), targets]),
                                np.concatenate([np.full(n_ctl, "ctl_drug"), drug_id]), n_folds=5, seed=34,
                                is_control=np.arange(n_ctl + len(targets)) < n_ctl)
    np.testing.assert_array_equal(with_ctl[n_ctl:], treated_only)
    assert sorted(np.bincount(with_ctl[:n_ctl], minlength=5)) == [7, 7, 7, 8, 8]
