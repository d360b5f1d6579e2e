"""How far an attribution can be trusted: its stability across folds and seeds, and the
deletion curve (top-k columns set to the baseline against k random ones)."""

from __future__ import annotations

import numpy as np

from moakit.data.dataset import Dataset
from moakit.explain.loaded import LoadedRun, edit_losses

DELETION_KS = (1, 2, 5, 10, 20, 50, 100, 200)


# ----------------------------------------------------------------------------- stability, deletion


def stability(member_scores: np.ndarray, members: list[tuple[int, int, int]], top: int = 20) -> dict:
    """Rank agreement of the members' attributions: mean pairwise Spearman correlation (over
    all columns) and overlap of the top-``top`` columns, across the folds of a seed and
    across seed means (None where there is only one)."""
    from itertools import combinations

    from scipy.stats import spearmanr

    def agree(vectors: list[np.ndarray]) -> dict | None:
        if len(vectors) < 2:
            return None
        rho, overlap = [], []
        for a, b in combinations(vectors, 2):
            rho.append(float(spearmanr(a, b).statistic))
            overlap.append(len(set(np.argsort(-a)[:top]) & set(np.argsort(-b)[:top])) / top)
        return {"spearman": float(np.nanmean(rho)), f"top{top}_overlap": float(np.mean(overlap)), "n": len(vectors)}

    by_seed: dict[tuple[int, int], list[np.ndarray]] = {}
    for (m, seed, _), v in zip(members, member_scores):
        by_seed.setdefault((m, seed), []).append(v)
    folds = [agree(v) for v in by_seed.values()]
    folds = [f for f in folds if f is not None]
    return {"folds": ({"spearman": float(np.mean([f["spearman"] for f in folds])),
                       f"top{top}_overlap": float(np.mean([f[f"top{top}_overlap"] for f in folds])),
                       "n": folds[0]["n"]} if folds else None),
            "seeds": agree([np.mean(v, axis=0) for v in by_seed.values()])}


def deletion_curve(run: LoadedRun, ds: Dataset, y: np.ndarray | None, t: int, order: np.ndarray,
                   baseline_values: list, n_random: int = 3, seed: int = 0) -> dict:
    """The target's loss on ``ds`` (log loss against ``y``; without labels, minus the mean
    probability) as the first k columns of ``order`` are set to their baseline, against k
    random columns (mean of ``n_random`` orders), for k in :data:`DELETION_KS`."""
    n_cols = len(order)
    ks = [k for k in DELETION_KS if k <= n_cols]
    rng = np.random.default_rng(seed)
    orders = [np.asarray(order)] + [rng.permutation(n_cols) for _ in range(n_random)]
    n = len(ds)
    edits = [{}] + [{int(j): np.full(n, baseline_values[j]) for j in o[:k]} for o in orders for k in ks]
    losses = edit_losses(run, ds, y, t, edits)[:, -1]
    grid = losses[1:].reshape(len(orders), len(ks))
    return {"metric": "log_loss" if y is not None else "minus_mean_probability", "k": [0, *ks],
            "top": [float(losses[0]), *map(float, grid[0])],
            "random": [float(losses[0]), *map(float, grid[1:].mean(axis=0))]}
