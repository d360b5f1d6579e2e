"""Network building blocks shared by the tabular models, and a registry to rebuild them."""

from __future__ import annotations

import importlib
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from moakit.registry import Registry

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on CPU: uniform draws compared in place.

    Same distribution (each unit kept with probability 1 - p, kept units scaled by
    1 / (1 - p)); ``torch.rand`` is vectorised where the ``bernoulli_`` behind
    ``nn.Dropout`` is not, which made dropout the largest non-matmul cost of a Simple NN
    step on 2 cores (bench/bench_epoch_speed.py).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return x * 0.0
        mask = torch.rand_like(x)
        mask.ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * mask


class _WeightNormLinearFn(torch.autograd.Function):
    """y = (x @ v.T) * (g / ||v||) + b, with a hand-written backward that writes the
    gradient of v in one pass over v (autograd's would add two full-size tensors)."""

    @staticmethod
    def forward(ctx, x, v, g, b):
        norm = torch.linalg.vector_norm(v, dim=1)
        scale = g / norm
        y0 = x @ v.t()
        ctx.save_for_backward(x, v, g, norm, scale, y0)
        return torch.addcmul(b, y0, scale)

    @staticmethod
    def backward(ctx, gy):
        x, v, g, norm, scale, y0 = ctx.saved_tensors
        gy0 = gy * scale
        gscale = (gy * y0).sum(0)
        gx = gy0 @ v if ctx.needs_input_grad[0] else None
        gv = gg = gb = None
        if ctx.needs_input_grad[1]:
            # d/dv of (g / ||v||) = -g v / ||v||^3, per row
            gv = (gy0.t() @ x).addcmul_(v, (-gscale * g / norm ** 3).unsqueeze(1))
        if ctx.needs_input_grad[2]:
            gg = gscale / norm
        if ctx.needs_input_grad[3]:
            gb = gy.sum(0)
        return gx, gv, gg, gb


class WeightNormLinear(nn.Module):
    """A weight-normalised linear layer, ``W = g * v / ||v||`` (norm per output unit).

    The same function and parameters as ``torch.nn.utils.parametrizations.weight_norm``
    on an ``nn.Linear`` (g starts at the row norms of the initial weight, v at the weight),
    computed without materialising W: ``y = (x @ v.T) * (g / ||v||) + b``. Scaling the
    (batch, out) product instead of the (out, in) weight saves passes over the weight in
    the forward and the backward pass (a test checks outputs and gradients against torch's
    parametrization).
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        init = nn.Linear(n_in, n_out)
        self.in_features, self.out_features = n_in, n_out
        self.weight_v = nn.Parameter(init.weight.detach().clone())
        self.weight_g = nn.Parameter(init.weight.detach().norm(dim=1))
        self.bias = nn.Parameter(init.bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight (for inspection; the forward pass never builds it)."""
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=1)).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):  # mixed precision: autocast picks dtypes, autograd differentiates
            scale = self.weight_g / torch.linalg.vector_norm(self.weight_v, dim=1)
            return torch.addcmul(self.bias, F.linear(x, self.weight_v), scale)
        return _WeightNormLinearFn.apply(x, self.weight_v, self.weight_g, self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "parametrizations.weight.original0" in state_dict:  # torch's weight_norm parametrization
            from moakit.runs.records import unsupported

            raise unsupported(prefix.rstrip(".") or "weights", "torch weight_norm parametrization of an older moakit")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class MLP(nn.Module):
    """The base NN block of the write-up (Figures 3, 5, 7), sized by config.

    ``hidden=[2048, 2048]`` is the 3-FC block, ``hidden=[2048]`` the 2-FC block. Each layer
    is BatchNorm -> Dropout -> Linear (optionally weight-normalised) -> activation; the
    output layer has no activation (the loss works on logits). ``dropouts`` has one entry
    per Linear layer (input dropout first; 0 disables), ``weight_norm`` one flag each.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        hidden: list[int],
        dropouts: list[float],
        weight_norm_layers: list[bool],
        activation_name: str = "leaky_relu",
    ) -> None:
        super().__init__()
        n_linear = len(hidden) + 1
        if len(dropouts) != n_linear or len(weight_norm_layers) != n_linear:
            raise ValueError(
                f"MLP with {len(hidden)} hidden layers needs {n_linear} dropouts and weight_norm flags, "
                f"got {len(dropouts)} and {len(weight_norm_layers)}"
            )
        sizes = [n_in, *hidden, n_out]
        layers: list[nn.Module] = []
        for i in range(n_linear):
            layers.append(nn.BatchNorm1d(sizes[i]))
            if dropouts[i] > 0:
                layers.append(FastDropout(dropouts[i]))
            linear = WeightNormLinear if weight_norm_layers[i] else nn.Linear
            layers.append(linear(sizes[i], sizes[i + 1]))
            if i < n_linear - 1:
                layers.append(activation(activation_name))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# name -> constructor; a saved network records its name and kwargs so it can be rebuilt.
# The model modules register their own networks (moakit.models imports them all).
NETWORKS: Registry[Callable[..., nn.Module]] = Registry(
    "network", loader=lambda: importlib.import_module("moakit.models"))
NETWORKS.add("mlp", MLP)


def register_network(name: str):
    """Class decorator: make a network constructor rebuildable by ``name``."""
    return NETWORKS.register(name)


def build_network(name: str, kwargs: dict) -> nn.Module:
    return NETWORKS.get(name)(**kwargs)
