"""The tabular NN family: simple_nn, three_stage_nn, two_stage_nn_tabnet through the runner.

Smoke-profile runs on the small simulated dataset (conftest ``sim_data``), shared by the
tests of a model (module-scoped fixtures), plus a planted-noise scenario proving that the
stacking is leak-free: labels with no signal, a first stage able to memorise them, and a
check that the next stage's out-of-fold score stays at the prior -- next to a deliberately
leaky variant of the same stacking that does not.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from moakit import metrics, runner
from moakit.config import RunConfig, load_config
from moakit.data.dataset import MoAData
from moakit.features import blocks_from_dataset
from moakit.models.estimators import load_estimator
from moakit.models.base import FitContext
from moakit.models.stacked import StackedFeatures
from moakit.models.three_stage_nn import ThreeStageNN
from moakit.models.two_stage_tabnet import TabNetConfig, TabNetEstimator, fit_tabnet


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny networks and feature fits: one thread (torch, BLAS, OpenMP) is faster, and
    steady when the machine is busy (idle threads spin-waiting cost more than they help)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    with threadpool_limits(limits=1):
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(before)


def _with_params(config: RunConfig, overlay: dict) -> RunConfig:
    from moakit.config import deep_merge

    return config.model_copy(update={"params": deep_merge(config.params, overlay)})


class _FoldSpy:
    """Wraps a model class's fit_fold to record what each fold trained and judged on."""

    def __init__(self, monkeypatch, cls):
        self.calls: list[dict] = []
        original = cls.fit_fold

        def spy(model, stage, X_train, Y_train, X_valid, Y_valid, ctx):
            self.calls.append({"stage": stage.name, "n_train": len(X_train), "n_valid": len(X_valid),
                               "n_targets": Y_train.shape[1]})
            return original(model, stage, X_train, Y_train, X_valid, Y_valid, ctx)

        monkeypatch.setattr(cls, "fit_fold", spy)


