"""2-heads ResNet: t-test selection, topology, freezing, out-of-fold honesty, runner, reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moakit.models.resnet_2heads as r2h
from moakit.config import load_config
from moakit.models.base import FitContext, StageSpec, TorchEstimator
from moakit.models.resnet_2heads import ResNet2Heads, ResNet2HeadsParams, fit_resnet_2heads, ttest_select


SMALL_NET = {"head_a": [24, 16], "r1": 24, "r2": [24, 16], "r3": 16, "r3b": 16, "r4": [16, 12]}


def _params(**over) -> ResNet2HeadsParams:
    base = {"features": {"pca_genes": 1, "pca_cells": 1}, "network": SMALL_NET,
            "nonscored": {"epochs": 2}, "scored": {"epochs": 2},
            "frozen": {"epochs": 2, "patience": None}, "unfrozen": {"epochs": 2, "patience": None}}
    base.update(over)
    return ResNet2HeadsParams(**base)


def _toy(n=500, n_cand=30, n_scored=6, n_aux=7, seed=0):
    """X = [4 'extra' columns | n_cand candidates]; candidates 3, 7, 11 carry the MoA signal."""
    rng = np.random.default_rng(seed)
    has_moa = rng.random(n) < 0.4
    Y = np.zeros((n, n_scored), np.float32)
    Y[has_moa, rng.integers(0, n_scored, has_moa.sum())] = 1.0
    X = rng.normal(size=(n, 4 + n_cand)).astype(np.float32)
    for j in (3, 7, 11):
        X[has_moa, 4 + j] += 1.0
    Y_aux = (rng.random((n, n_aux)) < 0.15).astype(np.float32)
    Y_aux[:, 0] = 0.0  # an all-zero non-scored column: kept in phase 1, as the scripts' Y0
    X = np.concatenate([X[:, 4:], X[:, :4]], axis=1)  # the scripts' layout: candidates first
    return X, Y, Y_aux


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize("equal_var", [True, False])
def test_ttest_selects_the_planted_columns(equal_var):
    X, Y, _ = _toy(n=600)
    selected = ttest_select(X[:, :30], Y.sum(axis=1) > 0, quantile=0.25, equal_var=equal_var)
    assert {3, 7, 11} <= set(selected.tolist())
    assert len(selected) == 8  # p <= 25% quantile of 30 distinct p-values
    # Only the planted columns pass a strict quantile.
    assert set(ttest_select(X[:, :30], Y.sum(axis=1) > 0, quantile=0.1).tolist()) == {3, 7, 11}


def test_ttest_ties_at_zero_keep_every_underflowing_column():
    """Real data: many p-values underflow to 0, so the 25% quantile is 0 and all of them stay."""
    rng = np.random.default_rng(1)
    has = np.arange(400) < 200
    X = rng.normal(size=(400, 12))
    X[has, :6] += 1e3  # six columns with p == 0.0 exactly
    sel = ttest_select(X, has, quantile=0.25)
    assert sel.tolist() == [0, 1, 2, 3, 4, 5]


def test_ttest_needs_both_groups():
    with pytest.raises(ValueError, match="both with and without"):
        ttest_select(np.zeros((5, 3)), np.ones(5, bool))


# --------------------------------------------------------------------------- network


def test_topology_and_input_slicing():
    torch.manual_seed(0)
    net = ResNet2Heads(n_in=10, n_extra=4, selected=[0, 2, 5], n_out=3)  # full widths, the old layout
    assert net.b_columns.tolist() == [4, 6, 9]
    assert ResNet2Heads(n_in=10, n_extra=4, selected=[0, 2, 5], n_out=3, candidates_first=True).b_columns.tolist() \
        == [0, 2, 5]
    assert net.r1[2].in_features == 256 + 3 and net.r1[2].out_features == 512
    assert net.r2[1].in_features == 256 + 3 + 512
    assert net.r3[1].in_features == 512 + 256 and net.r3b[1].in_features == 512 + 256 + 256
    assert net.r4_frozen[1].in_features == 256 + 256 + 256 + 256 and net.r4_rest[2].out_features == 206
    # SELU layers: LeCun normal (std sqrt(1/fan_in)), zero bias.
    w = net.r4_frozen[1].weight.detach()
    assert float(w.std()) == pytest.approx((1.0 / 1024) ** 0.5, rel=0.05)
    assert net.eval()(torch.randn(8, 10)).shape == (8, 3)
    net.replace_output(5)
    assert net(torch.randn(8, 10)).shape == (8, 5)
    # Input B is exactly the selected columns: other candidate columns reach only head A.
    x = torch.randn(4, 10)
    torch.manual_seed(1)
    got_b = []
    net.r1.register_forward_hook(lambda m, inp, out: got_b.append(inp[0][:, 256:].clone()))
    net(x)
    assert torch.equal(got_b[0], x[:, [4, 6, 9]])


def _spy_phases(monkeypatch):
    """Record every fit_network call of fit_resnet_2heads: frozen flag, state before/after."""
    calls = []
    real = r2h.fit_network

    def spy(module, *args, **kwargs):
        before = {k: v.clone() for k, v in module.state_dict().items()}
        try:  # a loop pass ends its fit_network call by raising from the epoch callback
            return real(module, *args, **kwargs)
        finally:
            after = {k: v.clone() for k, v in module.state_dict().items()}
            calls.append({"frozen": module.frozen, "before": before, "after": after,
                          "optimizer": args[4].optimizer, "lr": args[4].lr})

    monkeypatch.setattr(r2h, "fit_network", spy)
    return calls


def _frozen_keys(params: ResNet2HeadsParams) -> tuple[list[str], list[str]]:
    net = ResNet2Heads(n_in=34, n_extra=4, selected=[0], n_out=2, **params.network.model_dump())
    prefixes = ("head_a.", "r1.", "r2.", "r3.", "r3b.", "r4_frozen.0.")  # r4's first Dense trains
    keys = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    return [k for k in keys if k.startswith(prefixes)], [k for k in keys if not k.startswith(prefixes)]


def test_phases_freeze_then_unfreeze(monkeypatch):
    calls = _spy_phases(monkeypatch)
    params = _params()
    X, Y, Y_aux = _toy()
    est = fit_resnet_2heads(params, X, Y, seed=3, Y_aux_train=Y_aux)
    n_loops = est.info["loops"]
    # nonscored, scored, then (frozen, unfrozen) per loop
    assert [c["frozen"] for c in calls] == [False, False] + [True, False] * n_loops
    assert [c["optimizer"] for c in calls] == ["adam", "adam"] + ["adadelta", "adadelta"] * n_loops
    assert calls[2]["lr"] == pytest.approx(1e-3 / 3) and calls[3]["lr"] == pytest.approx(1e-3 / 5)
    assert est.info["n_nonscored_targets"] == Y_aux.shape[1]  # every column, the all-zero one too
    frozen_keys, free_keys = _frozen_keys(params)
    frozen_phase, unfrozen_phase = calls[2], calls[3]
    # Frozen phase: parameters AND BatchNorm statistics up to r4's first Dense do not move...
    for k in frozen_keys:
        assert torch.equal(frozen_phase["before"][k], frozen_phase["after"][k]), k
    # ... while the last layers do.
    assert any(not torch.equal(frozen_phase["before"][k], frozen_phase["after"][k]) for k in free_keys)
    # After unfreezing, the formerly frozen layers train again.
    assert any(not torch.equal(unfrozen_phase["before"][k], unfrozen_phase["after"][k])
               for k in frozen_keys if "weight" in k)
    assert not any(p.requires_grad is False for p in est.module.parameters())


def test_transfer_replaces_the_output_layer(monkeypatch):
    calls = _spy_phases(monkeypatch)
    X, Y, Y_aux = _toy()
    fit_resnet_2heads(_params(), X, Y, seed=0, Y_aux_train=Y_aux)
    assert calls[0]["after"]["output.1.weight"].shape[0] == Y_aux.shape[1]
    assert calls[1]["before"]["output.1.weight"].shape[0] == Y.shape[1]
    # The body after phase 1 is where phase 2 starts.
    assert torch.equal(calls[0]["after"]["r2.1.weight"], calls[1]["before"]["r2.1.weight"])


def test_without_nonscored_targets_it_trains_scored_only(monkeypatch):
    calls = _spy_phases(monkeypatch)
    X, Y, _ = _toy()
    est = fit_resnet_2heads(_params(), X, Y, seed=0, Y_aux_train=None)
    assert len(calls) == 1 + 2 * est.info["loops"] and est.info["n_nonscored_targets"] == 0


# --------------------------------------------------------------------------- honesty


def test_fit_fold_judges_on_the_runners_judge_rows():
    """fit_fold's (X_valid, Y_valid) are the judge rows of the runner's selection policy
    (a holdout of the training folds by default; tests/test_selection.py checks that the
    OOF fold then decides nothing). They decide the early stopping and loops; with none
    (policy last) the model says it needs them."""
    model = r2h.ResNet2HeadsModel(_params().model_dump())
    stage = model.stages()[0]
    X, Y, Y_aux = _toy(n=600)
    Xtr, Ytr, Yaux_tr = X[:450], Y[:450], Y_aux[:450]
    Xj, Yj, Yaux_j = X[450:], Y[450:], Y_aux[450:]
    est = model.fit_fold(stage, Xtr, Ytr, Xj, Yj, FitContext(seed=11, Y_aux_train=Yaux_tr, Y_aux_valid=Yaux_j))
    assert est.info["n_fit_rows"] == 450 and est.info["n_holdout_rows"] == 150
    again = model.fit_fold(stage, Xtr, Ytr, Xj, Yj, FitContext(seed=11, Y_aux_train=Yaux_tr, Y_aux_valid=Yaux_j))
    a, b = est.module.state_dict(), again.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded
    with pytest.raises(ValueError, match="selection policy holdout"):
        model.fit_fold(stage, Xtr, Ytr, Xj[:0], Yj[:0], FitContext(seed=11, Y_aux_train=Yaux_tr, Y_aux_valid=Yaux_j[:0]))


def test_reload_gives_identical_predictions(tmp_path):
    X, Y, Y_aux = _toy()
    est = fit_resnet_2heads(_params(), X, Y, seed=0, Y_aux_train=Y_aux)
    est.save(tmp_path / "est")
    again = TorchEstimator.load(tmp_path / "est")
    assert again.kwargs["selected"] == est.kwargs["selected"]
    assert np.array_equal(est.predict_proba(X), again.predict_proba(X))


# --------------------------------------------------------------------------- runner


def test_stage_asks_for_nonscored_aux_targets():
    assert r2h.ResNet2HeadsModel().stages() == [StageSpec("scored", targets="scored", aux_targets="nonscored")]


def test_configs_load_and_v2_differs_only_where_it_should():
    full = load_config("resnet_2heads")
    assert full.cv.n_folds == 10 and full.cv.scheme == "old" and len(full.seeds) == 7
    p = ResNet2HeadsParams(**full.params)
    assert p == ResNet2HeadsParams()  # the YAML's full profile and the code defaults agree
    v2 = ResNet2HeadsParams(**load_config("resnet_2heads_v2").params)
    assert v2.include_cp and v2.nonscored.batch_size == v2.scored.batch_size == 64
    assert v2.frozen.batch_size == v2.unfrozen.batch_size == 64
    for profile in ("cpu", "smoke"):
        ResNet2HeadsParams(**load_config("resnet_2heads_v2", profile).params)


@pytest.mark.parametrize("config", ["resnet_2heads", "resnet_2heads_v2"])
def test_runner_end_to_end_and_predict_run(sim_data, tmp_path, config):
    from moakit import runner
    from moakit.artifacts import read_json

    cfg = load_config(config, "smoke")
    result = runner.train(cfg, sim_data, tmp_path / "run", show_progress=False)
    assert result.oof.shape == sim_data.train.scored.shape
    assert np.isfinite(result.metrics["log_loss"])
    fold = read_json(tmp_path / "run" / "stages" / "scored" / "seed_0" / "fold_0" / "done.json")
    assert fold["info"]["n_nonscored_targets"] > 0  # the runner passed the non-scored labels
    assert fold["info"]["n_selected"] > 0
    spec = read_json(tmp_path / "run" / "stages" / "scored" / "seed_0" / "fold_0" / "estimator" / "spec.json")
    n_g, n_c = sim_data.train.genes.shape[1], sim_data.train.cells.shape[1]
    assert spec["kwargs"]["n_in"] == 2 + 2 + 5 + (5 if config.endswith("v2") else 0) + n_g + n_c
    again = runner.predict_run(tmp_path / "run", sim_data.test)
    np.testing.assert_allclose(again, result.test, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- the scripts' loop


def _scripted_fit_network(monkeypatch, losses):
    """fit_network replaced by one that reports ``losses`` epoch by epoch and marks the
    module's output bias with the epoch number, so the restored weights are visible."""
    seen = []

    def fake(module, X, Y, Xv, Yv, params, seed=0, on_epoch=None, **kw):
        assert params.patience is None and not params.restore_best  # the pass decides, not fit_network
        for epoch, loss in enumerate(losses[: params.epochs]):
            with torch.no_grad():
                module.output[1].bias.fill_(float(epoch + 1))
            seen.append(epoch)
            on_epoch({"epoch": epoch, "train_loss": 0.0, "valid_loss": loss})

    monkeypatch.setattr(r2h, "fit_network", fake)
    return seen


