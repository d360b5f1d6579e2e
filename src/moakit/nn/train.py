"""The one training loop of moakit: every torch model (MLPs, the 2-heads ResNet, the
DeepInsight CNNs) trains through :func:`fit_network`.

Batches are sliced from whole tensors held in memory (no per-sample Dataset/DataLoader):
once per epoch the training tensors are permuted with one gather, then each batch is a
contiguous view, so an epoch costs little more than its matrix multiplies.

Devices, mixed precision and batched prediction are in :mod:`moakit.nn.runtime`
(re-exported here).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from moakit import choices
from moakit.nn.runtime import (  # noqa: F401  (re-exported: the estimators import them from here)
    BatchTransform, MixedPrecision, amp_dtype, as_tensor, autocast_context, module_device, predict_logits,
    predict_proba, resolve_device,
)



class TrainParams(BaseModel):
    """Optimiser, schedule, loss and stopping rule of one training run."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(25, ge=1)
    batch_size: int = Field(256, ge=1)
    eval_batch_size: int = Field(2048, ge=1)
    optimizer: Literal["adam", "radam", "adadelta"] = "adam"
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    scheduler: Literal["onecycle", "plateau", "cosine", "multistep", "none"] = "onecycle"
    max_lr: float = 1e-2  # OneCycleLR
    pct_start: float = 0.1  # OneCycleLR
    div_factor: float = 1e3  # OneCycleLR
    plateau_factor: float = 0.5
    plateau_patience: int = 4
    # what counts as an improvement for ReduceLROnPlateau: torch's default is relative 1e-4;
    # Keras's (the 2-heads ResNet's scripts) is an absolute 1e-4
    plateau_threshold: float = Field(1e-4, ge=0)
    plateau_threshold_mode: Literal["rel", "abs"] = "rel"
    cosine_t_max: int = 5
    milestones: list[int] = [100, 150]
    multistep_gamma: float = 0.9
    smoothing: float = Field(0.001, ge=0, lt=1)
    clip_targets: tuple[float, float] | None = None  # after smoothing, e.g. (0.0005, 0.9995)
    patience: int | None = None  # early stopping; None = train all epochs
    min_delta: float = 0.0
    restore_best: bool = True
    grad_clip: float | None = None
    # optimiser constants; None keeps torch's defaults (Keras's differ: Adam eps 1e-7,
    # Adadelta rho 0.95 and eps 1e-7, which the Keras-born 2-heads ResNet sets)
    optimizer_eps: float | None = Field(None, gt=0)
    adadelta_rho: float | None = Field(None, gt=0, lt=1)
    # where the network trains: "auto" = a CUDA GPU when one is available, else the CPU
    device: choices.DeviceName = choices.DEFAULT_DEVICE
    amp: bool = False  # 16-bit autocast (see MixedPrecision); measured, not assumed, faster
    # autocast type with amp: "auto" = bf16 on CPU and on GPUs that support it, else fp16;
    # fp16 always trains with GradScaler loss scaling
    amp_dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    # control-difference augmentation (3rd place): each training row, with this probability,
    # plus the difference of two random control rows (x + ctl_a - ctl_b), drawn afresh per
    # batch; needs fit_network(controls=...). 0: off
    control_augment: float = Field(0.0, ge=0, le=1)
    # bce: one sigmoid per target; softmax: one softmax over the outputs (targets are class
    # probabilities, e.g. one-hot; smoothing then spreads s over the classes)
    loss: Literal["bce", "softmax"] = "bce"


@dataclass
class Replay:
    """A schedule chosen on judge rows, to be replayed on all rows (``holdout_refit``):
    ``epochs`` to run (the chosen epoch's count) and the learning rate of each parameter
    group at the start of each epoch (``lrs[e][g]``). A per-epoch schedule (plateau,
    cosine, multistep) is replaced by these rates, so a plateau schedule's reactions to the
    judge loss are replayed exactly; a per-batch schedule (OneCycle, which never reacts)
    is laid out over ``params.epochs`` as before and stops after ``epochs``. ``lrs`` None:
    the schedule steps as usual (right for every schedule that does not react to the judge
    loss)."""

    epochs: int
    lrs: list[list[float]] | None = None

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "lrs": self.lrs}


