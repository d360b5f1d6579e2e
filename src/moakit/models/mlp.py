"""Shared pieces of the MLP-based models: a stage = feature pipeline + MLP + training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from moakit.features import Pipeline, PipelineConfig
from moakit.models.base import Blocks, EpochCallback, FitContext, ModelParams, TorchEstimator
from moakit.models.quality import as_replay, control_rows, joint_targets, keep_first_outputs, select_then_refit
from moakit.nn.blocks import build_network
from moakit.nn.train import ControlRows, Replay, TrainParams, fit_network, init_output_bias


class MLPConfig(BaseModel):
    """Sizes of the base NN block: hidden=[2048, 2048] is the 3-FC block."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = [2048, 2048]
    dropouts: list[float] = [0.0, 0.25, 0.25]
    weight_norm: list[bool] = [True, False, True]
    activation: str = "leaky_relu"
    # log_odds: the output layer's bias starts at each target's training log-odds (moakit's
    # initialisation); torch: PyTorch's default uniform initialisation (the winners' scripts)
    output_bias: Literal["log_odds", "torch"] = "log_odds"
    # a joint head (3rd place): the scored AND all non-scored targets as outputs of one
    # network, training loss joint_scored_weight x mean BCE(scored) + the rest x mean
    # BCE(non-scored); epochs are judged and predictions made on the scored part only
    joint_nonscored_head: bool = False
    joint_scored_weight: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _lengths(self) -> "MLPConfig":
        n = len(self.hidden) + 1
        if len(self.dropouts) != n or len(self.weight_norm) != n:
            raise ValueError(f"{len(self.hidden)} hidden layers need {n} dropouts and {n} weight_norm flags")
        return self


class MLPStageParams(ModelParams):
    """One MLP stage: its features, its network and its training."""

    features: PipelineConfig
    network: MLPConfig = MLPConfig()
    train: TrainParams = TrainParams()


def fit_pipeline(config: PipelineConfig, train: Blocks, test: Blocks, seed: int) -> Pipeline:
    return Pipeline.from_config(config, seed=seed).fit(train, test)


def fit_mlp(
    stage_params: MLPStageParams,
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_valid: np.ndarray,
    Y_valid: np.ndarray,
    seed: int,
    on_epoch: EpochCallback | None = None,
    Y_aux_train: np.ndarray | None = None,
    controls: ControlRows | None = None,
    replay: Replay | None = None,
) -> TorchEstimator:
    """Build the stage's MLP and train it with the shared loop (``replay``: the refit pass
    of ``holdout_refit``; ``Y_aux_train``: the non-scored targets of a joint head;
    ``controls``: for ``train.control_augment``)."""
    import torch

    torch.manual_seed(seed)
    net = stage_params.network
    n_out = int(Y_train.shape[1])
    Y_fit, weights = Y_train, None
    if net.joint_nonscored_head:
        Y_fit, weights = joint_targets(Y_train, Y_aux_train, net.joint_scored_weight)
    kwargs = {"n_in": int(X_train.shape[1]), "n_out": int(Y_fit.shape[1]), "hidden": net.hidden,
              "dropouts": net.dropouts, "weight_norm_layers": net.weight_norm, "activation_name": net.activation}
    module = build_network("mlp", kwargs)
    if net.output_bias == "log_odds":
        init_output_bias(module.net[-1], Y_fit, softmax=stage_params.train.loss == "softmax")
    result = fit_network(module, X_train, Y_fit, X_valid, Y_valid, stage_params.train, seed=seed, on_epoch=on_epoch,
                         replay=replay, controls=controls, target_weights=weights,
                         judge_outputs=n_out if net.joint_nonscored_head else None)
    if net.joint_nonscored_head:  # predictions: the scored outputs only
        module.net[-1] = keep_first_outputs(module.net[-1], n_out)
        kwargs["n_out"] = n_out
    return TorchEstimator("mlp", kwargs, module, eval_batch_size=stage_params.train.eval_batch_size,
                          info={"best_epoch": result.best_epoch, "best_valid_loss": result.best_loss,
                                "replay": result.replay().as_dict()})


def fit_mlp_fold(stage_params: MLPStageParams, X_train, Y_train, X_valid, Y_valid, ctx: FitContext) -> TorchEstimator:
    """One fold of an MLP stage under the run's selection policy (``holdout_refit``: a second
    pass on all the fold's training rows), with the context's control rows."""
    controls = control_rows(ctx) if stage_params.train.control_augment > 0 else None

    def fit(X, Y, Xv, Yv, Y_aux, replay, on_epoch):
        return fit_mlp(stage_params, X, Y, Xv, Yv, ctx.seed, on_epoch, Y_aux, controls, as_replay(replay))

    return select_then_refit(fit, X_train, Y_train, X_valid, Y_valid, ctx)


def load_pipeline(path: Path) -> Pipeline:
    return Pipeline.load(path)
