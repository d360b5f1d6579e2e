"""1D-CNN of the 2nd-place lish-moa team (the eighth model; not in the winning blend).

Source: the 2nd-place team's public solution, baosenguo/Kaggle-MoA-2nd-Place-Solution,
training notebook ``training/1d-cnn-train.ipynb`` and its write-up ("2nd Place
Solution.pdf"). On its own it scored private LB 0.01601, against 0.01599 for the 1st-place
7-model blend. Written for moakit from the notebook's numbers (no code carried over).

Inputs: only the 772 g- and 100 c- columns (no cp_time / cp_dose), control rows dropped.

* Stage features (``params.features``, unsupervised, row by row): each row's genes centred
  on the mean of their 25% / 75% quantiles; its cells centred on the mean of their 25% /
  72% quantiles, then divided by the 75% quantile of |c| + 4 (feature step
  ``row_quantile_norm``).
* Fold features (``params.fold_features``), fitted in :meth:`fit_fold` on the fold's
  TRAINING rows only and saved with the fold's estimator: QuantileTransformer (100
  quantiles, normal output) of g and c, then PCA 50 of the quantiled genes and 15 of the
  quantiled cells, appended: 872 + 65 = 937 inputs.

Targets: an auxiliary set of non-scored targets, those whose largest absolute Pearson
correlation with any scored target is above the 90% quantile of that statistic over the
non-scored targets (about the top 10%), chosen from the fold's training rows only. Phase 1
trains one epoch on them (plain BCE; the notebook's OneCycle schedule is laid out for 25
epochs and stopped after the first); phase 2 replaces the output layer and trains on the
scored targets with BCE, label smoothing 0.001 and a per-target ``pos_weight``:
``w = log(n_pos + 100)``, ``pos_weight = min(w) / w``, with ``n_pos`` the target's positives
among the fold's training rows.

Network (:class:`Cnn1dNet`, full size): BN-Dropout-WN Linear(937 -> 4096)-CELU(0.06),
reshaped to 256 channels x 16 positions; four weight-normed 1D convolutions; the output
of the second is multiplied elementwise with that of the fourth (a multiplicative skip);
max-pool, flatten (512 x 4), BN-Dropout-WN Linear to the targets.

Differences from the notebook, each with its reason (also listed in configs/cnn1d.yaml):

* HONEST OUT-OF-FOLD: the notebook chose the auxiliary targets and the pos_weight counts
  on ALL training rows (the validation fold's too) and kept the epoch of lowest loss on the
  validation fold itself. Here both are computed on the fold's training rows only, and the
  epoch kept follows the runner's selection policy (``last`` by default, see the config).
* the folds: moakit's drug-aware CV (drugs with at most 19 rows whole, the notebook's
  threshold), drawn once per run and shared by the seeds; the notebook re-drew them per
  seed.
* every new output layer starts at its targets' training log-odds (moakit's start of
  every network); the notebook's started at PyTorch's default.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn import functional as F

from moakit.artifacts import atomic_dir
from moakit.features import Pipeline, PipelineConfig
from moakit.fold_transforms import fit_pipeline
from moakit.models.estimators import SPEC, register_estimator
from moakit.models.base import Blocks, EpochCallback, Model, ModelParams, StageSpec, TorchEstimator, register
from moakit.models.quality import as_replay, joint_targets, keep_first_outputs, select_then_refit
from moakit.nn.blocks import FastDropout, WeightNormLinear, build_network, register_network
from moakit.nn.train import ControlRows, Replay, TrainParams, fit_network, init_output_bias
from moakit.runs import layout as run_layout

NETWORK_NAME = "cnn1d"


# --------------------------------------------------------------------------- network


class WeightNormConv1d(nn.Module):
    """A 1D convolution with weight normalisation over the WHOLE kernel (torch's
    ``weight_norm(conv, dim=None)``): ``W = g * v / ||v||`` with one scalar ``g``."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int, padding: int, bias: bool = True) -> None:
        super().__init__()
        init = nn.Conv1d(n_in, n_out, kernel_size, padding=padding, bias=bias)
        self.padding = padding
        self.weight_v = nn.Parameter(init.weight.detach().clone())
        self.weight_g = nn.Parameter(init.weight.detach().norm().reshape(()))
        self.bias = nn.Parameter(init.bias.detach().clone()) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / torch.linalg.vector_norm(self.weight_v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, padding=self.padding)