@dataclass
class FitResult:
    best_epoch: int
    best_loss: float | None  # None when nothing was judged (no judge rows)
    history: list[dict] = field(default_factory=list)
    precision: dict = field(default_factory=dict)  # MixedPrecision.summary(): dtype, loss scale, skipped steps
    lrs: list[list[float]] = field(default_factory=list)  # per epoch run: each group's lr at its start

    def replay(self) -> Replay:
        """The schedule up to and including the kept epoch."""
        n = self.best_epoch + 1
        return Replay(epochs=n, lrs=[list(x) for x in self.lrs[:n]])


@dataclass
class ControlRows:
    """Control rows in the network's input space, for control-difference augmentation, and
    a group id per row: the two rows of a difference come from one group (the runner's
    groups are cp_time x cp_dose, so one-hot time / dose columns cancel)."""

    X: torch.Tensor
    groups: np.ndarray

    def __post_init__(self) -> None:
        self.X = as_tensor(self.X).float()
        self.groups = np.asarray(self.groups).reshape(-1)
        if len(self.X) < 1 or len(self.groups) != len(self.X):
            raise ValueError(f"control augmentation needs control rows and one group each "
                             f"(got {len(self.X)} rows, {len(self.groups)} groups)")
        _, self._codes = np.unique(self.groups, return_inverse=True)
        self._order = np.argsort(self._codes, kind="stable")
        counts = np.bincount(self._codes)
        self._starts, self._counts = np.concatenate([[0], np.cumsum(counts)[:-1]]), counts

    def draw(self, n: int, p: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows chosen, a, b): each of ``n`` rows chosen with probability ``p``; for each
        chosen row a random control a and a random control b of a's group."""
        chosen = np.flatnonzero(rng.random(n) < p)
        a = rng.integers(0, len(self.X), len(chosen))
        code = self._codes[a]
        b = self._order[self._starts[code] + rng.integers(0, self._counts[code])]
        return chosen, a, b

    def augment(self, xb: torch.Tensor, p: float, rng: np.random.Generator) -> torch.Tensor:
        """``xb`` (not modified) with x + ctl_a - ctl_b on the chosen rows."""
        chosen, a, b = self.draw(len(xb), p, rng)
        if not len(chosen):
            return xb
        out = xb.clone()
        out[torch.from_numpy(chosen)] += self.X[a] - self.X[b]
        return out


def _with_controls(controls: ControlRows | None, p: float, transform: BatchTransform | None) -> BatchTransform | None:
    """The training batch transform with control-difference augmentation in front."""
    if p <= 0:
        return transform
    if controls is None:
        raise ValueError("train.control_augment needs the control rows (fit_network(controls=...)); "
                         "this model or data gives none")

    def augmented(xb: torch.Tensor, training: bool, rng: np.random.Generator) -> torch.Tensor:
        xb = controls.augment(xb, p, rng) if training else xb
        return transform(xb, training, rng) if transform is not None else xb

    return augmented


def smooth_targets(y: torch.Tensor, smoothing: float, clip: tuple[float, float] | None = None,
                   n_classes: int = 2) -> torch.Tensor:
    """t -> t * (1 - s) + s / n_classes (0.5 * s for binary targets), then optionally clipped."""
    out = y * (1.0 - smoothing) + smoothing / n_classes if smoothing else y
    if clip is not None:
        out = out.clamp(clip[0], clip[1])
    return out


def _fused_ok(params) -> bool:
    """The fused (one-kernel) Adam needs floating-point parameters on CPU or CUDA."""
    return all(q.is_floating_point() and q.device.type in ("cpu", "cuda") for q in params)