@pytest.mark.parametrize("losses, epochs, improved, best, kept_epoch", [
    # 3 epochs always run; then the first epoch without improvement ends the pass
    ([1.0, 0.95, 0.92, 0.85, 0.86, 0.1], 5, 1, 0.85, 4),
    ([0.8, 0.7, 0.6, 0.5, 0.4, 0.45, 0.1], 6, 5, 0.4, 5),
    # nothing beats the loss the pass started from: the starting weights come back
    ([0.95, 0.93, 0.91, 0.92, 0.1], 4, 0, 0.9, 0),
    # an improvement smaller than min_delta is no improvement
    ([0.9 - 5e-7, 0.95, 0.95, 0.95, 0.1], 4, 0, 0.9, 0),
])
def test_loop_pass_follows_the_scripts_stopping_rule(monkeypatch, losses, epochs, improved, best, kept_epoch):
    seen = _scripted_fit_network(monkeypatch, losses)
    net = ResNet2Heads(n_in=10, n_extra=4, selected=[0], n_out=2, candidates_first=True, **SMALL_NET)
    with torch.no_grad():
        net.output[1].bias.fill_(0.0)
    p = _params().frozen.model_copy(update={"patience": 3, "min_delta": 1e-6, "epochs": 100})
    out = r2h.loop_pass(net, None, None, None, None, p, seed=0, best=0.9)
    assert len(seen) == out["epochs"] == epochs
    assert out["improved"] == improved and out["best"] == pytest.approx(best)
    assert float(net.output[1].bias.detach()[0]) == kept_epoch  # the best weights so far


