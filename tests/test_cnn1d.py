"""The 2nd place's 1D-CNN (model cnn1d): topology, row normalisation, auxiliary targets,
pos_weight, the full profile's numbers, and a tiny train + predict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from moakit.config import load_config
from moakit.features import Pipeline
from moakit.models.base import FitContext
from moakit.models.cnn1d import (
    Cnn1dNet, WeightNormConv1d, positive_weights, select_aux_targets, stage_layout,
)
from moakit.nn.train import TrainParams, fit_network
from moakit.runner import build_model


# --------------------------------------------------------------------------- network


def test_full_size_shapes_and_multiplicative_skip():
    torch.manual_seed(0)
    net = Cnn1dNet(937, 206).eval()  # the notebook's sizes: 4096 = 256 x 16, convs 512
    seen = {}
    for name in ("dense", "conv1", "conv2", "conv4"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    net.pool.register_forward_hook(lambda m, i, o: seen.update(pool_in=i[0], pool_out=o))
    x = torch.randn(3, 937)
    out = net(x)
    assert out.shape == (3, 206)
    assert seen["dense"].shape == (3, 4096)
    assert seen["conv1"].shape == (3, 512, 8)  # conv k5 then adaptive average pool to 8
    assert seen["conv2"].shape == seen["conv4"].shape == (3, 512, 8)
    assert seen["pool_out"].shape == (3, 512, 4) and net.n_flat == 2048
    # the skip multiplies: the pooled tensor is conv4's output times conv2's, elementwise
    torch.testing.assert_close(seen["pool_in"], seen["conv4"] * seen["conv2"])
    assert not torch.allclose(seen["pool_in"], seen["conv4"] + seen["conv2"])
    # first conv has no bias; the conv weight norms are over the whole kernel (one scalar g)
    conv1 = net.conv1[2]
    assert isinstance(conv1, WeightNormConv1d) and conv1.bias is None and conv1.weight_g.shape == ()
    torch.testing.assert_close(conv1.weight.norm(), conv1.weight_g.detach(), rtol=1e-5, atol=1e-5)

    net.replace_output(40)
    assert net(x).shape == (3, 40)


def test_weight_norm_conv_matches_torch_parametrization():
    torch.manual_seed(1)
    mine = WeightNormConv1d(6, 5, 3, 1)
    ref = torch.nn.Conv1d(6, 5, 3, padding=1)
    with torch.no_grad():
        ref.weight.copy_(mine.weight_v)
        ref.bias.copy_(mine.bias)
    ref = torch.nn.utils.parametrizations.weight_norm(ref, dim=None)
    x = torch.randn(4, 6, 7)
    torch.testing.assert_close(mine(x), ref(x))


# --------------------------------------------------------------------------- features


def test_row_quantile_norm_matches_the_formulas():
    rng = np.random.default_rng(0)
    g, c = rng.normal(size=(30, 772)), rng.normal(size=(30, 100)) * 3
    config = load_config("cnn1d").params["features"]
    pipe = Pipeline.from_config(config).fit({"g": g, "c": c})
    X = pipe.transform({"g": g, "c": c})
    G, C = pd.DataFrame(g), pd.DataFrame(c)
    g_ref = G.sub((G.quantile(0.25, axis=1) + G.quantile(0.75, axis=1)) / 2, axis=0)
    c_cent = C.sub((C.quantile(0.25, axis=1) + C.quantile(0.72, axis=1)) / 2, axis=0)
    c_ref = c_cent.div(c_cent.abs().quantile(0.75, axis=1) + 4, axis=0)
    np.testing.assert_allclose(X[:, :772], g_ref.to_numpy(), atol=1e-5)
    np.testing.assert_allclose(X[:, 772:], c_ref.to_numpy(), atol=1e-5)
    # row-wise: a row's output depends on that row only
    np.testing.assert_allclose(pipe.transform({"g": g[:5], "c": c[:5]}), X[:5])
    assert stage_layout(pipe) == [("g", 772), ("c", 100)]


def test_row_quantile_norm_rejects_bad_quantiles():
    with pytest.raises(ValueError, match="quantiles must lie in"):
        Pipeline.from_config({"steps": [{"kind": "row_quantile_norm", "inputs": ["g"], "center_quantiles": [1.5]}],
                              "output": ["g"]})


# --------------------------------------------------------------------------- targets and loss


def test_pos_weight_formula():
    Y = np.zeros((1000, 3))
    Y[:0, 0] = 1
    Y[:5, 1] = 1
    Y[:50, 2] = 1
    w = np.log(np.array([0, 5, 50]) + 100.0)
    np.testing.assert_allclose(positive_weights(Y), w.min() / w, rtol=1e-6)
    assert positive_weights(Y)[0] == pytest.approx(1.0)  # the rarest target's positives weigh 1
    assert positive_weights(Y)[2] < positive_weights(Y)[1] < 1.0


def test_fit_network_uses_pos_weight_in_the_training_loss_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)).astype(np.float32)
    Y = (rng.random((64, 2)) < 0.3).astype(np.float32)
    p = TrainParams(epochs=1, batch_size=64, smoothing=0.0, scheduler="none")

    def first_loss(pos_weight):
        torch.manual_seed(0)
        net = torch.nn.Linear(5, 2)
        return fit_network(net, X, Y, X, Y, p, pos_weight=pos_weight).history[0]

    plain, ones, heavy = first_loss(None), first_loss(np.ones(2)), first_loss(np.array([3.0, 3.0]))
    assert plain["train_loss"] == pytest.approx(ones["train_loss"])
    assert heavy["train_loss"] > plain["train_loss"]  # positives weigh more
    with pytest.raises(ValueError, match="pos_weight has 3 values for 2 targets"):
        first_loss(np.ones(3))


def test_aux_targets_follow_the_correlation_quantile():
    rng = np.random.default_rng(0)
    Y = (rng.random((400, 5)) < 0.1).astype(float)
    noise = (rng.random((400, 36)) < 0.1).astype(float)
    A = np.column_stack([noise[:, :18], Y[:, 0], Y[:, 1], Y[:, 2], Y[:, 3], noise[:, 18:], np.zeros(400)])
    chosen = select_aux_targets(Y, A, 0.9)  # 40 non-constant columns: the top 10% are the 4 copies
    assert list(chosen) == [18, 19, 20, 21]
    assert 40 not in select_aux_targets(Y, A, 0.01)  # a constant column never counts


def _stage(sim_data):
    config = load_config("cnn1d", "smoke")
    config.params["train"] = {**config.params["train"], "epochs": 1}  # a short fold: the choices are made first
    model = build_model(config)
    from moakit.features import blocks_from_dataset

    tr = sim_data.train
    features = model.fit_features(model.stages()[0], blocks_from_dataset(tr), blocks_from_dataset(sim_data.test), 0)
    return model, features, features.transform(blocks_from_dataset(tr)), tr


def test_aux_targets_and_fold_features_never_see_held_out_rows(sim_data):
    model, features, X, tr = _stage(sim_data)
    treated = np.flatnonzero(~tr.is_control)
    fit, held = treated[: len(treated) * 2 // 3], treated[len(treated) * 2 // 3:]
    rng = np.random.default_rng(5)

    def fold(X_held, Y_held, Y_aux_held):
        ctx = FitContext(seed=0, Y_aux_train=tr.nonscored[fit], Y_aux_valid=Y_aux_held, features=features)
        return model.fit_fold(model.stages()[0], X[fit], tr.scored[fit], X_held, Y_held, ctx)

    a = fold(X[held], tr.scored[held], tr.nonscored[held])
    garbage = fold(rng.normal(size=X[held].shape) * 50, (rng.random(tr.scored[held].shape) < 0.5) * 1.0,
                   (rng.random(tr.nonscored[held].shape) < 0.5) * 1.0)
    assert a.info["aux_targets"] == garbage.info["aux_targets"] and len(a.info["aux_targets"]) > 0
    np.testing.assert_array_equal(a.transform(X[:50]), garbage.transform(X[:50]))  # same quantile + PCA fit
    # the choice does depend on the training rows' labels
    shuffled = tr.nonscored[fit][rng.permutation(len(fit))]
    other = select_aux_targets(tr.scored[fit], shuffled, 0.9)
    assert list(other) != a.info["aux_targets"]


# --------------------------------------------------------------------------- configs


def test_full_profile_is_the_notebook():
    cfg = load_config("cnn1d")
    assert cfg.model == "cnn1d" and cfg.seeds == list(range(16))
    assert (cfg.cv.scheme, cfg.cv.n_folds, cfg.cv.max_replicates) == ("drug", 5, 19)
    p = build_model(cfg).params
    steps = {s.name: s for s in p.features.steps}
    assert steps["rownorm_g"].params == {"center_quantiles": [0.25, 0.75]}
    assert steps["rownorm_c"].params == {"center_quantiles": [0.25, 0.72], "scale_abs_quantile": 0.75,
                                         "scale_offset": 4.0}
    assert p.features.output == ["g", "c"]  # no cp_time / cp_dose
    fold = {s.name: s for s in p.fold_features.steps}
    assert fold["quantile_gc"].params["n_quantiles"] == 100 and fold["quantile_gc"].random_state == 0
    assert (fold["pca_g"].params["n_components"], fold["pca_c"].params["n_components"]) == (50, 15)
    assert fold["pca_g"].random_state == fold["pca_c"].random_state == 42
    n = p.network
    assert (n.channels * n.length, n.channels, n.conv_channels, n.celu_alpha) == (4096, 256, 512, 0.06)
    assert n.dropouts == [0.1, 0.1, 0.1, 0.3, 0.2, 0.2]
    assert Cnn1dNet(937, 206, n.channels, n.length, n.conv_channels).n_flat == 2048
    t = p.train
    assert (t.epochs, t.batch_size, t.optimizer, t.lr, t.weight_decay) == (25, 128, "adam", 1e-3, 1e-5)
    assert (t.scheduler, t.max_lr, t.div_factor, t.pct_start, t.smoothing) == ("onecycle", 1e-2, 1e3, 0.1, 0.001)
    a = p.aux
    assert (a.quantile, a.epochs) == (0.9, 1)
    assert (a.train.epochs, a.train.batch_size, a.train.lr, a.train.weight_decay) == (25, 128, 1e-3, 1e-4)
    assert (a.train.max_lr, a.train.div_factor, a.train.pct_start, a.train.smoothing) == (1e-4, 1e5, 0.1, 0.0)
    assert p.pos_weight_offset == 100.0
    assert cfg.selection.policy == "last"


def test_profiles_change_sizes_not_methods():
    full = build_model(load_config("cnn1d")).params
    for profile in ("cpu", "demo", "smoke"):
        p = build_model(load_config("cnn1d", profile)).params
        assert [s.kind for s in p.features.steps] == [s.kind for s in full.features.steps], profile
        assert [s.kind for s in p.fold_features.steps] == [s.kind for s in full.fold_features.steps], profile
        for phase, ref in ((p.train, full.train), (p.aux.train, full.aux.train)):
            same = ("batch_size", "optimizer", "lr", "weight_decay", "scheduler", "max_lr", "div_factor",
                    "pct_start", "smoothing")
            assert {k: getattr(phase, k) for k in same} == {k: getattr(ref, k) for k in same}, profile
        assert p.aux.train.epochs == p.train.epochs and p.aux.epochs == 1, profile
        assert p.network.dropouts == full.network.dropouts and p.pos_weight_offset == full.pos_weight_offset


def test_fold_features_must_fit_on_training_rows():
    raw = load_config("cnn1d", "smoke").model_copy(deep=True)
    raw.params["fold_features"] = {**raw.params["fold_features"], "fit_on": "train+test"}
    with pytest.raises(ValueError, match="fold_features"):
        build_model(raw)


# --------------------------------------------------------------------------- end to end


def test_train_and_predict_smoke(sim_data, tmp_path):
    from moakit import runner

    config = load_config("cnn1d", "smoke", folds=2)
    result = runner.train(config, sim_data, tmp_path / "run", show_progress=False)
    assert np.isfinite(result.metrics["log_loss"]) and result.oof.shape == sim_data.train.scored.shape
    assert np.all(result.oof[sim_data.train.is_control] == 0)
    again = runner.predict_run(tmp_path / "run", sim_data.test)
    np.testing.assert_allclose(again, result.test, atol=1e-6, rtol=0)
    done = json.loads((tmp_path / "run" / "stages" / "scored" / "seed_0" / "fold_0" / "done.json").read_text())
    assert done["info"]["n_inputs"] == 772 + 100 + 6 + 3 and done["info"]["best_epoch"] == 2  # last (policy last)
    history = json.loads((tmp_path / "run" / "stages" / "scored" / "seed_0" / "fold_0" / "history.json").read_text())
    phases = [r["phase"] for r in history["epochs"]]
    assert phases == ["nonscored"] + ["scored"] * 3  # one auxiliary epoch (of a 3-epoch schedule), then 3
    # the fold's quantile + PCA live with its estimator
    assert (tmp_path / "run" / "stages" / "scored" / "seed_0" / "fold_0" / "estimator" / "features").is_dir()


def test_blend_moakit_is_best_lb_plus_cnn1d_searched():
    from moakit.workflow import load_blend_config, resolve_models

    best_lb = load_blend_config("blend_best_lb", "cpu")
    ours = load_blend_config("blend_moakit", "cpu")
    assert [m.name for m in ours.models] == [m.name for m in best_lb.models] + ["cnn1d"]
    assert ours.blend.preset is None and set(ours.blend.methods) == {"slsqp", "optuna", "per_target"}
    resolved = resolve_models(ours)  # every model config resolves for the profile
    assert len(resolved) == 6  # the DeepInsight CNNs are skipped at the cpu profile