def _optimizer(params, p: TrainParams) -> torch.optim.Optimizer:
    eps = {"eps": p.optimizer_eps} if p.optimizer_eps is not None else {}
    if p.optimizer == "adam":
        # Same algorithm as the default (foreach) Adam; the fused kernel updates all
        # parameters in one pass instead of ~10 elementwise passes: measured on 2 CPU
        # cores at the Simple NN's full size, 99 -> 73 ms per batch (Adam ~25 -> ~3 ms).
        params = list(params)
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay, fused=_fused_ok(params) or None, **eps)
    if p.optimizer == "radam":
        # decoupled weight decay (p -= lr * wd * p), as torch_optimizer's RAdam, which the
        # DeepInsight CNN scripts (the only RAdam users) trained with
        return torch.optim.RAdam(params, lr=p.lr, weight_decay=p.weight_decay, decoupled_weight_decay=True, **eps)
    rho = {"rho": p.adadelta_rho} if p.adadelta_rho is not None else {}
    return torch.optim.Adadelta(params, lr=p.lr, weight_decay=p.weight_decay, **eps, **rho)


def _scheduler(opt, p: TrainParams, steps_per_epoch: int):
    """(scheduler, step_per_batch)."""
    if p.scheduler == "onecycle":
        total = p.epochs * steps_per_epoch
        # OneCycleLR needs at least two steps in each phase (tiny smoke runs). Below 5 steps:
        # half each, except at 2 steps, where half makes the warm-up zero steps long
        # (pct * total == 1) and torch divides by zero; it gets 1.5 steps instead.
        pct = min(max(p.pct_start, 2.0 / total), 1.0 - 2.0 / total) if total >= 5 else (0.75 if total == 2 else 0.5)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=p.max_lr, epochs=p.epochs, steps_per_epoch=steps_per_epoch,
            pct_start=pct, div_factor=p.div_factor,
        )
        return sched, True
    if p.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=p.plateau_factor, patience=p.plateau_patience, threshold=p.plateau_threshold,
            threshold_mode=p.plateau_threshold_mode), False
    if p.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.cosine_t_max), False
    if p.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=p.milestones, gamma=p.multistep_gamma), False
    return None, False


def _bce_eval(module, X, Y, p: TrainParams, transform, device, judge_outputs: int | None = None) -> float:
    """Validation loss: mean binary log loss on the RAW (unsmoothed) targets (of the first
    ``judge_outputs`` outputs only, when given); with ``loss: softmax`` the cross-entropy."""
    logits = torch.from_numpy(predict_logits(module, X, p.eval_batch_size, transform, device, p.amp, p.amp_dtype))
    if judge_outputs is not None:
        logits = logits[:, :judge_outputs]
    if p.loss == "softmax":
        return float(nn.functional.cross_entropy(logits, as_tensor(Y).float()))
    return float(nn.functional.binary_cross_entropy_with_logits(logits, as_tensor(Y).float()))


class _SoftmaxLoss(nn.Module):
    """Cross-entropy of one softmax over the outputs against class-probability targets."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target)


def _training_loss(pos_weight, n_targets: int, device: torch.device, target_weights=None,
                   kind: str = "bce") -> nn.Module:
    if kind == "softmax":
        if pos_weight is not None or target_weights is not None:
            raise ValueError("pos_weight / target_weights are per-target weights of the binary loss, not of a softmax")
        return _SoftmaxLoss()

    def per_target(values, what: str):
        if values is None:
            return None
        values = as_tensor(values).float().reshape(-1).to(device)
        if values.numel() != n_targets:
            raise ValueError(f"{what} has {values.numel()} values for {n_targets} targets")
        return values

    return nn.BCEWithLogitsLoss(weight=per_target(target_weights, "target_weights"),
                                pos_weight=per_target(pos_weight, "pos_weight"))


@dataclass
class _Optimisation:
    """What one training run steps: the trainable parameters, their optimiser, the schedule
    (stepped per batch or per epoch), the training loss and the mixed precision."""

    trainable: list
    opt: torch.optim.Optimizer
    sched: object | None
    per_batch: bool
    loss_fn: nn.Module
    precision: MixedPrecision


def _optimisation(module: nn.Module, p: TrainParams, steps: int, n_targets: int, pos_weight,
                  device: torch.device, target_weights=None) -> _Optimisation:
    trainable = [q for q in module.parameters() if q.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters (every layer is frozen)")
    opt = _optimizer(trainable, p)
    sched, per_batch = _scheduler(opt, p, steps)
    return _Optimisation(trainable, opt, sched, per_batch,
                         _training_loss(pos_weight, n_targets, device, target_weights, p.loss),
                         MixedPrecision(p.amp, device, p.amp_dtype))


def _steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch; dropping a last batch of one row keeps BatchNorm defined."""
    if n == 0:
        raise ValueError("no training rows")
    return math.ceil(n / batch_size) - (1 if n % batch_size == 1 and n > 1 else 0)


