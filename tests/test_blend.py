"""Blending: weight search (SLSQP, Optuna TPE), the vectorised objective, model diversity,
presets, and blending run folders. All on synthetic predictions: nothing is trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import approx_fprime

from moakit import blend, metrics
from moakit.blend import BlendError, BlendObjective, apply_preset, blend_predictions, load_runs, \
    mean_target_correlation, search_weights

from conftest import write_tiny_folder


def synthetic_problem(n=1500, t=60, seed=0):
    """True probabilities z; A and B see them through independent logit noise (A less
    noisy), C is pure noise. The best mix weighs A most, B some, C (about) nothing."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-4.0, 1.5, (n, t))
    y = (rng.random((n, t)) < 1 / (1 + np.exp(-z))).astype(float)
    ctl = rng.random(n) < 0.08
    y[ctl] = 0

    def model(noise):
        p = 1 / (1 + np.exp(-(z + rng.normal(0, noise, (n, t)))))
        p[ctl] = 0
        return p.astype(np.float32)

    a, b = model(0.8), model(1.2)
    c = rng.random((n, t)).astype(np.float32)
    c[ctl] = 0
    return [a, b, c], y, ctl


@pytest.fixture(scope="module")
def problem():
    return synthetic_problem()


def test_objective_is_the_competition_metric_and_has_the_right_gradient(problem):
    oofs, y, ctl = problem
    obj = BlendObjective(oofs, y, ctl)
    for w in (np.array([0.5, 0.3, 0.2]), np.array([1.0, 0.0, 0.0]), np.array([0.1, 0.1, 0.8])):
        expected = metrics.score(y, blend_predictions(oofs, w), ctl)["log_loss"]
        assert obj(w) == pytest.approx(expected, rel=1e-6)
        numeric = approx_fprime(w, obj, 1e-7)
        np.testing.assert_allclose(obj.value_and_grad(w)[1], numeric, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("method", ["slsqp", "optuna"])
def test_search_finds_the_known_best_mix(problem, method):
    oofs, y, ctl = problem
    res = search_weights(oofs, y, ctl, method=method, n_trials=120, seed=0)
    w = res.weights
    assert res.method == method and res.n_evals > 0 and res.seconds >= 0
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert w[2] < 0.02  # pure noise is dropped
    assert w[0] > w[1] > 0.05  # the better model weighs more; both contribute
    singles = [metrics.score(y, p, ctl)["log_loss"] for p in oofs]
    assert res.log_loss <= min(singles) + 1e-12
    assert res.log_loss == pytest.approx(metrics.score(y, blend_predictions(oofs, w), ctl)["log_loss"], rel=1e-6)


def test_slsqp_and_optuna_agree(problem):
    oofs, y, ctl = problem
    a = search_weights(oofs, y, ctl, method="slsqp")
    b = search_weights(oofs, y, ctl, method="optuna", n_trials=150, seed=1)
    assert np.abs(a.weights - b.weights).max() < 0.06
    assert b.log_loss >= a.log_loss - 1e-7  # SLSQP reaches the (convex) optimum


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory):
    """One SQLite Optuna storage for the module (creating its schema takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'blend.db'}"


def test_optuna_study_persists_in_sqlite(problem, sqlite_url):
    import optuna

    oofs, y, ctl = problem
    url = sqlite_url
    first = search_weights(oofs, y, ctl, method="optuna", n_trials=6, storage=url, study_name="s1", names=["a", "b", "c"])
    assert first.n_evals == 6
    study = optuna.load_study(study_name="s1", storage=url)
    assert len(study.trials) == 6
    assert set(study.best_trial.params) == {"w_a", "w_b", "w_c"}
    again = search_weights(oofs, y, ctl, method="optuna", n_trials=4, storage=url, study_name="s1", names=["a", "b", "c"])
    assert again.n_evals == 4 and again.info["n_trials_total"] == 10
    assert len(optuna.load_study(study_name="s1", storage=url).trials) == 10
    assert again.log_loss <= first.log_loss
    with pytest.raises(BlendError, match="other models"):
        search_weights(oofs, y, ctl, method="optuna", n_trials=1, storage=url, study_name="s1", names=["x", "y", "z"])


def test_unknown_method():
    with pytest.raises(BlendError, match="nelder"):
        search_weights([np.zeros((3, 2))] * 2, np.zeros((3, 2)), method="nelder")


def test_blend_predictions():
    a, b = np.full((2, 3), 0.2), np.full((2, 3), 0.6)
    np.testing.assert_allclose(blend_predictions([a, b], [0.25, 0.75]), np.full((2, 3), 0.5))
    with pytest.raises(BlendError):
        blend_predictions([a, b], [1.0])


def test_correlation_identical_independent_constant_and_controls():
    rng = np.random.default_rng(0)
    n, t = 4000, 8
    a = rng.random((n, t))
    b = rng.random((n, t))
    ctl = np.zeros(n, bool)
    ctl[:100] = True
    a2 = a.copy()
    a2[ctl] = 0  # control rows differ but are excluded
    c = a.copy()
    c[:, 0] = 0.3  # a constant column is skipped, not counted as 0 or NaN
    corr = mean_target_correlation([a, a2, b, c], ctl)
    assert corr.shape == (4, 4)
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert corr[0, 1] == pytest.approx(1.0)
    assert abs(corr[0, 2]) < 0.05
    assert corr[0, 3] == pytest.approx(1.0)
    np.testing.assert_allclose(corr, corr.T)
    neg = mean_target_correlation([a, 1 - a])
    assert neg[0, 1] == pytest.approx(-1.0)


def test_presets():
    names = ["three_stage_nn", "resnet_2heads_v2", "deepinsight_efficientnet", "deepinsight_resnest",
             "deepinsight_resnest_v2", "simple_nn"]
    w = apply_preset(names, "best_cv")
    np.testing.assert_allclose(w, [0.37, 0.08, 0.17, 0.11, 0.27, 0.0])
    with pytest.raises(BlendError, match="deepinsight_resnest_v2"):
        apply_preset(names[:4], "best_cv")
    with pytest.raises(BlendError, match="best_lb.*two_stage_nn_tabnet"):
        apply_preset(names, "best_lb")
    with pytest.raises(BlendError, match="unknown blend preset 'best'; known: best_cv, best_lb"):
        apply_preset(names, "best")
    np.testing.assert_allclose(apply_preset(["x", "y"], {"x": 1, "y": 3}), [0.25, 0.75])


def test_best_lb_preset_is_the_winning_submission():
    """The weights of the winners' final/blend.py, (0.37, 0.10, 0.18, 0.15) x 0.9 + 0.10 +
    0.09 + 0.09, with its seventh slot on the old-CV Simple NN (final/blend.py read the new-CV
    file there twice; their scoring Kaggle blend read the old-CV one)."""
    from moakit.workflow import load_blend_config

    config = load_blend_config("blend_best_lb")
    names = [e.name for e in config.models]
    assert config.blend.preset == "best_lb" and config.blend.methods == ["slsqp", "optuna"]
    assert set(blend.PRESETS["best_lb"]) == set(names)  # keyed by the shipped config's entry names
    w = dict(zip(names, apply_preset(names, "best_lb")))
    want = {"three_stage_nn": 0.333, "two_stage_nn_tabnet": 0.10, "simple_nn": 0.09, "simple_nn_drug_cv": 0.09,
            "resnet_2heads": 0.09, "deepinsight_efficientnet": 0.162, "deepinsight_resnest_v2": 0.135}
    assert w == pytest.approx(want, abs=1e-12)
    assert sum(blend.PRESETS["best_lb"].values()) == pytest.approx(1.0, abs=1e-12)  # used as given, not rescaled
    assert config.models[names.index("simple_nn")].config == "simple_nn"  # old CV
    assert config.models[names.index("simple_nn_drug_cv")].config == "simple_nn_drug_cv"  # new CV
    for profile in ("cpu", "demo", "smoke"):  # smaller profiles change sizes, never the weights
        assert load_blend_config("blend_best_lb", profile).blend.preset == "best_lb"


# --------------------------------------------------------------------------- run folders


def write_fake_run(folder: Path, train_ids, test_ids, oof, test, targets, model="fake", data_source=None,
                   y=None, ctl=None, seeds=(0, 1), timings=None, rng_order=None):
    """The files of a single-model run (runner layout) with the given predictions."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.arange(len(train_ids)) if rng_order is None else rng_order

    def frame(ids, values):
        f = pd.DataFrame(np.asarray(values, np.float64), columns=targets)
        f.insert(0, "sig_id", ids)
        return f

    frame(np.asarray(train_ids)[order], np.asarray(oof)[order]).to_csv(folder / "oof_predictions.csv", index=False)
    frame(test_ids, test).to_csv(folder / "test_predictions.csv", index=False)
    m = {"model": model, "profile": "smoke", "cv": {"scheme": "old", "n_folds": 3}, "seeds": {}}
    if y is not None:
        m.update(metrics.score(y, oof, ctl))
        for s in seeds:
            m["seeds"][str(s)] = metrics.score(y, np.clip(np.asarray(oof) + 0.001 * s, 0, 1), ctl)
        m["prior"] = metrics.score(y, metrics.prior_predictions(y, ctl, len(y)), ctl)
    (folder / "metrics.json").write_text(json.dumps(m))
    (folder / "config.json").write_text(json.dumps({"model": model, "profile": "smoke", "seeds": list(seeds),
                                                    "cv": {"scheme": "old", "n_folds": 3, "seed": 0}}))
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "kind": "model",
        "versions": {"moakit": "0.0-test", "python": "3.11", "torch": "x", "numpy": np.__version__},
        "model": model, "profile": "smoke", "data_fingerprint": "abc123", "data_source": data_source,
        "n_train": len(train_ids), "n_test": len(test_ids), "created": "2024-01-01T00:00:00",
        "status": "complete", "timings": timings or {"stage_scored_seconds": 1.5, "total_seconds": 1.5}}))
    np.save(folder / "folds.npy", np.arange(len(train_ids)) % 3)
    return folder


