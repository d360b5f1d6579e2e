"""Per-target probability calibration of a blend: an option, never a default.

``platt``: scikit-learn's ``LogisticRegression`` on the logit of the predicted probability
(one feature, default L2 strength C=1); ``isotonic``: scikit-learn's ``IsotonicRegression``
(increasing, clipped out of bounds), its outputs kept inside [ISOTONIC_FLOOR, 1 -
ISOTONIC_FLOOR] because its steps reach exactly 0 and 1, which the log loss punishes with
-log(1e-15) per miss. Each target's calibrator is fitted on the treated rows it is given;
a target without both a positive and a negative among them keeps its predictions
(identity). Control rows stay 0.

A calibrator is data, not a pickle: ``{"method": "platt", "a": .., "b": ..}`` (p' =
sigmoid(a * logit(p) + b)) or ``{"method": "isotonic", "x": [...], "y": [...]}`` (p' = the
piecewise-linear interpolation through the fitted thresholds, as IsotonicRegression
predicts), so a blend folder stores them as JSON.

Honesty: :func:`cross_fit` calibrates each part of the rows with calibrators fitted on the
OTHER parts only; :func:`moakit.blend.nested_evaluation` does the same inside its nested
scheme, which decides whether a blend keeps its calibration.
"""

from __future__ import annotations

import numpy as np

from moakit import choices

METHODS = choices.CALIBRATION_METHODS
ISOTONIC_FLOOR = 1e-4
_LOGIT_CLIP = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown calibration {method!r} (use one of {', '.join(METHODS)})")
    return method


def fit_target(p: np.ndarray, y: np.ndarray, method: str) -> dict | None:
    """One target's calibrator fitted on predictions ``p`` and labels ``y``; None (identity)
    unless ``y`` has both classes."""
    y = np.asarray(y, np.float64)
    if y.min() == y.max():
        return None
    if check_method(method) == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1.0).fit(_logit(p)[:, None], y.astype(int))
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(np.asarray(p, np.float64), y)
    return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}


def apply_target(cal: dict | None, p: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of one target (``cal`` None: unchanged)."""
    p = np.asarray(p, np.float64)
    if cal is None:
        return p
    if cal["method"] == "platt":
        z = cal["a"] * _logit(p) + cal["b"]
        return 1.0 / (1.0 + np.exp(-z))
    out = np.interp(p, np.asarray(cal["x"], np.float64), np.asarray(cal["y"], np.float64))
    return np.clip(out, ISOTONIC_FLOOR, 1.0 - ISOTONIC_FLOOR)


def fit(pred: np.ndarray, y: np.ndarray, rows: np.ndarray, method: str) -> list[dict | None]:
    """Per target (columns) a calibrator fitted on ``rows`` (a boolean mask: treated rows)."""
    rows = np.asarray(rows, bool)
    return [fit_target(pred[rows, j], y[rows, j], method) for j in range(pred.shape[1])]


def apply(cals: list[dict | None], pred: np.ndarray, is_control: np.ndarray | None = None) -> np.ndarray:
    """Every target calibrated; control rows (when given) 0."""
    out = np.column_stack([apply_target(c, pred[:, j]) for j, c in enumerate(cals)]) if len(cals) else pred.copy()
    if is_control is not None:
        out[np.asarray(is_control, bool)] = 0.0
    return out.astype(np.float32)


def cross_fit(pred: np.ndarray, y: np.ndarray, is_control: np.ndarray, parts: np.ndarray, method: str) -> np.ndarray:
    """Each part's rows calibrated by calibrators fitted on the treated rows of the other
    parts only: no row is ever calibrated by a calibrator that saw it."""
    ctl = np.asarray(is_control, bool)
    out = np.zeros(pred.shape, np.float32)
    for k in np.unique(parts):
        held = parts == k
        out[held] = apply(fit(pred, y, ~held & ~ctl, method), pred[held], ctl[held])
    return out
