"""UMAP's embedding of new rows, each row on its own: a row's result depends on that row and
the fitted ``umap.UMAP`` only, never on the other rows it is transformed with.

umap-learn's ``UMAP.transform`` (0.5) is not row-independent: it scales the graph of a call
by the largest edge weight among all of the call's rows (edges under ``max / n_epochs`` are
dropped, the edges' sampling rates are normalised by that maximum), floors each row's
kernel width by the mean neighbour distance of the whole call, chooses its epochs from the
call's row count (100 up to 10,000 rows, else 30, when ``n_epochs`` is unset), and, for a
UMAP fitted on 4,096 rows or more, finds neighbours with pynndescent's search, which fills
its candidates from a random stream running across the query rows. A new compound's
features -- and every prediction made from them -- then depend on which other rows share
its call.

:func:`transform_rows` computes what umap-learn computes for one row given alone, for every
row of ``X``, with umap-learn's own building blocks:

* the exact ``n_neighbors`` nearest fit rows (ties broken by row number), with the model's
  own distance function: candidates from scikit-learn's brute-force search, their distances
  recomputed exactly, and a full scan for a row whose candidate list cannot be shown to hold
  its true neighbours (:func:`nearest_fit_rows`);
* ``smooth_knn_dist`` and ``compute_membership_strengths`` for the edge weights, each row's
  kernel width computed on that row alone;
* ``init_graph_transform`` for the start (the weighted mean of the neighbours' embedding,
  or the embedding of a fit row at distance 0);
* ``optimize_layout_euclidean`` (the fit embedding held still) for the refinement, with each
  row's edges scaled by that row's largest weight and a fixed epoch count
  (:func:`transform_epochs`). The negative samples of a row come from a random state seeded
  by ``transform_seed`` and the row's own start, so rows do not share a random stream.

So ``transform_rows(model, X)[i]`` equals ``transform_rows(model, X[i:i+1])[i]`` bit for
bit, in any block or chunk. The neighbour search costs a brute-force pass over the fit rows
(a matrix product per piece of :data:`PIECE_ROWS` rows; memory bounded by the piece).
"""

from __future__ import annotations

import numpy as np

# rows handled at once (the neighbour search's memory grows with it, the results do not)
PIECE_ROWS = 1024
# candidates searched beyond n_neighbors before the exact distances decide
_MARGIN = 10
# a candidate list holds a row's true neighbours when the furthest candidate's searched
# squared distance, less these bounds of the search's and the exact distance's rounding,
# exceeds the k-th exact squared distance (float64 matrix products: error about 1e-13 of
# the squared norms; float32 distances: about 1e-7 relative)
_REL_TOL = 1e-5
_NORM_TOL = 1e-10
_EPOCHS_UNSET = 100  # umap-learn's transform epochs for up to 10,000 rows when n_epochs is unset


