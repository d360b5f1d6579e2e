"""The Python API: discovery, DataFrame/array inputs, sklearn conventions, save/load with the
CLI's artifacts, blends, no global side effects, and the README's example."""

from __future__ import annotations

import gc
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import moakit
from moakit.data.io import DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(sim_folder):
    return moakit.load_dataset(sim_folder)


@pytest.fixture(scope="module")
def fitted(data):
    """simple_nn (smoke) fitted on the simulated DataFrames, with X_test."""
    return moakit.MoAModel("simple_nn", profile="smoke").fit(data.X, data.Y, X_test=data.X_test)


def test_discovery():
    models = moakit.list_models()
    assert {"simple_nn", "three_stage_nn", "two_stage_nn_tabnet", "resnet_2heads"} <= set(models)
    configs = moakit.list_configs()
    assert list(configs.columns) == ["name", "kind", "models", "profiles", "description"]
    row = configs.set_index("name").loc["simple_nn_drug_cv"]
    assert row.kind == "model" and row.models == ["simple_nn"] and {"full", "cpu", "smoke"} <= set(row.profiles)
    blends = moakit.list_configs("blend")
    assert {"blend_best_lb", "blend_best_cv"} <= set(blends.name) and (blends.kind == "blend").all()
    assert set(moakit.list_configs("model").kind) == {"model"}
    with pytest.raises(ValueError, match="kind"):
        moakit.list_configs("nope")


def test_load_dataset_and_simulate(data, sim_folder):
    raw = pd.read_csv(sim_folder / "train_features.csv")
    assert list(data.X.columns) == list(raw.columns)
    assert (data.X.sig_id.to_numpy() == raw.sig_id.to_numpy()).all()
    np.testing.assert_allclose(data.X["g-0"].to_numpy(), raw["g-0"].to_numpy(), atol=1e-4)
    assert (data.X.cp_type == raw.cp_type).all() and (data.X.cp_time == raw.cp_time).all()
    assert data.Y.shape == (len(data.X), 207) and data.Y.columns[0] == "sig_id"
    assert data.Y_nonscored.shape[1] == 403 and len(data.drug_id) == len(data.X)
    assert data.Y_test is not None and (data.Y_test.sig_id.to_numpy() == data.X_test.sig_id.to_numpy()).all()
    small = moakit.simulate(n_rows=200, seed=1)
    assert small.source == "" and len(small.X) + len(small.X_test) == 200
    assert set(small.fit_args) == {"X", "Y", "Y_nonscored", "drug_id", "X_test"}


def test_fit_predict_dataframes(fitted, data):
    m = fitted
    assert m.target_names_ == list(data.Y.columns[1:])
    assert m.n_features_in_ == 872 and m.feature_names_in_[0] == "g-0"
    assert m.oof_.shape == (len(data.X), 206) and m.oof_.index.name == "sig_id"
    assert (m.oof_.index == data.X.sig_id).all()
    assert 0 < m.metrics_["log_loss"] < m.metrics_["prior"]["log_loss"] * 1.5
    proba = m.predict_proba(data.X_test)
    assert list(proba.columns) == m.target_names_ and (proba.index == data.X_test.sig_id).all()
    # the same numbers as the run's own test predictions
    np.testing.assert_allclose(proba.to_numpy(), m.test_predictions_.to_numpy(), atol=1e-6)
    controls = (data.X_test.cp_type == "ctl_vehicle").to_numpy()
    assert controls.any() and (proba.to_numpy()[controls] == 0).all()
    labels = m.predict(data.X_test, threshold=0.01)
    assert set(np.unique(labels.to_numpy())) <= {0, 1}
    # the run folder is the CLI's
    for name in ("config.json", "manifest.json", "metrics.json", "oof_predictions.csv", "test_predictions.csv"):
        assert (m.run_dir_ / name).exists()


def test_sklearn_conventions(fitted):
    from sklearn.base import clone
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(fitted)
    params = fitted.get_params()
    assert params["config"] == "simple_nn" and params["profile"] == "smoke"
    c = clone(fitted)
    assert c.get_params() == params and not hasattr(c, "run_dir_")
    c.set_params(seeds=1, params={"train": {"epochs": 1}})
    assert c.resolved_config().params["train"]["epochs"] == 1
    assert c.resolved_config().params["network"] == fitted.config_.params["network"]  # merged, not replaced
    learned = [k for k in vars(fitted) if k.endswith("_") and not k.startswith("_")]
    assert {"run_dir_", "oof_", "metrics_", "target_names_", "config_"} <= set(learned)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        c.predict_proba(pd.DataFrame())