@pytest.fixture
def tiny_runs(tmp_path):
    """Three fake runs over the tiny data folder (3 targets): A good, B worse, C noise.
    Run B lists its OOF rows in another order."""
    from moakit.data.io import load

    data_dir = write_tiny_folder(tmp_path / "data", n_train=300, n_test=30)
    data = load(data_dir)
    rng = np.random.default_rng(1)
    y, ctl = data.train.scored.astype(float), data.train.is_control
    targets = list(data.train.scored_names)

    def noisy(scale):
        p = np.clip(np.where(y > 0, 0.7, 0.15) + rng.normal(0, scale, y.shape), 0.01, 0.99)
        p[ctl] = 0
        return p

    def test_pred():
        p = rng.random((len(data.test), len(targets))) * 0.5
        p[data.test.is_control] = 0
        return p

    oofs = [noisy(0.1), noisy(0.25), np.where(ctl[:, None], 0, rng.random(y.shape))]
    runs = []
    for name, oof, order in zip("abc", oofs, [None, rng.permutation(len(y)), None]):
        runs.append(write_fake_run(tmp_path / "runs" / name, data.train.sig_id, data.test.sig_id, oof, test_pred(),
                                   targets, model=f"model_{name}", data_source=str(data_dir), y=y, ctl=ctl,
                                   rng_order=order))
    return runs, data, oofs


