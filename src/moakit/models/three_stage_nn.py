"""3-stage NN: stacking by non-scored, then scored meta-features (write-up "3-Stage NN").

Stage ``nonscored``: the 3-FC block on factor-analysis + UMAP features of the raw g/c and
the quantile-transformed g/c, learning the non-scored targets that have a positive
training row. Stage ``scored``: the same features plus the quantile-transformed stage-1
predictions (the runner's ``meta`` block), learning the scored targets. Stage ``stack``:
only the quantile-transformed stage-2 predictions, targets clipped to [0.0005, 0.9995].
With ``meta_features: seed_mean`` (the winners' way) a stage's predictions are averaged
over all seeds before they become the next stage's meta-features.

Leak-free stacking is the runner's job and nothing here undoes it: for training rows the
``meta`` block holds stage k's OUT-OF-FOLD predictions made with the same folds (averaged
over seeds, every seed using the same folds), so the meta-features of a row come from
networks that never saw that row; the only transform fitted on ``meta`` is a per-column
quantile transform, which reads no labels.

This module also holds :class:`StackedFeatures`, the feature state of a stage that reuses
an earlier stage's fitted feature pipeline (the 2-stage NN + TabNet model uses it too).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np

from moakit.artifacts import atomic_dir
from moakit.features import Pipeline, PipelineConfig
from moakit.models.base import Blocks, Model, ModelParams, StageSpec, TorchEstimator, register
from moakit.models.mlp import MLPStageParams, fit_mlp, fit_pipeline, load_pipeline


class StackStageParams(MLPStageParams):
    """An MLP stage of a stacked model.

    ``features`` is this stage's own pipeline (it may read ``meta``, the previous stage's
    predictions); ``base_features`` names an earlier stage whose fitted feature pipeline
    is reused and its columns put first (stage 2 = "the stage-1 features + meta").
    """

    base_features: str | None = None


class StackedFeatures:
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

    def save(self, path: Path) -> None:
        with atomic_dir(path) as tmp:
            self.own.save(tmp / "own")
            if self.base is not None:
                self.base.save(tmp / "base")
            (tmp / "stacked.json").write_text(json.dumps({"has_base": self.base is not None}))

    @classmethod
    def load(cls, path: Path) -> "StackedFeatures":
        path = Path(path)
        spec = json.loads((path / "stacked.json").read_text())
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
    later stage with ``base_features: A`` does not fit the same UMAP again; when it is not
    there (a resumed run) it is fitted afresh from A's config, with the same seed.
    """

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

    def fit_fold(self, stage, X_train, Y_train, X_valid, Y_valid, seed, on_epoch=None):
        return fit_mlp(self.stage_params(stage), X_train, Y_train, X_valid, Y_valid, seed, on_epoch)

    def load_estimator(self, stage, path: Path):
        return TorchEstimator.load(path)


class ThreeStageParams(ModelParams):
    # "seed_mean": every seed of a stage reads the previous stage's predictions averaged over
    # all seeds (the winners' script); "per_seed": one independent chain per seed.
    meta_features: Literal["seed_mean", "per_seed"] = "seed_mean"
    stage1: StackStageParams  # non-scored targets
    stage2: StackStageParams  # scored targets, stage-1 features + stage-1 predictions
    stage3: StackStageParams  # scored targets, stage-2 predictions only


@register
class ThreeStageNN(StackedModel):
    name = "three_stage_nn"
    Params = ThreeStageParams

    def stages(self):
        return [
            StageSpec("nonscored", targets="nonscored", drop_empty_targets=True),
            StageSpec("scored", targets="scored"),
            StageSpec("stack", targets="scored"),
        ]

    def stage_params(self, stage: StageSpec) -> StackStageParams:
        return {"nonscored": self.params.stage1, "scored": self.params.stage2, "stack": self.params.stage3}[stage.name]