def _train_epoch(module, Xp, Yp, steps: int, p: TrainParams, o: _Optimisation, batch_transform, rng,
                 device) -> float:
    """One pass over the (already permuted) training rows; returns the summed batch loss x
    batch rows. A per-batch schedule steps after every batch."""
    total = 0.0
    for b in range(steps):
        xb = Xp[b * p.batch_size : (b + 1) * p.batch_size]
        yb = Yp[b * p.batch_size : (b + 1) * p.batch_size]
        if batch_transform is not None:
            xb = batch_transform(xb, True, rng)
        o.opt.zero_grad(set_to_none=True)
        with o.precision.autocast():
            logits = module(xb.to(device, non_blocking=True))
        loss = o.loss_fn(logits.float(), yb.to(device, non_blocking=True))
        o.precision.backward_step(loss, o.opt, o.trainable, p.grad_clip)
        if o.per_batch and o.sched is not None:
            o.sched.step()
        total += float(loss.detach()) * len(xb)
    return total


def _step_epoch_schedule(o: _Optimisation, p: TrainParams, train_loss: float, valid_loss: float | None,
                         replaying: bool = False) -> None:
    """The end-of-epoch step of a per-epoch schedule; with no judge rows a plateau schedule
    follows the training loss; a replayed schedule sets its rates itself (:class:`Replay`)."""
    if o.sched is None or o.per_batch or replaying:
        return
    if p.scheduler == "plateau":
        o.sched.step(train_loss if valid_loss is None else valid_loss)
    else:
        o.sched.step()


class _BestEpoch:
    """The stopping rule: the epoch of lowest validation loss (an improvement must beat the
    best by ``min_delta``), its weights with ``restore_best``, and early stopping after
    ``patience`` epochs without improvement. With no judge rows the last epoch counts."""

    def __init__(self, p: TrainParams) -> None:
        self.p = p
        self.loss, self.epoch, self.state, self.waited = math.inf, -1, None, 0

    def update(self, module: nn.Module, epoch: int, valid_loss: float | None) -> bool:
        """Record an epoch; True when training should stop."""
        if valid_loss is None:  # nothing to judge by: the schedule's last epoch is kept
            self.epoch = epoch
            return False
        if valid_loss < self.loss - self.p.min_delta:
            self.loss, self.epoch, self.waited = valid_loss, epoch, 0
            if self.p.restore_best:
                self.state = copy.deepcopy(module.state_dict())
            return False
        self.waited += 1
        return self.p.patience is not None and self.waited >= self.p.patience

    def restore(self, module: nn.Module) -> None:
        if self.p.restore_best and self.state is not None:
            module.load_state_dict(self.state)


