"""Training options taken from the other top lish-moa solutions and the honest-refit
selection, shared by the models that offer them (issue 25).

* :func:`select_then_refit`: the ``holdout_refit`` selection policy. The schedule (epoch
  count and, for a per-epoch schedule that reacts to the judge loss, each epoch's learning
  rate) is chosen on the judge rows carved out of the fold's training rows; then the
  network is trained again, from the same start, on ALL the fold's training rows (judge
  rows included) replaying that schedule, and the last epoch is kept. The fold's own
  (OOF) rows decide nothing in either pass.
* :func:`control_rows`: control-difference augmentation (3rd place): the fold's control
  rows in the network's input space, grouped by cp_time x cp_dose.
* :func:`joint_targets` / :func:`keep_first_outputs`: a joint scored + non-scored head
  (3rd place: loss weights 0.5 / 0.5 of the two means); prediction keeps the scored part.
* :func:`without_smoothing` / :func:`config_without_smoothing`: the label-smoothing-0
  ablation of any model's params.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from moakit.models.base import EpochCallback, FitContext
from moakit.nn.blocks import WeightNormLinear
from moakit.nn.train import ControlRows, Replay


class _Fitted(Protocol):
    info: dict


# fit(X_fit, Y_fit, X_judge, Y_judge, Y_aux_fit, replay, on_epoch) -> a fold estimator whose
# info["replay"] is the chosen schedule as a dict (Replay.as_dict(), or a model's own: the
# 2-heads ResNet's phases); the refit pass gets that dict back as ``replay``
FitFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None", "np.ndarray | None",
                  "dict | None", "EpochCallback | None"], _Fitted]


def as_replay(replay: dict | None) -> Replay | None:
    """A :class:`Replay` from its dict (None: none)."""
    return None if replay is None else Replay(epochs=int(replay["epochs"]), lrs=replay.get("lrs"))


def _tagged(on_epoch: EpochCallback | None, name: str) -> EpochCallback | None:
    if on_epoch is None:
        return None
    return lambda record: on_epoch({**record, "pass": name})


def _stack(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None or len(b) == 0:
        return a
    return np.concatenate([np.asarray(a), np.asarray(b)]).astype(np.asarray(a).dtype, copy=False)


def select_then_refit(fit: FitFn, X_train, Y_train, X_valid, Y_valid, ctx: FitContext) -> _Fitted:
    """``fit`` judged on (X_valid, Y_valid); with ``ctx.refit`` (selection ``holdout_refit``)
    a second ``fit`` on the training + judge rows replaying the first one's schedule."""
    first = fit(X_train, Y_train, X_valid, Y_valid, ctx.Y_aux_train, None,
                _tagged(ctx.on_epoch, "select") if ctx.refit else ctx.on_epoch)
    if not ctx.refit:
        return first
    replay = first.info["replay"]
    X_all, Y_all = _stack(X_train, X_valid), _stack(Y_train, Y_valid)
    Y_aux_all = _stack(ctx.Y_aux_train, ctx.Y_aux_valid)
    final = fit(X_all, Y_all, None, None, Y_aux_all, replay, _tagged(ctx.on_epoch, "refit"))
    final.info.update(selection="holdout_refit", chosen_epochs=replay.get("epochs"), n_refit_rows=int(len(X_all)),
                      select_best_epoch=first.info.get("best_epoch"),
                      select_valid_loss=first.info.get("best_valid_loss"))
    return final


def control_rows(ctx: FitContext, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> ControlRows | None:
    """The context's control rows (through ``transform``: a fold's own feature steps) for
    control-difference augmentation; None when the runner gave none."""
    if ctx.X_controls is None or len(ctx.X_controls) == 0:
        return None
    X = ctx.X_controls if transform is None else transform(ctx.X_controls)
    groups = ctx.control_groups if ctx.control_groups is not None else np.zeros(len(X), np.int64)
    return ControlRows(np.asarray(X, np.float32), groups)


def joint_targets(Y: np.ndarray, Y_aux: np.ndarray | None, scored_weight: float = 0.5,
                  who: str = "joint_nonscored_head") -> tuple[np.ndarray, np.ndarray]:
    """The targets of a joint head, [scored | non-scored], and per-output loss weights so
    that the mean weighted BCE is ``w * mean(scored) + (1 - w) * mean(non-scored)``."""
    if Y_aux is None:
        raise ValueError(f"{who}: needs the non-scored targets (train_targets_nonscored) of the training rows")
    Y, Y_aux = np.asarray(Y, np.float32), np.asarray(Y_aux, np.float32)
    if len(Y) != len(Y_aux):
        raise ValueError(f"{who}: {len(Y)} scored and {len(Y_aux)} non-scored target rows")
    n_s, n_a = Y.shape[1], Y_aux.shape[1]
    total = n_s + n_a
    weights = np.concatenate([np.full(n_s, scored_weight * total / n_s),
                              np.full(n_a, (1.0 - scored_weight) * total / max(n_a, 1))]).astype(np.float32)
    return np.ascontiguousarray(np.concatenate([Y, Y_aux], axis=1)), weights


@torch.no_grad()
def keep_first_outputs(layer: nn.Module, n: int) -> nn.Module:
    """A copy of an output layer (``nn.Linear`` or :class:`WeightNormLinear`) that computes
    only its first ``n`` outputs (the same values)."""
    if isinstance(layer, WeightNormLinear):
        out = WeightNormLinear(layer.in_features, n)
        out.weight_v.copy_(layer.weight_v[:n])
        out.weight_g.copy_(layer.weight_g[:n])
        out.bias.copy_(layer.bias[:n])
    elif isinstance(layer, nn.Linear):
        out = nn.Linear(layer.in_features, n, bias=layer.bias is not None)
        out.weight.copy_(layer.weight[:n])
        if layer.bias is not None:
            out.bias.copy_(layer.bias[:n])
    else:
        raise TypeError(f"cannot cut the outputs of a {type(layer).__name__}")
    return out.to(next(layer.parameters()).device)


SMOOTHING_KEYS = ("smoothing", "stop_smoothing")


def without_smoothing(params: Any) -> Any:
    """``params`` (a model's params as a dict, at any depth) with every label smoothing
    (``smoothing``, TabNet's ``stop_smoothing``) set to 0."""
    if isinstance(params, dict):
        return {k: (0.0 if k in SMOOTHING_KEYS and isinstance(v, (int, float)) else without_smoothing(v))
                for k, v in params.items()}
    if isinstance(params, list):
        return [without_smoothing(v) for v in params]
    return params


def config_without_smoothing(config):
    """A RunConfig whose model trains with no label smoothing anywhere: its params validated
    (so the defaults are written out: a TrainParams smooths by 0.001 unless told), every
    smoothing set to 0. Which shipped configs smooth: BENCHMARKS.md, "New members and refit"."""
    from moakit.config import validate_params
    from moakit.models.base import get_model_class

    cls = get_model_class(config.model)
    full = validate_params(cls.Params, config.params, config.source or config.model).model_dump(mode="json")
    return config.model_copy(update={"params": without_smoothing(full),
                                     "description": (config.description + " (label smoothing 0)").strip()})
