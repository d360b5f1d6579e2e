"""2-stage NN + TabNet (write-up "2-Stage NN+TabNet"; the winners' script
final/Best LB/Training/Local/2stage-nn-tabnet-train.py).

Stage ``nonscored``: the 2-FC block on quantile-transformed g/c, PCA + UMAP of the
quantiled g/c and VarianceThreshold 0.5 over them (plus the one-hot cp), learning the
non-scored targets. Stage ``scored``: a pytorch-tabnet ``TabNetRegressor`` on its own
features: cp_time / cp_dose as two categorical columns (embedded), the quantile-transformed
g/c, factor analysis, k-means one-hot and row statistics of the quantiled g/c, and the
quantile-transformed stage-1 predictions (``meta``: out-of-fold for training rows, averaged
over all stage-1 seeds as the script did; see :mod:`moakit.models.three_stage_nn`); trained
with the script's log loss on smoothed targets (``TabNetConfig.loss``), early-stopped on the
held-out fold.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from moakit.runs import layout
from moakit.artifacts import atomic_dir, read_json, refuse_pickle, write_json
from moakit.features import PipelineConfig
from moakit.metrics import mean_log_loss, sigmoid
from moakit.models.estimators import SPEC, register_estimator
from moakit.models.base import EpochCallback, ModelParams, StageSpec, on_device, register
from moakit.models.stacked import StackedModel, StackStageParams
from moakit.models.quality import as_replay, select_then_refit
from moakit.nn.train import resolve_device, smooth_targets


class TabNetConfig(BaseModel):
    """TabNetRegressor and its training; defaults are the winners' numbers."""

    model_config = ConfigDict(extra="forbid")

    n_d: int = Field(32, ge=1)
    n_a: int = Field(32, ge=1)
    n_steps: int = Field(1, ge=1)
    gamma: float = 1.3  # pytorch-tabnet's default (the script left it); no effect with one step
    lambda_sparse: float = 0.0
    mask_type: Literal["entmax", "sparsemax"] = "entmax"
    n_independent: int = 2  # pytorch-tabnet defaults (the winners kept them)
    n_shared: int = 2
    momentum: float = 0.02
    clip_value: float | None = 1.0  # pytorch-tabnet's default gradient-norm clip
    # categorical input columns (embedded): the stage's first columns, cp_time and cp_dose
    cat_idxs: list[int] = [0, 1]
    cat_dims: list[int] = [3, 2]
    cat_emb_dim: list[int] = [1, 1]
    lr: float = Field(2e-2, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    milestones: list[int] = [100, 150]  # MultiStepLR, stepped once per epoch
    scheduler_gamma: float = 0.9
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(50, ge=1)
    batch_size: int = Field(1024, ge=2)
    virtual_batch_size: int = Field(128, ge=2)
    smoothing: float = Field(0.001, ge=0, lt=1)
    # The training loss on the smoothed targets t. "script": the winners' LabelSmoothing module,
    # the mean of -(t log(p + 1e-15) + (1 - t) log(1 - p + 1e-15)) with p = sigmoid(logit) in
    # float32: where p rounds to 1 (logit above ~17) a negative's logit gets no gradient, and a
    # positive's gradient fades below p ~ 1e-15 (logit below ~-35). "bce_logits": torch's
    # BCE with logits, the same loss elsewhere with a gradient everywhere; it ranked worse beside
    # the script on its own input matrix (BENCHMARKS.md, "Sixth session").
    loss: Literal["script", "bce_logits"] = "script"
    # early stopping judges the held-out fold's log loss against targets smoothed by this
    # much (the script's last eval metric, which pytorch-tabnet stops on); 0 = raw targets
    stop_smoothing: float = Field(0.001, ge=0, lt=1)
    eval_batch_size: int = Field(4096, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available

    @model_validator(mode="after")
    def _categoricals(self) -> "TabNetConfig":
        if not (len(self.cat_idxs) == len(self.cat_dims) == len(self.cat_emb_dim)):
            raise ValueError(f"tabnet: cat_idxs {self.cat_idxs}, cat_dims {self.cat_dims} and cat_emb_dim "
                             f"{self.cat_emb_dim} must have the same length")
        return self


class TabNetStageParams(ModelParams):
    features: PipelineConfig  # this stage's own features (read ``meta`` and the base blocks)
    base_features: str | None = None  # an earlier stage's feature pipeline to reuse (put first)
    tabnet: TabNetConfig = TabNetConfig()


class TwoStageParams(ModelParams):
    # "seed_mean": TabNet reads the stage-1 predictions averaged over all stage-1 seeds (the
    # script); "per_seed": one independent chain per seed
    meta_features: Literal["seed_mean", "per_seed"] = "seed_mean"
    stage1: StackStageParams  # the 2-FC MLP on non-scored targets
    stage2: TabNetStageParams


def _device_name(setting: str = "auto") -> str:
    return resolve_device(setting).type


# pytorch-tabnet finds metrics by name among the subclasses of its Metric class (built
# with no arguments), so each smoothing level gets its own module-level subclass.
_METRICS: dict[float, type] = {}


def _metric(smoothing: float = 0.0):
    """The Metric class: mean binary log loss of sigmoid(logits) against the targets
    smoothed by ``smoothing`` (t -> t(1-s) + s/2; 0 = the raw 0/1 targets), clipped."""
    smoothing = float(smoothing)
    if smoothing not in _METRICS:
        from pytorch_tabnet.metrics import Metric

        name = "moa_logloss" if smoothing == 0 else f"moa_logloss_smoothed_{smoothing:g}"

        def __init__(self):
            self._name = name
            self._maximize = False

        def __call__(self, y_true, y_score):
            y = np.asarray(y_true, np.float64) * (1.0 - smoothing) + 0.5 * smoothing
            return mean_log_loss(y, sigmoid(y_score))

        _METRICS[smoothing] = type(f"MoALogLoss{len(_METRICS)}", (Metric,), {"__init__": __init__, "__call__": __call__})
    return _METRICS[smoothing]


def _epoch_callback(on_epoch: EpochCallback | None, metric_name: str, stop_name: str):
    from pytorch_tabnet.callbacks import Callback

    class ReportEpochs(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if on_epoch is not None:
                on_epoch({"epoch": epoch, "train_loss": float(logs.get("loss", math.nan)),
                          "valid_loss": float(logs.get(metric_name, math.nan)),
                          "stop_loss": float(logs.get(stop_name, math.nan))})

    return ReportEpochs()


@contextlib.contextmanager
def _quiet():
    """pytorch-tabnet prints its stopping message and warns on save/stop: keep runs quiet."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _numpy_global_seed(seed: int):
    """Seed numpy's global generator (which pytorch-tabnet may draw from) for the block
    only; the caller's generator state is restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


# Networks built, one per architecture (every constructor parameter but the seed, which
# only draws the initial weights a load overwrites): pytorch-tabnet builds a network's
# embedding group matrix in a Python loop over input_dim x input_dim entries (about 9 CPU s
# for the 2-stage model's 991 columns), so a run's 15 TabNets are built once and copied.
_BUILT: dict[str, object] = {}
_MAX_BUILT = 4


def built_regressor(params: dict):
    """A TabNetRegressor of ``params`` with its network set up (weights not yet loaded): a
    deep copy of the one built for the same architecture, building it on first use."""
    import copy

    from pytorch_tabnet.tab_model import TabNetRegressor

    key = json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True, default=repr)
    if key not in _BUILT:
        with _quiet():
            template = TabNetRegressor(**params)
            template._set_network()  # private, no public equivalent: as pytorch-tabnet's load_model
        while len(_BUILT) >= _MAX_BUILT:
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[key] = template
    reg = copy.deepcopy(_BUILT[key])
    reg.seed = params.get("seed", reg.seed)
    return reg


@register_estimator("tabnet_regressor")
class TabNetEstimator:
    """A fitted TabNetRegressor predicting logits; ``predict_proba`` is their sigmoid.

    Saved in a folder written atomically: ``spec.json`` (the regressor's constructor
    parameters, its inference batch size and the fit info) and ``weights.pt`` (the
    network's state dict, loaded with ``weights_only=True``): data only, never a pickle.
    Folders of older moakit versions hold pytorch-tabnet's ``tabnet.zip`` (its loader
    unpickles) instead: refused, unsupported format.
    """

    FORMAT = 2

    def __init__(self, regressor, info: dict | None = None) -> None:
        self.regressor = regressor
        self.info = info or {}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if len(X) == 0:
            return np.zeros((0, self.regressor.output_dim or 0), np.float32)
        with torch.no_grad():
            return sigmoid(self.regressor.predict(X))

    def save(self, path: Path) -> None:
        reg = self.regressor
        # what pytorch-tabnet's own save_model keeps (its constructor parameters, less the
        # optimiser / scheduler classes, which inference does not use), as plain JSON
        init_params = {k: v for k, v in reg.get_params().items() if not isinstance(v, type)}
        spec = {"kind": self.kind, "format": self.FORMAT, "init_params": init_params,
                "class_attrs": {"preds_mapper": reg.preds_mapper}, "batch_size": int(reg.batch_size),
                "info": self.info}
        with atomic_dir(path) as tmp:
            write_json(tmp / SPEC, spec)
            torch.save(reg.network.state_dict(), tmp / layout.ESTIMATOR_WEIGHTS)

    @classmethod
    def load(cls, path: Path) -> "TabNetEstimator":
        path = Path(path)
        spec = read_json(path / SPEC)
        if not isinstance(spec, dict) or spec.get("kind") != cls.kind:
            raise ValueError(f"{path / SPEC}: not a TabNet estimator's spec")
        if spec.get("format") is None and (path / "tabnet.zip").exists():
            refuse_pickle(path / "tabnet.zip")
        if spec.get("format") != cls.FORMAT:
            raise ValueError(f"{path / SPEC}: TabNet estimator format {spec.get('format')!r}, "
                             f"this moakit reads {cls.FORMAT}")
        state = torch.load(path / layout.ESTIMATOR_WEIGHTS, map_location="cpu", weights_only=True)  # first: building is slow
        try:
            reg = built_regressor({**dict(spec["init_params"]), "device_name": _device_name(), "verbose": 0})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path / SPEC}: unusable TabNet parameters ({type(exc).__name__}: {exc})") \
                from None
        reg.network.load_state_dict(state)
        reg.network.eval()
        reg.load_class_attrs(dict(spec.get("class_attrs") or {}))
        reg.batch_size = int(spec.get("batch_size", reg.batch_size))
        return cls(reg, spec.get("info"))


def smoothed_loss(kind: str, smoothing: float):
    """The TabNet training loss ``(logits, 0/1 targets) -> scalar`` of ``TabNetConfig.loss``,
    on the targets smoothed by ``smoothing`` (t -> t(1-s) + s/2, as the winners' script)."""

    def script(logits, y):
        t = smooth_targets(y, smoothing)
        p = torch.sigmoid(logits)
        return -(torch.log(p + 1e-15) * t + (1 - t) * torch.log(1 - p + 1e-15)).mean()

    def bce_logits(logits, y):
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, smooth_targets(y, smoothing))

    losses = {"script": script, "bce_logits": bce_logits}
    if kind not in losses:
        raise ValueError(f"tabnet: loss {kind!r}, expected one of {sorted(losses)}")
    return losses[kind]


