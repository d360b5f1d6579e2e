"""2-heads ResNet (write-up section "2-heads ResNet"; the winners' scripts
final/Best LB/Training/Local/2heads-ResNest-train.py (V1) and
final/Best CV/Training/2heads-resnest-train.ipynb (V2)).

Two inputs feed a ResNet-like stack of dense blocks whose skip paths are concatenations:

* input A: every g- and c- feature (V2 also the one-hot cp_time / cp_dose), g_mean and
  c_mean, all standard-scaled, then PCA of the scaled genes and of the scaled cells
  (V1: 2 and 100 components, V2: 50 and 50), appended unscaled;
* input B: the g- and c- features selected by a t-test between training rows with and
  without any scored MoA (p-value at or below the 25% quantile of the p-values).

The feature transform (unsupervised) lays out one matrix per row, in the scripts' order::

    X = [g (772), c (100) | (cp one-hot, V2), g_mean, c_mean, pca_g, pca_c]
         <- candidates ->   <----------------- "extra" columns ----------->

input A is all of X, input B is the candidate columns that the t-test selects. The t-test
uses labels, so it runs inside :meth:`fit_fold` on the fold's training rows (never on the
held-out fold), and the selected column indices are saved with the network (its
constructor kwargs), so a reloaded estimator slices the same columns. (The scripts read a
fixed list of 447 columns, 347 g and 100 c, from a public t-test kernel's
main_predictors.json, computed once on all training rows, validation folds included.)

Training per fold, as the scripts: all non-scored targets (phase 1), transfer to the scored
targets by replacing the output layer and training the whole net (phase 2), both Adam 1e-3
with ReduceLROnPlateau and early stopping; then the scripts' outer loop: a frozen pass
(Adadelta lr 1e-3/3) then an unfrozen pass (Adadelta lr 1e-3/5), repeated while the
unfrozen pass improves. A pass trains one epoch at a time: it always runs ``patience`` (3)
epochs, then stops at the first epoch that does not improve the best loss so far by
``min_delta``, and ends with the best weights so far.

The network itself is in :mod:`moakit.models.resnet_2heads_net`; this module is the
model: t-test selection, params, features and the training schedule.

Deviations, each a fix of a defect of the scripts:

* OUT-OF-FOLD HONESTY: the scripts' loop passes TRAINED on the validation fold and kept
  weights while that fold's loss improved, so their OOF score was not a hold-out score.
  Here every early-stopping / keep-if-better decision is judged on the judge rows of the
  runner's selection policy (by default a holdout carved out of the TRAINING folds, see
  moakit.config.SelectionConfig), and the loop passes train on the rest of the training
  folds; the fold whose predictions become out-of-fold decides nothing.
* the frozen pass: the scripts looked for the layer named "last_frozen" among the model's
  top-level layers, but it sits inside a nested block, so the loop froze EVERY layer and
  the frozen pass changed nothing. Here the freeze is applied as written: every layer
  before r4's first Dense (the "last_frozen" layer) is frozen, from it on trainable.

Kept from Keras (the scripts' framework): Dense layers initialised as Keras does (Glorot
uniform, truncated LeCun normal for SELU, zero bias), BatchNorm momentum 0.99 / eps 1e-3,
Adadelta rho 0.95 / eps 1e-7, Adam eps 1e-7, ReduceLROnPlateau with an absolute 1e-4
threshold; no weight decay (Keras Adam has none). Not kept: a new output layer's bias
starts at each target's training log-odds (moakit's start of every network; the scripts'
started at 0, i.e. probability 0.5), and losses are judged on the raw targets (the
scripts' Keras ``val_loss`` smoothed the validation targets by 0.0005 too).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats
from torch import nn

from moakit.features import Pipeline, PipelineConfig
from moakit.models.base import (
    Blocks, EpochCallback, Model, ModelParams, StageSpec, TorchEstimator, register,
)
from moakit.nn.blocks import build_network
from moakit.models.quality import as_replay, select_then_refit
from moakit.models.resnet_2heads_net import NETWORK_NAME, ResNet2Heads
from moakit.nn.train import Replay, TrainParams, fit_network, init_output_bias, predict_logits


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
    fit_on: Literal["train", "train+test"] = "train"  # the scaler / PCAs: fitted on the training rows
    # the PCAs' sklearn svd_solver: "covariance_eigh" is exact (no random state, so every seed
    # shares one fit) and is what "auto" runs at the full profile's shapes (under 1,000
    # columns, over 10x as many rows); "auto" / "randomized" draw from the run seed
    pca_solver: Literal["covariance_eigh", "full", "auto", "randomized", "arpack"] = "covariance_eigh"


class SelectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantile: float = Field(0.25, gt=0, le=1)
    equal_var: bool = True  # Student's t-test; False = Welch's


# Keras's constants (the scripts' framework), in torch's terms: BatchNorm momentum 0.99 ->
# 0.01, eps 1e-3; ReduceLROnPlateau: an absolute 1e-4 threshold, and it halves the rate on
# the 4th epoch without improvement (torch's patience counts one more: 4 -> 3).
KERAS_BN = {"bn_momentum": 0.01, "bn_eps": 1e-3}
_PHASE = dict(optimizer="adam", lr=1e-3, weight_decay=0.0, optimizer_eps=1e-7, scheduler="plateau",
              plateau_factor=0.5, plateau_patience=3, plateau_threshold=1e-4, plateau_threshold_mode="abs",
              epochs=50, batch_size=128, smoothing=0.0005, patience=10, min_delta=1e-5, restore_best=True)
_LOOP = dict(optimizer="adadelta", weight_decay=0.0, optimizer_eps=1e-7, adadelta_rho=0.95, scheduler="none",
             epochs=100, batch_size=128, smoothing=0.0005, patience=3, min_delta=1e-6, restore_best=True)


_PHASE_DEFAULTS = {"nonscored": _PHASE, "scored": _PHASE, "frozen": {**_LOOP, "lr": 1e-3 / 3},
                   "unfrozen": {**_LOOP, "lr": 1e-3 / 5}}


class ResNet2HeadsParams(ModelParams):
    """Defaults are the full profile. A phase given as a partial mapping (``{epochs: 3}``)
    keeps that phase's own defaults for the keys it leaves out (not TrainParams').

    ``frozen`` / ``unfrozen`` are the loop passes: ``epochs`` caps one pass, ``patience``
    is the number of epochs a pass always runs, ``min_delta`` the improvement that counts;
    ``max_loops`` caps the outer loop (the scripts had no cap)."""

    include_cp: bool = False  # V2: one-hot cp_time / cp_dose join input A
    max_loops: int = Field(50, ge=1)
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
        if isinstance(data, dict) and "holdout_fraction" in data:
            raise ValueError("params.holdout_fraction is not a 2-heads ResNet setting (it was never used: the run's "
                             "selection policy gives the judge rows); set selection.holdout_fraction instead")
        if isinstance(data, dict):
            given = {k: {**d, **data[k]} for k, d in _PHASE_DEFAULTS.items() if isinstance(data.get(k), dict)}
            data = {**data, **given}
        return data


# --------------------------------------------------------------------------- features


def n_extra_columns(params: ResNet2HeadsParams) -> int:
    """Width of the non-candidate part of X (cp one-hot, means, PCAs)."""
    return 2 + params.features.pca_genes + params.features.pca_cells + (5 if params.include_cp else 0)


def panel_extra_columns(params: ResNet2HeadsParams, blocks: Blocks) -> int:
    """:func:`n_extra_columns` on the panel of ``blocks``: a mean and a PCA per non-empty
    g / c block, the cp one-hot as wide as the data's (5 on lish-moa)."""
    f = params.features
    widths = {b: blocks[b].shape[1] if b in blocks else 0 for b in ("g", "c", "cp")}
    return ((widths["g"] > 0) + (widths["c"] > 0) + (f.pca_genes if widths["g"] else 0)
            + (f.pca_cells if widths["c"] else 0) + (widths["cp"] if params.include_cp else 0))


