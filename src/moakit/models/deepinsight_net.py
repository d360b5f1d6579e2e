"""The DeepInsight CNN network: the backbones (timm's, and the ablated ResNeSt-50 fast
2s2x40d built from timm's blocks), the head, registered as ``deepinsight_cnn``, and the
loading of pretrained backbone checkpoints. The models that train it are in
:mod:`moakit.models.deepinsight_cnn`."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from moakit.nn.blocks import register_network
from moakit.registry import Registry

NETWORK_NAME = "deepinsight_cnn"
RESNEST_FAST = "resnest50d_fast_2s2x40d"  # not in timm: built below from timm's ResNeSt blocks
# Keys of a checkpoint's classifier, which the head replaces (timm: efficientnet
# "classifier", resnet/resnest "fc"; our own network: "head").
CLASSIFIER_PREFIXES = ("classifier.", "fc.", "head.", "last_linear.")


# --------------------------------------------------------------------------- backbones


def _resnest50d_fast_2s2x40d(in_chans: int, drop_path_rate: float = 0.0) -> nn.Module:
    """ResNeSt-50 fast 2s2x40d (radix 2, cardinality 2, bottleneck width 40, average pooling
    for downsampling placed before the 3x3 split-attention conv), deep stem of width 32."""
    from timm.models.resnest import ResNestBottleneck
    from timm.models.resnet import ResNet

    return ResNet(
        block=ResNestBottleneck, layers=[3, 4, 6, 3], num_classes=0, in_chans=in_chans,
        stem_type="deep", stem_width=32, avg_down=True, base_width=40, cardinality=2,
        block_args=dict(radix=2, avd=True, avd_first=True), drop_path_rate=drop_path_rate,
    )


# backbones that timm has no name for; any other name is a timm model name
CUSTOM_BACKBONES: Registry[Callable[..., nn.Module]] = Registry("CNN backbone")
CUSTOM_BACKBONES.add(RESNEST_FAST, _resnest50d_fast_2s2x40d)


def create_backbone(name: str, in_chans: int = 3, drop_path: float = 0.0) -> nn.Module:
    """A timm backbone without classifier (``num_classes=0``), never pretrained from a hub.

    ``name`` is a timm model name (a ``.tag`` such as ``.ns_jft_in1k`` only names the
    weights, which are not downloaded) or ``resnest50d_fast_2s2x40d``. The result has
    ``num_features`` and returns pooled features (batch, num_features). ``drop_path``:
    stochastic depth ("drop connect" in the EfficientNet papers and gen-efficientnet), the
    rate of the last block, scaled down linearly towards the first (timm's rule).
    """
    if name in CUSTOM_BACKBONES:
        return CUSTOM_BACKBONES[name](in_chans, drop_path_rate=drop_path)
    import timm

    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        raise ValueError(f"unknown backbone {name!r}: not a timm model and not one of {CUSTOM_BACKBONES.names()}")
    return timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, drop_path_rate=drop_path)


@register_network(NETWORK_NAME)
class DeepInsightCNN(nn.Module):
    """Backbone -> (Dropout) -> Linear(num_features, hidden) -> ELU -> Linear(hidden, n_targets).

    As in the scripts, the dropout acts on the backbone's pooled features before the new
    head (gen-efficientnet's ``drop_rate``, the ResNeSt package's ``final_drop``), and the
    head's Linear weights start uniform in +-1/sqrt(fan_out) with zero bias (the caller
    then sets the output bias: ``init_output_bias``). ``drop_path`` goes to the backbone.

    The constructor kwargs are everything needed to rebuild it (``TorchEstimator.load``).
    ``channels_last`` keeps weights and activations in NHWC memory order: measured on 2 CPU
    cores (batch 64, 32 px, one training step), EfficientNet-B3 runs 2.7x faster than in
    NCHW (its depthwise-conv backward has a slow NCHW path), ResNeSt about 5% faster.
    """

    def __init__(self, backbone: str, n_targets: int, in_chans: int = 3, hidden: int = 512,
                 dropout: float = 0.0, channels_last: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.channels_last = bool(channels_last)
        self.backbone = create_backbone(backbone, in_chans, drop_path=drop_path)
        n_features = int(self.backbone.num_features)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(n_features, hidden)),
            ("act", nn.ELU()),
            ("fc2", nn.Linear(hidden, n_targets)),
        ]))
        with torch.no_grad():
            for layer in (self.head.fc1, self.head.fc2):
                bound = 1.0 / float(layer.out_features) ** 0.5
                layer.weight.uniform_(-bound, bound)
                layer.bias.zero_()
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.drop(self.backbone(x)))


# --------------------------------------------------------------------------- checkpoints


class PretrainedWeightsError(ValueError):
    """A local checkpoint that does not fit the backbone."""


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping of a checkpoint: unwraps ``state_dict`` / ``model`` (nested)."""
    for _ in range(4):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model", "model_state_dict", "module"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
        else:
            break
    if not isinstance(obj, dict) or not obj:
        raise PretrainedWeightsError(f"{path}: no state dict found (expected a mapping of tensors, "
                                     "possibly under 'state_dict' or 'model')")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PretrainedWeightsError(f"{path}: the checkpoint holds no tensors")
    return tensors


def normalise_checkpoint_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` (DataParallel) prefixes; strip a ``model.`` / ``backbone.`` prefix
    shared by every key (a Lightning module or our own DeepInsightCNN state dict; the
    latter's ``head.*`` keys are dropped as classifier keys)."""
    out = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    for prefix in ("model.", "backbone."):
        if any(k.startswith(prefix) for k in out):
            rest = [k for k in out if not k.startswith(prefix)]
            if all(k.startswith(CLASSIFIER_PREFIXES) for k in rest):
                out = {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}
    return out


def load_pretrained_backbone(backbone: nn.Module, path: str | Path, strict: bool = True) -> dict:
    """Load a local checkpoint into ``backbone`` (classifier keys ignored).

    ``strict``: every backbone tensor must be in the checkpoint with the same shape and
    the checkpoint may hold nothing else (BatchNorm ``num_batches_tracked`` counters
    excepted); otherwise :class:`PretrainedWeightsError` names the missing, unexpected and
    mis-shaped keys. Not strict: the matching tensors are loaded, the rest reported.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained_weights: no such file {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - reported with the file name
        raise PretrainedWeightsError(f"{path}: cannot be read as a weights-only torch checkpoint ({exc})") from exc
    state = normalise_checkpoint_keys(_unwrap_state_dict(obj, path))
    own = backbone.state_dict()
    ignored = sorted(k for k in state if k not in own and k.startswith(CLASSIFIER_PREFIXES))
    state = {k: v for k, v in state.items() if k not in ignored}
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if strict and (missing or unexpected or mismatched):
        def show(keys: list[str], what: str) -> str:
            head = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
            return f"{len(keys)} {what} ({head})" if keys else f"0 {what}"
        shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs backbone {tuple(own[k].shape)}" for k in mismatched]
        raise PretrainedWeightsError(
            f"{path} does not fit the backbone {type(backbone).__name__}: {show(missing, 'missing keys')}; "
            f"{show(unexpected, 'unexpected keys')}; {show(shapes, 'shape mismatches')} "
            f"(classifier keys are ignored; set pretrained_strict: false to load only the matching tensors)")
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    if not usable:
        raise PretrainedWeightsError(f"{path}: no tensor of the checkpoint matches the backbone")
    backbone.load_state_dict(usable, strict=False)
    return {"path": str(path), "loaded": len(usable), "missing": len(missing), "unexpected": len(unexpected),
            "mismatched": len(mismatched), "ignored_classifier": len(ignored)}