def test_outer_loop_repeats_while_the_unfrozen_pass_improves(monkeypatch):
    unfrozen = iter([2, 1, 0, 5])
    passes = []

    def fake_pass(module, X, Y, Xv, Yv, p, seed, best, on_epoch=None):
        passes.append(("frozen" if module.frozen else "unfrozen", p.lr))
        return {"best": best, "improved": 1 if module.frozen else next(unfrozen), "epochs": 4, "kept": 4}

    monkeypatch.setattr(r2h, "loop_pass", fake_pass)
    X, Y, Y_aux = _toy()
    est = fit_resnet_2heads(_params(), X, Y, seed=0, Y_aux_train=Y_aux)
    assert [k for k, _ in passes] == ["frozen", "unfrozen"] * 3 and est.info["loops"] == 3
    assert est.info["unfrozen_improved"] == 3 and est.info["frozen_epochs"] == 12
    capped = fit_resnet_2heads(_params(max_loops=1), X, Y, seed=0, Y_aux_train=Y_aux)
    assert capped.info["loops"] == 1


# --------------------------------------------------------------------------- the scripts' numbers


def test_feature_layout_is_the_scripts():
    """X = [g, c, (cp), g_mean, c_mean, pca_g, pca_c]: means of the raw rows, every column but
    the PCAs standard-scaled, the PCAs fitted on the SCALED genes / cells."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from moakit.features import Pipeline

    rng = np.random.default_rng(0)
    n, n_g, n_c = 200, 12, 6
    blocks = {"g": rng.normal(2.0, 3.0, size=(n, n_g)).astype(np.float32),
              "c": rng.normal(-1.0, 0.5, size=(n, n_c)).astype(np.float32),
              "cp": np.eye(5, dtype=np.float32)[rng.integers(0, 5, n)]}
    for include_cp in (False, True):
        params = _params(include_cp=include_cp, features={"pca_genes": 3, "pca_cells": 2})
        pipe = Pipeline.from_config(r2h.pipeline_config(params), seed=0).fit(blocks)
        X = pipe.transform(blocks)
        assert X.shape[1] == n_g + n_c + r2h.n_extra_columns(params)
        names = pipe.feature_names_
        assert names[:n_g + n_c] == [f"g-{i}" for i in range(n_g)] + [f"c-{i}" for i in range(n_c)]
        k = n_g + n_c
        if include_cp:
            assert names[k:k + 5] == [f"cp-{i}" for i in range(5)]
            np.testing.assert_allclose(X[:, k:k + 5], StandardScaler().fit_transform(blocks["cp"]), atol=1e-5)
            k += 5
        assert names[k:k + 2] == ["means-g_mean", "means-c_mean"]
        raw = np.column_stack([blocks["g"].mean(1), blocks["c"].mean(1)])
        np.testing.assert_allclose(X[:, k:k + 2], StandardScaler().fit_transform(raw), atol=1e-4)
        scaled_g = StandardScaler().fit_transform(blocks["g"])
        np.testing.assert_allclose(X[:, :n_g], scaled_g, atol=1e-4)
        pca_g = PCA(3).fit(scaled_g).transform(scaled_g)
        np.testing.assert_allclose(np.abs(X[:, k + 2:k + 5]), np.abs(pca_g), atol=1e-3)  # up to sign


def test_full_profiles_hold_the_scripts_numbers():
    """V1 = final/Best LB/Training/Local/2heads-ResNest-train.py, V2 = final/Best CV/Training/
    2heads-resnest-train.ipynb (Keras)."""
    v1 = ResNet2HeadsParams(**load_config("resnet_2heads").params)
    v2 = ResNet2HeadsParams(**load_config("resnet_2heads_v2").params)
    assert (v1.features.pca_genes, v1.features.pca_cells, v1.include_cp) == (2, 100, False)
    assert (v2.features.pca_genes, v2.features.pca_cells, v2.include_cp) == (50, 50, True)
    for p, batch in ((v1, 128), (v2, 64)):
        n = p.network
        assert (n.head_a, n.r1, n.r2, n.r3, n.r3b, n.r4) == ((512, 256), 512, (512, 256), 256, 256, (256, 206))
        assert (n.dropout_a, n.dropout_r1) == (0.2, 0.3)
        for phase in (p.nonscored, p.scored):  # Adam 1e-3, ReduceLROnPlateau(0.5, 4), EarlyStopping(1e-5, 10)
            assert (phase.optimizer, phase.lr, phase.optimizer_eps, phase.weight_decay) == ("adam", 1e-3, 1e-7, 0.0)
            assert (phase.scheduler, phase.plateau_factor, phase.plateau_patience + 1) == ("plateau", 0.5, 4)
            assert (phase.plateau_threshold, phase.plateau_threshold_mode) == (1e-4, "abs")
            assert (phase.epochs, phase.patience, phase.min_delta, phase.restore_best) == (50, 10, 1e-5, True)
            assert (phase.smoothing, phase.batch_size) == (0.0005, batch)
        for phase, lr in ((p.frozen, 1e-3 / 3), (p.unfrozen, 1e-3 / 5)):  # Adadelta, patience 3, 1e-6
            assert (phase.optimizer, phase.adadelta_rho, phase.optimizer_eps) == ("adadelta", 0.95, 1e-7)
            assert phase.lr == pytest.approx(lr)
            assert (phase.patience, phase.min_delta, phase.smoothing, phase.batch_size) == (3, 1e-6, 0.0005, batch)
    torch.manual_seed(0)
    net = _fitted_network()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all((m.momentum, m.eps) == (0.01, 1e-3) for m in bns)  # Keras's BatchNormalization
    assert [type(m).__name__ for m in net.r4_frozen] == ["BatchNorm1d", "Linear"]
    assert set(net.frozen_modules()) == {net.head_a, net.r1, net.r2, net.r3, net.r3b, net.r4_frozen[0]}


def _fitted_network() -> ResNet2Heads:
    X, Y, Y_aux = _toy()
    return fit_resnet_2heads(_params(), X, Y, seed=0, Y_aux_train=Y_aux).module