def pipeline_config(params: ResNet2HeadsParams, optional_cells: bool = False):
    """The features.Pipeline producing X = [g, c, (cp), g_mean, c_mean, pca_g, pca_c], as the
    scripts: means of the raw rows, then every column standard-scaled, then the PCAs of the
    scaled genes and cells (not scaled again). ``optional_cells``: the cell PCA is skipped
    where the panel has no cell columns (a gene-only panel)."""
    f = params.features
    steps = [{"kind": "row_mean", "name": "means", "inputs": ["g", "c"], "output": "means"}]  # g_mean, c_mean
    scaled = ["g", "c", *(["cp"] if params.include_cp else []), "means"]
    steps.append({"kind": "standard_scaler", "name": "scale", "inputs": scaled})
    output = list(scaled)
    if f.pca_genes:
        steps.append({"kind": "pca", "name": "pca_g", "inputs": ["g"], "output": "pca_g", "n_components": f.pca_genes,
                      "svd_solver": f.pca_solver})
        output.append("pca_g")
    if f.pca_cells:
        steps.append({"kind": "pca", "name": "pca_c", "inputs": ["c"], "output": "pca_c", "n_components": f.pca_cells,
                      "svd_solver": f.pca_solver, **({"optional": True} if optional_cells else {})})
        output.append("pca_c")
    return PipelineConfig(fit_on=f.fit_on, steps=steps, output=output)


