"""What every stacked model shares: a chain of MLP stages where a later stage may reuse an
earlier stage's fitted feature pipeline (write-up "3-Stage NN", "2-Stage NN + TabNet").

:class:`StackedModel` is the base of the 3-stage NN and the 2-stage NN + TabNet;
:class:`StackedFeatures` is the feature state of a stacked stage ([base stage's features |
this stage's own]).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from moakit.runs import layout
from moakit.artifacts import atomic_dir
from moakit.features import Pipeline, PipelineConfig
from moakit.models.base import Blocks, FeatureState, Model, StageSpec, on_device
from moakit.models.mlp import MLPStageParams, fit_mlp_fold, fit_pipeline, load_pipeline


class StackStageParams(MLPStageParams):
    """An MLP stage of a stacked model.

    ``features`` is this stage's own pipeline (it may read ``meta``, the previous stage's
    predictions); ``base_features`` names an earlier stage whose fitted feature pipeline
    is reused and its columns put first (stage 2 = "the stage-1 features + meta").
    """

    base_features: str | None = None


class StackedFeatures(FeatureState):
    """Feature state of a stacked stage: [base stage's features | this stage's own].

    Saved as ``base/`` (an earlier stage's fitted Pipeline, copied so the stage reloads on
    its own) and ``own/`` plus ``stacked.json``.
    """

    def __init__(self, own: Pipeline, base: Pipeline | None = None) -> None:
        self.own = own
        self.base = base

    def transform(self, blocks: Blocks) -> np.ndarray:
        parts = [self.base.transform(blocks)] if self.base is not None else []
        parts.append(self.own.transform(blocks))
        X = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return np.ascontiguousarray(X, dtype=np.float32)

    @property
    def feature_names_(self) -> list[str]:
        base = self.base.feature_names_ if self.base is not None else []
        return [*base, *self.own.feature_names_]

    @property
    def reads_row_count(self) -> bool:
        return self.own.reads_row_count or (self.base is not None and self.base.reads_row_count)

    def save(self, path: Path) -> None:
        with atomic_dir(path) as tmp:
            self.own.save(tmp / "own")
            if self.base is not None:
                self.base.save(tmp / "base")
            (tmp / layout.STACKED_SPEC).write_text(json.dumps({"has_base": self.base is not None}))

    @classmethod
    def load(cls, path: Path) -> "StackedFeatures":
        path = Path(path)
        spec = json.loads((path / layout.STACKED_SPEC).read_text())
        base = load_pipeline(path / "base") if spec["has_base"] else None
        return cls(load_pipeline(path / "own"), base)


BASE_BLOCKS = ("g", "c", "cp")  # what a reusable (first-stage) pipeline may read


def _blocks_key(train: Blocks, test: Blocks) -> str:
    """A digest of the base blocks: a fitted base pipeline is reused only on the same data."""
    h = hashlib.blake2b(digest_size=16)
    for blocks in (train, test):
        for name in BASE_BLOCKS:
            if name in blocks:
                a = np.ascontiguousarray(blocks[name])
                h.update(name.encode())
                h.update(str(a.shape).encode())
                h.update(a.tobytes())
    return h.hexdigest()


class StackedModel(Model):
    """A model whose stages may reuse an earlier stage's fitted feature pipeline.

    Subclasses map stage names to their params with :meth:`stage_params`. A pipeline
    fitted for stage A is kept in memory (by seed and a digest of the input blocks) so a
    later stage with ``base_features: A`` does not fit the same UMAP again. When the stages
    run in different processes (Ray) the runner reloads A's saved state and hands it over
    (:meth:`adopt_features`); when A's state is nowhere it is fitted afresh from A's config,
    with the same seed.
    """

    supports_refit = True  # every stage: fit_mlp_fold (the 2-stage's TabNet: its own refit)

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self._fitted: dict[tuple[str, int, str], Pipeline] = {}

    def stage_params(self, stage: StageSpec):
        raise NotImplementedError

    @property
    def meta_from_seed_mean(self) -> bool:
        return getattr(self.params, "meta_features", "per_seed") == "seed_mean"

    def _base_pipeline(self, name: str, train: Blocks, test: Blocks, seed: int) -> Pipeline:
        config: PipelineConfig = self.stage_params(StageSpec(name)).features
        if "meta" in config.output or any("meta" in s.inputs for s in config.steps):
            raise ValueError(f"stage {name!r}: a reused feature pipeline may read only {BASE_BLOCKS}, not meta")
        key = (name, seed, _blocks_key(train, test))
        if key not in self._fitted:
            self._fitted[key] = fit_pipeline(config, train, test, seed)
        return self._fitted[key]

    def reuses_features_of(self, stage: StageSpec) -> str | None:
        return self.stage_params(stage).base_features

    def adopt_features(self, stage, seed, features, train, test) -> None:
        # a first stage's saved state is StackedFeatures(own = the reusable pipeline)
        self._fitted.setdefault((stage.name, seed, _blocks_key(train, test)), features.own)

    def fit_features(self, stage, train, test, seed):
        p = self.stage_params(stage)
        if p.base_features is None:
            if "meta" in train:  # a later stage on predictions only (the 3-stage's stack)
                return StackedFeatures(fit_pipeline(p.features, train, test, seed))
            # A first stage: kept in memory for a later stage that reuses it.
            return StackedFeatures(self._base_pipeline(stage.name, train, test, seed))
        base = self._base_pipeline(p.base_features, train, test, seed)
        return StackedFeatures(fit_pipeline(p.features, train, test, seed), base)

    def load_features(self, stage, path: Path):
        return StackedFeatures.load(path)

    def fit_fold(self, stage, X_train, Y_train, X_valid, Y_valid, ctx):
        params = on_device(self.stage_params(stage), ctx.device)
        return fit_mlp_fold(params, X_train, Y_train, X_valid, Y_valid, ctx)