def pooled_length(length: int) -> int:
    """Positions left after AdaptiveAvgPool1d(length // 2) then MaxPool1d(4, stride 2, padding 1)."""
    return (length // 2 + 2 - 4) // 2 + 1


@register_network(NETWORK_NAME)
class Cnn1dNet(nn.Module):
    """The 2nd place's 1D-CNN; full size: ``channels=256, length=16`` (a 4096-wide dense
    layer), ``conv_channels=512``.

    * ``dense``: BN(n_in), Dropout, WN Linear(n_in -> channels x length), CELU(alpha);
      reshaped to (channels, length)
    * ``conv1``: BN, Dropout, WN Conv1d(channels -> conv_channels, k5, p2, no bias), ReLU,
      AdaptiveAvgPool1d(length // 2)
    * ``conv2``: BN, Dropout, WN Conv1d(k3, p1), ReLU  -> the skip tensor S
    * ``conv3``: BN, Dropout, WN Conv1d(k3, p1), ReLU
    * ``conv4``: BN, Dropout, WN Conv1d(k5, p2), ReLU  -> B
    * ``B * S`` (multiplicative skip), MaxPool1d(4, stride 2, padding 1), flatten
    * ``head``: BN, Dropout; ``output``: WN Linear(conv_channels x pooled length -> n_out)

    The conv weight norms are over the whole kernel, the linear ones per output unit.
    :meth:`replace_output` swaps ``output`` for a new layer (transfer to other targets).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        channels: int = 256,
        length: int = 16,
        conv_channels: int = 512,
        dropouts: tuple[float, ...] | list[float] = (0.1, 0.1, 0.1, 0.3, 0.2, 0.2),
        celu_alpha: float = 0.06,
    ) -> None:
        super().__init__()
        if len(dropouts) != 6:
            raise ValueError(f"the 1D-CNN takes 6 dropout rates (dense, conv1..conv4, head), got {len(dropouts)}")
        if length < 4 or length % 2:
            raise ValueError(f"length must be even and at least 4, got {length}")
        self.n_in, self.n_out = n_in, n_out
        self.channels, self.length, self.conv_channels = channels, length, conv_channels
        d = list(dropouts)

        def drop(p: float) -> nn.Module:
            return FastDropout(p) if p > 0 else nn.Identity()

        def conv_block(n_from: int, kernel: int, p: float, bias: bool = True) -> list[nn.Module]:
            return [nn.BatchNorm1d(n_from), drop(p), WeightNormConv1d(n_from, conv_channels, kernel, kernel // 2, bias),
                    nn.ReLU()]

        self.dense = nn.Sequential(nn.BatchNorm1d(n_in), drop(d[0]), WeightNormLinear(n_in, channels * length),
                                   nn.CELU(alpha=celu_alpha))
        self.conv1 = nn.Sequential(*conv_block(channels, 5, d[1], bias=False), nn.AdaptiveAvgPool1d(length // 2))
        self.conv2 = nn.Sequential(*conv_block(conv_channels, 3, d[2]))
        self.conv3 = nn.Sequential(*conv_block(conv_channels, 3, d[3]))
        self.conv4 = nn.Sequential(*conv_block(conv_channels, 5, d[4]))
        self.pool = nn.MaxPool1d(kernel_size=4, stride=2, padding=1)
        self.n_flat = conv_channels * pooled_length(length)
        self.head = nn.Sequential(nn.BatchNorm1d(self.n_flat), drop(d[5]))
        self.output = WeightNormLinear(self.n_flat, n_out)

    def replace_output(self, n_out: int) -> None:
        """Transfer: a fresh output layer for ``n_out`` targets (the rest is kept)."""
        self.n_out = n_out
        self.output = WeightNormLinear(self.n_flat, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense(x).reshape(x.shape[0], self.channels, self.length)
        skip = self.conv2(self.conv1(x))
        x = self.conv4(self.conv3(skip)) * skip
        x = self.pool(x).flatten(1)
        return self.output(self.head(x))


# --------------------------------------------------------------------------- targets and loss


def select_aux_targets(Y: np.ndarray, Y_aux: np.ndarray, quantile: float = 0.9) -> np.ndarray:
    """Indices of the auxiliary (non-scored) columns whose largest absolute Pearson
    correlation with any column of ``Y`` (the scored targets) is above the ``quantile``
    quantile of that statistic over the auxiliary columns.

    Computed on the rows given (the caller passes the fold's training rows only). A column
    that is constant on these rows has no correlation: a constant auxiliary column is never
    chosen and takes no part in the quantile (the notebook dropped such rows of its
    correlation table), a constant scored column is ignored.
    """
    Y = np.asarray(Y, np.float64)
    A = np.asarray(Y_aux, np.float64)
    if len(Y) != len(A):
        raise ValueError(f"scored and auxiliary targets have {len(Y)} and {len(A)} rows")
    if A.shape[1] == 0 or len(Y) < 2:
        return np.zeros(0, np.int64)

    def standardised(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centred = M - M.mean(axis=0)
        norm = np.sqrt((centred ** 2).sum(axis=0))
        ok = norm > 0
        return centred[:, ok] / norm[ok], ok

    Zy, y_ok = standardised(Y)
    Za, a_ok = standardised(A)
    if Zy.shape[1] == 0 or Za.shape[1] == 0:
        return np.zeros(0, np.int64)
    max_abs = np.abs(Za.T @ Zy).max(axis=1)  # one value per non-constant auxiliary column
    chosen = max_abs > np.quantile(max_abs, quantile)
    return np.flatnonzero(a_ok)[chosen]


def positive_weights(Y: np.ndarray, offset: float = 100.0) -> np.ndarray:
    """Per-target pos_weight: ``w = log(n_pos + offset)``, ``min(w) / w`` (the rarest target's
    positives weigh 1, a frequent target's less)."""
    n_pos = np.asarray(Y, np.float64).sum(axis=0)
    w = np.log(n_pos + offset)
    return (w.min() / w).astype(np.float32)


# --------------------------------------------------------------------------- params


class NetworkConfig(BaseModel):
    """Sizes of :class:`Cnn1dNet` (full profile: the notebook's)."""

    model_config = ConfigDict(extra="forbid")

    channels: int = Field(256, ge=1)
    length: int = Field(16, ge=4)
    conv_channels: int = Field(512, ge=1)
    dropouts: list[float] = [0.1, 0.1, 0.1, 0.3, 0.2, 0.2]  # dense, conv1, conv2, conv3, conv4, head
    celu_alpha: float = Field(0.06, gt=0)
    # a joint head in the scored phase (3rd place): the scored and ALL non-scored targets,
    # loss joint_scored_weight x mean BCE(scored) + the rest x mean BCE(non-scored); judged
    # and predicted on the scored part only
    joint_nonscored_head: bool = False
    joint_scored_weight: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "NetworkConfig":
        if len(self.dropouts) != 6:
            raise ValueError(f"dropouts: 6 rates (dense, conv1..conv4, head), got {len(self.dropouts)}")
        if self.length % 2:
            raise ValueError(f"length: must be even, got {self.length}")
        return self


class AuxConfig(BaseModel):
    """The auxiliary (non-scored) phase: which targets, how long, and its training."""

    model_config = ConfigDict(extra="forbid")

    quantile: float = Field(0.9, gt=0, lt=1)  # keep the columns above this quantile of max |corr|
    epochs: int = Field(1, ge=0)  # epochs run (0: no auxiliary phase) of a schedule of train.epochs
    train: TrainParams = TrainParams(epochs=25, batch_size=128, lr=1e-3, weight_decay=1e-4, max_lr=1e-4,
                                     div_factor=1e5, pct_start=0.1, smoothing=0.0)


_SCORED = TrainParams(epochs=25, batch_size=128, lr=1e-3, weight_decay=1e-5, max_lr=1e-2, div_factor=1e3,
                      pct_start=0.1, smoothing=0.001)


class Cnn1dParams(ModelParams):
    features: PipelineConfig
    fold_features: PipelineConfig
    network: NetworkConfig = NetworkConfig()
    aux: AuxConfig = AuxConfig()
    train: TrainParams = _SCORED
    pos_weight_offset: float | None = Field(100.0, gt=0)  # None: no pos_weight

    @model_validator(mode="after")
    def _fold_features_on_train(self) -> "Cnn1dParams":
        ff = self.fold_features
        if ff.fit_on != "train" or any(s.fit_on == "train+test" for s in ff.steps):
            raise ValueError("fold_features: fitted on the fold's training rows only, so fit_on must be 'train' "
                             "(for the pipeline and every step)")
        return self


# --------------------------------------------------------------------------- estimator


def split_blocks(X: np.ndarray, layout: list[tuple[str, int]]) -> Blocks:
    """The stage matrix back into its named blocks (``layout``: (name, width) in order)."""
    X = np.asarray(X, np.float32)
    width = sum(w for _, w in layout)
    if X.ndim != 2 or X.shape[1] != width:
        raise ValueError(f"the 1D-CNN expects {width} stage columns {layout}, got shape {X.shape}")
    out, start = {}, 0
    for name, w in layout:
        out[name] = X[:, start:start + w]
        start += w
    return out


@register_estimator("cnn1d")
class Cnn1dEstimator:
    """One fold: its fitted fold features (quantile + PCA) and its network.

    Saved as ``spec.json`` (the stage layout, info), ``features/`` (a features.Pipeline) and
    ``network/`` (a TorchEstimator, saved without the info: it is this estimator's, stored
    once). Its fold transform is shared by content where equal (:mod:`moakit.fold_transforms`:
    ``transform`` then ``predict_transformed`` is ``predict_proba``)."""

    transform_folder = run_layout.ESTIMATOR_FEATURES

    def __init__(self, layout: list[tuple[str, int]], features: Pipeline, network: TorchEstimator,
                 info: dict | None = None) -> None:
        self.layout = [(str(n), int(w)) for n, w in layout]
        self.features = features
        self.network = network
        self.info = info or {}

    @property
    def eval_batch_size(self) -> int:
        return self.network.eval_batch_size

    @eval_batch_size.setter
    def eval_batch_size(self, value: int) -> None:
        self.network.eval_batch_size = int(value)

    @property
    def reads_row_count(self) -> bool:
        return self.features.reads_row_count

    @classmethod
    def transform_reads_row_count(cls, folder: Path) -> bool:
        return Pipeline.load(folder).reads_row_count

    def transform_signature(self) -> list:
        return [list(x) for x in self.layout]

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.features.transform(split_blocks(X, self.layout))

    def predict_transformed(self, Xt: np.ndarray) -> np.ndarray:
        return self.network.predict_proba(Xt)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.predict_transformed(self.transform(X))

    def save(self, path: Path) -> None:
        with atomic_dir(path) as tmp:
            (tmp / SPEC).write_text(json.dumps({"kind": self.kind, "layout": self.layout, "info": self.info}, indent=2))
            self.features.save(tmp / run_layout.ESTIMATOR_FEATURES)
            self.network.save(tmp / run_layout.ESTIMATOR_NETWORK, with_info=False)

    @classmethod
    def load(cls, path: Path) -> "Cnn1dEstimator":
        path = Path(path)
        spec = json.loads((path / SPEC).read_text())
        est = cls([tuple(x) for x in spec["layout"]], Pipeline.load(path / run_layout.ESTIMATOR_FEATURES),
                  TorchEstimator.load(path / run_layout.ESTIMATOR_NETWORK), spec.get("info"))
        est.network.info = est.info  # one dict, as when it was trained
        return est


# --------------------------------------------------------------------------- training


class _StopPhase(Exception):
    """Raised from the epoch callback to end a phase before its schedule does."""


def _phase(on_epoch: EpochCallback | None, phase: str, stop_after: int | None = None) -> EpochCallback:
    seen = [0]

    def callback(record: dict) -> None:
        seen[0] += 1
        if on_epoch is not None:
            on_epoch({**record, "phase": phase})
        if stop_after is not None and seen[0] >= stop_after:
            raise _StopPhase

    return callback


def fit_cnn1d(
    params: Cnn1dParams,
    layout: list[tuple[str, int]],
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_valid: np.ndarray | None,
    Y_valid: np.ndarray | None,
    seed: int,
    Y_aux_train: np.ndarray | None = None,
    on_epoch: EpochCallback | None = None,
    controls: tuple[np.ndarray, np.ndarray] | None = None,
    replay: Replay | None = None,
) -> Cnn1dEstimator:
    """One fold (see the module docstring). (X_valid, Y_valid) are the judge rows of the
    selection policy (empty under ``last``); nothing here is fitted on them. ``controls``:
    (control rows in the stage's columns, their groups) for ``train.control_augment``, put
    through the fold features; ``replay``: the refit pass of ``holdout_refit`` (phase 1 has
    a fixed length and is rerun as it is)."""
    # fold features, fitted on the training rows only (an equal fit of another seed reused)
    features = fit_pipeline(params.fold_features, seed, [list(x) for x in layout], X_train,
                            lambda X: split_blocks(X, layout))
    Xt = features.transform(split_blocks(X_train, layout))
    ctl = None
    if params.train.control_augment > 0 and controls is not None and len(controls[0]):
        ctl = ControlRows(features.transform(split_blocks(controls[0], layout)), controls[1])
    judged = X_valid is not None and len(X_valid) > 0
    Xv = features.transform(split_blocks(X_valid, layout)) if judged else None
    Yv = np.asarray(Y_valid, np.float32) if judged else None
    Y_train = np.asarray(Y_train, np.float32)

    net = params.network
    kwargs = {"n_in": int(Xt.shape[1]), "n_out": int(Y_train.shape[1]), "channels": net.channels,
              "length": net.length, "conv_channels": net.conv_channels, "dropouts": list(net.dropouts),
              "celu_alpha": net.celu_alpha}
    info: dict = {"n_inputs": int(Xt.shape[1]), "n_fit_rows": int(len(Xt))}

    # phase 1: the auxiliary non-scored targets, chosen on the training rows
    aux = np.zeros(0, np.int64)
    if params.aux.epochs > 0 and Y_aux_train is not None:
        aux = select_aux_targets(Y_train, Y_aux_train, params.aux.quantile)
    info["aux_targets"] = [int(j) for j in aux]
    torch.manual_seed(seed)
    module: Cnn1dNet = build_network(NETWORK_NAME, {**kwargs, "n_out": max(len(aux), 1)})
    if len(aux):
        Y_aux = np.ascontiguousarray(np.asarray(Y_aux_train, np.float32)[:, aux])
        init_output_bias(module.output, Y_aux)
        # the schedule spans aux.train.epochs; only the first aux.epochs of it run
        try:
            fit_network(module, Xt, Y_aux, None, None, params.aux.train, seed=seed,
                        on_epoch=_phase(on_epoch, "nonscored", stop_after=params.aux.epochs))
        except _StopPhase:
            pass

    # phase 2: a new output layer, the scored targets (with a joint head: and the non-scored)
    n_scored, joint = Y_train.shape[1], net.joint_nonscored_head
    Y_fit, weights = joint_targets(Y_train, Y_aux_train, net.joint_scored_weight) if joint else (Y_train, None)
    torch.manual_seed(seed + 1)
    module.replace_output(Y_fit.shape[1])
    init_output_bias(module.output, Y_fit)
    pos_weight = None
    if params.pos_weight_offset is not None:  # per target set: the scored, the non-scored
        parts = [Y_fit[:, :n_scored]] + ([Y_fit[:, n_scored:]] if joint else [])
        pos_weight = np.concatenate([positive_weights(part, params.pos_weight_offset) for part in parts])
    result = fit_network(module, Xt, Y_fit, Xv, Yv, params.train, seed=seed + 1,
                         on_epoch=_phase(on_epoch, "scored"), pos_weight=pos_weight, replay=replay, controls=ctl,
                         target_weights=weights, judge_outputs=n_scored if joint else None)
    if joint:  # predictions: the scored outputs only
        module.output = keep_first_outputs(module.output, n_scored)
        module.n_out = n_scored
    module.eval()
    info.update(best_epoch=result.best_epoch, best_valid_loss=result.best_loss, scored_epochs=len(result.history),
                replay=result.replay().as_dict())
    network = TorchEstimator(NETWORK_NAME, kwargs, module, eval_batch_size=params.train.eval_batch_size, info=info)
    return Cnn1dEstimator(layout, features, network, info)


# --------------------------------------------------------------------------- the model


def stage_layout(features: Pipeline, declared: list[str] | None = None) -> list[tuple[str, int]]:
    """(block, width) of the stage matrix, in order; ``declared``: the blocks the stage's
    config outputs, those the panel lacks (e.g. ``c`` of a gene-only panel) with width 0."""
    blocks = list(declared) if declared is not None else list(features.config.output)
    return [(b, len(features.block_names_.get(b, ()))) for b in blocks]


@register
class Cnn1dModel(Model):
    """The 2nd place's 1D-CNN (config ``cnn1d``)."""

    name = "cnn1d"
    Params = Cnn1dParams
    supports_refit = True

    def stages(self):
        return [StageSpec("scored", targets="scored", aux_targets="nonscored")]

    def fit_features(self, stage, train: Blocks, test: Blocks, seed: int):
        return Pipeline.from_config(self.params.features, seed=seed).fit(train, test)

    def load_features(self, stage, path: Path):
        return Pipeline.load(path)

    def fit_fold(self, stage, X_train, Y_train, X_valid, Y_valid, ctx):
        # the stage's fitted features give the layout that splits X into the fold features' blocks
        layout = stage_layout(ctx.stage_features(self.name), self.params.features.output)
        params = self.fit_params(ctx)
        controls = None
        if params.train.control_augment > 0 and ctx.X_controls is not None:
            controls = (ctx.X_controls, ctx.control_groups if ctx.control_groups is not None
                        else np.zeros(len(ctx.X_controls), np.int64))

        def fit(X, Y, Xv, Yv, Y_aux, replay, on_epoch):
            return fit_cnn1d(params, layout, X, Y, Xv, Yv, ctx.seed, Y_aux, on_epoch, controls, as_replay(replay))

        return select_then_refit(fit, X_train, Y_train, X_valid, Y_valid, ctx)