def test_load_runs_aligns_by_sig_id_and_reads_data_from_manifest(tiny_runs):
    runs, data, oofs = tiny_runs
    inputs = load_runs(runs)  # targets from the data folder in manifest.json
    assert inputs.names == ["a", "b", "c"]
    assert list(inputs.train_sig_id) == list(data.train.sig_id)
    for got, want in zip(inputs.oof, oofs):
        np.testing.assert_allclose(got, want, atol=1e-6)  # run b's shuffled rows are put back in order
    np.testing.assert_array_equal(inputs.y, data.train.scored)
    np.testing.assert_array_equal(inputs.is_control, data.train.is_control)
    np.testing.assert_array_equal(inputs.test_is_control, data.test.is_control)

    # The same from an explicit targets frame (rows in another order) and from data=.
    frame = pd.DataFrame(data.train.scored, columns=data.train.scored_names)
    frame.insert(0, "sig_id", data.train.sig_id)
    frame = frame.iloc[::-1]
    via_frame = load_runs(runs, names=["x", "y", "z"], targets=frame)
    np.testing.assert_array_equal(via_frame.y, data.train.scored)
    np.testing.assert_array_equal(via_frame.is_control, data.train.is_control)  # inferred: all-zero rows
    assert via_frame.names == ["x", "y", "z"]
    via_data = load_runs(runs, data=data)
    np.testing.assert_array_equal(via_data.y, inputs.y)