def transform_epochs(model) -> int:
    """The refinement epochs of every row: ``n_epochs // 3`` of a model fitted with
    ``n_epochs`` (as umap-learn's transform; at least 1), else 100 (umap-learn's choice for a
    call of up to 10,000 rows), whatever the number of rows."""
    n_epochs = getattr(model, "n_epochs", None)
    if n_epochs is None:
        return _EPOCHS_UNSET
    return max(1, int(n_epochs // 3))


def _check_model(model) -> None:
    import scipy.sparse

    if getattr(model, "densmap", False):
        raise NotImplementedError("umap transform of rows: densMAP models cannot embed new rows")
    if getattr(model, "output_metric", "euclidean") != "euclidean":
        raise NotImplementedError(f"umap transform of rows: output_metric {model.output_metric!r} "
                                  "(only 'euclidean' is supported)")
    if scipy.sparse.issparse(model._raw_data) or model.metric == "precomputed":
        raise NotImplementedError("umap transform of rows: needs the dense fit rows of the model")
    if model._raw_data.shape[0] < 2:
        raise ValueError("umap transform of rows: the model was fitted on fewer than 2 rows")


def transform_rows(model, X) -> np.ndarray:
    """(n, n_components) float32: each row of ``X`` embedded into the fitted ``model``'s
    space on its own (see the module docstring); ``X`` as the model's fit columns."""
    from sklearn.utils import check_array

    _check_model(model)
    X = check_array(X, dtype=np.float32, order="C", ensure_min_samples=0)
    out = np.empty((X.shape[0], model.embedding_.shape[1]), np.float32)
    if X.shape[0] == 0:
        return out
    search = _NeighbourSearch(model)
    for start in range(0, X.shape[0], PIECE_ROWS):
        piece = X[start:start + PIECE_ROWS]
        indices, dists = search.nearest(piece)
        out[start:start + len(piece)] = _embed(model, indices, dists)
    return out


def nearest_fit_rows(model, X) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64, distances float32), each (n, n_neighbors): the exact nearest fit rows
    of every row of ``X`` by the model's distance, nearest first, ties by row number."""
    from sklearn.utils import check_array

    _check_model(model)
    X = check_array(X, dtype=np.float32, order="C", ensure_min_samples=0)
    search = _NeighbourSearch(model)
    parts = [search.nearest(X[s:s + PIECE_ROWS]) for s in range(0, X.shape[0], PIECE_ROWS)]
    if not parts:
        k = search.k
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class _NeighbourSearch:
    """Exact nearest fit rows of a model, row by row (see :func:`nearest_fit_rows`)."""

    def __init__(self, model) -> None:
        self.fit_rows = np.ascontiguousarray(model._raw_data, dtype=np.float32)
        self.dist = model._input_distance_func
        n_fit = self.fit_rows.shape[0]
        self.k = min(int(model._n_neighbors), n_fit)
        self.n_candidates = min(n_fit, self.k + max(_MARGIN, self.k // 2))
        self.searched = None
        # the candidate search is proven for the euclidean distance; other metrics scan all rows
        if model.metric == "euclidean" and self.n_candidates < n_fit:
            from sklearn.neighbors import NearestNeighbors

            self.searched = NearestNeighbors(n_neighbors=self.n_candidates, algorithm="brute",
                                             metric="euclidean").fit(self.fit_rows)
            self.max_norm2 = float(np.max(np.einsum("ij,ij->i", self.fit_rows, self.fit_rows, dtype=np.float64)))

    def nearest(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.searched is None:
            return self._scan(X)
        found, candidates = self.searched.kneighbors(X)
        exact = _pair_distances()(X, self.fit_rows, candidates.astype(np.int64), self.dist)
        order = np.lexsort((candidates, exact), axis=-1)[:, :self.k]
        indices = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        dists = np.take_along_axis(exact, order, axis=1)
        # rows whose furthest candidate is not clearly beyond the k-th neighbour: scan them
        kth2 = dists[:, -1].astype(np.float64) ** 2
        far2 = found[:, -1].astype(np.float64) ** 2
        norm2 = np.einsum("ij,ij->i", X, X, dtype=np.float64) + self.max_norm2
        unsure = np.flatnonzero(far2 * (1.0 - _REL_TOL) - _NORM_TOL * norm2 <= kth2)
        if len(unsure):
            indices[unsure], dists[unsure] = self._scan(X[unsure])
        return indices, dists

    def _scan(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances to every fit row, a few rows at a time (bounded memory)."""
        n_fit = self.fit_rows.shape[0]
        step = max(1, (1 << 22) // n_fit)
        every = np.broadcast_to(np.arange(n_fit, dtype=np.int64), (min(step, len(X)), n_fit))
        indices = np.empty((len(X), self.k), np.int64)
        dists = np.empty((len(X), self.k), np.float32)
        for s in range(0, len(X), step):
            rows = X[s:s + step]
            d = _pair_distances()(rows, self.fit_rows, np.ascontiguousarray(every[:len(rows)]), self.dist)
            order = np.argsort(d, axis=1, kind="stable")[:, :self.k]  # ties: the lower row number
            indices[s:s + len(rows)] = order
            dists[s:s + len(rows)] = np.take_along_axis(d, order, axis=1)
        return indices, dists


_PAIR_DISTANCES = None


def _pair_distances():
    """A numba function ``(X, fit_rows, candidates, dist) -> float32 (n, m)``: the distance
    of each row of X to each of its candidate fit rows, one pair at a time with the model's
    own distance function (so a row's distances never depend on the other rows)."""
    global _PAIR_DISTANCES
    if _PAIR_DISTANCES is None:
        import numba

        @numba.njit(nogil=True)
        def pair_distances(X, fit_rows, candidates, dist):
            out = np.empty(candidates.shape, np.float32)
            for i in range(candidates.shape[0]):
                for j in range(candidates.shape[1]):
                    out[i, j] = dist(X[i], fit_rows[candidates[i, j]])
            return out

        _PAIR_DISTANCES = pair_distances
    return _PAIR_DISTANCES


def _kernel_widths(model, dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """umap's smooth_knn_dist as on each row alone. Given several rows, it floors the width
    of a row without a positive ``rho`` at 1e-3 of the mean distance over all of them (alone:
    over the row's own); every other step is the row's own. So one call on all rows gives
    each row's own result except where a floor may bind: those rows are computed alone."""
    from umap.umap_ import MIN_K_DIST_SCALE, smooth_knn_dist

    k = float(model._n_neighbors)
    local = float(max(0.0, model.local_connectivity - 1.0))  # as umap-learn's transform
    sigmas, rhos = smooth_knn_dist(dists, k, local_connectivity=local)
    floor = MIN_K_DIST_SCALE * np.maximum(dists.mean(dtype=np.float64), dists.mean(axis=1, dtype=np.float64))
    for i in np.flatnonzero((rhos <= 0) & (sigmas <= 1.01 * floor)):
        s, r = smooth_knn_dist(dists[i:i + 1], k, local_connectivity=local)
        sigmas[i], rhos[i] = s[0], r[0]
    return sigmas, rhos


def _embed(model, indices: np.ndarray, dists: np.ndarray) -> np.ndarray:
    """The start and the refinement of rows with the given nearest fit rows."""
    import scipy.sparse
    from umap.umap_ import compute_membership_strengths, init_graph_transform

    n, k = indices.shape
    n_fit = model._raw_data.shape[0]
    indices = indices.astype(np.int32)  # as umap-learn's graph
    indices[dists >= model._disconnection_distance] = -1
    sigmas, rhos = _kernel_widths(model, dists)
    _, _, vals, _ = compute_membership_strengths(indices, dists, sigmas, rhos, bipartite=True)
    vals = np.where(indices.ravel() == -1, np.float32(0), vals)
    heads = np.repeat(np.arange(n, dtype=np.int32), k)
    tails = np.where(indices.ravel() == -1, 0, indices.ravel()).astype(np.int32)
    graph = scipy.sparse.coo_matrix((vals, (heads, tails)), shape=(n, n_fit)).tocsr()
    graph.eliminate_zeros()
    start = init_graph_transform(graph, model.embedding_)
    return _refine(model, start, heads, tails, vals, k)


def _refine(model, start: np.ndarray, heads: np.ndarray, tails: np.ndarray, vals: np.ndarray,
            k: int) -> np.ndarray:
    """umap's SGD (the fit embedding held still) with each row's weights scaled by its own
    largest weight and a fixed epoch count (what umap-learn does for one row alone)."""
    from sklearn.utils import check_random_state
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import INT32_MAX, INT32_MIN

    n_epochs = transform_epochs(model)
    row_max = vals.reshape(-1, k).max(axis=1)
    weights = vals.copy()
    weights[weights < (row_max / float(n_epochs))[heads]] = 0.0  # each row's own weak edges
    keep = weights != 0
    heads, tails, weights = heads[keep], tails[keep], weights[keep]
    samples = n_epochs * (weights / row_max[heads])
    epochs_per_sample = -1.0 * np.ones(len(weights), dtype=np.float64)
    epochs_per_sample[samples > 0] = float(n_epochs) / np.float64(samples[samples > 0])
    rng_state = check_random_state(model.transform_seed).randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
    return optimize_layout_euclidean(
        start, model.embedding_.astype(np.float32, copy=True), heads, tails, n_epochs, model._raw_data.shape[0],
        epochs_per_sample, model._a, model._b, rng_state, model.repulsion_strength, model._initial_alpha / 4.0,
        model.negative_sample_rate, False)
