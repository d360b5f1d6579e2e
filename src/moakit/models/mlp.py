"""Shared pieces of the MLP-based models: a stage = feature pipeline + MLP + training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from moakit.features import Pipeline, PipelineConfig
from moakit.models.base import Blocks, EpochCallback, ModelParams, TorchEstimator
from moakit.nn.blocks import build_network
from moakit.nn.train import TrainParams, fit_network, init_output_bias


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
) -> TorchEstimator:
    """Build the stage's MLP and train it with the shared loop."""
    import torch

    torch.manual_seed(seed)
    net = stage_params.network
    kwargs = {"n_in": int(X_train.shape[1]), "n_out": int(Y_train.shape[1]), "hidden": net.hidden,
              "dropouts": net.dropouts, "weight_norm_layers": net.weight_norm, "activation_name": net.activation}
    module = build_network("mlp", kwargs)
    if net.output_bias == "log_odds":
        init_output_bias(module.net[-1], Y_train)
    result = fit_network(module, X_train, Y_train, X_valid, Y_valid, stage_params.train, seed=seed, on_epoch=on_epoch)
    return TorchEstimator("mlp", kwargs, module, eval_batch_size=stage_params.train.eval_batch_size,
                          info={"best_epoch": result.best_epoch, "best_valid_loss": result.best_loss})


def load_pipeline(path: Path) -> Pipeline:
    return Pipeline.load(path)