def test_load_runs_errors(tiny_runs, tmp_path):
    runs, data, _ = tiny_runs
    bad = tmp_path / "bad"
    oof = pd.read_csv(runs[1] / "oof_predictions.csv")
    bad.mkdir()
    oof.iloc[1:].to_csv(bad / "oof_predictions.csv", index=False)  # one row missing
    (bad / "test_predictions.csv").write_bytes((runs[1] / "test_predictions.csv").read_bytes())
    missing_id = oof["sig_id"].iloc[0]
    with pytest.raises(BlendError, match=f"run 'bad'.*{missing_id}"):
        load_runs([runs[0], bad], data=data)

    other = tmp_path / "other"
    other.mkdir()
    oof.rename(columns={"target_b": "target_zz"}).to_csv(other / "oof_predictions.csv", index=False)
    (other / "test_predictions.csv").write_bytes((runs[1] / "test_predictions.csv").read_bytes())
    with pytest.raises(BlendError, match="run 'other'.*target_b"):
        load_runs([runs[0], other], data=data)
    with pytest.raises(BlendError, match="twice"):
        load_runs([runs[0], runs[1]], names=["m", "m"], data=data)

    # No data given and none recorded: a clear request for it.
    nodata = tmp_path / "nodata"
    nodata.mkdir()
    for f in ("oof_predictions.csv", "test_predictions.csv"):
        (nodata / f).write_bytes((runs[0] / f).read_bytes())
    with pytest.raises(BlendError, match="--data"):
        load_runs([nodata])