def fit_tabnet(cfg: TabNetConfig, X_train, Y_train, X_valid, Y_valid, seed: int,
               on_epoch: EpochCallback | None = None, replay=None) -> TabNetEstimator:
    """``replay`` (the refit pass of ``holdout_refit``): run ``replay.epochs`` epochs, judge
    nothing, keep the last (TabNet's MultiStepLR schedule does not react to the judge loss,
    so the epoch count is the whole schedule)."""
    from pytorch_tabnet.tab_model import TabNetRegressor

    X_train = np.ascontiguousarray(X_train, dtype=np.float32)
    Y_train = np.ascontiguousarray(Y_train, dtype=np.float32)
    if replay is not None:
        X_valid, Y_valid = X_train[:0], Y_train[:0]
        cfg = cfg.model_copy(update={"max_epochs": int(replay.epochs)})
    X_valid = np.ascontiguousarray(X_valid, dtype=np.float32)
    Y_valid = np.ascontiguousarray(Y_valid, dtype=np.float32)
    torch.manual_seed(seed)  # the train loader's shuffling draws from the global generator
    loss_fn = smoothed_loss(cfg.loss, cfg.smoothing)

    # pytorch-tabnet stops on the LAST eval metric (the script: [raw, smoothed 0.001])
    metrics = [_metric(0.0)] + ([_metric(cfg.stop_smoothing)] if cfg.stop_smoothing else [])
    names = [f"valid_{m()._name}" for m in metrics]
    for i, dim in zip(cfg.cat_idxs, cfg.cat_dims):  # embedded columns must hold codes 0..dim-1
        if i >= X_train.shape[1]:
            raise ValueError(f"tabnet: cat_idxs {cfg.cat_idxs} out of range for {X_train.shape[1]} feature columns")
        for name, X in (("training", X_train), ("held-out", X_valid)):
            col = X[:, i]
            if len(col) and (col.min() < 0 or col.max() > dim - 1 or not np.array_equal(col, np.round(col))):
                raise ValueError(f"tabnet: categorical column {i} of the {name} rows must hold the codes 0..{dim - 1} "
                                 f"(cat_dims), got values in [{col.min():g}, {col.max():g}]")
    reg = TabNetRegressor(
        n_d=cfg.n_d, n_a=cfg.n_a, n_steps=cfg.n_steps, gamma=cfg.gamma, lambda_sparse=cfg.lambda_sparse,
        n_independent=cfg.n_independent, n_shared=cfg.n_shared, momentum=cfg.momentum,
        cat_idxs=list(cfg.cat_idxs), cat_dims=list(cfg.cat_dims), cat_emb_dim=list(cfg.cat_emb_dim),
        clip_value=cfg.clip_value, mask_type=cfg.mask_type, seed=int(seed) % (2**31), verbose=0,
        optimizer_fn=torch.optim.Adam, optimizer_params={"lr": cfg.lr, "weight_decay": cfg.weight_decay},
        scheduler_fn=torch.optim.lr_scheduler.MultiStepLR,
        scheduler_params={"milestones": list(cfg.milestones), "gamma": cfg.scheduler_gamma},
        device_name=_device_name(cfg.device),
    )
    n = len(X_train)
    batch = min(cfg.batch_size, n)
    # Keep the ragged last batch (the script: drop_last=False), unless it is a single row,
    # which would break the ghost BatchNorm.
    drop_last = n > batch and n % batch == 1
    # Early stopping (patience, best-epoch weights restored) is judged on the judge rows
    # the runner's selection policy gave (X_valid): a holdout of the training folds, the
    # OOF fold itself (policy oof, as the winners' script), or none (policy last: all
    # max_epochs run, the last epoch is kept).
    judged = len(X_valid) > 0
    eval_kw = (dict(eval_set=[(X_valid, Y_valid)], eval_name=["valid"], eval_metric=metrics) if judged
               else dict(eval_set=[], patience=0))
    with _quiet(), _numpy_global_seed(seed):
        reg.fit(
            X_train, Y_train, **{"patience": cfg.patience, **eval_kw},
            loss_fn=loss_fn, max_epochs=cfg.max_epochs, batch_size=batch,
            virtual_batch_size=min(cfg.virtual_batch_size, batch), num_workers=0, drop_last=drop_last,
            callbacks=[_epoch_callback(on_epoch, names[0], names[-1])], pin_memory=False,
            compute_importance=False,
        )
    reg.batch_size = cfg.eval_batch_size  # inference batch (no effect on results: eval mode)
    history = reg.history.history if hasattr(reg, "history") else {}
    best_epoch = int(getattr(reg, "best_epoch", -1)) if judged else len(history.get("loss", [])) - 1
    raw = history.get(names[0], [])
    info = {"best_epoch": best_epoch, "best_stop_loss": float(getattr(reg, "best_cost", math.nan)),
            "best_valid_loss": float(raw[best_epoch]) if 0 <= best_epoch < len(raw) else math.nan,
            "epochs_run": len(history.get("loss", []))}
    info["replay"] = {"epochs": max(best_epoch, 0) + 1, "lrs": None}
    return TabNetEstimator(reg, info)


