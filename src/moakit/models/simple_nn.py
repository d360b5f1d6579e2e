"""Simple NN: one 3-FC MLP on scored targets (write-up section "Simple NN").

Trained twice in the winning blend: with the old CV plus k-means features, and with the
drug-aware new CV (config ``simple_nn_drug_cv``) for diversity.
"""

from __future__ import annotations

from pathlib import Path

from moakit.models.base import Model, StageSpec, register
from moakit.models.mlp import MLPStageParams, fit_mlp_fold, fit_pipeline, load_pipeline


@register
class SimpleNN(Model):
    name = "simple_nn"
    Params = MLPStageParams
    supports_refit = True

    def stages(self):
        # a joint scored + non-scored head reads the non-scored targets as the stage's aux targets
        return [StageSpec("scored", targets="scored",
                          aux_targets="nonscored" if self.params.network.joint_nonscored_head else None)]

    def fit_features(self, stage, train, test, seed):
        return fit_pipeline(self.params.features, train, test, seed)

    def load_features(self, stage, path: Path):
        return load_pipeline(path)

    def fit_fold(self, stage, X_train, Y_train, X_valid, Y_valid, ctx):
        return fit_mlp_fold(self.fit_params(ctx), X_train, Y_train, X_valid, Y_valid, ctx)