def test_blend_runs_writes_the_blend_folder(tiny_runs, tmp_path, sqlite_url):
    runs, data, _ = tiny_runs
    out = tmp_path / "blend"
    res = blend.blend_runs(runs, out, n_trials=25, data=data)
    for f in ("blend.json", "oof_predictions.csv", "submission.csv", "per_target_log_loss.csv",
              "correlation_oof.csv", "correlation_test.csv", "correlation_oof.png", "correlation_test.png"):
        assert (out / f).exists(), f
    assert (out / "correlation_oof.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "blend.json").read_text())
    assert summary["method"] in blend.METHODS and summary["names"] == ["a", "b", "c"]
    assert set(summary["methods"]) == {"slsqp", "optuna", "per_target"}  # the default: all three
    assert sum(summary["weights"].values()) == pytest.approx(1.0)
    # chosen on the nested score (weights judged on rows they were not searched on)
    assert summary["chosen_by"] == "nested"
    nested = summary["nested"]["methods"]
    assert summary["method"] == min(blend.METHODS, key=lambda m: nested[m]["log_loss"])
    assert summary["log_loss"] == pytest.approx(summary["methods"][summary["method"]]["log_loss"])
    assert summary["log_loss"] <= min(m["log_loss"] for m in summary["models"].values()) + 1e-9
    assert summary["best_single"] == "a" and summary["weights"]["c"] < 0.05
    assert set(summary["timings"]) >= {"slsqp_seconds", "optuna_seconds", "total_seconds"}
    sub = pd.read_csv(out / "submission.csv")
    assert list(sub.columns) == ["sig_id", *data.train.scored_names]
    assert list(sub.sig_id) == list(data.test.sig_id)
    assert (sub.iloc[:, 1:].to_numpy()[data.test.is_control] == 0).all()
    oof = pd.read_csv(out / "oof_predictions.csv").iloc[:, 1:].to_numpy()
    assert metrics.score(data.train.scored, oof, data.train.is_control)["log_loss"] == pytest.approx(res.log_loss, rel=1e-6)
    corr = pd.read_csv(out / "correlation_oof.csv", index_col=0)
    assert list(corr.index) == ["a", "b", "c"] and corr.loc["a", "a"] == pytest.approx(1.0)
    assert not list(out.glob(".*"))  # no temporary files left

    # A preset is used as given (the searches are still recorded).
    res2 = blend.blend_runs(runs, tmp_path / "preset", methods=["slsqp"], preset={"a": 0.5, "b": 0.5}, data=data)
    s2 = json.loads((tmp_path / "preset" / "blend.json").read_text())
    assert res2.method == "preset:custom" and s2["weights"] == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert s2["log_loss"] == pytest.approx(s2["preset"]["log_loss"])
    assert list(s2["methods"]) == ["slsqp"]

    # With a storage URL the Optuna study is kept and resumed by a rerun on the same inputs.
    url = sqlite_url
    r1 = blend.blend_runs(runs, tmp_path / "s1", methods=["optuna"], n_trials=3, storage=url, data=data)
    r2 = blend.blend_runs(runs, tmp_path / "s2", methods=["optuna"], n_trials=2, storage=url, data=data)
    assert r1.searches["optuna"].info["n_trials_total"] == 3
    assert r2.searches["optuna"].info["n_trials_total"] == 5


def test_best_lb_preset_chosen_and_searches_reported(tiny_runs, tmp_path):
    """blend_best_lb's default: the preset's weights make the submission; the searches still
    run and are reported beside it (blend.json, CLI table)."""
    from typer.testing import CliRunner

    from moakit.cli import app

    runs, data, _ = tiny_runs
    names = list(blend.PRESETS["best_lb"])
    runs7 = [runs[k % 2] for k in range(len(names))]  # the good and the worse run, alternately
    res = blend.blend_runs(runs7, tmp_path / "lb", names=names, n_trials=10, preset="best_lb", data=data)
    summary = json.loads((tmp_path / "lb" / "blend.json").read_text())
    assert res.method == summary["method"] == "preset:best_lb"
    assert summary["weights"] == pytest.approx(blend.PRESETS["best_lb"], abs=1e-12)
    assert summary["preset"]["weights"] == summary["weights"]
    assert summary["log_loss"] == pytest.approx(summary["preset"]["log_loss"])
    assert set(summary["methods"]) == set(blend.METHODS)  # the default searches, reported beside the preset
    for m in summary["methods"].values():
        assert sum(m["weights"].values()) == pytest.approx(1.0) and m["log_loss"] <= summary["log_loss"] + 1e-9
    result = CliRunner().invoke(app, ["blend", *map(str, runs7), "--out", str(tmp_path / "cli"), "--preset", "best_lb",
                                      "--trials", "5", *[a for n in names for a in ("--name", n)]],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "preset best_lb" in result.output and "slsqp weight" in result.output and "optuna weight" in result.output
    assert "chosen: preset:best_lb" in result.output and "0.333" in result.output


def test_cli_blend(tiny_runs, tmp_path):
    from typer.testing import CliRunner

    from moakit.cli import app

    runs, _, _ = tiny_runs
    out = tmp_path / "cli_blend"
    result = CliRunner().invoke(app, ["blend", *map(str, runs), "--out", str(out), "--method", "slsqp",
                                      "--name", "A", "--name", "B", "--name", "C"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "slsqp weight" in result.output and "blended OOF log loss" in result.output
    assert json.loads((out / "blend.json").read_text())["names"] == ["A", "B", "C"]
    bad = CliRunner().invoke(app, ["blend", str(runs[0]), "--out", str(out), "--preset", "best_cv"])
    assert bad.exit_code == 2 and "three_stage_nn" in bad.output


def test_run_table_shows_the_searched_weights_beside_a_preset(capsys):
    """`moakit run` of blend_best_lb: the preset weights are used, the searched ones shown beside them."""
    from moakit.cli import print_workflow

    models = {n: {"profile": "cpu", "seeds": 1, "folds": 5, "oof_log_loss": 0.02, "weight": w}
              for n, w in blend.PRESETS["best_lb"].items()}
    searched = {"slsqp": {"weights": {"simple_nn": 0.6, "three_stage_nn": 0.4}, "oof_log_loss": 0.0141},
                "optuna": {"weights": {"simple_nn": 0.55, "three_stage_nn": 0.45}, "oof_log_loss": 0.0142}}
    print_workflow({"run_dir": "RUN", "submission": "RUN/submission.csv", "report": None, "models": models,
                     "blend": {"oof_log_loss": 0.0145, "method": "preset:best_lb", "searched": searched},
                     "prior_oof_log_loss": 0.0205})
    out = capsys.readouterr().out
    assert "slsqp weight" in out and "optuna weight" in out and "OOF 0.014100" in out
    simple = next(line for line in out.splitlines() if "simple_nn " in line or "simple_nn│" in line)
    assert "0.090" in simple and "0.600" in simple and "0.550" in simple


# ----------------------------------------------------------------------------- nested evaluation


def test_nested_evaluation_never_scores_weights_on_their_own_rows(problem, monkeypatch):
    oofs, y, ctl = problem
    from moakit import cv

    parts = cv.multilabel_folds(np.asarray(y), 4, 3)
    searched_on: list[np.ndarray] = []
    real_search = blend.search_weights

    def spy(fit_oofs, fit_y, *args, **kwargs):
        # which rows is this search given? identify them by their targets' row fingerprints
        searched_on.append(np.asarray(fit_y))
        return real_search(fit_oofs, fit_y, *args, **kwargs)

    from moakit.blend import search as blend_search  # where nested_evaluation looks it up

    monkeypatch.setattr(blend_search, "search_weights", spy)
    result = blend.nested_evaluation(oofs, y, ctl, methods=["slsqp"], n_folds=4, seed=3, per_target=False)
    assert len(searched_on) == 4
    for k, fit_y in enumerate(searched_on):
        assert np.array_equal(fit_y, np.asarray(y)[parts != k])  # part k's rows were not searched on
    m = result["methods"]
    assert set(m) == {"best_single", "slsqp"}
    # A is the best single model; a search on the other parts mixes in B and does better
    assert all(w == [1.0, 0.0, 0.0] for w in m["best_single"]["weights_per_part"])
    assert result["beats_best_single"] and result["gain_vs_best_single"] < 0
    # the nested score is above (worse than) the in-sample optimum
    in_sample = real_search(oofs, y, ctl, method="slsqp").log_loss
    assert m["slsqp"]["log_loss"] >= in_sample - 1e-9


def test_nested_evaluation_says_when_a_search_does_not_pay(problem):
    oofs, y, ctl = problem
    # two copies of the same noise model: nothing to gain by mixing, the search only overfits
    result = blend.nested_evaluation([oofs[2], oofs[2] * 0.999], y, ctl, methods=["slsqp"], n_folds=3,
                                     per_target=True)
    assert {"best_single", "slsqp", "per_target"} == set(result["methods"])
    assert result["gain_vs_best_single"] > -1e-3


def test_load_runs_resolves_a_data_source_recorded_relative_to_the_run(tiny_runs):
    runs, data, _ = tiny_runs
    for run in runs:
        man = json.loads((run / "manifest.json").read_text())
        man["data_source"] = "../../data"  # as the runner records a data folder inside the run folder
        (run / "manifest.json").write_text(json.dumps(man))
    inputs = load_runs(runs)
    np.testing.assert_array_equal(inputs.y, data.train.scored)


def test_per_target_weights_are_chosen_only_on_the_nested_score_and_reproduce_the_submission(tiny_runs, tmp_path):
    runs, data, _ = tiny_runs
    res = blend.blend_runs(runs, tmp_path / "both", methods=["slsqp", "per_target"], data=data)
    summary = json.loads((tmp_path / "both" / "blend.json").read_text())
    nested = summary["nested"]["methods"]
    assert summary["method"] == min(("slsqp", "per_target"), key=lambda m: nested[m]["log_loss"])
    # in-sample, the per-target weights (3x the parameters here) always look at least as good
    assert summary["methods"]["per_target"]["log_loss"] <= summary["methods"]["slsqp"]["log_loss"] + 1e-9
    assert res.method == summary["method"]

    blend.blend_runs(runs, tmp_path / "pt", methods=["per_target"], data=data)
    s2 = json.loads((tmp_path / "pt" / "blend.json").read_text())
    assert s2["method"] == "per_target"
    W = np.array([s2["weights_per_target"][n] for n in "abc"])
    assert W.shape == (3, len(data.train.scored_names))
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-9)
    assert s2["weights"] == pytest.approx(dict(zip("abc", W.mean(axis=1))))
    # prediction applies exactly these weights: the blended test predictions are the submission
    weights = blend.prediction_weights(s2)
    tests = [pd.read_csv(r / "test_predictions.csv").iloc[:, 1:].to_numpy() for r in runs]
    again = metrics.zero_controls(blend_predictions(tests, [weights[n] for n in "abc"]), data.test.is_control)
    sub = pd.read_csv(tmp_path / "pt" / "submission.csv").iloc[:, 1:].to_numpy()
    np.testing.assert_allclose(again, sub, atol=1e-7)
    # a model's column of per-target weights is applied target by target
    one = blend_predictions([np.ones((2, 3)), np.zeros((2, 3))], np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]]))
    np.testing.assert_allclose(one, [[1.0, 0.5, 0.0]] * 2)
    with pytest.raises(BlendError, match="targets"):
        blend_predictions([np.ones((2, 3))], np.ones((1, 4)))