@pytest.fixture(scope="module")
def three_stage(sim_data, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    spy = _FoldSpy(mp, ThreeStageNN)
    try:
        # holdout (not the shipped `last`): the judge rows are checked below
        result = runner.train(load_config("three_stage_nn", profile="smoke", selection="holdout"), sim_data,
                              tmp_path_factory.mktemp("three") / "run", show_progress=False)
    finally:
        mp.undo()
    return result, spy.calls


@pytest.fixture(scope="module")
def tabnet(sim_data, tmp_path_factory):
    return runner.train(load_config("two_stage_nn_tabnet", profile="smoke"), sim_data,
                        tmp_path_factory.mktemp("tabnet") / "run", show_progress=False)


def _check_result(result, data):
    n_train, n_test = len(data.train), len(data.test)
    assert result.oof.shape == (n_train, 206) and result.test.shape == (n_test, 206)
    for pred in (result.oof, result.test):
        assert np.isfinite(pred).all() and pred.min() >= 0.0 and pred.max() <= 1.0
    assert (result.oof[data.train.is_control] == 0).all()
    assert (result.test[data.test.is_control] == 0).all()
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert {"log_loss", "log_loss_treated", "prior", "seeds"} <= set(saved)
    assert saved["log_loss"] == pytest.approx(metrics.score(data.train.scored, result.oof,
                                                            data.train.is_control)["log_loss"])
    assert (result.run_dir / "oof_predictions.csv").exists() and (result.run_dir / "test_predictions.csv").exists()


# ----------------------------------------------------------------------------- simple NN


def test_simple_nn_runs_and_is_deterministic(sim_data, tmp_path):
    config = load_config("simple_nn", profile="smoke")
    first = runner.train(config, sim_data, tmp_path / "a", show_progress=False)
    _check_result(first, sim_data)
    second = runner.train(config, sim_data, tmp_path / "b", show_progress=False)
    np.testing.assert_allclose(first.oof, second.oof, atol=1e-6)
    np.testing.assert_allclose(first.test, second.test, atol=1e-6)


# ----------------------------------------------------------------------------- 3-stage NN


def test_three_stage_outputs_and_stage_chain(three_stage, sim_data):
    result, calls = three_stage
    _check_result(result, sim_data)
    run = result.run_dir
    # Stage 1 learns only the non-scored targets with a positive treated row.
    targets = json.loads((run / "stages/nonscored/seed_0/targets.json").read_text())
    treated = ~sim_data.train.is_control
    expected = np.flatnonzero(sim_data.train.nonscored[treated].sum(axis=0) > 0)
    assert targets["columns"] == expected.tolist()
    # Stage widths: stage 2 = stage-1 features + one meta column per stage-1 target;
    # stage 3 = one meta column per scored target only.
    f1 = StackedFeatures.load(run / "stages/nonscored/seed_0/features")
    f2 = StackedFeatures.load(run / "stages/scored/seed_0/features")
    f3 = StackedFeatures.load(run / "stages/stack/seed_0/features")
    w1 = len(f1.feature_names_)
    assert len(f2.feature_names_) == w1 + len(expected)
    assert f2.base.feature_names_ == f1.feature_names_
    assert len(f3.feature_names_) == 206 and f3.base is None
    assert {c["stage"] for c in calls} == {"nonscored", "scored", "stack"}
    # metrics.json scores each stage on the scored targets; the last one is the model's
    stages = json.loads((run / "metrics.json").read_text())["stages"]
    assert set(stages) == {"scored", "stack"}
    assert stages["stack"]["log_loss"] == pytest.approx(result.metrics["log_loss"], abs=1e-9)
    oof2 = np.load(run / "stages/scored/seed_0/oof.npy")
    oof2[sim_data.train.is_control] = 0
    assert stages["scored"]["log_loss"] == pytest.approx(
        metrics.score(sim_data.train.scored, oof2, sim_data.train.is_control)["log_loss"], rel=1e-6)


def test_controls_never_train_and_are_predicted_zero(three_stage, sim_data):
    result, calls = three_stage
    n_treated = int((~sim_data.train.is_control).sum())
    assert sim_data.train.is_control.any()
    for stage in ("nonscored", "scored", "stack"):
        stage_calls = [c for c in calls if c["stage"] == stage]
        assert len(stage_calls) == 3
        # every fold trains + judges on treated rows of the OTHER folds only (selection policy
        # holdout: the judge rows are a part of them), so over the 3 folds each treated row is
        # used twice and no control row ever
        assert sum(c["n_train"] + c["n_valid"] for c in stage_calls) == 2 * n_treated
        assert all(0 < c["n_valid"] < c["n_train"] for c in stage_calls)
    assert (result.oof[sim_data.train.is_control] == 0).all()


def test_meta_features_come_from_the_fold_model_that_did_not_see_the_row(three_stage, sim_data):
    """Each row's stage-1 meta-features (stage-1 OOF) = the prediction of its own fold's model,
    recomputed from the saved features and estimators; that model's training rows exclude the fold."""
    result, _ = three_stage
    run = result.run_dir
    model = runner.build_model(RunConfig(**json.loads((run / "config.json").read_text())))
    stage = model.stages()[0]
    stage_dir = run / "stages/nonscored/seed_0"
    folds = np.load(run / "folds.npy")
    X = model.load_features(stage, stage_dir / "features").transform(blocks_from_dataset(sim_data.train))
    meta = np.load(stage_dir / "oof.npy")
    for k in range(3):
        est = load_estimator(stage_dir / f"fold_{k}" / "estimator")
        np.testing.assert_allclose(meta[folds == k], est.predict_proba(X[folds == k]), atol=1e-6)


def test_three_stage_predict_run_replays_test_predictions(three_stage, sim_data):
    result, _ = three_stage
    np.testing.assert_allclose(runner.predict_run(result.run_dir, sim_data.test), result.test, atol=1e-6)


def _noise_data(data: MoAData, n_targets: int = 12, rate: float = 0.2, seed: int = 0) -> MoAData:
    """Random labels, independent of the features; the non-scored labels are the SAME
    matrix, so a stage-1 network that memorised its training rows would hand stage 2 the
    row's own scored labels if its in-sample predictions leaked into the meta-features."""
    tr = data.train
    y = (np.random.default_rng(seed).random((len(tr), n_targets)) < rate).astype(np.float32)
    y[tr.is_control] = 0
    train = dataclasses.replace(tr, scored=y, nonscored=y.copy(), scored_names=[f"noise_{j}" for j in range(n_targets)],
                                nonscored_names=[f"ns_noise_{j}" for j in range(n_targets)])
    return MoAData(train=train, test=data.test, source="noise")


def test_stacking_is_leak_free_under_planted_noise(sim_data, tmp_path):
    data = _noise_data(sim_data)
    config = _with_params(load_config("three_stage_nn", profile="smoke"), {
        # a stage 1 that memorises its training rows (all epochs, last weights, no dropout)
        "stage1": {"network": {"hidden": [256, 256], "dropouts": [0.0, 0.0, 0.0]},
                   "train": {"epochs": 25, "batch_size": 64, "smoothing": 0.0, "restore_best": False}},
        # later stages trained long enough to exploit any label information in their meta input
        "stage2": {"network": {"hidden": [128, 128]}, "train": {"epochs": 20, "batch_size": 64}},
        "stage3": {"network": {"hidden": [64, 64]}, "train": {"epochs": 12, "batch_size": 64}},
    })
    result = runner.train(config, data, tmp_path / "run", show_progress=False)
    tr = data.train
    treated = ~tr.is_control
    Y = tr.scored[treated]
    prior = metrics.mean_log_loss(Y, np.repeat(Y.mean(axis=0, keepdims=True), len(Y), axis=0))
    folds = np.load(result.run_dir / "folds.npy")
    model = runner.build_model(config)
    s1, s2 = model.stages()[:2]
    s1_dir = result.run_dir / "stages/nonscored/seed_0"

    # Stage 1 did memorise: in-sample it nearly knows the labels, so a leak would matter.
    X1 = model.load_features(s1, s1_dir / "features").transform(blocks_from_dataset(tr))
    ests = [load_estimator(s1_dir / f"fold_{k}" / "estimator") for k in range(3)]
    in_sample = np.zeros_like(tr.scored)
    for k, est in enumerate(ests):
        seen = folds != k
        in_sample[seen] += est.predict_proba(X1[seen]) / 2.0  # each row is seen by 2 of 3 models
    assert metrics.mean_log_loss(Y, in_sample[treated]) < 0.5 * prior

    # The honest chain: stage 2 and 3 out-of-fold scores stay at the prior (no signal).
    for stage in ("scored", "stack"):
        oof = np.load(result.run_dir / f"stages/{stage}/seed_0/oof.npy")[treated]
        assert metrics.mean_log_loss(Y, oof) > prior - 0.01, stage

    # The same stage 2 fed in-sample (leaky) stage-1 predictions beats the prior by far:
    # the check above would catch a leak.
    blocks = blocks_from_dataset(tr)
    blocks["meta"] = in_sample
    test_blocks = blocks_from_dataset(data.test)
    test_blocks["meta"] = np.load(s1_dir / "test.npy")
    feats = model.fit_features(s2, {k: v[treated] for k, v in blocks.items()},
                               {k: v[~data.test.is_control] for k, v in test_blocks.items()}, seed=0)
    X2 = feats.transform(blocks)
    leaky_oof = np.zeros_like(tr.scored)
    for k in range(3):
        fit, judge = treated & (folds != k), treated & (folds == k)
        est = model.fit_fold(s2, X2[fit], tr.scored[fit], X2[judge], tr.scored[judge], FitContext(seed=k))
        leaky_oof[folds == k] = est.predict_proba(X2[folds == k])
    # (the margin: far beyond the 0.01 the honest chain is allowed above)
    assert metrics.mean_log_loss(Y, leaky_oof[treated]) < prior - 0.05


# ----------------------------------------------------------------------------- 2-stage NN + TabNet


def test_tabnet_two_stage_outputs_and_reload(tabnet, sim_data):
    _check_result(tabnet, sim_data)
    run = tabnet.run_dir
    assert sorted(p.name for p in (run / "stages/scored/seed_0/fold_0/estimator").iterdir()) == ["spec.json", "weights.pt"]
    info = json.loads((run / "stages/scored/seed_0/fold_0/done.json").read_text())["info"]
    assert 1 <= info["epochs_run"] <= 3
    np.testing.assert_allclose(runner.predict_run(run, sim_data.test), tabnet.test, atol=1e-6)


def test_tabnet_estimator_seeded_saved_and_reported(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    X[:, 0] = rng.integers(0, 3, 300)  # two categorical columns (codes), embedded as the script's cp
    X[:, 1] = rng.integers(0, 2, 300)
    Y = (X[:, 2:5] + rng.normal(scale=0.5, size=(300, 3)) > 1.0).astype(np.float32)
    cfg = TabNetConfig(n_d=8, n_a=8, max_epochs=4, patience=3, milestones=[2], batch_size=128, virtual_batch_size=64)
    assert (cfg.cat_idxs, cfg.cat_dims, cfg.cat_emb_dim) == ([0, 1], [3, 2], [1, 1])
    records: list[dict] = []
    a = fit_tabnet(cfg, X[:200], Y[:200], X[200:], Y[200:], seed=5, on_epoch=records.append)
    b = fit_tabnet(cfg, X[:200], Y[:200], X[200:], Y[200:], seed=5)
    pa = a.predict_proba(X)
    np.testing.assert_allclose(pa, b.predict_proba(X), atol=1e-6)
    assert pa.shape == (300, 3) and pa.min() >= 0 and pa.max() <= 1
    assert [r["epoch"] for r in records] == list(range(len(records))) and 1 <= len(records) <= 4
    assert all(np.isfinite(r["valid_loss"]) and np.isfinite(r["stop_loss"]) for r in records)
    # early stopping on the smoothed loss (the script's last eval metric); its best epoch's
    # weights are restored and both losses of that epoch are reported
    best = int(np.argmin([r["stop_loss"] for r in records]))
    assert a.info["best_epoch"] == best
    assert a.info["best_stop_loss"] == pytest.approx(records[best]["stop_loss"])
    assert a.info["best_valid_loss"] == pytest.approx(records[best]["valid_loss"])
    bad = X.copy()
    bad[0, 1] = 5.0
    with pytest.raises(ValueError, match="categorical column 1 of the training rows"):
        fit_tabnet(cfg, bad[:200], Y[:200], X[200:], Y[200:], seed=5)
    a.save(tmp_path / "est")
    a.save(tmp_path / "est")  # overwriting is atomic and leaves no temporary folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["est"]
    np.testing.assert_array_equal(TabNetEstimator.load(tmp_path / "est").predict_proba(X), pa)  # bit-identical


def test_configs_full_profiles_hold_the_reference_numbers():
    three = load_config("three_stage_nn").params
    assert [three[s]["network"]["hidden"] for s in ("stage1", "stage2", "stage3")] == [[2048, 2048]] * 2 + [[1024, 1024]]
    assert [three[s]["train"]["epochs"] for s in ("stage1", "stage2", "stage3")] == [15, 25, 25]
    assert three["stage1"]["network"]["dropouts"] == [0.15, 0.3, 0.25]
    assert three["stage3"]["train"]["clip_targets"] == [0.0005, 0.9995]
    assert three["stage2"]["base_features"] == "nonscored"
    two = load_config("two_stage_nn_tabnet")
    assert two.cv.n_folds == 10
    tab = two.params["stage2"]["tabnet"]
    assert (tab["n_d"], tab["n_a"], tab["n_steps"], tab["mask_type"], tab["max_epochs"], tab["patience"]) == \
        (32, 32, 1, "entmax", 200, 50)
    assert two.params["stage1"]["network"] == {"hidden": [2048], "dropouts": [0.2, 0.25], "weight_norm": [True, True],
                                               "activation": "relu"}
    for name in ("three_stage_nn", "two_stage_nn_tabnet"):
        for profile in ("full", "cpu", "smoke"):
            runner.build_model(load_config(name, profile=profile))  # params validate


# ----------------------------------------------------------------------------- the scripts' numbers


def _steps(config: dict) -> list[tuple]:
    """(kind, inputs, output, fit_on, fit_controls, random_state, stats) of each feature step."""
    return [(s["kind"], s["inputs"], s.get("output"), s.get("fit_on"), s.get("fit_controls"), s.get("random_state"),
             s.get("stats")) for s in config["steps"]]


def _same_method(name: str, at: tuple[str, ...]):
    """Every profile runs the full profile's feature steps in the same order, on the same
    rows, with the same random states: only sizes change."""
    full = load_config(name).params
    for profile in ("cpu", "smoke", "demo"):
        params = load_config(name, profile=profile).params
        for path in at:
            a, b = full, params
            for key in path.split("."):
                a, b = a[key], b[key]
            assert _steps(a) == _steps(b), (profile, path)
            assert a["output"] == b["output"] and a.get("fit_on") == b.get("fit_on"), (profile, path)
            assert a.get("fit_controls") == b.get("fit_controls"), (profile, path)


def test_simple_nn_full_profiles_are_the_scripts():
    """final/Best LB/Training/Local/simple-nn-old-split-train.py and simple-nn-new-split-train.py."""
    script_seeds = [940, 1513, 1269, 1392, 1119, 1303]
    old, new = load_config("simple_nn"), load_config("simple_nn_drug_cv")
    assert old.seeds == new.seeds == script_seeds
    assert (old.cv.scheme, old.cv.n_folds) == ("old", 5)
    assert (new.cv.scheme, new.cv.n_folds, new.cv.seed, new.cv.max_replicates) == ("drug", 5, 34, 18)
    five = ["sum", "mean", "std", "kurt", "skew"]
    quantile_then_fa = [
        ("quantile", ["g", "c"], None, "train", None, None, None),  # random_state: 0 (old) / 123 (new)
        ("factor_analysis", ["g"], "fa_g", None, None, 1903, None),
        ("factor_analysis", ["c"], "fa_c", None, None, 1903, None),
        ("quantile", ["g", "c", "fa_g", "fa_c"], None, None, None, 123, None),
    ]
    for config, seed_q in ((old, 0), (new, 123)):
        f = config.params["features"]
        assert (f["fit_on"], f["fit_controls"]) == ("train+test", True)
        steps = _steps(f)
        assert steps[0][5] == seed_q
        assert [s[:5] + s[6:] for s in steps[:4]] == [s[:5] + s[6:] for s in quantile_then_fa]
        assert [s[5] for s in steps[1:4]] == [1903, 1903, 123]
        assert [s["n_components"] for s in f["steps"][1:3]] == [90, 50]
        assert all(s.get("n_quantiles") == 100 for s in f["steps"] if s["kind"] == "quantile")
        net, train = config.params["network"], config.params["train"]
        assert net == {"hidden": [2048, 2048], "dropouts": [0.0, 0.25, 0.25], "weight_norm": [True, False, True],
                       "activation": "leaky_relu"}
        assert (train["epochs"], train["batch_size"], train["lr"], train["weight_decay"]) == (25, 256, 5e-3, 1e-5)
        assert (train["scheduler"], train["max_lr"], train["pct_start"], train["div_factor"]) == \
            ("onecycle", 1e-2, 0.1, 1e3)
        assert train["smoothing"] == 0.001 and train.get("patience") is None  # EARLY_STOP = False: all 25 epochs
    # old CV: k-means 45 / 15 and the five statistics of the re-quantiled g / c
    assert _steps(old.params["features"])[4:] == [
        ("kmeans_onehot", ["g"], "km_g", None, None, 123, None), ("kmeans_onehot", ["c"], "km_c", None, None, 123, None),
        ("row_stats", ["g", "c"], "stats", None, None, None, five)]
    assert [s["n_clusters"] for s in old.params["features"]["steps"][4:6]] == [45, 15]
    assert old.params["features"]["output"] == ["g", "c", "fa_g", "fa_c", "km_g", "km_c", "stats", "cp"]
    # new CV: no k-means
    assert _steps(new.params["features"])[4:] == [("row_stats", ["g", "c"], "stats", None, None, None, five)]
    assert new.params["features"]["output"] == ["g", "c", "fa_g", "fa_c", "stats", "cp"]
    for name in ("simple_nn", "simple_nn_drug_cv"):
        _same_method(name, ("features",))


def test_simple_nn_feature_order_and_rows(sim_data):
    """The fitted smoke pipeline: the script's column order, every g / c column (the script
    dropped g-0), statistics in its order, and the fit rows: quantile on train, the rest on
    train + test, controls included."""
    from moakit.features import Pipeline, PipelineConfig
    from moakit.features.pipeline import CONTROL_BLOCK

    config = load_config("simple_nn", profile="smoke").params["features"]
    tr, te = sim_data.train, sim_data.test
    train = {**blocks_from_dataset(tr), CONTROL_BLOCK: tr.is_control.astype(np.float32)[:, None]}
    test = {**blocks_from_dataset(te), CONTROL_BLOCK: te.is_control.astype(np.float32)[:, None]}
    pipe = Pipeline(PipelineConfig.model_validate(config), seed=0).fit(train, test)
    names = pipe.feature_names_
    n_g, n_c = tr.genes.shape[1], tr.cells.shape[1]
    assert names[:n_g + n_c] == [f"g-{i}" for i in range(n_g)] + [f"c-{i}" for i in range(n_c)]
    assert names[-5:] == [f"cp-{i}" for i in range(5)]
    assert names[-20:-5] == [f"stats-{b}_{s}" for b in ("g", "c", "g+c") for s in ("sum", "mean", "std", "kurt", "skew")]
    assert pipe.step_fit_rows_["quantile_gc"] == len(tr)  # train rows, controls included
    assert pipe.step_fit_rows_["fa_g"] == pipe.step_fit_rows_["km_c"] == len(tr) + len(te)


def test_two_stage_full_profile_is_the_script():
    """final/Best LB/Training/Local/2stage-nn-tabnet-train.py."""
    two = load_config("two_stage_nn_tabnet")
    assert (two.cv.scheme, two.cv.n_folds, len(two.seeds)) == ("old", 10, 5)
    assert two.params["meta_features"] == "seed_mean"
    s1, s2 = two.params["stage1"], two.params["stage2"]
    # stage 1: quantile FIRST (train + test), PCA / UMAP of the quantiled g / c, VarianceThreshold 0.5, nothing after
    assert (s1["features"]["fit_on"], s1["features"]["fit_controls"]) == ("train", True)
    assert _steps(s1["features"]) == [
        ("quantile", ["g", "c"], None, "train+test", None, 0, None),
        ("pca", ["g"], "pca_g", None, None, 512, None), ("umap", ["g"], "umap_g", None, None, 512, None),
        ("pca", ["c"], "pca_c", None, None, 512, None), ("umap", ["c"], "umap_c", None, None, 512, None),
        ("variance_threshold", ["g", "c", "pca_g", "umap_g", "pca_c", "umap_c"], "vt", None, None, None, None)]
    assert [s.get("n_components") for s in s1["features"]["steps"][1:5]] == [50, 15, 15, 5]
    assert [s1["features"]["steps"][i].get("transform_seed") for i in (2, 4)] == [42, 42]  # umap-learn's default
    assert s1["features"]["steps"][5]["threshold"] == 0.5 and s1["features"]["output"] == ["vt", "cp"]
    assert s1["network"] == {"hidden": [2048], "dropouts": [0.2, 0.25], "weight_norm": [True, True],
                             "activation": "relu"}
    t = s1["train"]
    assert (t["epochs"], t["batch_size"], t["lr"], t["weight_decay"], t["max_lr"], t["pct_start"], t["div_factor"]) \
        == (15, 256, 5e-4, 1e-5, 1e-2, 0.2, 1e3)
    assert t["smoothing"] == 0.0 and t.get("patience") is None
    # TabNet: its own features, cp as two categoricals first, the meta quantile on treated OOF only
    assert s2.get("base_features") is None
    assert (s2["features"]["fit_on"], s2["features"]["fit_controls"]) == ("train", True)
    assert _steps(s2["features"]) == [
        ("cp_categories", ["cp"], "cp_cat", None, None, None, None),
        ("quantile", ["g", "c"], None, None, None, 0, None),
        ("factor_analysis", ["g"], "fa_g", "train+test", None, 42, None),
        ("factor_analysis", ["c"], "fa_c", "train+test", None, 42, None),
        ("kmeans_onehot", ["g"], "km_g", "train+test", None, 123, None),
        ("kmeans_onehot", ["c"], "km_c", "train+test", None, 123, None),
        ("row_stats", ["g", "c"], "stats", None, None, None, ["mean", "std", "kurt", "skew"]),
        ("quantile", ["meta"], None, None, False, 0, None)]
    assert [s.get("n_components") or s.get("n_clusters") for s in s2["features"]["steps"][2:6]] == [90, 50, 35, 5]
    assert s2["features"]["output"] == ["cp_cat", "g", "c", "fa_g", "fa_c", "km_g", "km_c", "stats", "meta"]
    tab = s2["tabnet"]
    assert (tab["n_d"], tab["n_a"], tab["n_steps"], tab["lambda_sparse"], tab["mask_type"]) == (32, 32, 1, 0.0, "entmax")
    assert (tab["cat_idxs"], tab["cat_dims"], tab["cat_emb_dim"]) == ([0, 1], [3, 2], [1, 1])
    assert (tab["lr"], tab["weight_decay"], tab["milestones"], tab["scheduler_gamma"]) == (2e-2, 1e-5, [100, 150], 0.9)
    assert (tab["max_epochs"], tab["patience"], tab["batch_size"], tab["virtual_batch_size"]) == (200, 50, 1024, 128)
    assert (tab["smoothing"], tab["stop_smoothing"]) == (0.001, 0.001)
    _same_method("two_stage_nn_tabnet", ("stage1.features", "stage2.features"))


def test_tabnet_stage_inputs_and_fit_rows(tabnet, sim_data):
    """The fitted TabNet features: cp_time / cp_dose codes first, the quantile of g / c on
    every train row (controls too), the meta quantile on the treated rows only."""
    run = tabnet.run_dir
    feats = StackedFeatures.load(run / "stages/scored/seed_0/features")
    assert feats.base is None
    names = feats.feature_names_
    assert names[:2] == ["cp_cat-cp_time", "cp_cat-cp_dose"] and names[2] == "g-0"
    n_meta = len(json.loads((run / "stages/nonscored/seed_0/targets.json").read_text())["names"])
    assert names[-n_meta:] == [f"meta-{i}" for i in range(n_meta)]
    rows = feats.own.step_fit_rows_
    tr, te = sim_data.train, sim_data.test
    assert rows["quantile_gc"] == len(tr)
    assert rows["fa_g"] == len(tr) + len(te)
    assert rows["quantile_meta"] == int((~tr.is_control).sum())
    s1 = StackedFeatures.load(run / "stages/nonscored/seed_0/features").own.step_fit_rows_
    assert s1["quantile_gc"] == len(tr) + len(te) and s1["pca_g"] == s1["vt"] == len(tr)


def test_mlp_output_bias_log_odds_or_torch_default():
    """network.output_bias: moakit's log-odds start (default) or PyTorch's own initialisation,
    as the winners' scripts (an ablation switch)."""
    from moakit.models.mlp import MLPConfig, MLPStageParams, fit_mlp

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6)).astype(np.float32)
    Y = (rng.random((64, 3)) < 0.25).astype(np.float32)
    Y[:, 2] = 0.0
    features = load_config("simple_nn", profile="smoke").params["features"]
    for bias, expect_log_odds in (("log_odds", True), ("torch", False)):
        params = MLPStageParams(features=features, network=MLPConfig(hidden=[8], dropouts=[0.0, 0.0],
                                                                      weight_norm=[False, False], output_bias=bias),
                                train={"epochs": 1, "lr": 1e-12, "max_lr": 1e-12, "batch_size": 64})
        est = fit_mlp(params, X, Y, X[:0], Y[:0], seed=0)
        start = est.module.net[-1].bias.detach().numpy()
        rate = np.clip(Y.mean(axis=0), 1e-4, 1 - 1e-4)
        assert np.allclose(start, np.log(rate / (1 - rate)), atol=1e-5) == expect_log_odds, bias
