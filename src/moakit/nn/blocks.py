"""Network building blocks shared by the tabular models, and a registry to rebuild them."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

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
                layers.append(nn.Dropout(dropouts[i]))
            linear = nn.Linear(sizes[i], sizes[i + 1])
            layers.append(weight_norm(linear) if weight_norm_layers[i] else linear)
            if i < n_linear - 1:
                layers.append(activation(activation_name))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# name -> constructor; a saved network records its name and kwargs so it can be rebuilt.
NETWORKS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP}


def register_network(name: str):
    def deco(cls):
        NETWORKS[name] = cls
        return cls

    return deco


def build_network(name: str, kwargs: dict) -> nn.Module:
    try:
        factory = NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; registered: {sorted(NETWORKS)}") from None
    return factory(**kwargs)