def panel_categoricals(cfg: TabNetConfig, features) -> TabNetConfig:
    """``cfg`` with its embedded columns where the stage's fitted features put them: the
    columns of the ``cp_categories`` step's block, with its code counts (lish-moa: columns
    0, 1 with 3 and 2 codes, as configured); none when that step was skipped (a panel
    without cp_time / cp_dose). Features without a cp_categories step keep the configured ones."""
    from moakit.features.steps import CpCategoriesStep

    own, base = getattr(features, "own", features), getattr(features, "base", None)
    if not hasattr(own, "block_names_"):
        return cfg
    steps = {s.output: s for s in own.steps if isinstance(s, CpCategoriesStep)}
    skipped = [s for s in getattr(own, "skipped_steps_", []) if s.get("kind") == CpCategoriesStep.kind]
    if not steps and not skipped:
        return cfg
    offset = len(base.feature_names_) if base is not None else 0
    idxs, dims = [], []
    for block in own.config.output:
        width = len(own.block_names_[block])
        if block in steps:
            idxs += list(range(offset, offset + width))
            dims += steps[block].category_sizes()
        offset += width
    if idxs == list(cfg.cat_idxs) and dims == list(cfg.cat_dims):
        return cfg
    emb = list(cfg.cat_emb_dim) if len(cfg.cat_emb_dim) == len(idxs) else [1] * len(idxs)
    return cfg.model_copy(update={"cat_idxs": idxs, "cat_dims": dims, "cat_emb_dim": emb})


@register
class TwoStageNNTabNet(StackedModel):
    name = "two_stage_nn_tabnet"
    Params = TwoStageParams

    def stages(self):
        return [
            StageSpec("nonscored", targets="nonscored", drop_empty_targets=True),
            StageSpec("scored", targets="scored"),
        ]

    def stage_params(self, stage: StageSpec):
        return {"nonscored": self.params.stage1, "scored": self.params.stage2}[stage.name]

    def fit_fold(self, stage, X_train, Y_train, X_valid, Y_valid, ctx):
        if stage.name == "scored":
            tabnet = on_device(self.params.stage2.tabnet, ctx.device)
            if (ctx.features or ctx.load_features) is not None:  # the panel's categorical columns
                tabnet = panel_categoricals(tabnet, ctx.stage_features(self.name))

            def fit(X, Y, Xv, Yv, Y_aux, replay, on_epoch):
                return fit_tabnet(tabnet, X, Y, Xv, Yv, ctx.seed, on_epoch, as_replay(replay))

            return select_then_refit(fit, X_train, Y_train, X_valid, Y_valid, ctx)
        return super().fit_fold(stage, X_train, Y_train, X_valid, Y_valid, ctx)
