"""Rendering feature rows into DeepInsight images.

Every feature has a fixed pixel (from :class:`~moakit.deepinsight.featuremap.FeatureMap`).
An image has 3 channels: 0 = mean, 1 = min, 2 = max of the features that share a pixel;
pixels with no feature are 0. If the map's ``resolution`` differs from the CNN's
``image_size`` the image is resized with bicubic interpolation (align_corners=False).

The batch renderer is vectorised over the whole batch: the features are grouped by pixel
once; the per-pixel mean/min/max of all rows are computed layer by layer (layer k = the k-th
feature of every pixel holding more than k features; a realistic map has 2-4 layers), and
the three (batch, n_pixels) results are scattered into the zeroed output with one
fancy-index write.
Since the set of occupied pixels is fixed, a caller that reuses an output buffer (``out=``)
skips the zeroing and only the occupied pixels are written.
"""

from __future__ import annotations

import numpy as np

try:  # torch is a dependency of the CNN part; the numpy renderer works without it
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None


class Renderer:
    """Batch renderer for a fixed feature -> pixel map.

    Parameters
    ----------
    pixel_rows, pixel_cols : (n_features,) int arrays from ``FeatureMap.pixels(resolution)``.
    resolution : side of the feature map grid.
    image_size : side of the returned images (default ``resolution``: no resize).
    """

    def __init__(self, pixel_rows, pixel_cols, resolution: int, image_size: int | None = None):
        rows = np.asarray(pixel_rows, dtype=np.int64).ravel()
        cols = np.asarray(pixel_cols, dtype=np.int64).ravel()
        if rows.shape != cols.shape or rows.size == 0:
            raise ValueError("pixel_rows and pixel_cols must be equal-length, non-empty")
        res = int(resolution)
        if rows.min() < 0 or cols.min() < 0 or rows.max() >= res or cols.max() >= res:
            raise ValueError(f"pixel coordinates outside a {res}x{res} grid")
        self.resolution = res
        self.image_size = int(image_size) if image_size is not None else res
        self.n_features = rows.size
        self.pixel_rows, self.pixel_cols = rows, cols
        flat = rows * res + cols
        self.order = np.argsort(flat, kind="stable")           # features grouped by pixel
        sorted_flat = flat[self.order]
        self.starts = np.flatnonzero(np.r_[True, sorted_flat[1:] != sorted_flat[:-1]])
        self.pixels = sorted_flat[self.starts]                  # occupied flat pixels, ascending
        sizes = np.diff(np.r_[self.starts, rows.size])           # features per occupied pixel
        self.counts = sizes.astype(np.float32)
        self.group_of_feature = np.empty(rows.size, dtype=np.int64)  # pixel-group id per feature
        self.group_of_feature[self.order] = np.repeat(np.arange(self.starts.size), sizes)
        self.all_singletons = bool(self.starts.size == rows.size)
        self.layer_groups, self.layer_features = [], []
        for k in range(int(sizes.max())):
            groups = np.flatnonzero(sizes > k)
            self.layer_groups.append(groups)
            self.layer_features.append(self.order[self.starts[groups] + k])
        npix = res * res
        # flat positions in a (3 * res * res) image of the mean / min / max values
        self.scatter_index = np.concatenate([self.pixels, self.pixels + npix, self.pixels + 2 * npix])
        self._torch_cache: dict = {}
        self._flat_cache: dict[int, np.ndarray] = {}

    @classmethod
    def from_feature_map(cls, fmap, resolution: int, image_size: int | None = None) -> "Renderer":
        rows, cols = fmap.pixels(resolution)
        return cls(rows, cols, resolution, image_size)

    @property
    def n_pixels(self) -> int:
        """Number of occupied pixels."""
        return int(self.starts.size)

    # ------------------------------------------------------------------ numpy
    def _stats(self, X: np.ndarray) -> np.ndarray:
        """(batch, 3 * n_pixels): mean, min, max per occupied pixel, concatenated.

        Layered: layer k holds the k-th feature (in column order) of every pixel with more
        than k features. Layer 0 covers all pixels and initialises sum/min/max; the few
        deeper layers update only their pixels. The sum is thus accumulated in column order,
        exactly like the reference (``np.add.reduceat`` would use pairwise summation on long
        runs), and at realistic resolutions (<= 3 layers) it is several times faster than
        ``reduceat`` over many tiny segments.
        """
        b, g = X.shape[0], self.starts.size
        vals = np.empty((b, 3 * g), dtype=np.float32)
        s, mn, mx = vals[:, :g], vals[:, g:2 * g], vals[:, 2 * g:]
        np.take(X, self.layer_features[0], axis=1, out=s)
        mn[...] = s
        mx[...] = s
        if self.all_singletons:
            return vals
        for groups, feats in zip(self.layer_groups[1:], self.layer_features[1:]):
            xk = np.take(X, feats, axis=1)
            s[:, groups] += xk
            mn[:, groups] = np.minimum(mn[:, groups], xk)
            mx[:, groups] = np.maximum(mx[:, groups], xk)
        s /= self.counts
        return vals

    def render_native(self, X, out: np.ndarray | None = None) -> np.ndarray:
        """(batch, n_features) -> (batch, 3, resolution, resolution) float32, no resize.

        ``out``: optional C-contiguous float32 buffer of that shape whose empty pixels are
        already 0 (a fresh ``np.zeros`` buffer or one this renderer filled before); only
        the occupied pixels are written, so reusing it avoids re-zeroing the whole image.
        """
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected (batch, {self.n_features}) input, got shape {X.shape}")
        b, res = X.shape[0], self.resolution
        shape = (b, 3, res, res)
        if out is None:
            out = np.zeros(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
        flat = out.reshape(-1)  # a view: out is C-contiguous
        flat[self._flat_index(b)] = self._stats(X).reshape(-1)
        return out

    def _flat_index(self, batch: int) -> np.ndarray:
        """Flat positions of all (row, channel, occupied pixel) cells of a batch, cached per
        batch size: one 1-D fancy write is several times faster than ``out2d[:, idx] = v``."""
        index = self._flat_cache.get(batch)
        if index is None:
            step = 3 * self.resolution * self.resolution
            index = (np.arange(batch, dtype=np.intp)[:, None] * step + self.scatter_index[None, :]).reshape(-1)
            if len(self._flat_cache) >= 4:
                self._flat_cache.pop(next(iter(self._flat_cache)))
            self._flat_cache[batch] = index
        return index

    def render(self, X, out=None):
        """Render a batch: numpy in -> numpy out, torch tensor in -> torch tensor out.

        Returns (batch, 3, image_size, image_size) float32; bicubic resize only when
        ``image_size != resolution``.
        """
        if torch is not None and isinstance(X, torch.Tensor):
            return self.render_torch(X)
        if self.image_size == self.resolution:
            return self.render_native(X, out=out)
        if out is not None:
            raise ValueError("out= is only supported without a resize (image_size == resolution)")
        img = self.render_native(X)
        return self._resize(torch.from_numpy(img)).numpy()

    __call__ = render

    def _resize(self, t):
        if torch is None:  # pragma: no cover
            raise ImportError("resizing needs torch")
        return F.interpolate(t, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)

    # ------------------------------------------------------------------ torch
    def render_torch(self, X, backend: str = "auto"):
        """Render a torch tensor (batch, n_features) into a float32 tensor on the same device.

        ``backend``: "numpy" (zero-copy numpy renderer; the default on CPU), "torch"
        (``index_add_`` / ``scatter_reduce_`` kernels; the default on accelerators).
        """
        if torch is None:  # pragma: no cover
            raise ImportError("render_torch needs torch")
        if X.dim() == 1:
            X = X.unsqueeze(0)
        if X.dim() != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected (batch, {self.n_features}) input, got shape {tuple(X.shape)}")
        if backend == "auto":
            backend = "numpy" if X.device.type == "cpu" else "torch"
        if backend == "numpy":
            arr = X.detach().to(dtype=torch.float32).contiguous().cpu().numpy()
            img = torch.from_numpy(self.render_native(arr))
            img = img if X.device.type == "cpu" else img.to(X.device)
        elif backend == "torch":
            img = self._render_torch_kernels(X.detach().to(dtype=torch.float32))
        else:
            raise ValueError(f"unknown backend {backend!r}")
        if self.image_size != self.resolution:
            img = self._resize(img)
        return img

    def _torch_index(self, device):
        key = str(device)
        if key not in self._torch_cache:
            self._torch_cache[key] = (
                torch.as_tensor(self.group_of_feature, device=device),
                torch.as_tensor(self.counts, device=device),
                torch.as_tensor(self.scatter_index, device=device),
            )
        return self._torch_cache[key]

    def _render_torch_kernels(self, X):
        gid, counts, scatter_index = self._torch_index(X.device)
        b, g, res = X.shape[0], self.starts.size, self.resolution
        idx = gid.unsqueeze(0).expand(b, -1)
        vals = torch.empty((b, 3 * g), dtype=torch.float32, device=X.device)
        vals[:, :g].zero_().index_add_(1, gid, X).div_(counts)
        # include_self=False: the initial contents are ignored, only the features count
        vals[:, g:2 * g].zero_().scatter_reduce_(1, idx, X, reduce="amin", include_self=False)
        vals[:, 2 * g:].zero_().scatter_reduce_(1, idx, X, reduce="amax", include_self=False)
        out = torch.zeros((b, 3 * res * res), dtype=torch.float32, device=X.device)
        out[:, scatter_index] = vals
        return out.view(b, 3, res, res)

    # ------------------------------------------------------------------ reference
    def render_reference(self, x_row) -> np.ndarray:
        """Plain per-row reference of the same definition: (3, image_size, image_size).

        Loops and a dict; float32 arithmetic with the features added in column order, so the
        vectorised renderer must match it (min/max exactly, the mean to float32 rounding).
        """
        x = np.asarray(x_row, dtype=np.float32).ravel()
        if x.size != self.n_features:
            raise ValueError(f"expected {self.n_features} values, got {x.size}")
        cells: dict[tuple[int, int], list[np.float32]] = {}
        for j in range(self.n_features):
            cells.setdefault((int(self.pixel_rows[j]), int(self.pixel_cols[j])), []).append(x[j])
        img = np.zeros((3, self.resolution, self.resolution), dtype=np.float32)
        for (r, c), values in cells.items():
            total = np.float32(0.0)
            for v in values:
                total = np.float32(total + v)
            img[0, r, c] = total / np.float32(len(values))
            img[1, r, c] = min(values)
            img[2, r, c] = max(values)
        if self.image_size != self.resolution:
            img = self._resize(torch.from_numpy(img[None]))[0].numpy()
        return img
