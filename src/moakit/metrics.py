"""The competition metric (mean column-wise binary log loss over the scored targets) and
the sigmoid: the one place moakit computes either from probabilities or logits."""

from __future__ import annotations

import numpy as np

from moakit.data.schema import EPS


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits: computed in float64, returned as float32."""
    with np.errstate(over="ignore"):  # exp(-z) overflows to inf for z < -709: p = 0, as it should
        return (1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))).astype(np.float32)


def per_target_log_loss(y_true: np.ndarray, y_pred: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Binary log loss of each column, predictions clipped to [eps, 1 - eps]."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.clip(np.asarray(y_pred, dtype=np.float64), eps, 1.0 - eps)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"targets have shape {y_true.shape} but predictions {y_pred.shape}")
    if y_true.ndim != 2 or y_true.shape[0] == 0:
        raise ValueError(f"expected a non-empty (rows, targets) matrix, got shape {y_true.shape}")
    losses = y_true * np.log(y_pred) + (1.0 - y_true) * np.log1p(-y_pred)
    return -losses.mean(axis=0)


def mean_log_loss(y_true: np.ndarray, y_pred: np.ndarray, eps: float = EPS) -> float:
    """The competition metric: the mean over targets of each target's log loss."""
    return float(per_target_log_loss(y_true, y_pred, eps).mean())


def zero_controls(y_pred: np.ndarray, is_control: np.ndarray) -> np.ndarray:
    """Predictions with control (ctl_vehicle) rows set to 0, as their targets always are."""
    out = np.array(y_pred, dtype=np.float32, copy=True)
    out[np.asarray(is_control, dtype=bool)] = 0.0
    return out


def score(y_true: np.ndarray, y_pred: np.ndarray, is_control: np.ndarray) -> dict[str, float]:
    """Log loss on all rows (controls predicted 0) and on treated rows only."""
    is_control = np.asarray(is_control, dtype=bool)
    pred = zero_controls(y_pred, is_control)
    treated = ~is_control
    return {
        "log_loss": mean_log_loss(y_true, pred),
        "log_loss_treated": mean_log_loss(y_true[treated], pred[treated]) if treated.any() else float("nan"),
    }


def prior_predictions(y_train: np.ndarray, is_control_train: np.ndarray, n_rows: int) -> np.ndarray:
    """Each target's mean over the treated training rows, for every row: the baseline to beat."""
    treated = ~np.asarray(is_control_train, dtype=bool)
    mean = np.asarray(y_train, dtype=np.float64)[treated].mean(axis=0)
    return np.repeat(mean[None, :].astype(np.float32), n_rows, axis=0)


def oof_prior_predictions(y_train: np.ndarray, is_control_train: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """The per-target prior judged like the models it judges: each fold's rows predicted with
    the target means of the OTHER folds' treated rows (a model's own folds), so the prior
    never sees the rows it is scored on. A target whose positives all sit in fold k is
    predicted 0 on fold k, which the metric clips to ``EPS`` as it clips any prediction.
    Control rows are predicted 0."""
    y = np.asarray(y_train, dtype=np.float64)
    folds = np.asarray(folds)
    treated = ~np.asarray(is_control_train, dtype=bool)
    if folds.shape != (len(y),):
        raise ValueError(f"folds have shape {folds.shape}, expected ({len(y)},)")
    out = np.zeros(y.shape, dtype=np.float32)
    for k in np.unique(folds):
        rows, others = folds == k, (folds != k) & treated
        if others.any():
            out[rows] = y[others].mean(axis=0).astype(np.float32)
    return zero_controls(out, ~treated)


def prior_scores(y_train: np.ndarray, is_control_train: np.ndarray, folds: np.ndarray | None) -> dict:
    """``{"in_sample": scores, "oof": scores or None}`` of the per-target prior on the
    training rows (:func:`score`'s keys): in sample (the training means, which have seen
    every row: the prior the test predictions are compared with) and out of fold on
    ``folds`` (the prior the OOF predictions are compared with)."""
    y, ctl = np.asarray(y_train), np.asarray(is_control_train, dtype=bool)
    in_sample = score(y, prior_predictions(y, ctl, len(y)), ctl)
    oof = None if folds is None else score(y, oof_prior_predictions(y, ctl, folds), ctl)
    return {"in_sample": in_sample, "oof": oof}
