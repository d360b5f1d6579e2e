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

The parts every stacked model shares (:class:`StackedModel`, :class:`StackedFeatures`,
:class:`StackStageParams`) live in :mod:`moakit.models.stacked`.
"""

from __future__ import annotations

from typing import Literal

from moakit.models.base import ModelParams, StageSpec, register
from moakit.models.stacked import StackedModel, StackStageParams


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
