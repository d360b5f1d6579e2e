"""Pretrained backbone weights the way timm's users get them (``pretrained: true`` in a
DeepInsight config): ``timm.create_model(name, pretrained=True)``, which downloads the
weights through the Hugging Face hub where the machine is online and reads them from the
local hub cache (``HF_HOME`` / ``HF_HUB_CACHE``) otherwise, e.g. with ``HF_HUB_OFFLINE=1``.
``pretrained_weights: FILE`` (a local state dict, :func:`load_pretrained_backbone`) stays
for machines that have neither.

Weights missing from the cache while the hub cannot be reached give one error naming the
backbone, its hub repository, the cache folder and what to download.
"""

from __future__ import annotations

import torch.nn as nn


class HubWeightsError(ValueError):
    """Pretrained weights that cannot be had: no hub weights for the backbone, or not cached
    while the hub is unreachable."""


def hub_repo(name: str) -> str | None:
    """The Hugging Face hub repository of timm's pretrained weights for ``name`` (a timm
    model name, with or without a ``.tag``; the untagged name means timm's default tag), or
    None when timm knows no hub weights for it."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=False)
    except (RuntimeError, ValueError, KeyError):
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _is_hub_error(exc: BaseException) -> bool:
    """A failure to get a file from the hub or its cache (not a bug of the caller)."""
    import huggingface_hub.errors as hub_errors

    hub_types = tuple(t for t in (getattr(hub_errors, n, None) for n in (
        "LocalEntryNotFoundError", "EntryNotFoundError", "OfflineModeIsEnabled", "RepositoryNotFoundError",
        "HfHubHTTPError")) if isinstance(t, type))
    return isinstance(exc, hub_types + (OSError, ConnectionError, TimeoutError))


def hub_state_dict(name: str, in_chans: int = 3) -> tuple[dict, dict]:
    """(state dict, info) of timm's pretrained ``name`` without classifier
    (``num_classes=0``), through the hub or its local cache. Raises :class:`HubWeightsError`."""
    import timm

    repo = hub_repo(name)
    if repo is None:
        raise HubWeightsError(
            f"pretrained: true: timm has no Hugging Face hub weights for backbone {name!r}; download a checkpoint "
            f"for it and give its path as pretrained_weights: FILE (a timm or ResNeSt state dict)")
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_chans)
    except Exception as exc:  # noqa: BLE001 - hub / cache failures become one clear error
        if not _is_hub_error(exc):
            raise
        where = ("HF_HUB_OFFLINE is set" if _offline() else "the hub could not be reached")
        raise HubWeightsError(
            f"pretrained: true: the weights of backbone {name!r} (Hugging Face hub repository {repo}) are not in "
            f"the local cache {_cache_dir()} and {where} ({type(exc).__name__}). Download them once on a machine "
            f"that is online, into that cache (`hf download {repo}`, or python -c \"import timm; "
            f"timm.create_model('{name}', pretrained=True)\"; HF_HOME / HF_HUB_CACHE choose the cache), or save "
            f"the state dict to a file and give pretrained_weights: FILE instead") from None
    state = model.state_dict()
    return state, {"source": "hub", "repo": repo, "offline": _offline(), "loaded": len(state)}


def load_hub_backbone(backbone: nn.Module, name: str, in_chans: int = 3) -> dict:
    """Load timm's pretrained weights for ``name`` into ``backbone`` (built by
    ``create_backbone(name)``: the same architecture); returns what was loaded."""
    state, info = hub_state_dict(name, in_chans)
    own = backbone.state_dict()
    mismatched = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    if mismatched or missing:
        raise HubWeightsError(f"pretrained: true: timm's weights for {name!r} do not fit the backbone "
                              f"({len(missing)} missing, {len(mismatched)} mis-shaped tensors, e.g. "
                              f"{(missing + mismatched)[0]})")
    backbone.load_state_dict(state, strict=False)
    return info