# --------------------------------------------------------------------------- training


# the judge rows a direct call of fit_resnet_2heads without ``judge`` carves from its training
# rows (a run always passes the rows of its selection policy: selection.holdout_fraction)
DIRECT_HOLDOUT = 0.15


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


class _PassOver(Exception):
    """Raised from the epoch callback when a loop pass's stopping rule says stop."""


def loop_pass(module: nn.Module, X_fit, Y_fit, X_hold, Y_hold, p: TrainParams, seed: int, best: float,
              on_epoch: EpochCallback | None = None) -> dict:
    """One pass of the scripts' keep-if-better loop, one epoch at a time (one optimiser
    for the pass, as a Keras model compiled once and fitted an epoch per call).

    An epoch improves when it lowers the best loss so far (``best``, carried between
    passes) by at least ``p.min_delta``. The pass always runs ``p.patience`` epochs, then
    stops at the first epoch that does not improve (the scripts' counter counted every
    epoch and was never reset), or after ``p.epochs``. It ends with the best weights so far:
    this pass's best epoch, or the weights it started from. Returns
    ``{"best", "improved", "epochs"}``.
    """
    start = copy.deepcopy(module.state_dict())
    state = {"best": best, "weights": None, "improved": 0, "epochs": 0, "kept": 0}

    def judge(record: dict) -> None:
        if on_epoch is not None:
            on_epoch(record)
        state["epochs"] += 1
        loss = record["valid_loss"]
        if state["best"] - loss >= p.min_delta:
            state.update(best=loss, weights=copy.deepcopy(module.state_dict()), improved=state["improved"] + 1,
                         kept=state["epochs"])
        elif state["epochs"] > (p.patience or 0):
            raise _PassOver

    try:
        fit_network(module, X_fit, Y_fit, X_hold, Y_hold, p.model_copy(update={"patience": None, "restore_best": False}),
                    seed=seed, on_epoch=judge)
    except _PassOver:
        pass
    module.load_state_dict(state["weights"] if state["weights"] is not None else start)
    # kept: the epochs up to the weights the pass ends with (0: it ends where it started)
    return {"best": state["best"], "improved": state["improved"], "epochs": state["epochs"], "kept": state["kept"]}


class _Rows(NamedTuple):
    """The rows one fold trains on (fit) and judges by (hold), float32."""

    X_fit: np.ndarray
    Y_fit: np.ndarray
    Y_aux_fit: np.ndarray | None
    X_hold: np.ndarray
    Y_hold: np.ndarray
    Y_aux_hold: np.ndarray | None


