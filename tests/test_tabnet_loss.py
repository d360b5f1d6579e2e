"""The 2-stage NN + TabNet's training loss: the winners' script's LabelSmoothing formula by
default (``TabNetConfig.loss: script``), torch's BCE with logits as the alternative."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moakit.config import load_config
from moakit.models import two_stage_tabnet
from moakit.models.two_stage_tabnet import TabNetConfig, fit_tabnet, smoothed_loss


def _grad(kind: str, logits: list[float], targets: list[float], smoothing: float = 0.001) -> np.ndarray:
    x = torch.tensor([logits], dtype=torch.float32, requires_grad=True)
    y = torch.tensor([targets], dtype=torch.float32)
    smoothed_loss(kind, smoothing)(x, y).backward()
    return x.grad.numpy()[0]


def test_script_loss_is_the_scripts_formula_and_bce_elsewhere():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(scale=4.0, size=(64, 7)), dtype=torch.float32)
    y = torch.tensor(rng.random((64, 7)) < 0.1, dtype=torch.float32)
    t = y * 0.999 + 0.0005  # smoothing 0.001: t(1 - s) + s / 2
    p = torch.sigmoid(x)
    expected = -(torch.log(p + 1e-15) * t + (1 - t) * torch.log(1 - p + 1e-15)).mean()
    assert float(smoothed_loss("script", 0.001)(x, y)) == pytest.approx(float(expected), rel=1e-6)
    # on moderate logits the two losses and their gradients agree
    assert float(smoothed_loss("bce_logits", 0.001)(x, y)) == pytest.approx(float(expected), rel=1e-4)
    moderate = [-8.0, -2.0, 0.5, 6.0]
    np.testing.assert_allclose(_grad("script", moderate, [0, 1, 0, 1]), _grad("bce_logits", moderate, [0, 1, 0, 1]),
                               rtol=1e-4, atol=1e-9)


def test_script_loss_gives_no_gradient_where_the_sigmoid_saturates():
    # a negative at logit 20 (sigmoid rounds to 1 in float32) and a positive at -60 (p << 1e-15)
    script, bce = _grad("script", [20.0, -60.0], [0, 1]), _grad("bce_logits", [20.0, -60.0], [0, 1])
    assert script[0] == 0.0 and abs(script[1]) < 1e-9
    assert bce[0] == pytest.approx((1 - 0.0005) / 2, rel=1e-4) and bce[1] == pytest.approx(-0.9995 / 2, rel=1e-4)
    with pytest.raises(ValueError, match="loss 'mse'"):
        smoothed_loss("mse", 0.0)


def test_default_and_shipped_profiles_use_the_script_loss_and_fit_tabnet_reads_it(monkeypatch):
    assert TabNetConfig().loss == "script"
    for profile in ("full", "cpu", "smoke", "demo"):
        tab = load_config("two_stage_nn_tabnet", profile=profile).params["stage2"]["tabnet"]
        assert TabNetConfig(**tab).loss == "script", profile
    asked = []
    real = two_stage_tabnet.smoothed_loss
    monkeypatch.setattr(two_stage_tabnet, "smoothed_loss", lambda kind, s: asked.append((kind, s)) or real(kind, s))
    rng = np.random.default_rng(1)
    X = rng.normal(size=(96, 6)).astype(np.float32)
    X[:, 0], X[:, 1] = rng.integers(0, 3, 96), rng.integers(0, 2, 96)
    Y = (X[:, 2:4] > 1.0).astype(np.float32)
    cfg = TabNetConfig(n_d=4, n_a=4, max_epochs=1, patience=1, milestones=[1], batch_size=64, virtual_batch_size=32,
                       loss="bce_logits")
    fit_tabnet(cfg, X[:64], Y[:64], X[64:], Y[64:], seed=0)
    assert asked == [("bce_logits", 0.001)]
