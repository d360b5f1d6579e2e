"""2-heads ResNet (write-up section "2-heads ResNet"; reference-facts "2-heads ResNet").

Two inputs feed a ResNet-like stack of dense blocks whose skip paths are concatenations:

* input A: every g- and c- feature, g_mean and c_mean, PCA 2 components of the genes and
  100 of the cells (fitted on the training rows), all standard-scaled (V2 also the one-hot
  cp_time / cp_dose);
* input B: the g- and c- features selected by a t-test between training rows with and
  without any scored MoA (p-value at or below the 25% quantile of the p-values).

The feature transform (unsupervised) lays out one matrix per row::

    X = [g_mean, c_mean, pca_g (2), pca_c (100), (cp one-hot, V2) | g (772), c (100)]
         <------------------ "extra" columns -------------------->   <- candidates ->

with every column standard-scaled; input A is all of X, input B is the candidate columns
that the t-test selects. The t-test uses labels, so it runs inside :meth:`fit_fold` on the
fold's training rows (never on the held-out fold), and the selected column indices are
saved with the network (its constructor kwargs), so a reloaded estimator slices the same
columns.

Training per fold (reference-facts): non-scored targets (phase 1), transfer to the scored
targets by replacing the output layer and training the whole net (phase 2), then loops of
one epoch at a time with everything up to r4's first Dense frozen (Adadelta lr 1e-3/3),
then everything unfrozen (Adadelta lr 1e-3/5), each stopping after 3 epochs without
improvement. OUT-OF-FOLD HONESTY: the public script ran its freeze/unfreeze loops on the
validation fold and kept weights while that fold's loss improved, so its OOF score was not a
hold-out score. Here every early-stopping / keep-if-better decision is judged on a seeded
split carved out of the TRAINING folds (``holdout_fraction``); the held-out fold
``X_valid`` is only used to report a loss once training is over.

Known differences from the Keras scripts: torch's Adadelta (rho 0.9, eps 1e-6; Keras 0.95,
1e-7) and BatchNorm (momentum 0.1, eps 1e-5; Keras 0.99 / 1e-3) defaults are kept; Dense
layers are initialised as in Keras (Glorot uniform, LeCun normal for SELU, zero bias); no
weight decay (Keras Adam has none).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats
from torch import nn

from moakit.features import Pipeline, PipelineConfig
from moakit.models.base import (
    Blocks, EpochCallback, Model, ModelParams, StageSpec, TorchEstimator, register,
)
from moakit.nn.blocks import build_network, register_network
from moakit.nn.train import TrainParams, fit_network, init_output_bias, predict_logits

NETWORK_NAME = "resnet_2heads"


# --------------------------------------------------------------------------- network


def _dense(n_in: int, n_out: int, init: str = "glorot") -> nn.Linear:
    """A Dense layer initialised as Keras does (the scored scripts were Keras): Glorot
    uniform, or LeCun normal for the SELU layers; zero biases."""
    layer = nn.Linear(n_in, n_out)
    if init == "lecun":
        nn.init.normal_(layer.weight, 0.0, math.sqrt(1.0 / n_in))
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


@register_network(NETWORK_NAME)
class ResNet2Heads(nn.Module):
    """Figure 9 of the write-up, as reference-facts spell it out.

    The write-up calls the skip paths residual; in the scripts that scored they are
    concatenations (no averaging, no sums), and that is what is built here:

    * a   = [BN, Dropout 0.2, Dense 512 ELU, BN, Dense 256 ELU](A)
    * r1  = [BN, Dropout 0.3, Dense 512 ReLU](a | B)
    * r2  = [BN, Dense 512 ELU, BN, Dense 256 ReLU](a | B | r1)
    * r3  = [BN, Dense 256 ELU](r1 | r2)
    * r3b = [BN, Dense 256 ReLU](r1 | r2 | r3)
    * r4  = [BN, Dense 256 SELU, BN, Dense 206 SELU](a | r2 | r3 | r3b)   (LeCun normal)
    * out = [BN, Dense n_out](r4)   (logits; the loss applies the sigmoid)

    The forward slices its one input: A is all ``n_in`` columns, B the columns
    ``n_extra + selected`` (``selected`` indexes the candidate block). ``set_frozen(True)``
    freezes everything up to and including r4's first Dense (reference-facts: "the first
    Dense of r4 is the last frozen layer"); frozen BatchNorms also stop updating their
    running statistics (Keras semantics of a non-trainable BatchNorm). ``replace_output``
    swaps the output layer (BN + Dense) for transfer to another target set.
    """

    def __init__(
        self,
        n_in: int,
        n_extra: int,
        selected: list[int],
        n_out: int,
        head_a: tuple[int, int] = (512, 256),
        r1: int = 512,
        r2: tuple[int, int] = (512, 256),
        r3: int = 256,
        r3b: int = 256,
        r4: tuple[int, int] = (256, 206),
        dropout_a: float = 0.2,
        dropout_r1: float = 0.3,
    ) -> None:
        super().__init__()
        if not selected:
            raise ValueError("the 2-heads ResNet needs at least one selected feature for input B")
        if n_extra + max(selected) >= n_in or min(selected) < 0:
            raise ValueError(f"selected feature indices out of range (n_in={n_in}, n_extra={n_extra})")
        self.n_in, self.n_extra, self.n_out = n_in, n_extra, n_out
        # Which columns of the input form input B; rebuilt from the kwargs on load.
        self.register_buffer("b_columns", torch.as_tensor([n_extra + i for i in selected], dtype=torch.long),
                             persistent=False)
        n_b = len(selected)
        self.head_a = nn.Sequential(
            nn.BatchNorm1d(n_in), nn.Dropout(dropout_a), _dense(n_in, head_a[0]), nn.ELU(),
            nn.BatchNorm1d(head_a[0]), _dense(head_a[0], head_a[1]), nn.ELU(),
        )
        n_a = head_a[1]
        self.r1 = nn.Sequential(nn.BatchNorm1d(n_a + n_b), nn.Dropout(dropout_r1), _dense(n_a + n_b, r1), nn.ReLU())
        n = n_a + n_b + r1
        self.r2 = nn.Sequential(
            nn.BatchNorm1d(n), _dense(n, r2[0]), nn.ELU(), nn.BatchNorm1d(r2[0]), _dense(r2[0], r2[1]), nn.ReLU(),
        )
        self.r3 = nn.Sequential(nn.BatchNorm1d(r1 + r2[1]), _dense(r1 + r2[1], r3), nn.ELU())
        n = r1 + r2[1] + r3
        self.r3b = nn.Sequential(nn.BatchNorm1d(n), _dense(n, r3b), nn.ReLU())
        n = n_a + r2[1] + r3 + r3b
        # r4 in two parts: r4_frozen ends with the last frozen layer (r4's first Dense).
        self.r4_frozen = nn.Sequential(nn.BatchNorm1d(n), _dense(n, r4[0], "lecun"))
        self.r4_rest = nn.Sequential(nn.SELU(), nn.BatchNorm1d(r4[0]), _dense(r4[0], r4[1], "lecun"), nn.SELU())
        self.n_r4 = r4[1]
        self.output = self._make_output(n_out)
        self.frozen = False

    def _make_output(self, n_out: int) -> nn.Sequential:
        return nn.Sequential(nn.BatchNorm1d(self.n_r4), _dense(self.n_r4, n_out))

    def frozen_modules(self) -> list[nn.Module]:
        """Everything up to and including r4's first Dense."""
        return [self.head_a, self.r1, self.r2, self.r3, self.r3b, self.r4_frozen]

    def set_frozen(self, frozen: bool) -> None:
        self.frozen = frozen
        for module in self.frozen_modules():
            for p in module.parameters():
                p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ResNet2Heads":
        super().train(mode)
        if mode and getattr(self, "frozen", False):
            for module in self.frozen_modules():
                for m in module.modules():
                    if isinstance(m, nn.BatchNorm1d):
                        m.eval()
        return self

    def replace_output(self, n_out: int) -> None:
        """Transfer: a fresh output layer (BN + Dense) for ``n_out`` targets."""
        self.n_out = n_out
        self.output = self._make_output(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.index_select(1, self.b_columns)
        a = self.head_a(x)
        r1 = self.r1(torch.cat([a, b], 1))
        r2 = self.r2(torch.cat([a, b, r1], 1))
        r3 = self.r3(torch.cat([r1, r2], 1))
        r3b = self.r3b(torch.cat([r1, r2, r3], 1))
        r4 = self.r4_rest(self.r4_frozen(torch.cat([a, r2, r3, r3b], 1)))
        return self.output(r4)


# --------------------------------------------------------------------------- t-test selection


def ttest_select(X: np.ndarray, has_moa: np.ndarray, quantile: float = 0.25, equal_var: bool = True) -> np.ndarray:
    """Indices of the columns of ``X`` whose t-test p-value (rows with vs without any MoA)
    is at or below the ``quantile`` quantile of all p-values.

    Student's t-test (``equal_var=True``, the write-up's "Student's t-test") by default;
    ``equal_var=False`` is Welch's. "At or below" rather than "below": on the real data a
    large share of the p-values underflow to exactly 0, so the 25% quantile is itself 0 and
    a strict comparison would select nothing; with ties at 0 the selection is larger than a
    quarter of the columns (447 of 872 on the real data). Constant columns (NaN p-value)
    are never selected.
    """
    has_moa = np.asarray(has_moa, bool)
    if has_moa.all() or not has_moa.any():
        raise ValueError("t-test selection needs training rows both with and without a scored MoA")
    with np.errstate(all="ignore"):
        _, p = stats.ttest_ind(X[has_moa], X[~has_moa], axis=0, equal_var=equal_var)
    p = np.where(np.isfinite(p), p, np.inf)
    finite = p[np.isfinite(p)]
    if finite.size == 0:
        raise ValueError("t-test selection: every candidate column is constant")
    threshold = np.quantile(finite, quantile)
    return np.flatnonzero(p <= threshold)


# --------------------------------------------------------------------------- params


class NetworkConfig(BaseModel):
    """Layer widths of Figure 9 (full profile: the scripts' sizes)."""

    model_config = ConfigDict(extra="forbid")

    head_a: tuple[int, int] = (512, 256)
    r1: int = 512
    r2: tuple[int, int] = (512, 256)
    r3: int = 256
    r3b: int = 256
    r4: tuple[int, int] = (256, 206)
    dropout_a: float = 0.2
    dropout_r1: float = 0.3


class FeatureConfig(BaseModel):
    """Input A's engineered columns; the layout is fixed by the network's two heads."""

    model_config = ConfigDict(extra="forbid")

    pca_genes: int = Field(2, ge=0)
    pca_cells: int = Field(100, ge=0)
    fit_on: Literal["train", "train+test"] = "train"  # the PCA / scalers: fitted on the training rows


class SelectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantile: float = Field(0.25, gt=0, le=1)
    equal_var: bool = True  # Student's t-test; False = Welch's


_PHASE = dict(optimizer="adam", lr=1e-3, weight_decay=0.0, scheduler="plateau", plateau_factor=0.5,
              plateau_patience=4, epochs=50, batch_size=128, smoothing=0.0005, patience=10, min_delta=1e-5,
              restore_best=True)
_LOOP = dict(optimizer="adadelta", weight_decay=0.0, scheduler="none", epochs=100, batch_size=128,
             smoothing=0.0005, patience=3, min_delta=1e-6, restore_best=True)


_PHASE_DEFAULTS = {"nonscored": _PHASE, "scored": _PHASE, "frozen": {**_LOOP, "lr": 1e-3 / 3},
                   "unfrozen": {**_LOOP, "lr": 1e-3 / 5}}


class ResNet2HeadsParams(ModelParams):
    """Defaults are the full profile. A phase given as a partial mapping (``{epochs: 3}``)
    keeps that phase's own defaults for the keys it leaves out (not TrainParams')."""

    include_cp: bool = False  # V2: one-hot cp_time / cp_dose join input A
    holdout_fraction: float = Field(0.15, gt=0, lt=0.5)  # of the training folds, for early stopping
    features: FeatureConfig = FeatureConfig()
    selection: SelectionConfig = SelectionConfig()
    network: NetworkConfig = NetworkConfig()
    nonscored: TrainParams = TrainParams(**_PHASE_DEFAULTS["nonscored"])
    scored: TrainParams = TrainParams(**_PHASE_DEFAULTS["scored"])
    frozen: TrainParams = TrainParams(**_PHASE_DEFAULTS["frozen"])
    unfrozen: TrainParams = TrainParams(**_PHASE_DEFAULTS["unfrozen"])

    @model_validator(mode="before")
    @classmethod
    def _phase_defaults(cls, data):
        if isinstance(data, dict):
            given = {k: {**d, **data[k]} for k, d in _PHASE_DEFAULTS.items() if isinstance(data.get(k), dict)}
            data = {**data, **given}
        return data


# --------------------------------------------------------------------------- features


def n_extra_columns(params: ResNet2HeadsParams) -> int:
    """Width of the non-candidate part of X (means, PCAs, optional cp one-hot)."""
    return 2 + params.features.pca_genes + params.features.pca_cells + (5 if params.include_cp else 0)


def pipeline_config(params: ResNet2HeadsParams):
    """The features.Pipeline producing X = [g_mean, c_mean, pca_g, pca_c, (cp) | g, c]."""
    f = params.features
    steps = [{"kind": "row_mean", "name": "means", "inputs": ["g", "c"], "output": "means"}]  # g_mean, c_mean
    extra = ["means"]
    if f.pca_genes:
        steps.append({"kind": "pca", "name": "pca_g", "inputs": ["g"], "output": "pca_g", "n_components": f.pca_genes})
        extra.append("pca_g")
    if f.pca_cells:
        steps.append({"kind": "pca", "name": "pca_c", "inputs": ["c"], "output": "pca_c", "n_components": f.pca_cells})
        extra.append("pca_c")
    steps.append({"kind": "standard_scaler", "name": "scale", "inputs": [*extra, "g", "c"]})
    if params.include_cp:
        extra.append("cp")
    return PipelineConfig(fit_on=f.fit_on, steps=steps, output=[*extra, "g", "c"])


# --------------------------------------------------------------------------- training


def _holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, holdout rows) of the training folds: seeded, disjoint, both non-empty."""
    if n < 4:
        raise ValueError(f"too few training rows ({n}) to carve an early-stopping holdout")
    order = np.random.default_rng(seed).permutation(n)
    n_hold = min(max(2, int(round(fraction * n))), n - 2)
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def _holdout_loss(module: nn.Module, X: np.ndarray, Y: np.ndarray, batch_size: int) -> float:
    logits = torch.from_numpy(predict_logits(module, X, batch_size))
    return float(nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(Y).float()))


def _with_phase(on_epoch: EpochCallback | None, phase: str) -> EpochCallback | None:
    if on_epoch is None:
        return None
    return lambda record: on_epoch({**record, "phase": phase})


def fit_resnet_2heads(
    params: ResNet2HeadsParams,
    X_train: np.ndarray,
    Y_train: np.ndarray,
    seed: int,
    Y_aux_train: np.ndarray | None = None,
    on_epoch: EpochCallback | None = None,
) -> TorchEstimator:
    """Train one fold's network on the training folds only (see the module docstring)."""
    X_train = np.ascontiguousarray(X_train, dtype=np.float32)
    Y_train = np.ascontiguousarray(Y_train, dtype=np.float32)
    n_extra = n_extra_columns(params)
    if X_train.shape[1] <= n_extra:
        raise ValueError(f"X has {X_train.shape[1]} columns; the 2-heads layout needs more than {n_extra}")
    fit, hold = _holdout_split(len(X_train), params.holdout_fraction, seed)
    X_fit, X_hold = X_train[fit], X_train[hold]
    Y_fit, Y_hold = Y_train[fit], Y_train[hold]

    # Input B: supervised selection on the fit rows of the training folds only.
    selected = ttest_select(X_fit[:, n_extra:], Y_fit.sum(axis=1) > 0,
                            params.selection.quantile, params.selection.equal_var)

    net = params.network
    kwargs = {"n_in": int(X_train.shape[1]), "n_extra": n_extra, "selected": [int(i) for i in selected],
              "n_out": int(Y_train.shape[1]), "head_a": list(net.head_a), "r1": net.r1, "r2": list(net.r2),
              "r3": net.r3, "r3b": net.r3b, "r4": list(net.r4), "dropout_a": net.dropout_a,
              "dropout_r1": net.dropout_r1}
    info: dict = {"n_selected": len(selected), "n_fit_rows": len(fit), "n_holdout_rows": len(hold)}

    # Phase 1: the non-scored targets that have a positive among the fit rows.
    aux_cols = np.zeros(0, int)
    if Y_aux_train is not None:
        Y_aux_train = np.ascontiguousarray(Y_aux_train, dtype=np.float32)
        aux_cols = np.flatnonzero(Y_aux_train[fit].sum(axis=0) > 0)
    torch.manual_seed(seed)
    module: ResNet2Heads = build_network(NETWORK_NAME, {**kwargs, "n_out": max(len(aux_cols), 1)})
    if len(aux_cols):
        init_output_bias(module.output[1], Y_aux_train[fit][:, aux_cols])
        r = fit_network(module, X_fit, Y_aux_train[fit][:, aux_cols], X_hold, Y_aux_train[hold][:, aux_cols],
                        params.nonscored, seed=seed, on_epoch=_with_phase(on_epoch, "nonscored"))
        info.update(n_nonscored_targets=len(aux_cols), nonscored_epochs=len(r.history),
                    nonscored_best_epoch=r.best_epoch, nonscored_best_loss=r.best_loss)
        torch.manual_seed(seed + 1)
        module.replace_output(Y_train.shape[1])  # transfer: a new output layer for the scored targets
    else:
        info["n_nonscored_targets"] = 0
        torch.manual_seed(seed + 1)
        module.replace_output(Y_train.shape[1])
    init_output_bias(module.output[1], Y_fit)

    # Phase 2: the whole net on the scored targets.
    r = fit_network(module, X_fit, Y_fit, X_hold, Y_hold, params.scored, seed=seed + 1,
                    on_epoch=_with_phase(on_epoch, "scored"))
    info.update(scored_epochs=len(r.history), scored_best_epoch=r.best_epoch, scored_best_loss=r.best_loss)

    # Then the frozen loop, then the unfrozen loop: one epoch at a time, stop after
    # `patience` epochs without improvement, and keep the new weights only if they beat
    # the ones the loop started from (all judged on the holdout of the training folds).
    for phase, frozen, p, offset in (("frozen", True, params.frozen, 2), ("unfrozen", False, params.unfrozen, 3)):
        before = _holdout_loss(module, X_hold, Y_hold, p.eval_batch_size)
        start_state = copy.deepcopy(module.state_dict())
        module.set_frozen(frozen)
        r = fit_network(module, X_fit, Y_fit, X_hold, Y_hold, p, seed=seed + offset,
                        on_epoch=_with_phase(on_epoch, phase))
        improved = r.best_loss < before - p.min_delta
        if not improved:
            module.load_state_dict(start_state)
        info.update({f"{phase}_epochs": len(r.history), f"{phase}_kept": bool(improved),
                     f"{phase}_loss": r.best_loss if improved else before})
    module.set_frozen(False)
    module.eval()
    info["holdout_loss"] = _holdout_loss(module, X_hold, Y_hold, params.scored.eval_batch_size)
    return TorchEstimator(NETWORK_NAME, kwargs, module, eval_batch_size=params.scored.eval_batch_size, info=info)


