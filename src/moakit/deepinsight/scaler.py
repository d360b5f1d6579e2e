"""The DeepInsight paper's "Norm-2" log scaler.

Per feature j, with ``shift_j = |min_j|`` over the training rows::

    z = log(x + shift_j + 1)

then every value is divided by the single global maximum of ``z`` over the training rows
and clipped to [0, 1]. On training rows ``z >= 0`` holds by construction; on new rows a
value below ``-shift_j`` would give a negative (or undefined) log, so the log argument is
clipped at a tiny positive number first and the result is clipped to [0, 1] afterwards.
"""

from __future__ import annotations

import numpy as np

_TINY = np.float32(1e-7)


class LogNormScaler:
    """sklearn-style scaler: ``fit`` learns ``shift_`` (per feature) and ``max_`` (global)."""

    def fit(self, X, y=None) -> "LogNormScaler":
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"LogNormScaler.fit needs a non-empty 2-D matrix, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("LogNormScaler.fit: the matrix holds NaN or inf")
        self.shift_ = np.abs(X.min(axis=0)).astype(np.float32)
        self.n_features_in_ = X.shape[1]
        z = np.log(X + (self.shift_ + np.float32(1.0)))
        top = float(z.max())
        # all-constant zero data would give max 0: fall back to 1 to avoid dividing by zero
        self.max_ = np.float32(top if top > 0 else 1.0)
        return self

    def transform(self, X) -> np.ndarray:
        if not hasattr(self, "max_"):
            raise RuntimeError("LogNormScaler is not fitted")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected (n, {self.n_features_in_}) input, got shape {X.shape}")
        arg = X + (self.shift_ + np.float32(1.0))
        np.maximum(arg, _TINY, out=arg)
        np.log(arg, out=arg)
        arg /= self.max_
        np.clip(arg, 0.0, 1.0, out=arg)
        return arg.astype(np.float32, copy=False)

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    # plain arrays, so a fitted scaler can be stored without pickle
    def state_dict(self) -> dict:
        return {"shift_": self.shift_.copy(), "max_": np.float32(self.max_)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "LogNormScaler":
        self = cls()
        self.shift_ = np.asarray(state["shift_"], dtype=np.float32)
        self.max_ = np.float32(state["max_"])
        self.n_features_in_ = self.shift_.shape[0]
        return self
