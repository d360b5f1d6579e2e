"""The DeepInsight feature map: where each feature sits in the image.

The features (not the samples) are embedded in 2-D with t-SNE (cosine metric, perplexity 5,
1000 iterations in the full profile), the convex hull of the 2-D points is taken, and the
points are rotated into the frame of the hull's minimum-area bounding rectangle (an
optimal rectangle has one side along a hull edge, so only the hull-edge angles are tried),
longer side horizontal. ``pixels(resolution)`` then scales each axis to ``[0, res - 1]``
and rounds; several features may share a pixel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate 2-D points by ``-angle`` (so a direction at ``angle`` becomes the x axis)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.column_stack([points[:, 0] * c + points[:, 1] * s, -points[:, 0] * s + points[:, 1] * c])


def bbox_area(points: np.ndarray, angle: float) -> float:
    """Area of the axis-aligned bounding box of ``points`` after rotating by ``-angle``."""
    r = _rotate(np.asarray(points, dtype=np.float64), angle)
    span = r.max(axis=0) - r.min(axis=0)
    return float(span[0] * span[1])


def min_area_rect_angle(points: np.ndarray) -> tuple[float, np.ndarray]:
    """Angle of the minimum-area bounding rectangle of 2-D ``points`` and the hull indices.

    Tries the direction of every convex-hull edge (the rotating-calipers fact: an optimal
    rectangle has a side collinear with a hull edge) and returns the best angle. Degenerate
    inputs (fewer than 3 points, all collinear) fall back to the principal axis.
    """
    from scipy.spatial import ConvexHull, QhullError

    pts = np.asarray(points, dtype=np.float64)
    try:
        hull = ConvexHull(pts)
        idx = hull.vertices  # counter-clockwise order for 2-D
    except (QhullError, ValueError):
        centred = pts - pts.mean(axis=0)
        if len(pts) < 2 or not np.any(centred):
            return 0.0, np.arange(len(pts))
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return float(np.arctan2(vt[0, 1], vt[0, 0])), np.arange(len(pts))
    v = pts[idx]
    edges = np.roll(v, -1, axis=0) - v
    angles = np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2)  # a rectangle repeats every 90 degrees
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    xr = v[None, :, 0] * c + v[None, :, 1] * s
    yr = -v[None, :, 0] * s + v[None, :, 1] * c
    areas = (xr.max(axis=1) - xr.min(axis=1)) * (yr.max(axis=1) - yr.min(axis=1))
    return float(angles[int(np.argmin(areas))]), idx


class FeatureMap:
    """t-SNE feature positions, rotated into their minimum bounding rectangle.

    Parameters
    ----------
    perplexity, n_iter, metric, random_state : t-SNE settings (scikit-learn ``TSNE``).
    method : ``"exact"`` (default: the features are few, ~872, and the exact gradient is
        faster than Barnes-Hut at that size) or ``"barnes_hut"``.
    max_samples : if set, the t-SNE sees at most this many training rows (a seeded random
        subset) as the dimensions of each feature point.

    Fitted attributes: ``embedding_`` (raw t-SNE output), ``angle_`` (rectangle angle, rad),
    ``coords_`` (n_features, 2) positions in the rectangle frame (longer side along x),
    ``hull_`` (indices of the hull vertices), ``n_features_in_``.
    """

    def __init__(self, perplexity: float = 5.0, n_iter: int = 1000, metric: str = "cosine",
                 random_state: int = 0, method: str = "exact", max_samples: int | None = None,
                 n_jobs: int | None = None):
        self.perplexity = perplexity
        self.n_iter = n_iter
        self.metric = metric
        self.random_state = random_state
        self.method = method
        self.max_samples = max_samples
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ fitting
    def fit(self, X) -> "FeatureMap":
        """Fit on a scaled (n_samples, n_features) matrix: t-SNE of its columns."""
        from sklearn.manifold import TSNE

        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"FeatureMap.fit needs a 2-D matrix, got shape {X.shape}")
        n_samples, n_features = X.shape
        if n_features < 4:
            raise ValueError("FeatureMap needs at least 4 features")
        if self.max_samples is not None and n_samples > self.max_samples:
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(n_samples, size=int(self.max_samples), replace=False))
            X = X[rows]
        points = np.ascontiguousarray(X.T)  # features are the points, samples the dimensions
        if self.metric == "cosine":
            # cosine distance is undefined for an all-zero column: nudge such columns
            zero = ~np.any(points, axis=1)
            if zero.any():
                points[zero] = np.float32(1e-6)
        perplexity = min(float(self.perplexity), (n_features - 1) / 3.0)
        tsne = TSNE(n_components=2, perplexity=perplexity, max_iter=int(self.n_iter), metric=self.metric,
                    init="pca", learning_rate="auto", method=self.method, random_state=self.random_state,
                    n_jobs=self.n_jobs)
        embedding = tsne.fit_transform(points)
        return self.fit_embedding(embedding)

    def fit_embedding(self, embedding) -> "FeatureMap":
        """Skip the t-SNE: take given 2-D feature positions and do the hull/rectangle step."""
        emb = np.asarray(embedding, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[1] != 2:
            raise ValueError(f"embedding must be (n_features, 2), got {emb.shape}")
        angle, hull = min_area_rect_angle(emb)
        coords = _rotate(emb, angle)
        span = coords.max(axis=0) - coords.min(axis=0)
        if span[1] > span[0]:  # make the longer side horizontal
            angle += np.pi / 2
            coords = _rotate(emb, angle)
        self.embedding_ = emb
        self.angle_ = float(angle)
        self.hull_ = np.asarray(hull, dtype=np.int64)
        self.coords_ = coords
        self.n_features_in_ = emb.shape[0]
        return self

    @classmethod
    def from_embedding(cls, embedding, **params) -> "FeatureMap":
        return cls(**params).fit_embedding(embedding)

    # ------------------------------------------------------------------ pixels
    def pixels(self, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """Integer (rows, cols) of every feature in a ``resolution`` x ``resolution`` image.

        x (the long side) maps to columns, y to rows with larger y at the top (row 0).
        """
        self._check()
        res = int(resolution)
        if res < 1:
            raise ValueError("resolution must be >= 1")
        lo = self.coords_.min(axis=0)
        span = self.coords_.max(axis=0) - lo
        safe = np.where(span > 0, span, 1.0)
        unit = (self.coords_ - lo) / safe  # in [0, 1]
        cols = np.rint(unit[:, 0] * (res - 1)).astype(np.int64)
        rows = np.rint((1.0 - unit[:, 1]) * (res - 1)).astype(np.int64)
        np.clip(cols, 0, res - 1, out=cols)
        np.clip(rows, 0, res - 1, out=rows)
        return rows, cols

    def collision_rate(self, resolution: int) -> float:
        """Fraction of features that share their pixel with an earlier feature."""
        rows, cols = self.pixels(resolution)
        return 1.0 - len(np.unique(rows * int(resolution) + cols)) / len(rows)

    # ------------------------------------------------------------------ storage
    def _params(self) -> dict:
        return {"perplexity": self.perplexity, "n_iter": self.n_iter, "metric": self.metric,
                "random_state": self.random_state, "method": self.method, "max_samples": self.max_samples,
                "n_jobs": self.n_jobs}

    def save(self, path) -> Path:
        """Write the fitted map to an ``.npz`` file (plain arrays + JSON parameters, no pickle)."""
        self._check()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:  # an open handle keeps numpy from appending ".npz"
            np.savez(fh, embedding=self.embedding_, coords=self.coords_, angle=np.float64(self.angle_),
                     hull=self.hull_, params=np.array(json.dumps(self._params())))
        return path

    @classmethod
    def load(cls, path) -> "FeatureMap":
        with np.load(Path(path), allow_pickle=False) as z:
            self = cls(**json.loads(str(z["params"])))
            self.embedding_ = z["embedding"].astype(np.float64)
            self.coords_ = z["coords"].astype(np.float64)
            self.angle_ = float(z["angle"])
            self.hull_ = z["hull"].astype(np.int64)
        self.n_features_in_ = self.coords_.shape[0]
        return self

    # ------------------------------------------------------------------ plot
    def plot(self, path_png, groups: Sequence[str] | None = None, title: str | None = None,
             resolution: int | None = None) -> Path:
        """Scatter of the feature positions (rectangle frame), coloured by ``groups``
        (e.g. from :func:`feature_groups`), with the bounding rectangle and hull; PNG."""
        from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone
        from matplotlib.patches import Rectangle

        self._check()
        c = self.coords_
        labels = np.asarray(groups if groups is not None else ["feature"] * len(c), dtype=object)
        if len(labels) != len(c):
            raise ValueError(f"{len(labels)} group labels for {len(c)} features")
        fig = Figure(figsize=(8, 8 * max(0.35, np.ptp(c[:, 1]) / max(np.ptp(c[:, 0]), 1e-12))))
        ax = fig.add_subplot(1, 1, 1)
        for name in dict.fromkeys(labels.tolist()):  # first-seen order
            sel = labels == name
            ax.scatter(c[sel, 0], c[sel, 1], s=6, label=f"{name} ({int(sel.sum())})")
        hull = c[np.append(self.hull_, self.hull_[0])]
        ax.plot(hull[:, 0], hull[:, 1], lw=0.6, color="grey")
        lo, hi = c.min(axis=0), c.max(axis=0)
        ax.add_patch(Rectangle(lo, hi[0] - lo[0], hi[1] - lo[1], fill=False, lw=1.2, color="black"))
        ax.set_aspect("equal")
        text = title or "DeepInsight feature map"
        if resolution:
            text += f" ({resolution}x{resolution}, {self.collision_rate(resolution):.1%} shared pixels)"
        ax.set_title(text)
        ax.legend(loc="best", fontsize=8, markerscale=2)
        path = Path(path_png)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        return path

    def _check(self) -> None:
        if not hasattr(self, "coords_"):
            raise RuntimeError("FeatureMap is not fitted")


def feature_groups(names: Sequence[str]) -> list[str]:
    """Group label per column name: ``g-*`` -> gene, ``c-*`` -> cell, anything else -> cp."""
    return ["gene" if n.startswith("g-") else "cell" if n.startswith("c-") else "cp" for n in names]
