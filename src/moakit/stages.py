"""A model's stages over its seeds, shared by training and prediction: which stage outputs
feed which stage-seed (:class:`StageChain`), a stage's input blocks, targets and training
rows, and :func:`predict_run`, which replays the chain from a run folder's saved artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moakit.data.dataset import Dataset
from moakit.features import blocks_from_dataset
from moakit.features.pipeline import CONTROL_BLOCK
from moakit.models.base import Blocks, Model, StageSpec
from moakit.runs import layout


class StageChain:
    """A model's stages over its seeds, and which stage outputs feed which stage-seed.

    Stage i of seed s reads a ``meta`` block made of stage i-1's predictions: seed s's
    own, or the mean over ALL seeds when the model's ``meta_from_seed_mean`` is set. Training
    (the task graph's dependencies and inputs) and :func:`predict_run` both follow it."""

    def __init__(self, model: Model, seeds: list[int]) -> None:
        self.model = model
        self.stages = model.stages()
        self.seeds = list(seeds)
        self.seed_mean = bool(model.meta_from_seed_mean)

    def upstream(self, index: int, seed: int) -> list[tuple[int, int]]:
        """The (stage index, seed) outputs that stage ``index`` of ``seed`` reads."""
        if index == 0:
            return []
        return [(index - 1, s) for s in self.seeds] if self.seed_mean else [(index - 1, seed)]

    def meta(self, index: int, seed: int, outputs: dict[tuple[int, int], np.ndarray]) -> np.ndarray | None:
        """Stage ``index``'s meta block for ``seed`` from the upstream outputs (None: none)."""
        keys = self.upstream(index, seed)
        if not keys:
            return None
        if self.seed_mean:
            return np.mean([outputs[k] for k in keys], axis=0).astype(np.float32)
        return outputs[keys[0]]

    def final(self, outputs: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
        """The model's predictions: its last stage's, averaged over seeds."""
        last = len(self.stages) - 1
        return np.mean([outputs[(last, s)] for s in self.seeds], axis=0)


def stage_dir(run_dir: str | Path, stage: StageSpec, seed: int) -> Path:
    return layout.stage_dir(run_dir, stage.name, seed)


def stage_blocks(ds: Dataset, meta: np.ndarray | None) -> Blocks:
    """A stage's input blocks: the panel's blocks, plus ``meta`` (upstream predictions)."""
    blocks = blocks_from_dataset(ds)
    if meta is not None:
        blocks["meta"] = meta.astype(np.float32)
    return blocks


def fit_blocks(stage: StageSpec, ds: Dataset, blocks: Blocks) -> Blocks:
    """The rows a stage's feature transform may be fitted on.

    A stage that trains on control rows gets every row. Otherwise every row comes with a
    ``ctl`` block marking the controls: a feature Pipeline fits on the treated rows only
    unless its config says ``fit_controls: true`` (the winners' scripts fitted their
    unsupervised transforms before dropping the controls)."""
    if stage.keep_controls:
        return dict(blocks)
    return {**blocks, CONTROL_BLOCK: ds.is_control.astype(np.float32)[:, None]}


def stage_targets(stage: StageSpec, ds: Dataset) -> tuple[np.ndarray, list[str]]:
    if stage.targets == "scored":
        return ds.scored, list(ds.scored_names)
    if ds.nonscored is None:
        raise ValueError(f"stage {stage.name!r} needs train_targets_nonscored in the data folder")
    return ds.nonscored, list(ds.nonscored_names)


def training_rows(stage: StageSpec, ds: Dataset) -> np.ndarray:
    """Rows a stage may train and be judged on: treated rows unless it keeps controls."""
    return np.ones(len(ds), bool) if stage.keep_controls else ~ds.is_control


def predict_run(run_dir: str | Path, ds: Dataset, batch_size: int | None = None) -> np.ndarray:
    """Scored-target probabilities for ``ds`` from a trained run's saved artifacts only.

    Replays the stage chain (:class:`StageChain`, as training) on ``ds``: each stage's saved
    transform, then the mean over folds of its saved estimators, per seed; the model's
    predictions are the last stage's averaged over seeds, with control rows set to 0.
    Nothing is refitted. ``batch_size`` overrides the estimators' saved inference batch
    size and the rows of a prediction block. The work is
    :class:`moakit.streaming.RunPredictor`'s: every transform and network on fixed row
    blocks, so these are the values of ``moakit predict`` in one pass or in chunks.
    """
    from moakit.streaming import RunPredictor

    return RunPredictor(run_dir, batch_size).predict(ds)
