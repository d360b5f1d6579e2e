"""The shared training loop: learning, determinism, early stopping, freezing, smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moakit.nn.blocks import MLP
from moakit.nn.train import TrainParams, fit_network, predict_proba, smooth_targets


def _toy(n=400, d=12, t=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    W = rng.normal(size=(d, t))
    Y = ((X @ W + rng.normal(scale=0.5, size=(n, t))) > 1.5).astype(np.float32)
    return X, Y


def _net(d=12, t=3, seed=0):
    torch.manual_seed(seed)
    return MLP(d, t, [32, 32], [0.0, 0.1, 0.1], [True, False, True])


def test_loop_learns_and_restores_best_epoch():
    X, Y = _toy()
    net = _net()
    params = TrainParams(epochs=8, batch_size=64, smoothing=0.0)
    result = fit_network(net, X[:300], Y[:300], X[300:], Y[300:], params, seed=0)
    assert len(result.history) == 8
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    p = predict_proba(net, X[300:])
    loss = float(torch.nn.functional.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(Y[300:])))
    assert loss == pytest.approx(result.best_loss, rel=1e-4)
    assert min(h["valid_loss"] for h in result.history) == pytest.approx(result.best_loss)


def test_same_seed_same_weights():
    X, Y = _toy()
    params = TrainParams(epochs=3, batch_size=64)
    outs = []
    for _ in range(2):
        net = _net()
        fit_network(net, X[:300], Y[:300], X[300:], Y[300:], params, seed=7)
        outs.append(predict_proba(net, X))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)


def test_early_stopping_stops_after_patience():
    X, Y = _toy()
    # a lr so small that nothing improves beyond min_delta: stops after `patience` epochs
    params = TrainParams(epochs=50, batch_size=64, scheduler="none", lr=1e-9, patience=3, min_delta=1.0)
    result = fit_network(_net(), X[:300], Y[:300], X[300:], Y[300:], params)
    assert len(result.history) == 4


def test_frozen_parameters_do_not_change():
    X, Y = _toy()
    net = _net()
    first = net.net[0]  # input BatchNorm
    for p in net.parameters():
        p.requires_grad_(False)
    last = [m for m in net.net if hasattr(m, "parametrizations") or isinstance(m, torch.nn.Linear)][-1]
    for p in last.parameters():
        p.requires_grad_(True)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    fit_network(net, X[:300], Y[:300], X[300:], Y[300:], TrainParams(epochs=2, batch_size=64), seed=0)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(f"net.{len(net.net) - 1}.") for k in changed)
    assert torch.equal(before["net.0.weight"], first.weight)


def test_smoothing_and_clipping():
    y = torch.tensor([0.0, 1.0])
    out = smooth_targets(y, 0.001)
    assert out.tolist() == pytest.approx([0.0005, 0.9995])
    out = smooth_targets(y, 0.0001, clip=(0.0005, 0.9995))
    assert out.tolist() == pytest.approx([0.0005, 0.9995])