def test_save_load_and_cli_predict(fitted, data, tmp_path):
    from typer.testing import CliRunner

    from moakit.cli import app

    saved = fitted.save(tmp_path / "saved")
    loaded = moakit.MoAModel.load(saved)
    assert loaded.get_params() == fitted.get_params()
    assert loaded.metrics_ == fitted.metrics_
    a, b = loaded.predict_proba(data.X_test), fitted.predict_proba(data.X_test)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), atol=1e-7)
    np.testing.assert_allclose(loaded.oof_.to_numpy(), fitted.oof_.to_numpy(), atol=1e-6)
    with pytest.raises(FileExistsError):
        fitted.save(saved)
    # the saved folder is a `moakit train` run folder: `moakit predict` reads it
    features = tmp_path / "test_features.csv"
    data.X_test.to_csv(features, index=False)
    res = CliRunner().invoke(app, ["predict", "--run", str(saved), "--features", str(features),
                                   "--out", str(tmp_path / "sub.csv")])
    assert res.exit_code == 0, res.output
    sub = pd.read_csv(tmp_path / "sub.csv").set_index("sig_id")
    np.testing.assert_allclose(sub.to_numpy(), b.to_numpy(), atol=1e-6)


def test_load_cli_run(fitted, tmp_path):
    """A `moakit train` folder (the same files, without the estimator's own estimator.json)."""
    import shutil

    out = tmp_path / "cli_run"
    shutil.copytree(fitted.run_dir_, out)
    (out / "estimator.json").unlink()
    m = moakit.MoAModel.load(out)
    assert m.get_params()["config"] == "simple_nn" and m.get_params()["profile"] == "smoke"
    assert m.get_params()["seeds"] == fitted.config_.seeds
    assert m.test_predictions_ is not None and m.oof_.shape[1] == 206
    with pytest.raises(ValueError, match="workflow.json"):
        moakit.MoABlend.load(out)
    with pytest.raises(FileNotFoundError):
        moakit.MoAModel.load(tmp_path / "nothing")


def test_arrays_without_test_data(data):
    X = data.X.drop(columns="sig_id").to_numpy()[:600]  # object array: the columns without sig_id
    Y = data.Y.drop(columns="sig_id").to_numpy()[:600]
    m = moakit.MoAModel("simple_nn", profile="smoke", folds=2).fit(X, Y)
    assert m.test_predictions_ is None and m.config_.cv.n_folds == 2
    assert isinstance(m.oof_.index, pd.RangeIndex) and m.oof_.columns[0] == data.Y.columns[1]
    proba = m.predict_proba(data.X_test.drop(columns="sig_id").to_numpy())
    assert proba.shape == (len(data.X_test), 206) and np.isfinite(proba.to_numpy()).all()
    # the temporary run folder goes with the estimator
    run_dir = m.run_dir_
    assert run_dir.is_dir()
    del m
    gc.collect()
    assert not run_dir.exists()


def test_pickle_keeps_a_temporary_run(fitted, data):
    copy = pickle.loads(pickle.dumps(fitted))
    assert copy.run_dir_ != fitted.run_dir_ and copy.run_dir_.is_dir()
    np.testing.assert_allclose(copy.predict_proba(data.X_test).to_numpy(),
                               fitted.predict_proba(data.X_test).to_numpy(), atol=1e-7)


def test_input_errors(data):
    m = moakit.MoAModel("simple_nn", profile="smoke")
    Y = data.Y.copy()
    Y.iloc[3, 5] = 2
    with pytest.raises(DataError, match=rf"Y: column '{re.escape(Y.columns[5])}', row 4: target 2.0 is not 0 or 1"):
        m.fit(data.X, Y)
    with pytest.raises(DataError, match="X: an array must have 875 columns"):
        m.fit(np.zeros((10, 7)), np.zeros((10, 206)))
    X = data.X.copy()
    X.loc[2, "cp_time"] = 96
    with pytest.raises(DataError, match=r"X: column 'cp_time', row 3: unknown value 96"):
        m.fit(X, data.Y)
    with pytest.raises(DataError, match="Y: .*sig_id"):
        m.fit(data.X, data.Y.iloc[1:])
    with pytest.raises(DataError, match="Y_nonscored: 3 rows, X has"):
        m.fit(data.X, data.Y, Y_nonscored=np.zeros((3, 402)))
    drug_cv = moakit.MoAModel("simple_nn_drug_cv", profile="smoke")
    with pytest.raises(ValueError, match="drug"):  # the drug-aware CV needs drug ids
        drug_cv.fit(data.X, data.Y)


