"""DeepInsight CNNs (write-up section "DeepInsight CNNs"; the winners' scripts
final/Best LB/Training/Local/deepinsight-efficientnet-lightning-v7-b3-train.py and
deepinsight-resnest-lightning-v2-train.py, final/Best CV/Training/
deepinsight-resnest-lightning-v1-train.ipynb).

Two registered models share this module:

* ``deepinsight_efficientnet``: EfficientNet-B3 (the Noisy Student family of timm,
  ``tf_efficientnet_b3``) on 300x300 images, batch 48, dropout 0.3 on the pooled features
  and drop path (drop connect) 0.2;
* ``deepinsight_resnest``: ResNeSt-50 fast 2s2x40d (the ablated ResNeSt) on 224x224
  images, batch 128; V2 (config ``deepinsight_resnest_v2``) adds dropout 0.2 on the pooled
  features before the head (the ResNeSt package's ``final_drop``).

Inputs, in the scripts' order: cp_type, cp_dose, cp_time as numbers (trt_cp 1 / control
0, D1 0 / D2 1, 24/48/72 h as 0/0.5/1: the ``cp_codes`` block), then the g- and c-columns.
The CNNs train on the control rows too, so cp_type is what tells them apart.

Feature state (once per seed, control rows kept): the Norm-2 log scaler on those columns,
and the DeepInsight feature map (t-SNE of the features with the cosine metric, convex hull,
minimum-area rectangle), whose pixel coordinates at the configured resolution place each
feature in the image. ``transform`` returns only the SCALED matrix (n, n_features); images
are rendered batch by batch (mean / min / max of the features sharing a pixel as the 3
channels), in the training loop's ``batch_transform`` and in the estimator's prediction
transform, never for the whole dataset at once.

Training goes through the one loop :func:`moakit.nn.train.fit_network`: swap noise
(p 0.1; 15% of the feature count, drawn from the g/c columns only, never the cp columns,
from another random training row of the fold) is applied to a COPY of each training batch
only (the public scripts wrote the swapped values back into their training matrix), then
the batch is rendered.

Backbones are created with ``pretrained=False``; ``pretrained: true`` then loads timm's
pretrained weights through the Hugging Face hub or its local cache
(:mod:`moakit.models.pretrained`), and the ``pretrained_weights`` parameter loads a LOCAL checkpoint (a timm state dict or a ResNeSt-
format one; a dict wrapped under ``state_dict`` / ``model`` and ``module.`` prefixes are
accepted) into the backbone before training; the classifier is replaced by the head
(Dropout on the pooled features) -> Linear(features, 512) -> ELU -> Linear(512, n_targets),
the head's weights initialised as the scripts did (uniform +-1/sqrt(fan_out)).

A fold estimator (:class:`DeepInsightEstimator`) saves its renderer's pixel coordinates
with its weights, so ``runner.predict_run`` rebuilds everything from the fold folder.

``fit_fold`` needs the stage's feature map (to render images): it asks its
:class:`~moakit.models.base.FitContext` for it, which the runner lets load the stage-seed's
saved feature state from the run folder (so it works in Ray worker processes too).

The network (backbones, head, pretrained checkpoints) is in :mod:`moakit.models.deepinsight_net`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from moakit.runs import layout
from moakit.artifacts import atomic_dir
from moakit.deepinsight import FeatureMap, LogNormScaler, Renderer, swap_noise
from moakit.models.estimators import register_estimator
from moakit.models.base import (Blocks, FeatureState, FitContext, Model, ModelParams, StageSpec,
                               TorchEstimator, register)
from moakit.models.deepinsight_net import (  # noqa: F401 (the network side, re-exported)
    CUSTOM_BACKBONES, NETWORK_NAME, RESNEST_FAST, DeepInsightCNN, PretrainedWeightsError, create_backbone,
    load_pretrained_backbone, normalise_checkpoint_keys,
)
from moakit.nn.train import TrainParams, fit_network, init_output_bias, predict_proba, resolve_device

INPUT_BLOCKS = ("cp_codes", "g", "c")  # the scripts' column order: cp_type, cp_dose, cp_time, g-*, c-*
NOISE_GROUPS = ("gene", "cell")  # the feature groups swap noise may touch


# --------------------------------------------------------------------------- params


class FeatureMapParams(BaseModel):
    """The t-SNE feature map (FeatureMap) and what it is fitted on."""

    model_config = ConfigDict(extra="forbid")

    perplexity: float = Field(5.0, gt=0)
    n_iter: int = Field(1000, ge=250)  # scikit-learn's minimum
    metric: str = "cosine"
    method: Literal["exact", "barnes_hut"] = "exact"
    max_samples: int | None = Field(None, ge=10)  # rows the t-SNE sees (a seeded subset)
    fit_on: Literal["train", "train+test"] = "train"


class SwapNoiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p: float = Field(0.1, ge=0, le=1)
    fraction: float = Field(0.15, ge=0, le=1)


# The scripts' training settings (the configs' comments give the sources); a partial
# ``train`` mapping is merged over them (not over TrainParams' MLP defaults).
CNN_TRAIN = {"epochs": 200, "batch_size": 48, "eval_batch_size": 512, "optimizer": "radam", "lr": 0.000352,
             "weight_decay": 1e-6, "grad_clip": 10.0, "scheduler": "cosine", "cosine_t_max": 5,
             "smoothing": 0.001, "patience": 12, "min_delta": 1e-6}


class DeepInsightParams(ModelParams):
    backbone: str = "tf_efficientnet_b3"
    image_size: int = Field(300, ge=8)
    resolution: int | None = Field(None, ge=4)  # feature-map grid; None = image_size (the write-up)
    hidden: int = Field(512, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)  # on the pooled features, before the head
    drop_path: float = Field(0.0, ge=0, lt=1)  # stochastic depth of the backbone's blocks
    channels_last: bool = True  # NHWC memory order (same results, faster convolutions)
    # true: timm's pretrained weights, through the Hugging Face hub or its local cache (models/pretrained.py)
    pretrained: bool = False
    pretrained_weights: str | None = None  # a LOCAL checkpoint file; nothing is downloaded
    pretrained_strict: bool = True
    feature_map: FeatureMapParams = FeatureMapParams()
    swap_noise: SwapNoiseParams = SwapNoiseParams()
    # the class's ``train_defaults``, with a config's partial ``train`` mapping merged over them
    train: TrainParams = Field(default_factory=dict, validate_default=True)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available
    # Mixed precision: "auto" = 16-bit autocast on CUDA (the scripts' precision=16): bf16 where
    # the GPU supports it, else fp16 with GradScaler loss scaling (nn.train.MixedPrecision);
    # fp32 on CPU. "on" also autocasts on CPU (bf16: bench/bench_cnn.py measures it); "off" never.
    amp: Literal["auto", "on", "off"] = "auto"

    train_defaults: ClassVar[dict] = CNN_TRAIN

    @field_validator("pretrained_weights")
    @classmethod
    def _one_weight_source(cls, value, info):
        if value and info.data.get("pretrained"):
            raise ValueError("give pretrained: true (timm's weights from the hub or its cache) or pretrained_weights: "
                             "FILE (a local checkpoint), not both")
        return value

    @field_validator("train", mode="before")
    @classmethod
    def _merge_train_defaults(cls, value):
        if isinstance(value, dict):
            return {**cls.train_defaults, **value}
        return value

    @model_validator(mode="after")
    def _no_train_amp(self) -> "DeepInsightParams":
        if self.train.amp:
            raise ValueError("set mixed precision with the model's `amp` (auto/on/off), not train.amp")
        return self

    @property
    def grid(self) -> int:
        return self.resolution if self.resolution is not None else self.image_size


class EfficientNetParams(DeepInsightParams):
    pass


class ResNeStParams(DeepInsightParams):
    backbone: str = RESNEST_FAST
    image_size: int = Field(224, ge=8)
    train_defaults: ClassVar[dict] = {**CNN_TRAIN, "batch_size": 128, "patience": 16}


def resolve_amp(setting: str, device: torch.device) -> bool:
    return setting == "on" or (setting == "auto" and device.type == "cuda")


# --------------------------------------------------------------------------- feature state


def raw_matrix(blocks: Blocks, names: tuple[str, ...] | list[str] = INPUT_BLOCKS) -> np.ndarray:
    missing = [b for b in names if b not in blocks]
    if missing:
        raise KeyError(f"DeepInsight needs the blocks {tuple(names)}; missing {missing}")
    return np.ascontiguousarray(np.concatenate([blocks[b] for b in names], axis=1), dtype=np.float32)


def feature_groups(blocks: Blocks, names: tuple[str, ...] | list[str] = INPUT_BLOCKS) -> list[str]:
    """The group of every column of ``raw_matrix``: gene, cell or cp."""
    label = {"g": "gene", "c": "cell"}
    return [label.get(b, "cp") for b in names for _ in range(blocks[b].shape[1])]


class DeepInsightFeatures(FeatureState):
    """Fitted scaler + feature map + the pixel grid; ``transform`` gives the scaled matrix.

    Saved as ``scaler.npz``, ``feature_map.npz``, ``deepinsight.json`` (with the input
    blocks, in order) and the map's plot ``feature_map.png``.
    """

    def __init__(self, scaler: LogNormScaler, fmap: FeatureMap, resolution: int, image_size: int,
                 groups: list[str], info: dict | None = None, blocks: tuple[str, ...] | list[str] = INPUT_BLOCKS) -> None:
        self.scaler = scaler
        self.fmap = fmap
        self.resolution = int(resolution)
        self.image_size = int(image_size)
        self.groups = list(groups)
        self.info = info or {}
        self.blocks = tuple(blocks)

    @property
    def n_features(self) -> int:
        return int(self.scaler.n_features_in_)

    def transform(self, blocks: Blocks) -> np.ndarray:
        return self.scaler.transform(raw_matrix(blocks, self.blocks))

    def noise_columns(self) -> np.ndarray:
        """Indices of the columns swap noise may replace: the gene and cell columns."""
        return np.flatnonzero(np.isin(np.asarray(self.groups), NOISE_GROUPS))

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        return self.fmap.pixels(self.resolution)

    def renderer(self) -> Renderer:
        rows, cols = self.pixels()
        return Renderer(rows, cols, self.resolution, self.image_size)

    def save(self, path: Path) -> None:
        with atomic_dir(path) as tmp:
            np.savez(tmp / layout.DEEPINSIGHT_SCALER, **self.scaler.state_dict())
            self.fmap.save(tmp / layout.DEEPINSIGHT_FEATURE_MAP)
            (tmp / layout.DEEPINSIGHT_SPEC).write_text(json.dumps(
                {"resolution": self.resolution, "image_size": self.image_size, "blocks": list(self.blocks),
                 "groups": self.groups, "info": self.info}, indent=2))
            self.fmap.plot(tmp / layout.DEEPINSIGHT_FEATURE_MAP_PNG, groups=self.groups, resolution=self.resolution,
                           title=f"DeepInsight feature map, {self.n_features} features")

    @classmethod
    def load(cls, path: Path) -> "DeepInsightFeatures":
        path = Path(path)
        spec = json.loads((path / layout.DEEPINSIGHT_SPEC).read_text())
        if "blocks" not in spec:  # saved before cp_codes
            from moakit.runs.records import unsupported

            raise unsupported(path / layout.DEEPINSIGHT_SPEC, "no input blocks recorded")
        with np.load(path / layout.DEEPINSIGHT_SCALER, allow_pickle=False) as z:
            scaler = LogNormScaler.from_state_dict({k: z[k] for k in z.files})
        fmap = FeatureMap.load(path / layout.DEEPINSIGHT_FEATURE_MAP)
        return cls(scaler, fmap, spec["resolution"], spec["image_size"], spec["groups"], spec.get("info"),
                   blocks=spec["blocks"])


# --------------------------------------------------------------------------- rendering


class RenderTransform:
    """``BatchTransform`` of the CNNs: (swap noise on a copy when training) -> render.

    With a CUDA ``device`` the batch is moved there first and rendered with the
    renderer's torch kernels; on CPU the numpy renderer runs on the batch's memory.
    ``pool`` (training only) is the fold's training matrix the swap-noise donors come from;
    ``columns`` the columns swap noise may replace (the g/c columns, never the cp columns).
    """

    def __init__(self, renderer: Renderer, device: torch.device, pool: np.ndarray | None = None,
                 p: float = 0.0, fraction: float = 0.0, columns: np.ndarray | None = None) -> None:
        self.renderer = renderer
        self.device = device
        self.pool = pool
        self.p = p
        self.fraction = fraction
        self.columns = columns  # the columns swap noise may replace (None: all)

    def __call__(self, xb: torch.Tensor, training: bool, rng: np.random.Generator) -> torch.Tensor:
        if training and self.pool is not None and self.p > 0 and self.fraction > 0:
            noisy = swap_noise(xb.detach().cpu().numpy(), self.pool, rng, p=self.p, fraction=self.fraction,
                               columns=self.columns)
            xb = torch.from_numpy(noisy)
        if self.device.type != "cpu":
            return self.renderer.render_torch(xb.to(self.device, non_blocking=True), backend="torch")
        return self.renderer.render_torch(xb, backend="numpy")


@register_estimator("deepinsight")
class DeepInsightEstimator(TorchEstimator):
    """A trained DeepInsight CNN plus its renderer (pixel coordinates, grid, image size).

    Saved as the TorchEstimator layout (``spec.json``, ``weights.pt``) plus ``render.npz``,
    by TorchEstimator's save / load.
    """

    RENDER = layout.DEEPINSIGHT_RENDER  # the renderer's pixel coordinates, grid and image size

    def __init__(self, network: str, kwargs: dict, render: dict, module: nn.Module | None = None,
                 eval_batch_size: int = 512, info: dict | None = None, device: str = "auto",
                 amp: str = "auto") -> None:
        self.render = {"pixel_rows": np.asarray(render["pixel_rows"], np.int64),
                       "pixel_cols": np.asarray(render["pixel_cols"], np.int64),
                       "resolution": int(render["resolution"]), "image_size": int(render["image_size"])}
        self.renderer = Renderer(self.render["pixel_rows"], self.render["pixel_cols"],
                                 self.render["resolution"], self.render["image_size"])
        self.device_setting = device
        self.amp_setting = amp
        super().__init__(network, kwargs, module=module, eval_batch_size=eval_batch_size, info=info)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        device = resolve_device(self.device_setting)
        self.module.to(device)
        transform = RenderTransform(self.renderer, device)
        return predict_proba(self.module, X, batch_size=self.eval_batch_size, transform=transform, device=device,
                             amp=resolve_amp(self.amp_setting, device))

    # save / load: TorchEstimator's, through its hooks
    def _spec(self) -> dict:
        spec = super()._spec()
        info = spec.pop("info")
        return {**spec, "device": self.device_setting, "amp": self.amp_setting, "info": info}

    def _weights(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}  # the module may be on a GPU

    def _save_extra(self, folder: Path) -> None:
        np.savez(folder / self.RENDER, pixel_rows=self.render["pixel_rows"], pixel_cols=self.render["pixel_cols"],
                 resolution=np.int64(self.render["resolution"]), image_size=np.int64(self.render["image_size"]))

    @classmethod
    def _from_spec(cls, spec: dict, path: Path, transform=None) -> "DeepInsightEstimator":
        with np.load(Path(path) / cls.RENDER, allow_pickle=False) as z:
            render = {k: z[k] for k in z.files}
        return cls(spec["network"], spec["kwargs"], render, eval_batch_size=spec["eval_batch_size"],
                   info=spec.get("info"), device=spec.get("device", "auto"), amp=spec.get("amp", "auto"))


# --------------------------------------------------------------------------- models


def network_kwargs(params: DeepInsightParams, n_targets: int) -> dict:
    return {"backbone": params.backbone, "n_targets": int(n_targets), "in_chans": 3, "hidden": params.hidden,
            "dropout": params.dropout, "drop_path": params.drop_path, "channels_last": params.channels_last}


def build_cnn(params: DeepInsightParams, n_targets: int) -> tuple[DeepInsightCNN, dict, dict | None]:
    """The network of a fold (pretrained backbone weights loaded when configured)."""
    kwargs = network_kwargs(params, n_targets)
    net = DeepInsightCNN(**kwargs)
    loaded = None
    if params.pretrained_weights:
        loaded = load_pretrained_backbone(net.backbone, params.pretrained_weights, strict=params.pretrained_strict)
    elif params.pretrained:
        from moakit.models.pretrained import load_hub_backbone

        loaded = load_hub_backbone(net.backbone, params.backbone, in_chans=kwargs["in_chans"])
    return net, kwargs, loaded


class DeepInsightModel(Model):
    """Shared implementation of the two DeepInsight CNN models (one stage, controls kept)."""

    Params: ClassVar[type[DeepInsightParams]] = DeepInsightParams
    params: DeepInsightParams
    fold_gpu_share = 1.0  # a fold job asks a cluster for a whole GPU (--job-gpus)

    def stages(self) -> list[StageSpec]:
        return [StageSpec("scored", targets="scored", keep_controls=True)]

    def fit_features(self, stage: StageSpec, train: Blocks, test: Blocks, seed: int) -> DeepInsightFeatures:
        p = self.params
        start = time.perf_counter()
        X = raw_matrix(train)
        if p.feature_map.fit_on == "train+test" and len(test.get("g", ())) > 0:
            X = np.concatenate([X, raw_matrix(test)], axis=0)
        scaler = LogNormScaler().fit(X)
        fm = p.feature_map
        fmap = FeatureMap(perplexity=fm.perplexity, n_iter=fm.n_iter, metric=fm.metric, random_state=seed,
                          method=fm.method, max_samples=fm.max_samples).fit(scaler.transform(X))
        groups = feature_groups(train)
        info = {"fit_rows": int(len(X)), "fit_seconds": round(time.perf_counter() - start, 3),
                "collision_rate": round(fmap.collision_rate(p.grid), 4)}
        return DeepInsightFeatures(scaler, fmap, p.grid, p.image_size, groups, info, blocks=INPUT_BLOCKS)

    def feature_fit_spec(self, stage: StageSpec, seed: int) -> dict:
        """What :meth:`fit_features` reads besides the rows: the t-SNE map's settings and its
        random state, the seed (the t-SNE's PCA start and the ``max_samples`` row subsample
        draw from it), the grid and image size saved with the map, the input blocks (the
        Norm-2 log scaler has no settings)."""
        p = self.params
        return {"feature_map": p.feature_map.model_dump(mode="json"), "random_state": seed, "grid": p.grid,
                "image_size": p.image_size, "blocks": list(INPUT_BLOCKS), "scaler": "log_norm"}

    def load_features(self, stage: StageSpec, path: Path) -> DeepInsightFeatures:
        return DeepInsightFeatures.load(path)

    def fit_fold(self, stage: StageSpec, X_train: np.ndarray, Y_train: np.ndarray, X_valid: np.ndarray,
                 Y_valid: np.ndarray, ctx: FitContext) -> DeepInsightEstimator:
        p = self.fit_params(ctx)
        seed, on_epoch = ctx.seed, ctx.on_epoch
        features: DeepInsightFeatures = ctx.stage_features(self.name)  # the feature map renders the images
        if features.n_features != X_train.shape[1]:
            raise ValueError(f"feature map has {features.n_features} features, X_train {X_train.shape[1]}")
        if (features.resolution, features.image_size) != (p.grid, p.image_size):
            raise ValueError(f"feature state is for {features.resolution}px grid / {features.image_size}px images, "
                             f"params ask {p.grid} / {p.image_size}")
        device = resolve_device(p.device)
        amp = resolve_amp(p.amp, device)
        torch.manual_seed(seed)
        net, kwargs, loaded = build_cnn(p, Y_train.shape[1])
        init_output_bias(net.head.fc2, Y_train)
        renderer = features.renderer()
        pool = np.ascontiguousarray(X_train, dtype=np.float32)  # read only: swap_noise copies
        train_tf = RenderTransform(renderer, device, pool, p.swap_noise.p, p.swap_noise.fraction,
                                   columns=features.noise_columns())
        eval_tf = RenderTransform(renderer, device)
        start = time.perf_counter()
        result = fit_network(net, pool, Y_train, X_valid, Y_valid, p.train.model_copy(update={"amp": amp}),
                             seed=seed, batch_transform=train_tf, eval_transform=eval_tf, on_epoch=on_epoch,
                             device=device)
        seconds = time.perf_counter() - start
        epochs = len(result.history)
        info = {"best_epoch": result.best_epoch, "best_valid_loss": result.best_loss,
                "epochs": epochs, "seconds_per_epoch": round(seconds / max(epochs, 1), 3),
                "device": device.type, "amp": amp, "precision": result.precision, "pretrained": loaded}
        render = {"pixel_rows": renderer.pixel_rows, "pixel_cols": renderer.pixel_cols,
                  "resolution": renderer.resolution, "image_size": renderer.image_size}
        net.eval()
        return DeepInsightEstimator(NETWORK_NAME, kwargs, render, module=net, eval_batch_size=p.train.eval_batch_size,
                                    info=info, device=self.params.device, amp=p.amp)


@register
class DeepInsightEfficientNet(DeepInsightModel):
    """DeepInsight EfficientNet-B3 Noisy Student (300x300, batch 48)."""

    name = "deepinsight_efficientnet"
    Params = EfficientNetParams


@register
class DeepInsightResNeSt(DeepInsightModel):
    """DeepInsight ResNeSt-50 fast 2s2x40d (224x224, batch 128); V2 = dropout 0.2 on the pooled features."""

    name = "deepinsight_resnest"
    Params = ResNeStParams
