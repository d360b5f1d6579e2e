"""Swap noise for the DeepInsight CNNs.

Each row of a batch, with probability ``p`` (0.1 in the solution), gets a ``fraction``
(0.15) of its features replaced by the same features of another random row of the training
matrix. As in the winners' DeepInsight scripts (final/Best LB/Training/Local/
deepinsight-*-train.py), the swapped features are drawn from the gene and cell columns only
(``columns``), never the cp columns, and their number is the fraction of ALL features. The
public script edited a view of the stored training matrix, so the swapped values were
written back into the training data; here the result is always a new array and neither the
batch nor the pool is ever written to.
"""

from __future__ import annotations

import numpy as np


def swap_noise(X_batch, pool, rng: np.random.Generator, p: float = 0.1, fraction: float = 0.15,
               batch_indices=None, columns=None) -> np.ndarray:
    """Return a swap-noised copy of ``X_batch`` (batch, n_features).

    ``pool``: the (n_pool, n_features) training matrix the donor rows are drawn from.
    Each selected row gets exactly ``max(1, round(fraction * n_features))`` distinct
    features (at most all of ``columns``), chosen uniformly among ``columns`` (the column
    indices that may be swapped; None: all), from one donor row chosen uniformly from ``pool``.
    ``batch_indices``: optional pool row index of each batch row; a donor equal to the row
    itself is redrawn (so the donor is always *another* row when the pool has more than one).
    Vectorised: one random matrix for the chosen rows, no loop over the batch.
    """
    X = np.asarray(X_batch)
    P = np.asarray(pool)
    if X.ndim != 2 or P.ndim != 2 or X.shape[1] != P.shape[1]:
        raise ValueError(f"batch {X.shape} and pool {P.shape} must be 2-D with equal columns")
    if not 0.0 <= p <= 1.0 or not 0.0 <= fraction <= 1.0:
        raise ValueError("p and fraction must lie in [0, 1]")
    out = np.array(X, copy=True)  # never a view of the caller's data
    b, f = X.shape
    if b == 0 or P.shape[0] == 0 or p == 0.0 or fraction == 0.0:
        return out
    rows = np.flatnonzero(rng.random(b) < p)
    if rows.size == 0:
        return out
    eligible = np.arange(f) if columns is None else np.unique(np.asarray(columns, dtype=np.int64))
    if eligible.size and (eligible[0] < 0 or eligible[-1] >= f):
        raise ValueError(f"swap-noise columns must lie in [0, {f}); got {eligible[0]}..{eligible[-1]}")
    if eligible.size == 0:
        return out
    n_pool = P.shape[0]
    donors = rng.integers(0, n_pool, size=rows.size)
    if batch_indices is not None and n_pool > 1:
        own = np.asarray(batch_indices)[rows]
        clash = donors == own
        # redraw among the other n_pool - 1 rows: draw in [0, n_pool - 1) and skip `own`
        if clash.any():
            alt = rng.integers(0, n_pool - 1, size=int(clash.sum()))
            donors[clash] = alt + (alt >= own[clash])
    m = eligible.size
    k = min(m, max(1, int(round(fraction * f))))
    # k distinct random eligible columns per chosen row: the k smallest of uniform keys
    keys = rng.random((rows.size, m))
    picks = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < m else np.broadcast_to(np.arange(m), (rows.size, m))
    cols = eligible[picks]
    out[rows[:, None], cols] = P[donors[:, None], cols]
    return out