def _global_state():
    import optuna
    import torch

    return (np.random.get_state()[1].copy(), torch.random.get_rng_state().clone(), torch.get_num_threads(),
            list(warnings.filters), optuna.logging.get_verbosity())


def test_blend_and_no_global_side_effects(data, capsys):
    import optuna
    import torch

    np.random.seed(123)
    torch.manual_seed(123)
    before = _global_state()
    blend = moakit.MoABlend([("nn_a", "simple_nn"), {"name": "nn_b", "config": "simple_nn", "folds": 2}],
                            profile="smoke", optuna_trials=5, verbose=True)
    blend.fit(data.X, data.Y, drug_id=data.drug_id, X_test=data.X_test)
    after = _global_state()
    assert (before[0] == after[0]).all() and torch.equal(before[1], after[1])
    assert before[2:] == after[2:]
    assert optuna.logging.get_verbosity() == before[4]
    # progress bars are named by the blend entries, not by the (shared) model name
    err = capsys.readouterr().err
    assert "nn_a (smoke)" in err and "nn_b (smoke)" in err

    assert set(blend.weights_) == {"nn_a", "nn_b"} and abs(sum(blend.weights_.values()) - 1) < 1e-6
    assert list(blend.scores_.index) == ["nn_a", "nn_b", "blend"]
    assert blend.scores_.loc["blend", "oof_log_loss"] <= blend.scores_.oof_log_loss.min() + 1e-9
    assert set(blend.models_) == {"nn_a", "nn_b"} and blend.models_["nn_b"].config_.cv.n_folds == 2
    assert blend.oof_.shape == (len(data.X), 206) and (blend.oof_.index == data.X.sig_id).all()
    proba = blend.predict_proba(data.X_test)
    np.testing.assert_allclose(proba.to_numpy(), blend.test_predictions_.to_numpy(), atol=1e-6)
    # the folder is a `moakit run` folder
    assert (blend.run_dir_ / "workflow.json").exists() and (blend.run_dir_ / "report" / "index.html").exists()
    loaded = moakit.MoABlend.load(blend.run_dir_)
    assert loaded.weights_ == blend.weights_
    from sklearn.base import clone

    assert clone(blend).get_params() == blend.get_params()
    assert loaded.get_params()["models"] == [["nn_a", "simple_nn"], {"name": "nn_b", "config": "simple_nn", "folds": 2}]
    assert loaded.resolved_config().models == blend.config_.models
    np.testing.assert_allclose(loaded.predict_proba(data.X_test).to_numpy(), proba.to_numpy(), atol=1e-7)


def test_no_global_switches_in_the_source():
    """What the library must not do outside a context that restores it."""
    src = REPO / "src" / "moakit"
    for path in src.rglob("*.py"):
        text = path.read_text()
        assert "matplotlib.use(" not in text, path
        assert "import matplotlib.pyplot" not in text, path  # pyplot keeps global figures
        for call in ("np.random.seed(", "optuna.logging.set_verbosity(", "warnings.simplefilter(",
                     "warnings.filterwarnings("):
            for match in re.finditer(re.escape(call), text):
                before = text[max(0, match.start() - 600):match.start()]
                assert ("catch_warnings" in before or "get_verbosity" in before or "get_state" in before), \
                    f"{path}: {call} outside a context that restores it"


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = ("import sys, warnings; f = list(warnings.filters); import moakit; "
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'; "
            "assert warnings.filters == f; print(moakit.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == moakit.__version__


def test_readme_example():
    """The README's notebook-style example runs as written."""
    text = (REPO / "README.md").read_text()
    marker = text.index("<!-- api-example")
    block = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert block is not None
    namespace: dict = {}
    exec(compile(block.group(1), "README.md (api example)", "exec"), namespace)
    assert namespace["model"].metrics_["log_loss"] > 0
    assert set(namespace["blend"].weights_) == {"nn_old_cv", "nn_drug_cv"}
