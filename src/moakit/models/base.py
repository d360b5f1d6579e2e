"""The model contract and the one registry of models.

A model is a chain of **stages** (one for most models; the stacked models have two or
three). For each stage and seed the runner fits the stage's feature transform once, then
calls :meth:`Model.fit_fold` per fold; a stage's out-of-fold predictions (and its
fold-averaged test predictions) become the ``meta`` block of the next stage's inputs, so a
row's meta-features never come from a network that was trained on that row.

Every fitted thing can be saved and reloaded, which is what inference on new data uses.
What a fold's training needs besides its rows (seed, epoch callback, auxiliary targets,
the stage's fitted features, the device) comes in one :class:`FitContext`.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from moakit.artifacts import atomic_dir
from moakit.models.estimators import SPEC, WEIGHTS, load_estimator, register_estimator
from moakit.nn.blocks import build_network
from moakit.nn.train import BatchTransform, predict_proba
from moakit.registry import Registry

Blocks = dict[str, np.ndarray]
EpochCallback = Callable[[dict], None]


class Estimator(Protocol):
    """A fitted per-fold predictor."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...


class FeatureState(Protocol):
    """A fitted feature transform (a features.Pipeline, or a model's own, which may subclass
    this for the defaults)."""

    def transform(self, blocks: Blocks) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...

    @property
    def reads_row_count(self) -> bool:
        """Whether ``transform`` gives a row other values with the number of rows it is given
        in all, so that chunked prediction must tell it the whole input's count
        (:func:`moakit.streaming.umap_rows_hint`). Only a umap step of umap-learn's transform
        (``transform: umap``) without ``n_epochs`` does (:attr:`moakit.features.Step.reads_row_count`);
        a pipeline or a stacked state reads it when one of its steps does; False by default.
        A fold estimator with a transform of its own answers for it the same way
        (:class:`moakit.fold_transforms.FoldTransformEstimator`)."""
        return False


@dataclass(frozen=True)
class StageSpec:
    """What one stage learns.

    ``targets`` chooses the label matrix; ``drop_empty_targets`` drops target columns
    with no positive training row (the non-scored stage: 331 of 402 on real data);
    ``keep_controls`` trains on control rows too (DeepInsight CNNs only);
    ``aux_targets`` asks the runner for a second label matrix of the training rows, passed
    to :meth:`Model.fit_fold` in the :class:`FitContext` (``Y_aux_train`` / ``Y_aux_valid``,
    all its columns, aligned with ``Y_train`` / ``Y_valid``): the 2-heads ResNet and the
    1D-CNN pre-train on the non-scored targets before their scored stage.
    """

    name: str
    targets: Literal["scored", "nonscored"] = "scored"
    keep_controls: bool = False
    drop_empty_targets: bool = False
    aux_targets: Literal["scored", "nonscored"] | None = None