def _fit_and_judge_rows(params: ResNet2HeadsParams, X_train: np.ndarray, Y_train: np.ndarray,
                        Y_aux_train: np.ndarray | None, judge, seed: int) -> _Rows:
    """The judge rows given by the runner, or (a direct call without them) a seeded
    ``DIRECT_HOLDOUT`` of the training rows carved here (the rest are then the fit rows)."""
    if judge is None:
        fit, hold = _holdout_split(len(X_train), DIRECT_HOLDOUT, seed)
        return _Rows(X_train[fit], Y_train[fit], None if Y_aux_train is None else Y_aux_train[fit],
                     X_train[hold], Y_train[hold], None if Y_aux_train is None else Y_aux_train[hold])
    X_hold, Y_hold, Y_aux_hold = judge
    if len(X_hold) == 0:
        raise ValueError("the 2-heads ResNet judges its early stopping and freeze/unfreeze loops on held-out "
                         "rows: use the selection policy holdout (or oof), not last")
    return _Rows(X_train, Y_train, Y_aux_train, np.ascontiguousarray(X_hold, dtype=np.float32),
                 np.ascontiguousarray(Y_hold, dtype=np.float32), Y_aux_hold)


def _network_kwargs(params: ResNet2HeadsParams, n_in: int, n_extra: int, selected: np.ndarray, n_out: int) -> dict:
    """The network's constructor kwargs, saved with it (the selected columns included)."""
    net = params.network
    return {"n_in": int(n_in), "n_extra": n_extra, "selected": [int(i) for i in selected],
            "n_out": int(n_out), "head_a": list(net.head_a), "r1": net.r1, "r2": list(net.r2),
            "r3": net.r3, "r3b": net.r3b, "r4": list(net.r4), "dropout_a": net.dropout_a,
            "dropout_r1": net.dropout_r1, "candidates_first": True, **KERAS_BN}


def _train_transfer_phases(params: ResNet2HeadsParams, kwargs: dict, rows: _Rows, seed: int,
                           on_epoch: EpochCallback | None, info: dict, replay: dict | None = None) -> ResNet2Heads:
    """Phase 1: the network on every non-scored target (the scripts' Y0 kept the all-zero
    columns too); phase 2: a new output layer and the whole net on the scored targets."""
    n_aux = 0 if rows.Y_aux_fit is None else int(rows.Y_aux_fit.shape[1])
    torch.manual_seed(seed)
    module: ResNet2Heads = build_network(NETWORK_NAME, {**kwargs, "n_out": max(n_aux, 1)})
    info["n_nonscored_targets"] = n_aux
    if n_aux:
        Y_aux = np.ascontiguousarray(rows.Y_aux_fit, dtype=np.float32)
        Y_aux_hold = np.ascontiguousarray(rows.Y_aux_hold, dtype=np.float32)
        init_output_bias(module.output[1], Y_aux)
        r = fit_network(module, rows.X_fit, Y_aux, rows.X_hold, Y_aux_hold, params.nonscored, seed=seed,
                        on_epoch=_with_phase(on_epoch, "nonscored"), replay=as_replay((replay or {}).get("nonscored")))
        info.setdefault("replay", {})["nonscored"] = r.replay().as_dict()
        info.update(nonscored_epochs=len(r.history), nonscored_best_epoch=r.best_epoch,
                    nonscored_best_loss=r.best_loss)
    torch.manual_seed(seed + 1)
    module.replace_output(kwargs["n_out"])  # transfer: a new output layer for the scored targets
    init_output_bias(module.output[1], rows.Y_fit)
    r = fit_network(module, rows.X_fit, rows.Y_fit, rows.X_hold, rows.Y_hold, params.scored, seed=seed + 1,
                    on_epoch=_with_phase(on_epoch, "scored"), replay=as_replay((replay or {}).get("scored")))
    info.setdefault("replay", {})["scored"] = r.replay().as_dict()
    info.update(scored_epochs=len(r.history), scored_best_epoch=r.best_epoch, scored_best_loss=r.best_loss)
    return module