# --------------------------------------------------------------------------- the model


@register
class ResNet2HeadsModel(Model):
    """The 2-heads ResNet model (V1; V2 is the config ``resnet_2heads_v2``: include_cp, batch 64)."""

    name = "resnet_2heads"
    Params = ResNet2HeadsParams

    def stages(self):
        return [StageSpec("scored", targets="scored", aux_targets="nonscored")]

    def fit_features(self, stage, train: Blocks, test: Blocks, seed: int):
        pipeline = Pipeline.from_config(pipeline_config(self.params), seed=seed).fit(train, test)
        width = pipeline.n_features_out_
        expected = n_extra_columns(self.params) + train["g"].shape[1] + train["c"].shape[1]
        if width != expected:
            raise ValueError(f"2-heads feature layout: expected {expected} columns, the pipeline gave {width}")
        return pipeline

    def load_features(self, stage, path: Path):
        return Pipeline.load(path)

    def fit_fold(self, stage, X_train, Y_train, X_valid, Y_valid, seed, on_epoch=None, Y_aux_train=None):
        est = fit_resnet_2heads(self.params, X_train, Y_train, seed, Y_aux_train, on_epoch)
        # The held-out fold is looked at only now, to report its loss: it decided nothing.
        if len(X_valid):
            p = np.clip(est.predict_proba(X_valid).astype(np.float64), 1e-15, 1 - 1e-15)
            Y = np.asarray(Y_valid, np.float64)
            est.info["valid_loss"] = float(-np.mean(Y * np.log(p) + (1 - Y) * np.log(1 - p)))
        return est

    def load_estimator(self, stage, path: Path):
        return TorchEstimator.load(path)