@dataclass
class FitContext:
    """What one fold's training receives besides its rows.

    ``seed``: the fold's torch/numpy seed. ``on_epoch``: called with each epoch's record
    (the fold's learning curve). ``Y_aux_train`` / ``Y_aux_valid``: the stage's auxiliary
    targets (:attr:`StageSpec.aux_targets`), None when the stage has none. ``device``:
    where the networks train (``cpu`` / ``cuda``), overriding every ``device`` setting in the
    model's params; None leaves them as configured (``auto`` by default). The stage-seed's
    fitted feature state is :meth:`stage_features`: given as ``features``, or loaded on
    first use by ``load_features`` (the runner passes a loader, so models that never ask
    load nothing).
    """

    seed: int
    on_epoch: EpochCallback | None = None
    Y_aux_train: np.ndarray | None = None
    Y_aux_valid: np.ndarray | None = None
    device: Literal["cpu", "cuda"] | None = None
    features: FeatureState | None = None
    load_features: Callable[[], FeatureState] | None = field(default=None, repr=False)
    # selection ``holdout_refit``: after choosing the schedule on (X_valid, Y_valid), train
    # again on the training AND judge rows replaying it (moakit.models.quality.select_then_refit)
    refit: bool = False
    # the control rows of the fold's training folds in the stage's input space and their
    # cp_time x cp_dose group: for ``train.control_augment`` (None: the runner gave none)
    X_controls: np.ndarray | None = field(default=None, repr=False)
    control_groups: np.ndarray | None = field(default=None, repr=False)

    def stage_features(self, who: str) -> FeatureState:
        """The stage-seed's fitted feature state (``who`` names the model in the error)."""
        if self.features is None and self.load_features is not None:
            self.features = self.load_features()
        if self.features is None:
            raise ValueError(f"{who}: fit_fold needs the stage's fitted features (FitContext.features)")
        return self.features

    def aux_targets(self, who: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(Y_aux_train, Y_aux_valid); an error naming ``who`` when the stage gave none."""
        if self.Y_aux_train is None:
            raise ValueError(f"{who}: fit_fold needs the auxiliary (non-scored) targets of the training rows "
                             "(FitContext.Y_aux_train)")
        return self.Y_aux_train, self.Y_aux_valid


def on_device(params: BaseModel, device: str | None) -> BaseModel:
    """``params`` with every field named ``device`` (at any depth) set to ``device``;
    ``params`` itself when ``device`` is None."""
    if device is None:
        return params
    update = {}
    for name in type(params).model_fields:
        value = getattr(params, name)
        if name == "device":
            update[name] = device
        elif isinstance(value, BaseModel):
            update[name] = on_device(value, device)
    return params.model_copy(update=update)


class ModelParams(BaseModel):
    """Base of every model's Params: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Model(ABC):
    """A registered MoA model. Hyperparameters live in ``self.params`` (validated)."""

    name: ClassVar[str]
    Params: ClassVar[type[ModelParams]]
    # The share of one job's GPUs (``--job-gpus``) a fold job of this model asks a cluster
    # for: the small MLPs share a GPU; an image CNN sets 1.0 (a whole one).
    fold_gpu_share: ClassVar[float] = 0.25
    # True when fit_fold honours FitContext.refit (selection ``holdout_refit``)
    supports_refit: ClassVar[bool] = False

    def __init__(self, params: dict | ModelParams | None = None) -> None:
        if isinstance(params, ModelParams):
            self.params = params
        else:
            self.params = self.Params(**(params or {}))

    @abstractmethod
    def stages(self) -> list[StageSpec]:
        """The stages in training order."""

    @abstractmethod
    def fit_features(self, stage: StageSpec, train: Blocks, test: Blocks, seed: int) -> FeatureState:
        """Fit the stage's feature transform (unsupervised; may use test rows)."""

    @abstractmethod
    def load_features(self, stage: StageSpec, path: Path) -> FeatureState:
        """Reload what :meth:`fit_features` returned and was saved at ``path``."""

    @abstractmethod
    def fit_fold(
        self,
        stage: StageSpec,
        X_train: np.ndarray,
        Y_train: np.ndarray,
        X_valid: np.ndarray,
        Y_valid: np.ndarray,
        ctx: FitContext,
    ) -> Estimator:
        """Train on (X_train, Y_train); (X_valid, Y_valid) are the rows that judge epochs
        and early stopping under the run's selection policy (none under ``last``). The rest
        (seed, epoch callback, auxiliary targets, fitted features, device) is in ``ctx``."""

    def check_panel(self, data, where: str) -> None:
        """Before any work: raise moakit.config.ConfigError (naming ``where``, the field and
        the block) when the model's own features (those not declared as feature pipelines,
        which the runner checks) cannot be built on ``data``'s panel (e.g. a block with no
        columns, more components than columns). Nothing to check by default."""

    @property
    def meta_from_seed_mean(self) -> bool:
        """True when a stage's ``meta`` block is the previous stage's predictions averaged
        over ALL seeds (fed to every seed), False when each seed has its own chain."""
        return False

    def feature_fit_spec(self, stage: StageSpec, seed: int) -> object | None:
        """What :meth:`fit_features` of ``stage`` for ``seed`` depends on besides its input
        rows (the data and upstream stages), as JSON, for a model whose features are not
        feature pipelines: equal specs on equal rows fit equal states, so
        :mod:`moakit.feature_reuse` shares such fits between seeds and the feature cache
        across runs. Include the seed only where the fit draws from it. None (the default):
        not declared, never shared."""
        return None

    def reuses_features_of(self, stage: StageSpec) -> str | None:
        """The earlier stage whose fitted feature state :meth:`fit_features` of ``stage``
        reuses (None: none). When the stages are fitted in different processes, the runner
        reloads that stage's saved state and hands it over with :meth:`adopt_features`."""
        return None

    def adopt_features(self, stage: StageSpec, seed: int, features: FeatureState, train: Blocks,
                       test: Blocks) -> None:
        """Take ``features`` (``stage``'s fitted state for ``seed``, reloaded; ``train`` /
        ``test`` the blocks it was fitted on) as if this object had fitted it."""

    def fit_params(self, ctx: FitContext):
        """The params a fold trains with: ``self.params`` on the context's device."""
        return on_device(self.params, ctx.device)


# name -> Model class; moakit.models imports every model module, whose @register fills it
MODELS: Registry[type[Model]] = Registry("model", loader=lambda: importlib.import_module("moakit.models"))


def register(cls: type[Model]) -> type[Model]:
    """Class decorator: make a model available by its ``name`` in configs."""
    return MODELS.add(getattr(cls, "name", None), cls)


def get_model_class(name: str) -> type[Model]:
    return MODELS.get(name)


def make_model(name: str, params: dict | None = None) -> Model:
    return get_model_class(name)(params)


@register_estimator("torch")
class TorchEstimator:
    """A trained torch network plus what is needed to rebuild and run it.

    Saved as ``spec.json`` (its kind, network name and constructor kwargs, inference settings) and
    ``weights.pt`` (the state dict, loaded with ``weights_only=True``). A subclass saves more
    through the hooks (:meth:`_spec`, :meth:`_weights`, :meth:`_save_extra`,
    :meth:`_from_spec`), never a save / load of its own.
    """

    def __init__(
        self,
        network: str,
        kwargs: dict,
        module: torch.nn.Module | None = None,
        eval_batch_size: int = 2048,
        transform: BatchTransform | None = None,
        info: dict | None = None,
    ) -> None:
        self.network = network
        self.kwargs = kwargs
        self.module = module if module is not None else build_network(network, kwargs)
        self.eval_batch_size = eval_batch_size
        self.transform = transform
        self.info = info or {}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return predict_proba(self.module, X, batch_size=self.eval_batch_size, transform=self.transform)

    def _spec(self) -> dict:
        """What spec.json holds: the kind, what rebuilds the network, inference settings, and
        ``info`` (last)."""
        return {"kind": self.kind, "network": self.network, "kwargs": self.kwargs,
                "eval_batch_size": self.eval_batch_size, "info": self.info}

    def _weights(self) -> dict:
        """The state dict saved as weights.pt."""
        return self.module.state_dict()

    def _save_extra(self, folder: Path) -> None:
        """Files a subclass saves beside spec.json and weights.pt (none here)."""

    @classmethod
    def _from_spec(cls, spec: dict, path: Path, transform: BatchTransform | None = None) -> "TorchEstimator":
        """The estimator (its network not yet loaded) a saved folder's spec.json describes."""
        return cls(spec["network"], spec["kwargs"], eval_batch_size=spec["eval_batch_size"],
                   transform=transform, info=spec.get("info"))

    def save(self, path: Path, with_info: bool = True) -> None:
        """``with_info=False``: spec.json's ``info`` left empty (an estimator holding this
        network keeps the info in its own spec.json: stored once)."""
        spec = self._spec()
        if not with_info:
            spec["info"] = {}
        with atomic_dir(path) as tmp:
            (tmp / SPEC).write_text(json.dumps(spec, indent=2))
            torch.save(self._weights(), tmp / WEIGHTS)
            self._save_extra(tmp)

    @classmethod
    def load(cls, path: Path, transform: BatchTransform | None = None) -> "TorchEstimator":
        path = Path(path)
        est = cls._from_spec(json.loads((path / SPEC).read_text()), path, transform)
        from moakit.validate import load_weights

        load_weights(est.module, path / WEIGHTS)  # another shape: an error naming weights.pt
        est.module.eval()
        return est
