"""Label-powerset NN (``label_powerset_nn``): the observed label combinations as the
classes of one softmax head (an idea of the 8th-place lish-moa team; facts only, written
for moakit).

Classes (:class:`PowersetMap`, fitted on the fold's TRAINING rows only): every combination
of scored targets seen on at least ``min_count`` training rows (the all-zero combination
included) is one class; the rarer combinations are merged into one ``other`` class, whose
target vector is the mean label vector of the rows merged into it (the probability that a
row of ``other`` carries target j). A row whose combination is not a class (a rare or an
unseen one) is labelled ``other``. The network is the Simple NN's MLP with one output per
class and a softmax cross-entropy loss; the probability of target j is the sum over the
classes of P(class) x the class's value for j (1 / 0 for an observed combination, the
mean for ``other``): ``P(targets) = softmax(logits) @ M``.

Epochs are judged (selection policy) on the softmax cross-entropy of the judge rows'
classes. Weak alone (rare combinations share one class), meant as a diverse blend member.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from moakit.runs import layout
from moakit.artifacts import atomic_dir
from moakit.models.estimators import SPEC, register_estimator
from moakit.models.base import FitContext, Model, StageSpec, TorchEstimator, register
from moakit.models.mlp import MLPStageParams, fit_mlp, fit_pipeline, load_pipeline
from moakit.models.quality import as_replay, control_rows, select_then_refit
from moakit.nn.train import predict_logits


class PowersetMap:
    """Label combinations <-> classes. ``matrix`` (classes x targets): row c is class c's
    target vector; the last row is ``other`` when ``has_other``."""

    def __init__(self, combos: np.ndarray, other: np.ndarray | None) -> None:
        self.combos = np.asarray(combos, np.uint8)  # (n_combos, n_targets) 0/1
        self.other = None if other is None else np.asarray(other, np.float32)
        self._index = {row.tobytes(): i for i, row in enumerate(self.combos)}

    @classmethod
    def fit(cls, Y: np.ndarray, min_count: int = 1) -> "PowersetMap":
        Y = (np.asarray(Y) > 0.5).astype(np.uint8)
        combos, inverse, counts = np.unique(Y, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        keep = counts >= min_count
        rare_rows = ~keep[inverse]
        other = Y[rare_rows].mean(axis=0) if rare_rows.any() else np.zeros(Y.shape[1], np.float32)
        return cls(combos[keep], other)

    @property
    def n_classes(self) -> int:
        return len(self.combos) + 1  # + other (the class of unseen and rare combinations)

    @property
    def matrix(self) -> np.ndarray:
        return np.vstack([self.combos.astype(np.float32), self.other[None, :]])

    def encode(self, Y: np.ndarray) -> np.ndarray:
        """Each row's class index (``other``: the last one)."""
        Y = (np.asarray(Y) > 0.5).astype(np.uint8)
        other = len(self.combos)
        return np.array([self._index.get(row.tobytes(), other) for row in Y], np.int64)

    def one_hot(self, Y: np.ndarray) -> np.ndarray:
        out = np.zeros((len(Y), self.n_classes), np.float32)
        out[np.arange(len(Y)), self.encode(Y)] = 1.0
        return out

    def to_targets(self, class_proba: np.ndarray) -> np.ndarray:
        """P(target j) = sum over classes of P(class) x the class's value for j."""
        return np.asarray(class_proba, np.float32) @ self.matrix

    def save(self, path: Path) -> None:
        np.save(path / layout.POWERSET_COMBOS, self.combos)
        np.save(path / layout.POWERSET_OTHER, self.other)

    @classmethod
    def load(cls, path: Path) -> "PowersetMap":
        return cls(np.load(path / layout.POWERSET_COMBOS), np.load(path / layout.POWERSET_OTHER))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@register_estimator("label_powerset")
class PowersetEstimator:
    """One fold: the class network and the class -> targets map.

    Saved as ``spec.json`` (its kind and info, as every estimator's), ``network/`` (a
    TorchEstimator, saved without the info: stored once) and ``mapping/``."""

    def __init__(self, network: TorchEstimator, mapping: PowersetMap, info: dict | None = None) -> None:
        self.network, self.mapping = network, mapping
        self.info = info if info is not None else network.info

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        logits = predict_logits(self.network.module, X, batch_size=self.network.eval_batch_size)
        return self.mapping.to_targets(softmax(logits.astype(np.float64)))

    def save(self, path: Path) -> None:
        with atomic_dir(path) as tmp:
            self.network.save(tmp / "network", with_info=False)
            (tmp / "mapping").mkdir()
            self.mapping.save(tmp / "mapping")
            (tmp / SPEC).write_text(json.dumps({"kind": self.kind, "info": self.info}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "PowersetEstimator":
        path = Path(path)
        info = json.loads((path / SPEC).read_text()).get("info")
        est = cls(TorchEstimator.load(path / "network"), PowersetMap.load(path / "mapping"), info)
        est.network.info = est.info  # one dict, as when it was trained
        return est


class LabelPowersetParams(MLPStageParams):
    # combinations seen on fewer training rows of the fold are merged into the "other" class
    min_count: int = Field(2, ge=1)


@register
class LabelPowersetNN(Model):
    name = "label_powerset_nn"
    Params = LabelPowersetParams
    supports_refit = True

    def __init__(self, params=None) -> None:
        super().__init__(params)
        if self.params.train.loss != "softmax":
            self.params = self.params.model_copy(
                update={"train": self.params.train.model_copy(update={"loss": "softmax"})})

    def stages(self):
        return [StageSpec("scored", targets="scored")]

    def fit_features(self, stage, train, test, seed):
        return fit_pipeline(self.params.features, train, test, seed)

    def load_features(self, stage, path: Path):
        return load_pipeline(path)

    def fit_fold(self, stage, X_train, Y_train, X_valid, Y_valid, ctx: FitContext):
        params = self.fit_params(ctx)
        if params.network.joint_nonscored_head:
            raise ValueError("label_powerset_nn: network.joint_nonscored_head is an option of the sigmoid heads")
        controls = control_rows(ctx) if params.train.control_augment > 0 else None

        def fit(X, Y, Xv, Yv, Y_aux, replay, on_epoch):
            mapping = PowersetMap.fit(Y, params.min_count)  # this pass's training rows only
            torch.manual_seed(ctx.seed)
            judged = Xv is not None and len(Xv) > 0
            net = fit_mlp(params, X, mapping.one_hot(Y), Xv, mapping.one_hot(Yv) if judged else None, ctx.seed,
                          on_epoch, None, controls, as_replay(replay))
            net.info.update(n_classes=mapping.n_classes)
            return PowersetEstimator(net, mapping)

        return select_then_refit(fit, X_train, Y_train, X_valid, Y_valid, ctx)
