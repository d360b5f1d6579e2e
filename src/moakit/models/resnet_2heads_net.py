"""The 2-heads ResNet network (Figure 9 of the write-up, as the winners' Keras scripts build
it), registered as ``resnet_2heads``; the model that trains it is
:mod:`moakit.models.resnet_2heads`."""

from __future__ import annotations

import math

import torch
from torch import nn

from moakit.nn.blocks import register_network

NETWORK_NAME = "resnet_2heads"


# --------------------------------------------------------------------------- network


def _dense(n_in: int, n_out: int, init: str = "glorot") -> nn.Linear:
    """A Dense layer initialised as Keras does (the scored scripts were Keras): Glorot
    uniform, or LeCun normal for the SELU layers (Keras: a normal truncated at two standard
    deviations, rescaled to keep the variance 1 / fan_in); zero biases."""
    layer = nn.Linear(n_in, n_out)
    if init == "lecun":
        std = math.sqrt(1.0 / n_in) / 0.87962566103423978  # Keras's truncation correction
        nn.init.trunc_normal_(layer.weight, 0.0, std, -2.0 * std, 2.0 * std)
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


@register_network(NETWORK_NAME)
class ResNet2Heads(nn.Module):
    """Figure 9 of the write-up, as the scripts build it.

    The write-up calls the skip paths residual; in the scripts that scored they are
    concatenations (no averaging, no sums), and that is what is built here:

    * a   = [BN, Dropout 0.2, Dense 512 ELU, BN, Dense 256 ELU](A)
    * r1  = [BN, Dropout 0.3, Dense 512 ReLU](a | B)
    * r2  = [BN, Dense 512 ELU, BN, Dense 256 ReLU](a | B | r1)
    * r3  = [BN, Dense 256 ELU](r1 | r2)
    * r3b = [BN, Dense 256 ReLU](r1 | r2 | r3)
    * r4  = [BN, Dense 256 SELU ("last_frozen"), BN, Dense 206 SELU](a | r2 | r3 | r3b)
      (truncated LeCun normal)
    * out = [BN, Dense n_out](r4)   (logits; the loss applies the sigmoid)

    The forward slices its one input: A is all ``n_in`` columns, B the ``selected``
    candidate columns. With ``candidates_first`` (the scripts' layout, every new fit) the
    candidates are the first ``n_in - n_extra`` columns; without it (runs saved before)
    they follow the ``n_extra`` extra columns. ``set_frozen(True)`` freezes every layer
    before r4's first Dense; frozen BatchNorms also stop updating their running statistics
    (Keras semantics of a non-trainable BatchNorm). ``replace_output`` swaps the output
    layer (BN + Dense) for transfer to another target set. ``bn_momentum`` / ``bn_eps``
    are torch's BatchNorm arguments (Keras's 0.99 / 1e-3 = momentum 0.01, eps 1e-3); the
    defaults are torch's, for runs saved before they were set.
    """

    def __init__(
        self,
        n_in: int,
        n_extra: int,
        selected: list[int],
        n_out: int,
        head_a: tuple[int, int] = (512, 256),
        r1: int = 512,
        r2: tuple[int, int] = (512, 256),
        r3: int = 256,
        r3b: int = 256,
        r4: tuple[int, int] = (256, 206),
        dropout_a: float = 0.2,
        dropout_r1: float = 0.3,
        candidates_first: bool = False,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not selected:
            raise ValueError("the 2-heads ResNet needs at least one selected feature for input B")
        if n_extra + max(selected) >= n_in or min(selected) < 0:
            raise ValueError(f"selected feature indices out of range (n_in={n_in}, n_extra={n_extra})")
        self.n_in, self.n_extra, self.n_out = n_in, n_extra, n_out
        self.bn_momentum, self.bn_eps = bn_momentum, bn_eps
        # Which columns of the input form input B; rebuilt from the kwargs on load.
        offset = 0 if candidates_first else n_extra
        self.register_buffer("b_columns", torch.as_tensor([offset + i for i in selected], dtype=torch.long),
                             persistent=False)
        n_b = len(selected)
        bn = self._bn
        self.head_a = nn.Sequential(
            bn(n_in), nn.Dropout(dropout_a), _dense(n_in, head_a[0]), nn.ELU(),
            bn(head_a[0]), _dense(head_a[0], head_a[1]), nn.ELU(),
        )
        n_a = head_a[1]
        self.r1 = nn.Sequential(bn(n_a + n_b), nn.Dropout(dropout_r1), _dense(n_a + n_b, r1), nn.ReLU())
        n = n_a + n_b + r1
        self.r2 = nn.Sequential(bn(n), _dense(n, r2[0]), nn.ELU(), bn(r2[0]), _dense(r2[0], r2[1]), nn.ReLU())
        self.r3 = nn.Sequential(bn(r1 + r2[1]), _dense(r1 + r2[1], r3), nn.ELU())
        n = r1 + r2[1] + r3
        self.r3b = nn.Sequential(bn(n), _dense(n, r3b), nn.ReLU())
        n = n_a + r2[1] + r3 + r3b
        # r4 = r4_frozen (BN, the "last_frozen" Dense) + r4_rest; set_frozen freezes its BN only
        self.r4_frozen = nn.Sequential(bn(n), _dense(n, r4[0], "lecun"))
        self.r4_rest = nn.Sequential(nn.SELU(), bn(r4[0]), _dense(r4[0], r4[1], "lecun"), nn.SELU())
        self.n_r4 = r4[1]
        self.output = self._make_output(n_out)
        self.frozen = False

    def _bn(self, n: int) -> nn.BatchNorm1d:
        return nn.BatchNorm1d(n, momentum=self.bn_momentum, eps=self.bn_eps)

    def _make_output(self, n_out: int) -> nn.Sequential:
        return nn.Sequential(self._bn(self.n_r4), _dense(self.n_r4, n_out))

    def frozen_modules(self) -> list[nn.Module]:
        """Every layer before r4's first Dense (the scripts' "last_frozen", which trains)."""
        return [self.head_a, self.r1, self.r2, self.r3, self.r3b, self.r4_frozen[0]]

    def set_frozen(self, frozen: bool) -> None:
        self.frozen = frozen
        for module in self.frozen_modules():
            for p in module.parameters():
                p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ResNet2Heads":
        super().train(mode)
        if mode and getattr(self, "frozen", False):
            for module in self.frozen_modules():
                for m in module.modules():
                    if isinstance(m, nn.BatchNorm1d):
                        m.eval()
        return self

    def replace_output(self, n_out: int) -> None:
        """Transfer: a fresh output layer (BN + Dense) for ``n_out`` targets."""
        self.n_out = n_out
        self.output = self._make_output(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.index_select(1, self.b_columns)
        a = self.head_a(x)
        r1 = self.r1(torch.cat([a, b], 1))
        r2 = self.r2(torch.cat([a, b, r1], 1))
        r3 = self.r3(torch.cat([r1, r2], 1))
        r3b = self.r3b(torch.cat([r1, r2, r3], 1))
        r4 = self.r4_rest(self.r4_frozen(torch.cat([a, r2, r3, r3b], 1)))
        return self.output(r4)
