"""Where and in what precision a network runs: devices, 16-bit autocast with loss scaling
(:class:`MixedPrecision`), and batched prediction (:func:`predict_logits`); used by the
training loop of :mod:`moakit.nn.train` and by every estimator's prediction."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from moakit.metrics import sigmoid

BatchTransform = Callable[[torch.Tensor, bool, np.random.Generator], torch.Tensor]


def as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def amp_dtype(device: torch.device | str, setting: str = "auto") -> torch.dtype:
    """The 16-bit type of autocast on ``device``: ``setting`` "float16" / "bfloat16", or
    "auto": bf16 on CPU and on CUDA GPUs that support it (torch.cuda.is_bf16_supported),
    fp16 on older GPUs."""
    if setting == "float16":
        return torch.float16
    if setting == "bfloat16":
        return torch.bfloat16
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast_context(enabled: bool, device: torch.device, dtype: str | torch.dtype = "auto"):
    if not enabled:
        return torch.autocast(device_type=device.type, enabled=False)
    if not isinstance(dtype, torch.dtype):
        dtype = amp_dtype(device, dtype)
    return torch.autocast(device_type=device.type, dtype=dtype)


class MixedPrecision:
    """Autocast and, in fp16, loss scaling for one training run.

    fp16 has 5 exponent bits: a gradient below ~6e-8 flushes to 0, and the per-logit
    gradients of the many negative labels are that small (p / (batch x targets), about
    5e-8 at batch 48 and 206 targets). ``torch.amp.GradScaler`` multiplies the loss before
    the backward pass (65536 at first), unscales the gradients before clipping and the
    optimiser step, and skips a step whose gradients overflowed (lowering the scale). The
    winners' Lightning runs (precision=16) did the same. bf16 has fp32's exponent range and
    needs no scaling. Disabled (``enabled`` False, or bf16), every call below is the plain
    fp32 path: ``backward_step`` is backward, optional clipping, ``opt.step()``.
    """

    def __init__(self, enabled: bool, device: torch.device | str, dtype: str = "auto") -> None:
        self.device = torch.device(device)
        self.enabled = bool(enabled)
        self.dtype = amp_dtype(self.device, dtype) if self.enabled else torch.float32
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.steps = 0
        self.skipped = 0

    def autocast(self):
        return autocast_context(self.enabled, self.device, self.dtype)

    def backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params, grad_clip: float | None) -> bool:
        """Backward pass, optional gradient-norm clipping (on the unscaled gradients) and the
        optimiser step; False when the scaler skipped the step (inf/NaN gradients)."""
        self.steps += 1
        if not self.scaler.is_enabled():
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.scale(loss).backward()
        if grad_clip:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        stepped = self.scaler.get_scale() >= scale  # the scale drops only when a step is skipped
        self.skipped += not stepped
        return stepped

    def summary(self) -> dict:
        out = {"dtype": str(self.dtype).replace("torch.", ""), "loss_scaling": self.scaler.is_enabled()}
        if self.scaler.is_enabled():
            out.update(loss_scale=float(self.scaler.get_scale()), steps=self.steps, skipped_steps=self.skipped)
        return out


@torch.no_grad()
def predict_logits(
    module: nn.Module,
    X,
    batch_size: int = 2048,
    transform: BatchTransform | None = None,
    device: torch.device | str | None = None,
    amp: bool = False,
    amp_dtype: str = "auto",
) -> np.ndarray:
    """Logits for all rows of X, in eval mode, batch by batch, on ``device`` (default: where
    the module's parameters are)."""
    device = module_device(module) if device is None else torch.device(device)
    module.eval()
    X = as_tensor(X)
    rng = np.random.default_rng(0)  # unused by eval transforms, required by the signature
    out = []
    for start in range(0, max(len(X), 1), batch_size):  # no rows: one empty batch, for the output width
        xb = X[start : start + batch_size]
        xb = transform(xb, False, rng) if transform is not None else xb
        with autocast_context(amp, device, amp_dtype):
            out.append(module(xb.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def resolve_device(setting: torch.device | str) -> torch.device:
    """"auto": a CUDA GPU when one is available, else the CPU; else the device named."""
    if str(setting) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU (use device: auto or cpu)")
    return device


def module_device(module: nn.Module) -> torch.device:
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def predict_proba(module: nn.Module, X, **kwargs) -> np.ndarray:
    return sigmoid(predict_logits(module, X, **kwargs))