def fit_network(
    module: nn.Module,
    X_train,
    Y_train,
    X_valid,
    Y_valid,
    params: TrainParams,
    seed: int = 0,
    batch_transform: BatchTransform | None = None,
    eval_transform: BatchTransform | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    device: torch.device | str | None = None,
    pos_weight=None,
    replay: Replay | None = None,
    controls: ControlRows | None = None,
    target_weights=None,
    judge_outputs: int | None = None,
) -> FitResult:
    """Train ``module`` on (X_train, Y_train), judging epochs on (X_valid, Y_valid).

    The optimiser sees only parameters with ``requires_grad`` (so a caller freezes layers
    by switching it off). With ``restore_best`` the module ends with the weights of the
    epoch of lowest validation loss. ``batch_transform(xb, training, rng)`` turns a slice of
    X into the network input (the DeepInsight renderer with swap noise); it must not modify
    ``xb`` in place.

    With no judge rows (``X_valid`` None or empty: the ``last`` selection policy) nothing
    is judged: every epoch runs and the last one's weights are kept.

    ``pos_weight`` (one value per target) weighs the positive term of the TRAINING loss
    (``BCEWithLogitsLoss(pos_weight=...)``); epochs are still judged on the plain loss.

    ``device`` (default: ``params.device``) is where the module trains and stays; the data
    stay on the CPU and go to the device batch by batch.

    ``replay`` (``holdout_refit``): run ``replay.epochs`` epochs with the recorded learning
    rates (see :class:`Replay`), judge nothing, keep the last epoch. ``controls``: the
    control rows for ``params.control_augment``. ``target_weights`` (one per output) weigh
    the training loss per target (a joint scored + non-scored head: 0.5 / 0.5 of the two
    means); ``judge_outputs``: epochs are judged on the first that many outputs only
    (``Y_valid`` then has that many columns).
    """
    device = resolve_device(params.device if device is None else device)
    p = params
    judged = replay is None and X_valid is not None and len(X_valid) > 0
    batch_transform_train = _with_controls(controls, p.control_augment, batch_transform)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    module.to(device)
    X = as_tensor(X_train)
    Y = as_tensor(Y_train).float()
    Y_fit = smooth_targets(Y, p.smoothing, p.clip_targets, Y.shape[1] if p.loss == "softmax" else 2)
    n = len(X)
    steps = _steps_per_epoch(n, p.batch_size)
    o = _optimisation(module, p, steps, Y.shape[1], pos_weight, device, target_weights)
    replaying = replay is not None and replay.lrs is not None and not o.per_batch

    best = _BestEpoch(p)
    history: list[dict] = []
    lrs: list[list[float]] = []
    for epoch in range(p.epochs if replay is None else min(replay.epochs, p.epochs)):
        if replaying:
            for group, lr in zip(o.opt.param_groups, replay.lrs[epoch]):
                group["lr"] = lr
        lrs.append([float(g["lr"]) for g in o.opt.param_groups])
        module.train()
        perm = torch.randperm(n, generator=gen)
        total = _train_epoch(module, X[perm], Y_fit[perm], steps, p, o, batch_transform_train, rng, device)
        train_loss = total / min(n, steps * p.batch_size)
        val = (_bce_eval(module, X_valid, Y_valid, p, eval_transform or batch_transform, device, judge_outputs)
               if judged else None)
        _step_epoch_schedule(o, p, train_loss, val, replaying)
        record = {"epoch": epoch, "train_loss": train_loss, "valid_loss": val}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if best.update(module, epoch, val):
            break
    best.restore(module)
    return FitResult(best_epoch=best.epoch, best_loss=best.loss if judged else None, history=history,
                     precision=o.precision.summary(), lrs=lrs)


@torch.no_grad()
def init_output_bias(layer: nn.Linear, Y, eps: float = 1e-4, softmax: bool = False) -> None:
    """Start an output layer at each target's training log-odds.

    With ~0.3% positives per target, a zero bias starts every prediction at 0.5 (log loss
    ~0.69 against a prior's ~0.02); the network then spends its first epochs learning the
    base rates. Starting from them is a standard initialisation for imbalanced multi-label
    outputs and changes no method of the write-up.
    """
    rate = np.clip(np.asarray(Y, dtype=np.float64).mean(axis=0), eps, 1.0 - eps)
    # a softmax head (one class per row): log frequencies, so the softmax starts at them
    start = np.log(rate) if softmax else np.log(rate / (1.0 - rate))
    layer.bias.copy_(torch.from_numpy(start).to(layer.bias.dtype))
