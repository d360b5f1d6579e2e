"""A torch replay of a fitted feature :class:`~moakit.features.pipeline.Pipeline`, for gradients.

Integrated Gradients (:mod:`moakit.explain`) needs the gradient of a prediction with
respect to the RAW input columns, so the fitted feature steps are rebuilt as torch
functions of their fitted state (nothing is refitted):

* ``quantile``: piecewise-linear interpolation between the fitted quantiles, as
  scikit-learn's QuantileTransformer (the mean of the ascending and descending
  interpolation, the bounds, then the normal quantile function and its clip);
* ``standard_scaler``, ``pca``, ``factor_analysis``, ``variance_threshold``: the affine
  maps they are at inference;
* ``row_stats``, ``row_mean``, ``row_quantile_norm``: the same formulas in torch;
* steps that are not differentiable (``umap``, ``kmeans_onehot``, ``cp_categories``, and
  any kind not listed above) are HELD CONSTANT at their output for the row being
  explained: the caller computes those outputs with the numpy pipeline
  (:func:`replay_numpy`) and passes them in. Their influence is then not attributed to
  the raw columns (:attr:`TorchPipeline.held_constant` names them).

``TorchPipeline(p)(blocks, constants)`` equals ``p.transform(blocks)`` up to float32
rounding (tests/test_explain.py checks it).
"""

from __future__ import annotations

import numpy as np
import torch

from moakit.features.steps import Blocks, Step

DIFFERENTIABLE_KINDS = ("quantile", "standard_scaler", "pca", "factor_analysis", "variance_threshold",
                        "row_stats", "row_mean", "row_quantile_norm")
_BOUNDS = 1e-7  # scikit-learn's BOUNDS_THRESHOLD


def _t(a, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float64), dtype=dtype)


def _affine(step: Step, state) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) with ``transform(x) == x @ A + b`` for the linear steps."""
    kind = step.kind
    if kind == "standard_scaler":
        d = int(state.n_features_in_)
        mean = np.zeros(d) if state.mean_ is None else np.asarray(state.mean_, np.float64)
        scale = np.ones(d) if state.scale_ is None else np.asarray(state.scale_, np.float64)
        return _t(np.diag(1.0 / scale)), _t(-mean / scale)
    if kind == "pca":
        A = np.asarray(state.components_, np.float64).T.copy()
        b = -np.asarray(state.mean_, np.float64) @ A
        if state.whiten:
            scale = np.maximum(np.sqrt(np.asarray(state.explained_variance_, np.float64)), np.finfo(np.float64).eps)
            A, b = A / scale, b / scale
        return _t(A), _t(b)
    if kind == "factor_analysis":
        W = np.asarray(state.components_, np.float64)
        wpsi = W / np.asarray(state.noise_variance_, np.float64)
        cov_z = np.linalg.inv(np.eye(len(W)) + wpsi @ W.T)
        A = wpsi.T @ cov_z
        return _t(A), _t(-np.asarray(state.mean_, np.float64) @ A)
    if kind == "variance_threshold":
        keep = np.flatnonzero(state.get_support())
        A = np.zeros((len(state.get_support()), len(keep)))
        A[keep, np.arange(len(keep))] = 1.0
        return _t(A), torch.zeros(len(keep))
    raise ValueError(f"no affine form for step kind {kind!r}")


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """numpy.interp per column: x (n, d), xp (d, m) ascending per row, fp (m,)."""
    m = xp.shape[1]
    j = torch.searchsorted(xp.contiguous(), x.T.contiguous(), right=True) - 1  # (d, n)
    j = j.clamp(0, m - 2)
    lo, hi = torch.gather(xp, 1, j), torch.gather(xp, 1, j + 1)
    width = hi - lo
    frac = torch.where(width > 0, (x.T - lo) / torch.where(width > 0, width, torch.ones_like(width)),
                       torch.zeros_like(width))
    out = fp[j] + frac * (fp[j + 1] - fp[j])
    out = torch.where(x.T < xp[:, :1], fp[0].expand_as(out), out)
    out = torch.where(x.T >= xp[:, -1:], fp[-1].expand_as(out), out)
    return out.T


class _Quantile:
    """scikit-learn QuantileTransformer.transform in torch."""

    def __init__(self, state) -> None:
        q = np.asarray(state.quantiles_, np.float64).T  # (d, m)
        self.q = _t(q)
        self.q_rev = _t(-q[:, ::-1].copy())
        self.ref = _t(state.references_)
        self.ref_rev = _t(-np.asarray(state.references_, np.float64)[::-1].copy())
        self.normal = state.output_distribution == "normal"
        from scipy import stats

        eps = _BOUNDS - np.spacing(1)
        self.clip = (float(stats.norm.ppf(eps)), float(stats.norm.ppf(1 - eps)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = 0.5 * (_interp(x, self.q, self.ref) - _interp(-x, self.q_rev, self.ref_rev))
        if self.normal:
            low, high = x - _BOUNDS < self.q[:, 0], x + _BOUNDS > self.q[:, -1]
        else:
            low, high = x == self.q[:, 0], x == self.q[:, -1]
        y = torch.where(high, torch.ones_like(y), y)
        y = torch.where(low, torch.zeros_like(y), y)
        if self.normal:
            y = torch.special.ndtri(y.clamp(0.0, 1.0)).clamp(*self.clip)
        return y


def _row_stats(x: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Row statistics as :func:`moakit.features.steps.row_statistics` (pandas' estimators)."""
    n = x.shape[1]
    mean = x.mean(dim=1)
    d = x - mean[:, None]
    m2 = (d ** 2).mean(dim=1)
    safe = torch.where(m2 > 0, m2, torch.ones_like(m2))
    zero = torch.zeros_like(mean)
    out = []
    for name in names:
        if name == "sum":
            out.append(x.sum(dim=1))
        elif name == "mean":
            out.append(mean)
        elif name == "std":
            out.append(torch.sqrt(m2 * n / (n - 1)) if n > 1 else zero)
        elif name == "skew":
            g1 = (d ** 3).mean(dim=1) / safe ** 1.5
            out.append(torch.where(m2 > 0, g1 * np.sqrt(n * (n - 1)) / (n - 2), zero) if n > 2 else zero)
        elif name == "kurt":
            ratio = (d ** 4).mean(dim=1) / safe ** 2
            g2 = ((n ** 2 - 1.0) * ratio - 3 * (n - 1) ** 2) / ((n - 2) * (n - 3)) if n > 3 else zero
            out.append(torch.where(m2 > 0, g2, zero) if n > 3 else zero)
    return torch.stack(out, dim=1)


