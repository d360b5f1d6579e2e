"""The feature step kinds a config names (``kind: quantile``, ``pca``, ``umap``, ...), each
registered in :data:`moakit.features.steps.STEP_KINDS`; the step machinery is in
:mod:`moakit.features.steps`."""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from moakit.features.steps import SklearnStep, Step, finite, register


# ---------------------------------------------------------------------- kinds


class QuantileParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_quantiles: int = Field(100, ge=2)
    output_distribution: Literal["normal", "uniform"] = "normal"
    # None = every row (the winners' sklearn default of 1e5 exceeded the row count).
    subsample: int | None = Field(None, ge=2)


@register
class QuantileStep(SklearnStep):
    """Per-column QuantileTransformer (100 quantiles, normal output by default).

    Random state: sklearn's QuantileTransformer draws only to subsample the fit rows when
    there are more than ``subsample`` (no noise; its transform draws nothing). Decided from
    the parameters: ``subsample: null`` (the default here) draws nothing; a ``subsample``
    counts as drawing whatever the row count (conservative: the rows are not known when a
    fit's content key is made)."""

    kind = "quantile"
    Params = QuantileParams
    random_draws = staticmethod(lambda p: p.subsample is not None)

    def _make(self):
        from sklearn.preprocessing import QuantileTransformer

        p = self.params
        return QuantileTransformer(n_quantiles=p.n_quantiles, output_distribution=p.output_distribution,
                                   subsample=p.subsample, random_state=self.seed)

    def _fit(self, parts):
        X = self._concat(parts)
        model = self._make()
        # Fewer rows than quantiles: sklearn clips n_quantiles to the row count with a warning.
        model.set_params(n_quantiles=min(self.params.n_quantiles, X.shape[0]))
        return model.fit(X)


class StandardScalerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    with_mean: bool = True
    with_std: bool = True


@register
class StandardScalerStep(SklearnStep):
    kind = "standard_scaler"
    Params = StandardScalerParams
    random_draws = False  # means and standard deviations: nothing drawn

    def _make(self):
        from sklearn.preprocessing import StandardScaler

        return StandardScaler(with_mean=self.params.with_mean, with_std=self.params.with_std)


class ComponentsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_components: int = Field(..., ge=1)


class PCAParams(ComponentsParams):
    # sklearn's svd_solver; "auto" (its default) picks one from the data's shape
    svd_solver: Literal["auto", "full", "covariance_eigh", "arpack", "randomized"] = "auto"


# the PCA solvers that draw nothing: LAPACK's SVD of the data / eigendecomposition of its covariance
EXACT_PCA_SOLVERS = ("full", "covariance_eigh")


@register
class PCAStep(SklearnStep):
    """sklearn PCA (``svd_solver``, default "auto").

    Random state: "full" and "covariance_eigh" draw nothing (exact: the same components for
    every seed). "auto" counts as drawing (conservative): it takes the randomized solver,
    which draws, for inputs over 500 on a side with fewer components than 80% of the smaller
    side unless there are under 1,000 columns and 10 times as many rows, an exact solver
    otherwise; a choice made on the data's shape, which is not known when a fit's content key
    is made. "arpack" and "randomized" draw (a random start)."""

    kind = "pca"
    Params = PCAParams
    random_draws = staticmethod(lambda p: p.svd_solver not in EXACT_PCA_SOLVERS)

    def _make(self):
        from sklearn.decomposition import PCA

        return PCA(n_components=self.params.n_components, svd_solver=self.params.svd_solver, random_state=self.seed)


class FactorAnalysisParams(ComponentsParams):
    max_iter: int = Field(1000, ge=1)
    tol: float = Field(1e-2, gt=0)


@register
class FactorAnalysisStep(SklearnStep):
    """sklearn FactorAnalysis. Random state: drawn from (exact): its svd_method, not a
    parameter here, is sklearn's default "randomized", which draws."""

    kind = "factor_analysis"
    Params = FactorAnalysisParams
    random_draws = True

    def _make(self):
        from sklearn.decomposition import FactorAnalysis

        p = self.params
        return FactorAnalysis(n_components=p.n_components, max_iter=p.max_iter, tol=p.tol, random_state=self.seed)

    def _fit(self, parts):
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # tol 1e-2 is sklearn's own default
            return super()._fit(parts)


class UMAPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_components: int = Field(..., ge=1)
    n_neighbors: int = Field(15, ge=2)
    min_dist: float = Field(0.1, ge=0)
    metric: str = "euclidean"
    n_epochs: int | None = Field(None, ge=1)
    n_jobs: int = 1  # a seeded UMAP runs single-threaded anyway (umap forces it for determinism)
    max_fit_rows: int | None = Field(None, ge=2)  # fit on a seeded subsample of this many rows
    transform_seed: int | None = None  # seed of umap's transform of new rows; None = the step's seed
    # how rows are embedded: "rows" each row on its own (moakit.features.umap_rows: a row's
    # features do not depend on the other rows it is transformed with), "umap" umap-learn's
    # transform of the whole call (they do); a step saved without it keeps "umap" (saved_defaults)
    transform: Literal["rows", "umap"] = "rows"


@contextlib.contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Restore torch's intra-op thread count afterwards: the first UMAP call in a process
    starts numba's OpenMP pool, which resets the count torch uses (e.g. a caller's 1 to
    the core count) -- measured: later small-batch training then spun in OpenMP barriers
    at several times its CPU cost on a busy 2-core machine, with different numerics."""
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@register
class UMAPStep(Step):
    """umap.UMAP embedding; ``max_fit_rows`` fits on a seeded row subsample, transforms all.

    ``transform: rows`` (the default) embeds every row on its own
    (:func:`moakit.features.umap_rows.transform_rows`), so a row's features are the same
    whatever rows it is predicted with; ``transform: umap`` is umap-learn's ``transform``
    (whose result for a row depends on the other rows of the call), what steps saved before
    the option existed keep."""

    kind = "umap"
    Params = UMAPParams
    random_draws = True  # the fit's initialisation, SGD and row subsample; transform_seed None: the seed
    saved_defaults = {"transform": "umap"}  # fits saved before `transform` existed used umap-learn's

    @property
    def reads_row_count(self) -> bool:
        # umap-learn's transform chooses its epochs from the call's row count when n_epochs is unset
        return self.params.transform == "umap" and self.params.n_epochs is None

    def trusted_state(self):
        import pynndescent
        import umap

        from moakit.features.safe_state import Trusted

        # NNDescent (umap's search index for > 4096 fit rows) rebuilds its compiled search
        # and distance functions on load (its __setstate__), so they are not saved.
        rebuilt = ("_distance_func", "_distance_correction", "_deheap_function", "_rerank_function")
        return Trusted(types=(umap.UMAP, pynndescent.NNDescent),
                       modules=("umap.distances", "pynndescent.distances", "numpy"),
                       skip={pynndescent.NNDescent: rebuilt})

    def _fit(self, parts):
        import umap

        p = self.params
        X = self._concat(parts)
        if p.max_fit_rows is not None and X.shape[0] > p.max_fit_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(X.shape[0], p.max_fit_rows, replace=False))
            X = X[rows]
        model = umap.UMAP(n_components=p.n_components, n_neighbors=min(p.n_neighbors, X.shape[0] - 1),
                          min_dist=p.min_dist, metric=p.metric, n_epochs=p.n_epochs, random_state=self.seed,
                          transform_seed=self.seed if p.transform_seed is None else p.transform_seed, n_jobs=p.n_jobs)
        with warnings.catch_warnings(), keep_torch_threads():
            warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
            model.fit(X)
        return model

    def _apply(self, state, parts):
        from moakit.streaming import umap_transform_epochs

        if self.params.transform == "rows":
            from moakit.features.umap_rows import transform_rows

            with keep_torch_threads():
                return transform_rows(state, self._concat(parts))
        pinned = umap_transform_epochs(state)  # chunked prediction: the whole input's epochs
        with warnings.catch_warnings(), keep_torch_threads():
            warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
            if pinned is None:
                return state.transform(self._concat(parts))
            try:
                state.n_epochs = pinned
                return state.transform(self._concat(parts))
            finally:
                state.n_epochs = None

    def _width(self, state, part_names):
        return int(state.n_components)


class KMeansParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_clusters: int = Field(..., ge=2)
    n_init: int = Field(10, ge=1)
    max_iter: int = Field(300, ge=1)


@register
class KMeansOneHotStep(Step):
    """KMeans cluster id as a one-hot block (``n_clusters`` columns)."""

    kind = "kmeans_onehot"
    Params = KMeansParams
    random_draws = True  # k-means++ initial centres

    def trusted_state(self):
        from sklearn.cluster import KMeans

        from moakit.features.safe_state import Trusted

        return Trusted(types=(KMeans,))

    def _fit(self, parts):
        from sklearn.cluster import KMeans

        p = self.params
        return KMeans(n_clusters=p.n_clusters, n_init=p.n_init, max_iter=p.max_iter,
                      random_state=self.seed).fit(self._concat(parts))

    def _apply(self, state, parts):
        ids = state.predict(self._concat(parts))
        out = np.zeros((len(ids), state.n_clusters), np.float32)
        out[np.arange(len(ids)), ids] = 1.0
        return out

    def _width(self, state, part_names):
        return int(state.n_clusters)


class VarianceThresholdParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.0, ge=0)


@register
class VarianceThresholdStep(SklearnStep):
    """Keeps the columns of the concatenated inputs whose variance exceeds ``threshold``.

    Writes a new block (list it in the pipeline output instead of its inputs); its
    column names are those of the kept input columns.
    """

    kind = "variance_threshold"
    Params = VarianceThresholdParams
    in_place_ok = False
    random_draws = False  # column variances: nothing drawn

    def _make(self):
        from sklearn.feature_selection import VarianceThreshold

        return VarianceThreshold(threshold=self.params.threshold)

    def _fit(self, parts):
        X = self._concat(parts)
        model = self._make().fit(X)  # raises when no column passes: say which step
        return model

    def _width(self, state, part_names):
        return int(state.get_support().sum())

    def _names(self, state, part_names):
        flat = [n for names in part_names for n in names]
        return [n for n, keep in zip(flat, state.get_support()) if keep]


ROW_STATS = ("sum", "mean", "std", "skew", "kurt")
RowStat = Literal["sum", "mean", "std", "skew", "kurt"]


def row_statistics(x: np.ndarray, stats_: tuple[str, ...] | list[str] = ROW_STATS) -> np.ndarray:
    """(n, len(stats_)) float64: the chosen statistics of each row, in the order given.

    The same estimators as pandas' ``DataFrame.sum/mean/std/skew/kurt(axis=1)`` (what the
    winners' scripts used): std with ddof=1, bias-corrected skew and excess kurtosis.
    Undefined values (too few columns, constant rows) are 0.
    """
    from scipy import stats

    x = np.asarray(x, np.float64)
    compute = {
        "sum": lambda: x.sum(axis=1),
        "mean": lambda: x.mean(axis=1),
        "std": lambda: x.std(axis=1, ddof=1) if x.shape[1] > 1 else np.zeros(len(x)),
        "skew": lambda: stats.skew(x, axis=1, bias=False),
        "kurt": lambda: stats.kurtosis(x, axis=1, fisher=True, bias=False),
    }
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.column_stack([compute[name]() for name in stats_]) if len(stats_) else np.zeros((len(x), 0))
    return finite(out)


class RowStatsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # which statistics, in this column order (per group); the winners' scripts differ:
    # the Simple NNs take sum, mean, std, kurt, skew; the TabNet mean, std, kurt, skew
    stats: list[RowStat] = Field(default_factory=lambda: list(ROW_STATS), min_length=1)


@register
class RowStatsStep(Step):
    """Row statistics (``stats``, default sum, mean, std, skew, kurtosis) of each input block
    and of all inputs together.

    inputs [g, c] -> 3 groups (g, c, g+c) x len(stats) columns, group-major; a single input
    gives its statistics once.
    """

    kind = "row_stats"
    Params = RowStatsParams
    in_place_ok = False
    random_draws = False  # each row's own statistics: nothing fitted or drawn

    def input_groups(self) -> list[tuple[str, list[int]]]:
        """(label, input indices) of each group the statistics are taken over: every input
        alone, then all of them together when there are several (``g``, ``c``, ``g+c``)."""
        groups = [(b, [i]) for i, b in enumerate(self.inputs)]
        if len(self.inputs) > 1:
            groups.append(("+".join(self.inputs), list(range(len(self.inputs)))))
        return groups

    def _apply(self, state, parts):
        chosen = tuple(self.params.stats)
        return np.concatenate([row_statistics(self._concat([parts[i] for i in idx]), chosen)
                               for _, idx in self.input_groups()], axis=1)

    def _width(self, state, part_names):
        return len(self.params.stats) * len(self.input_groups())

    def _names(self, state, part_names):
        return [f"{self.output}-{label}_{s}" for label, _ in self.input_groups() for s in self.params.stats]


@register
class RowMeanStep(Step):
    """Per-row mean of each input block (2-heads ResNet input A: g_mean, c_mean)."""

    kind = "row_mean"
    in_place_ok = False
    random_draws = False

    def _apply(self, state, parts):
        return np.column_stack([np.asarray(p, np.float64).mean(axis=1) for p in parts])

    def _width(self, state, part_names):
        return len(self.inputs)

    def _names(self, state, part_names):
        return [f"{self.output}-{b}_mean" for b in self.inputs]


class CpCategoriesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the sizes of the one-hot groups of the cp block (cp_time's, then cp_dose's); None:
    # lish-moa's [3, 2] for a 5-column block, else learned from the fitted rows
    groups: list[int] | None = Field(None, min_length=1)


@register
class CpCategoriesStep(Step):
    """The one-hot ``cp`` block (cp_time then cp_dose, each one-hot over its vocabulary:
    24/48/72, D1/D2 on lish-moa) as integer-coded categorical columns, one per group
    (cp_time 0/1/2 and cp_dose 0/1 on lish-moa), e.g. TabNet's embedded inputs.

    On another panel the group sizes are ``groups`` or, when not given, learned from the
    rows: the split of the block into one-hot groups that every row agrees with."""

    kind = "cp_categories"
    Params = CpCategoriesParams
    in_place_ok = False
    random_draws = False  # group sizes read off the one-hot columns
    GROUPS = (("cp_time", 3), ("cp_dose", 2))

    def _fit(self, parts):
        x = self._concat(parts)
        lish_moa = [n for _, n in self.GROUPS]
        if self.params.groups is not None:
            sizes = list(self.params.groups)
        else:
            sizes = self._learn_groups(x)
            if sizes is None and x.shape[1] != sum(lish_moa):
                raise ValueError(f"step {self.name!r} (cp_categories): the {x.shape[1]}-column block is neither "
                                 "lish-moa's 5-column one-hot cp block nor one-hot groups it can tell from the "
                                 "rows; give them as `groups: [n_times, n_doses]`")
        if sizes is None or sizes == lish_moa:
            return None  # lish-moa's groups (3 times, 2 doses)
        if sum(sizes) != x.shape[1]:
            raise ValueError(f"step {self.name!r} (cp_categories): groups {sizes} do not add up to the "
                             f"{x.shape[1]} columns of the cp block")
        return {"groups": [int(n) for n in sizes]}

    @staticmethod
    def _learn_groups(x: np.ndarray) -> list[int] | None:
        """The one-hot group sizes every row agrees with (one 1 per group), None if not one."""
        width, ones = x.shape[1], (x != 0).sum(axis=1)
        if len(x) and (ones == 1).all():
            return [width]
        if len(x) and (ones == 2).all():
            splits = [t for t in range(1, width) if ((x[:, :t] != 0).sum(axis=1) == 1).all()]
            if len(splits) == 1:
                return [splits[0], width - splits[0]]
        return None

    def _sizes(self, state) -> list[tuple[str, int]]:
        if state is None:
            return list(self.GROUPS)
        n = len(state["groups"])
        labels = ["cp_time", "cp_dose"] if n == 2 else [f"cp_{i}" for i in range(n)]
        return list(zip(labels, state["groups"]))

    def _apply(self, state, parts):
        x = self._concat(parts)
        groups = self._sizes(state)
        width = sum(n for _, n in groups)
        if x.shape[1] != width:
            raise ValueError(f"step {self.name!r} (cp_categories): expects the {width}-column one-hot cp block, "
                             f"got {x.shape[1]} columns")
        out, start = [], 0
        for _, n in groups:
            out.append(np.argmax(x[:, start:start + n], axis=1))
            start += n
        return np.column_stack(out).astype(np.float32)

    def category_sizes(self) -> list[int]:
        """The number of codes of each output column (TabNet's ``cat_dims``)."""
        self._check_fitted()
        return [n for _, n in self._sizes(self.state_[self.output])]

    def _width(self, state, part_names):
        return len(self._sizes(state))

    def _names(self, state, part_names):
        return [f"{self.output}-{name}" for name, _ in self._sizes(state)]


# ---------------------------------------------------------------------- row-wise normalisation


class RowQuantileNormParams(BaseModel):
    """x -> (x - mean of the row's ``center_quantiles``) / (the row's ``scale_abs_quantile``
    quantile of |x - centre| + ``scale_offset``); no scaling when ``scale_abs_quantile`` is None."""

    model_config = ConfigDict(extra="forbid")
    center_quantiles: list[float] = Field(default_factory=lambda: [0.25, 0.75], min_length=1)
    scale_abs_quantile: float | None = Field(None, ge=0, le=1)
    scale_offset: float = Field(0.0, ge=0)

    @field_validator("center_quantiles")
    @classmethod
    def _in_unit_interval(cls, value: list[float]) -> list[float]:
        bad = [q for q in value if not 0.0 <= q <= 1.0]
        if bad:
            raise ValueError(f"quantiles must lie in [0, 1], got {bad}")
        return value


def row_quantile_norm(x: np.ndarray, center_quantiles: list[float], scale_abs_quantile: float | None = None,
                      scale_offset: float = 0.0) -> np.ndarray:
    """Each row of ``x`` centred on the mean of its own quantiles, optionally scaled by a
    quantile of its centred absolute values plus an offset (float64; numpy's linear
    quantiles, as pandas' and the 2nd-place notebook's). A row whose scale is 0 is left
    unscaled."""
    x = np.asarray(x, np.float64)
    if x.shape[1] == 0:
        return x.copy()
    centre = np.quantile(x, center_quantiles, axis=1).mean(axis=0)
    out = x - centre[:, None]
    if scale_abs_quantile is not None:
        scale = np.quantile(np.abs(out), scale_abs_quantile, axis=1) + scale_offset
        out /= np.where(scale > 0, scale, 1.0)[:, None]
    return out


@register
class RowQuantileNormStep(Step):
    """Row-wise robust normalisation, before any fitted transform (the 2nd-place 1D-CNN:
    genes centred on the mean of each row's 25% / 75% quantiles; cells on its 25% / 72%
    quantiles, then divided by the row's 75% quantile of |c| + 4).

    Stateless: every row is normalised by its own values only, so the same rows give the
    same output whatever else is fitted or transformed. In place (one block at a time), or
    into a new ``output`` block from the concatenated inputs.
    """

    kind = "row_quantile_norm"
    Params = RowQuantileNormParams
    random_draws = False  # stateless, row by row

    def _apply(self, state, parts):
        p = self.params
        return row_quantile_norm(self._concat(parts), p.center_quantiles, p.scale_abs_quantile, p.scale_offset)

    def _width(self, state, part_names):
        return sum(len(names) for names in part_names)

    def _names(self, state, part_names):
        return [n for names in part_names for n in names]
