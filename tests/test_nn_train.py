"""The shared training loop: learning, determinism, early stopping, freezing, smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moakit.nn.blocks import MLP, FastDropout, WeightNormLinear
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
    last = [m for m in net.net if isinstance(m, (torch.nn.Linear, WeightNormLinear))][-1]
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


def test_weight_norm_linear_matches_torch_parametrization():
    """Same output and same parameter gradients as torch's weight_norm on an nn.Linear."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(3)
    ours = WeightNormLinear(7, 5)
    torch.manual_seed(3)
    ref = weight_norm(torch.nn.Linear(7, 5))
    g_ref = ref.parametrizations.weight.original0
    v_ref = ref.parametrizations.weight.original1
    assert torch.equal(ours.weight_v, v_ref) and torch.allclose(ours.weight_g, g_ref.squeeze(1))
    with torch.no_grad():  # move g away from ||v|| so the scale matters
        ours.weight_g.mul_(torch.linspace(0.5, 2.0, 5))
        g_ref.mul_(torch.linspace(0.5, 2.0, 5).unsqueeze(1))
    x = torch.randn(11, 7)
    y, y_ref = ours(x), ref(x)
    assert torch.allclose(y, y_ref, atol=1e-6)
    assert torch.allclose(ours.weight, ref.weight, atol=1e-6)
    (y ** 2).sum().backward()
    (y_ref ** 2).sum().backward()
    assert torch.allclose(ours.weight_v.grad, v_ref.grad, atol=1e-5)
    assert torch.allclose(ours.weight_g.grad, g_ref.grad.squeeze(1), atol=1e-5)
    assert torch.allclose(ours.bias.grad, ref.bias.grad, atol=1e-5)
    # the hand-written backward against numerical derivatives (float64)
    layer = WeightNormLinear(4, 3).double()
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    from moakit.nn.blocks import _WeightNormLinearFn

    assert torch.autograd.gradcheck(_WeightNormLinearFn.apply, (x, layer.weight_v, layer.weight_g, layer.bias))


def test_fast_dropout_distribution_and_gradient():
    torch.manual_seed(0)
    drop = FastDropout(0.25)
    x = torch.ones(400, 500, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask)/dx = mask
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)


def test_weight_norm_linear_refuses_a_torch_parametrization_state_dict():
    """Weights saved with torch's weight_norm parametrization (an older moakit): one clear
    "unsupported format, retrain" error."""
    from torch.nn.utils.parametrizations import weight_norm

    ref = weight_norm(torch.nn.Linear(6, 4))
    with pytest.raises(ValueError, match="unsupported format.*retrain"):
        WeightNormLinear(6, 4).load_state_dict(ref.state_dict())


# --------------------------------------------------------------------------- mixed precision


def _rare_label_layer():
    """A linear output layer predicting ~0.05% positives: at batch 48 x 206 targets its
    per-logit gradients are ~5e-8, below fp16's smallest normal number (6e-5)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 206)
    with torch.no_grad():
        layer.bias.fill_(-7.6)
    return layer


def test_fp16_loss_scaling_keeps_the_small_gradients():
    from moakit.nn.train import MixedPrecision

    x, y = torch.randn(48, 64, generator=torch.Generator().manual_seed(1)), torch.zeros(48, 206)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    ref = _rare_label_layer()
    loss_fn(ref(x), y).backward()
    g32 = ref.weight.grad

    def rel_err(g):
        return float((g - g32).norm() / g32.norm())

    plain = _rare_label_layer()  # fp16 autocast, no loss scaling: the gradients underflow
    with torch.autocast("cpu", dtype=torch.float16):
        out = plain(x)
    loss_fn(out.float(), y).backward()
    assert rel_err(plain.weight.grad) > 0.1

    scaled = _rare_label_layer()  # the training loop's path: GradScaler, unscaled before clipping + step
    amp = MixedPrecision(True, "cpu", "float16")
    assert amp.scaler.is_enabled() and amp.dtype == torch.float16
    with amp.autocast():
        out = scaled(x)
    assert out.dtype == torch.float16
    assert amp.backward_step(loss_fn(out.float(), y), torch.optim.SGD(scaled.parameters(), lr=0.0),
                             list(scaled.parameters()), grad_clip=10.0)
    assert rel_err(scaled.weight.grad) < 0.01  # the gradients are unscaled again, and accurate

    # an overflowing step is skipped (weights untouched) and the scale halves
    layer = _rare_label_layer()
    before = layer.weight.detach().clone()
    amp = MixedPrecision(True, "cpu", "float16")
    with amp.autocast():
        out = layer(x)
    assert not amp.backward_step(out.float().sum() * 1e30, torch.optim.SGD(layer.parameters(), lr=0.1),
                                 list(layer.parameters()), grad_clip=None)
    assert torch.equal(layer.weight, before)
    assert amp.summary() == {"dtype": "float16", "loss_scaling": True, "loss_scale": 32768.0, "steps": 1,
                             "skipped_steps": 1}


def test_amp_dtypes_and_the_fp16_training_loop_on_cpu():
    from moakit.nn.train import MixedPrecision, amp_dtype

    cpu = torch.device("cpu")
    assert amp_dtype(cpu) == torch.bfloat16 and amp_dtype(cpu, "float16") == torch.float16
    assert not MixedPrecision(True, cpu).scaler.is_enabled()  # bf16: fp32's range, no scaling
    assert MixedPrecision(False, cpu).summary() == {"dtype": "float32", "loss_scaling": False}
    if torch.cuda.is_available():
        want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert amp_dtype(torch.device("cuda")) == want

    X, Y = _toy()
    params = TrainParams(epochs=6, batch_size=64, smoothing=0.0, amp=True, amp_dtype="float16", grad_clip=10.0)
    result = fit_network(_net(), X[:300], Y[:300], X[300:], Y[300:], params, seed=0)
    assert result.precision["dtype"] == "float16" and result.precision["loss_scaling"]
    assert result.precision["steps"] == 6 * 5 and result.precision["skipped_steps"] <= 1
    assert result.precision["loss_scale"] >= 2.0 ** 15
    losses = [h["train_loss"] for h in result.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    fp32 = fit_network(_net(), X[:300], Y[:300], X[300:], Y[300:], params.model_copy(update={"amp": False}), seed=0)
    assert fp32.precision == {"dtype": "float32", "loss_scaling": False}
    assert result.best_loss == pytest.approx(fp32.best_loss, rel=0.05)  # fp16 + scaling trains as fp32 does


def test_device_auto_is_the_cpu_without_cuda_and_prediction_follows_the_module():
    """Every network trains where TrainParams.device says ("auto": CUDA when available),
    and predicts where its parameters are."""
    import torch
    from torch import nn

    from moakit.nn.train import TrainParams, fit_network, module_device, predict_logits, resolve_device

    assert TrainParams().device == "auto"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, 5)).astype(np.float32), (rng.random((64, 3)) < 0.3).astype(np.float32)
    module = nn.Linear(5, 3)
    fit_network(module, X, Y, None, None, TrainParams(epochs=1, batch_size=16, device="cpu"))
    assert module_device(module).type == "cpu"
    assert predict_logits(module, X).shape == (64, 3)