def _row_quantile_norm(x: torch.Tensor, p) -> torch.Tensor:
    centre = torch.quantile(x, torch.tensor(p.center_quantiles, dtype=x.dtype), dim=1).mean(dim=0)
    out = x - centre[:, None]
    if p.scale_abs_quantile is not None:
        scale = torch.quantile(out.abs(), float(p.scale_abs_quantile), dim=1) + p.scale_offset
        out = out / torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]
    return out


def _torch_function(step: Step, state):
    """A torch function of the concatenated inputs for a differentiable step."""
    kind = step.kind
    if kind == "quantile":
        return _Quantile(state)
    if kind in ("standard_scaler", "pca", "factor_analysis", "variance_threshold"):
        A, b = _affine(step, state)
        return lambda x: x @ A + b
    if kind == "row_stats":
        groups = step.input_groups()
        stats_ = list(step.params.stats)
        return lambda parts: torch.cat([_row_stats(torch.cat([parts[i] for i in idx], dim=1), stats_)
                                        for _, idx in groups], dim=1)
    if kind == "row_mean":
        return lambda parts: torch.stack([p.mean(dim=1) for p in parts], dim=1)
    if kind == "row_quantile_norm":
        return lambda x: _row_quantile_norm(x, step.params)
    return None


class TorchPipeline:
    """A fitted Pipeline as a torch function of its input blocks.

    ``constant_keys`` lists ``(step name, block)`` pairs whose values the caller passes (the
    numpy outputs of the non-differentiable steps for the rows at hand).
    """

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.output = list(pipeline.config.output)
        self.ops = []
        self.held_constant: list[str] = []
        self.constant_keys: list[tuple[str, str]] = []
        for step in pipeline.steps:
            if step.in_place:
                fns = {b: _torch_function(step, step.state_[b]) for b in step.inputs}
                diff = all(f is not None for f in fns.values())
            else:
                fn = _torch_function(step, step.state_[step.output])
                diff = fn is not None
            if not diff:
                self.held_constant.append(f"{step.name} ({step.kind})")
                self.constant_keys.extend((step.name, b) for b in step.writes)
                self.ops.append((step, None))
            else:
                self.ops.append((step, fns if step.in_place else fn))

    def __call__(self, blocks: dict[str, torch.Tensor], constants: dict[tuple[str, str], torch.Tensor]) -> torch.Tensor:
        blocks = dict(blocks)
        for step, fn in self.ops:
            if fn is None:
                for b in step.writes:
                    blocks[b] = constants[(step.name, b)]
            elif step.in_place:
                for b in step.inputs:
                    blocks[b] = fn[b](blocks[b])
            elif step.kind in ("row_stats", "row_mean"):
                blocks[step.output] = fn([blocks[b] for b in step.inputs])
            else:
                blocks[step.output] = fn(torch.cat([blocks[b] for b in step.inputs], dim=1))
        return torch.cat([blocks[b] for b in self.output], dim=1)


def replay_numpy(pipeline, blocks: Blocks,
                 held: list[tuple[str, str]]) -> tuple[np.ndarray, dict[tuple[str, str], np.ndarray]]:
    """(``pipeline.transform(blocks)``, the outputs of the steps ``held`` (the
    :attr:`TorchPipeline.constant_keys`) keyed by (step name, block)), from one pass of
    the fitted steps."""
    held = set(held)
    blocks, _ = pipeline.take_inputs(blocks, "the blocks to explain")
    captured: dict[tuple[str, str], np.ndarray] = {}
    for step in pipeline.steps:
        blocks = step.transform(blocks)
        for b in step.writes:
            if (step.name, b) in held:
                captured[(step.name, b)] = blocks[b]
    X = np.concatenate([blocks[b] for b in pipeline.config.output], axis=1).astype(np.float32, copy=False)
    return X, captured