def _freeze_unfreeze_loop(module: ResNet2Heads, params: ResNet2HeadsParams, rows: _Rows, seed: int,
                          on_epoch: EpochCallback | None, info: dict) -> None:
    """The scripts' outer loop: a frozen pass, then an unfrozen pass, again while the
    unfrozen pass improves (all judged on the judge rows); ends unfrozen, in eval mode."""
    best = _holdout_loss(module, rows.X_hold, rows.Y_hold, params.scored.eval_batch_size)
    info.update(loops=0, frozen_epochs=0, unfrozen_epochs=0, frozen_improved=0, unfrozen_improved=0)
    for loop in range(params.max_loops):
        info["loops"] = loop + 1
        unfrozen_improved = 0
        for phase, frozen, p, offset in (("frozen", True, params.frozen, 2), ("unfrozen", False, params.unfrozen, 3)):
            module.set_frozen(frozen)
            out = loop_pass(module, rows.X_fit, rows.Y_fit, rows.X_hold, rows.Y_hold, p, seed + offset + 2 * loop,
                            best, _with_phase(on_epoch, phase))
            info.setdefault("replay", {}).setdefault("passes", []).append(
                {"phase": phase, "seed": seed + offset + 2 * loop, "epochs": out["kept"]})
            best = out["best"]
            info[f"{phase}_epochs"] += out["epochs"]
            info[f"{phase}_improved"] += out["improved"]
            unfrozen_improved = out["improved"]
        if unfrozen_improved == 0:
            break
    module.set_frozen(False)
    module.eval()


def _replay_loop(module: ResNet2Heads, params: ResNet2HeadsParams, rows: _Rows, passes: list[dict],
                 on_epoch: EpochCallback | None) -> None:
    """The refit of ``holdout_refit``: each loop pass chosen on the judge rows, rerun for the
    epochs it kept (a pass that kept nothing is skipped), judged on nothing. The passes'
    schedules (``scheduler: none``) do not react to the judge loss: the epoch count is all."""
    for rec in passes:
        p = params.frozen if rec["phase"] == "frozen" else params.unfrozen
        if p.scheduler == "plateau":
            raise ValueError("holdout_refit cannot replay a plateau schedule inside a freeze/unfreeze pass")
        module.set_frozen(rec["phase"] == "frozen")
        if rec["epochs"]:
            fit_network(module, rows.X_fit, rows.Y_fit, None, None,
                        p.model_copy(update={"patience": None, "restore_best": False}), seed=rec["seed"],
                        on_epoch=_with_phase(on_epoch, rec["phase"]), replay=Replay(rec["epochs"]))
    module.set_frozen(False)
    module.eval()


def fit_resnet_2heads(
    params: ResNet2HeadsParams,
    X_train: np.ndarray,
    Y_train: np.ndarray,
    seed: int,
    Y_aux_train: np.ndarray | None = None,
    on_epoch: EpochCallback | None = None,
    judge: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    n_extra: int | None = None,
    replay: dict | None = None,
) -> TorchEstimator:
    """Train one fold's network (see the module docstring).

    ``judge`` = (X, Y, Y_aux) of the rows that judge every early-stopping and keep-if-better
    decision: the runner's selection policy gives them (a holdout of the training folds by
    default). Without it, a seeded ``DIRECT_HOLDOUT`` of the training rows is carved here.
    ``n_extra``: the width of X's non-candidate columns (None: lish-moa's, :func:`n_extra_columns`).
    """
    X_train = np.ascontiguousarray(X_train, dtype=np.float32)
    Y_train = np.ascontiguousarray(Y_train, dtype=np.float32)
    n_extra = n_extra_columns(params) if n_extra is None else int(n_extra)  # the panel's (features' layout)
    n_cand = X_train.shape[1] - n_extra
    if n_cand <= 0:
        raise ValueError(f"X has {X_train.shape[1]} columns; the 2-heads layout needs more than {n_extra}")
    if replay is None:
        rows = _fit_and_judge_rows(params, X_train, Y_train, Y_aux_train, judge, seed)
    else:  # the refit of holdout_refit: every training row, nothing judged
        Y_aux = None if Y_aux_train is None else np.ascontiguousarray(Y_aux_train, dtype=np.float32)
        rows = _Rows(X_train, Y_train, Y_aux, X_train[:0], Y_train[:0], None if Y_aux is None else Y_aux[:0])

    # Input B: supervised selection on the fit rows of the training folds only.
    selected = ttest_select(rows.X_fit[:, :n_cand], rows.Y_fit.sum(axis=1) > 0,
                            params.selection.quantile, params.selection.equal_var)
    kwargs = _network_kwargs(params, X_train.shape[1], n_extra, selected, Y_train.shape[1])
    info: dict = {"n_selected": len(selected), "n_fit_rows": len(rows.X_fit), "n_holdout_rows": len(rows.X_hold)}
    module = _train_transfer_phases(params, kwargs, rows, seed, on_epoch, info, replay)
    if replay is None:
        _freeze_unfreeze_loop(module, params, rows, seed, on_epoch, info)
        info["holdout_loss"] = _holdout_loss(module, rows.X_hold, rows.Y_hold, params.scored.eval_batch_size)
        phases = info["replay"]  # the epochs the refit of holdout_refit would run, in all
        phases["epochs"] = sum(phases[k]["epochs"] for k in ("nonscored", "scored") if k in phases) + sum(
            q["epochs"] for q in phases.get("passes", []))
    else:
        _replay_loop(module, params, rows, replay.get("passes", []), on_epoch)
        info["replay"]["passes"] = replay.get("passes", [])
    return TorchEstimator(NETWORK_NAME, kwargs, module, eval_batch_size=params.scored.eval_batch_size, info=info)


# --------------------------------------------------------------------------- the model


@register
class ResNet2HeadsModel(Model):
    """The 2-heads ResNet model (V1; V2 is the config ``resnet_2heads_v2``: include_cp, batch 64)."""

    name = "resnet_2heads"
    Params = ResNet2HeadsParams
    supports_refit = True

    def stages(self):
        return [StageSpec("scored", targets="scored", aux_targets="nonscored")]

    def fit_features(self, stage, train: Blocks, test: Blocks, seed: int):
        gene_only = "c" not in train or train["c"].shape[1] == 0
        pipeline = Pipeline.from_config(pipeline_config(self.params, gene_only), seed=seed).fit(train, test)
        width = pipeline.n_features_out_
        expected = panel_extra_columns(self.params, train) + train["g"].shape[1] + train["c"].shape[1]
        if width != expected:
            raise ValueError(f"2-heads feature layout: expected {expected} columns, the pipeline gave {width}")
        return pipeline

    def load_features(self, stage, path: Path):
        return Pipeline.load(path)

    def fit_fold(self, stage, X_train, Y_train, X_valid, Y_valid, ctx):
        # (X_valid, Y_valid, Y_aux_valid): the judge rows of the runner's selection policy
        Y_aux_train, Y_aux_valid = ctx.aux_targets(self.name)
        # the non-candidate width from the fitted features (the panel's); lish-moa's without them
        features = ctx.stage_features(self.name) if (ctx.features or ctx.load_features) is not None else None
        n_extra = None if features is None else \
            sum(len(features.block_names_[b]) for b in features.config.output if b not in ("g", "c"))
        params = self.fit_params(ctx)
        if not ctx.refit:
            return fit_resnet_2heads(params, X_train, Y_train, ctx.seed, Y_aux_train, ctx.on_epoch,
                                     judge=(X_valid, Y_valid, Y_aux_valid), n_extra=n_extra)

        def fit(X, Y, Xv, Yv, Y_aux, replay, on_epoch):  # holdout_refit: the phases replayed on all rows
            judge = None if replay is not None else (Xv, Yv, Y_aux_valid)
            return fit_resnet_2heads(params, X, Y, ctx.seed, Y_aux, on_epoch, judge=judge, n_extra=n_extra,
                                     replay=replay)

        return select_then_refit(fit, X_train, Y_train, X_valid, Y_valid, ctx)

    def check_panel(self, data, where: str) -> None:
        from moakit.config import ConfigError

        f = self.params.features
        for field, value, block, width in (("pca_genes", f.pca_genes, "g", data.train.genes.shape[1]),
                                           ("pca_cells", f.pca_cells, "c", data.train.cells.shape[1])):
            if value and width and value > min(width, len(data.train)):
                raise ConfigError(f"{where}: params.features.{field}: {value} components exceed the "
                                  f"{min(width, len(data.train))} columns / rows of block {block!r}")
