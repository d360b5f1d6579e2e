"""A run folder is data, never code: fitted feature steps are saved as arrays + JSON, TabNet
as a state dict, and nothing a run folder holds is unpickled. A tampered run folder (a
crafted pickle where the old format lived, or in place of any file the loaders read) gives a
clear error and executes nothing, for predict, blend and resume and every model family; old
pickled run folders are refused (unsupported format, retrain). Damaged run folders give clean errors.

Small simulated data and the `smoke` profile."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from moakit import artifacts, runner
from moakit.config import load_config
from moakit.features import STEP_KINDS, Pipeline, safe_state
from moakit.features.safe_state import StateError, Trusted
from moakit.inference import InferenceError, predict_arrays

from conftest import clean_exit, invoke

FAMILIES = ["simple_nn", "three_stage_nn", "two_stage_nn_tabnet", "resnet_2heads", "deepinsight_efficientnet"]


# --------------------------------------------------------------------------- crafted files


class Payload:
    """Unpickling this creates the marker file (what a hostile run folder would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft(path: Path, marker: Path) -> None:
    """Overwrite ``path`` with a crafted pickle in the form its loader expects."""
    evil = Payload(marker)
    if path.suffix == ".pt":  # a torch archive whose pickle runs code
        torch.save({"weight": evil}, path)
    elif path.suffix == ".npz":  # an object array (pickled inside the archive)
        with open(path, "wb") as fh:
            np.savez(fh, a=np.array([evil], dtype=object))
    elif path.suffix == ".npy":
        with open(path, "wb") as fh:
            np.save(fh, np.array([evil], dtype=object), allow_pickle=True)
    elif path.suffix == ".zip":  # pytorch-tabnet's zip: its network.pt is unpickled by its loader
        tmp = path.with_suffix(".pt.tmp")
        torch.save({"weight": evil}, tmp)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("model_params.json", json.dumps({"init_params": {}, "class_attrs": {}}))
            z.write(tmp, "network.pt")
        tmp.unlink()
    else:  # .json, .joblib and anything else: a plain pickle
        path.write_bytes(pickle.dumps(evil))


def test_crafted_payloads_do_run_code_when_unpickled(tmp_path):
    """The crafted files are real attacks: an unsafe loader would write the marker."""
    marker = tmp_path / "marker"
    craft(tmp_path / "steps.joblib", marker)
    import joblib

    joblib.load(tmp_path / "steps.joblib")
    assert marker.exists()
    marker.unlink()
    craft(tmp_path / "weights.pt", marker)
    torch.load(tmp_path / "weights.pt", weights_only=False)
    assert marker.exists()


# --------------------------------------------------------------------------- the save format

N = 300


def _blocks(n: int, seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"g": (rng.normal(size=(n, 24)) + shift).astype(np.float32),
            "c": rng.standard_t(4, size=(n, 8)).astype(np.float32),
            "cp": np.eye(5, dtype=np.float32)[rng.integers(0, 5, n)]}


# One config per step kind; a new kind must be added here (its save/reload is then tested).
KIND_STEPS = {
    "quantile": {"inputs": ["g", "c"]},
    "standard_scaler": {"inputs": ["g"], "output": "out"},
    "pca": {"inputs": ["g"], "output": "out", "n_components": 4},
    "factor_analysis": {"inputs": ["g"], "output": "out", "n_components": 3},
    "kmeans_onehot": {"inputs": ["c"], "output": "out", "n_clusters": 4, "n_init": 2},
    "variance_threshold": {"inputs": ["g", "c"], "output": "out", "threshold": 0.8},
    "umap": {"inputs": ["c"], "output": "out", "n_components": 2, "n_neighbors": 10, "n_epochs": 20},
    "row_stats": {"inputs": ["g", "c"], "output": "out"},
    "row_mean": {"inputs": ["g", "c"], "output": "out"},
    "cp_categories": {"inputs": ["cp"], "output": "out"},
    "row_quantile_norm": {"inputs": ["g"]},
}


def test_every_step_kind_has_a_save_reload_case():
    assert sorted(STEP_KINDS) == sorted(KIND_STEPS), "add the new step kind to KIND_STEPS"


@pytest.mark.parametrize("kind", sorted(KIND_STEPS))
def test_every_step_kind_reloads_bit_identical_without_pickle(kind, tmp_path):
    spec = {"kind": kind, "name": "s", **KIND_STEPS[kind]}
    if kind == "cp_categories":  # reads the 5-column one-hot cp block (3 times + 2 doses)
        spec["inputs"] = ["cp"]
    output = [spec.get("output") or spec["inputs"][0]]
    pipe = Pipeline.from_config({"fit_on": "train+test", "steps": [spec], "output": output}, seed=4)
    pipe.fit(_blocks(N, 0), _blocks(120, 1, 0.5))
    path = pipe.save(tmp_path / "features")
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "steps.json", "steps.npz"]
    with np.load(path / "steps.npz", allow_pickle=False) as z:  # plain numeric arrays only
        assert all(z[k].dtype != object for k in z.files)
    loaded = Pipeline.load(path)
    new = _blocks(90, 2, 0.3)
    np.testing.assert_array_equal(loaded.transform(new), pipe.transform(new))
    assert loaded.feature_names_ == pipe.feature_names_


def test_umap_search_index_reloads_bit_identical():
    """umap's NNDescent search index (used above 4096 fit rows, forced here on few rows):
    rebuilt from arrays + JSON, it transforms new rows exactly as the fitted object."""
    import umap

    from moakit.features.steps import UMAPStep

    rng = np.random.default_rng(0)
    X, new = rng.normal(size=(400, 10)).astype(np.float32), rng.normal(size=(50, 10)).astype(np.float32)
    fitted = umap.UMAP(n_components=2, n_neighbors=8, n_epochs=10, random_state=1, transform_seed=1, n_jobs=1,
                       force_approximation_algorithm=True).fit(X)
    assert not fitted._small_data and fitted._knn_search_index is not None
    trusted = UMAPStep("u", ["c"], "u", n_components=2).trusted_state()
    arrays: dict[str, np.ndarray] = {}
    tree = json.loads(json.dumps(safe_state.encode(fitted, trusted, arrays)))
    again = safe_state.decode(tree, trusted, arrays)
    np.testing.assert_array_equal(again.transform(new), fitted.transform(new))


def test_untrusted_content_is_refused_when_loading(tmp_path):
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(np.arange(12.0).reshape(6, 2))
    trusted = Trusted(types=(StandardScaler,))
    arrays: dict[str, np.ndarray] = {}
    tree = safe_state.encode(scaler, trusted, arrays)
    assert isinstance(safe_state.decode(tree, trusted, arrays), StandardScaler)
    # a class the loader did not list (whatever the file says)
    evil = {**tree, "type": "os:system"}
    with pytest.raises(StateError, match="not on the trusted list"):
        safe_state.decode(evil, trusted, arrays)
    with pytest.raises(StateError, match="not on the trusted list"):
        safe_state.decode(tree, Trusted(), arrays)
    # a function outside the trusted modules, an unknown entry kind, a missing array
    with pytest.raises(StateError, match="not among the trusted"):
        safe_state.decode({"$": "function", "module": "os", "name": "system"}, trusted, arrays)
    with pytest.raises(StateError, match="unknown entry kind"):
        safe_state.decode({"$": "__reduce__", "args": []}, trusted, arrays)
    with pytest.raises(StateError, match="names no saved array"):
        safe_state.decode({"$": "array", "key": "nope"}, trusted, arrays)
    # saving refuses what it could not reload safely
    with pytest.raises(StateError, match="cannot be saved safely"):
        safe_state.encode({"x": object()}, trusted, {})
    with pytest.raises(StateError, match="Python objects"):
        safe_state.encode(np.array([object()]), trusted, {})
    with pytest.raises(StateError, match="cannot be saved"):
        safe_state.encode(lambda: 0, trusted, {})


def _legacy(path: Path) -> None:
    """Turn a saved pipeline into the old format (manifest format 1 + steps.joblib)."""
    import joblib

    pipe = Pipeline.load(path)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    joblib.dump([{"name": s.name, "kind": s.kind, "state": s.state_, "n_features_in": s.n_features_in_}
                 for s in pipe.steps], path / "steps.joblib")
    (path / "steps.json").unlink()
    (path / "steps.npz").unlink()


def test_old_pickled_pipeline_refused(tmp_path):
    spec = {"fit_on": "train", "steps": [{"kind": "quantile", "inputs": ["g"]}], "output": ["g"]}
    pipe = Pipeline.from_config(spec).fit(_blocks(N, 0))
    path = pipe.save(tmp_path / "features")
    _legacy(path)
    with pytest.raises(artifacts.PickleFormatError, match="unsupported format") as err:
        Pipeline.load(path)
    assert "steps.joblib" in str(err.value) and "retrain" in str(err.value)
    marker = tmp_path / "marker"
    craft(path / "steps.joblib", marker)
    with pytest.raises(artifacts.PickleFormatError):
        Pipeline.load(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- runs of every family


@pytest.fixture(scope="module")
def sp_data(tmp_path_factory) -> Path:
    from moakit.data.simulate import simulate

    return Path(simulate(tmp_path_factory.mktemp("sp") / "data", n_rows=260, seed=11))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sp_data) -> dict[str, Path]:
    """A finished smoke run of every model family (1 seed, 2 folds)."""
    from moakit.data.io import load

    data = load(sp_data)
    base = tmp_path_factory.mktemp("family_runs")
    out = {}
    for name in FAMILIES:
        out[name] = base / name
        runner.train(load_config(name, "smoke", seeds=1, folds=2), data, out[name], show_progress=False)
    return out


def _loaded_files(run: Path) -> list[Path]:
    """Every file the loaders read for fold 0 of each stage (and the features of each stage)."""
    files = []
    for stage_seed in sorted(run.glob("stages/*/seed_*")):
        files += sorted((stage_seed / "features").rglob("*")) + sorted((stage_seed / "fold_0" / "estimator").rglob("*"))
    return [p for p in files if p.is_file() and p.suffix != ".png"]  # a picture of the map, for people


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


@pytest.mark.parametrize("family", FAMILIES)
def test_tampered_run_folder_executes_nothing(family, runs, sp_data, tmp_path):
    from moakit.data.io import read_features

    test = read_features(sp_data / "test_features.csv")
    run = _copy(runs[family], tmp_path / "run")
    marker = tmp_path / "marker"
    files = _loaded_files(run)
    assert files, "no artifacts found"
    # the saved format holds no pickle (old names absent)
    assert not list(run.rglob("*.joblib")) and not list(run.rglob("tabnet.zip"))
    for path in files:
        original = path.read_bytes()
        craft(path, marker)
        with pytest.raises(InferenceError) as err:
            predict_arrays(run, test)
        assert path.name in str(err.value) or path.parent.name in str(err.value), str(err.value)
        assert not marker.exists(), f"{path} ran code"
        path.write_bytes(original)
    # the old format (a pickle where it lived) is refused, naming the file and the way out
    legacy = [d for d in run.glob("stages/*/seed_*/features/**/manifest.json")]
    for manifest in legacy:
        _legacy(manifest.parent)
        craft(manifest.parent / "steps.joblib", marker)
    if family == "two_stage_nn_tabnet":
        est = run / "stages/scored/seed_0/fold_0/estimator"
        spec = json.loads((est / "spec.json").read_text())
        (est / "spec.json").write_text(json.dumps({"kind": "tabnet_regressor", "info": spec["info"]}))
        (est / "weights.pt").unlink()
        craft(est / "tabnet.zip", marker)
        if not legacy:
            pytest.fail("the 2-stage model has feature pipelines")
    if legacy or family == "two_stage_nn_tabnet":
        with pytest.raises(InferenceError, match="unsupported format"):
            predict_arrays(run, test)
        assert not marker.exists()
        text = clean_exit(invoke("predict", "--run", run, "--features", sp_data / "test_features.csv",
                                 "--out", tmp_path / "sub.csv"))
        assert "unsupported format" in text and not marker.exists() and not (tmp_path / "sub.csv").exists()


def test_tampered_resume_and_blend_execute_nothing(runs, sp_data, tmp_path):
    marker = tmp_path / "marker"
    # resume: a stage to redo whose saved features are a crafted old-format pickle
    for family in ("simple_nn", "deepinsight_efficientnet"):  # the latter reloads features in each fold job
        run = _copy(runs[family], tmp_path / family)
        stage = next(run.glob("stages/*/seed_0"))
        for name in ("oof.npy", "test.npy"):
            (stage / name).unlink()
        shutil.rmtree(stage / "fold_0")
        features = stage / "features"
        if (features / "manifest.json").exists():
            _legacy(features)
            craft(features / "steps.joblib", marker)
        else:  # DeepInsight's own features: arrays and JSON only
            for path in features.iterdir():
                craft(path, marker)
        text = clean_exit(invoke("train", family, "--data", sp_data, "--out", run, "--profile", "smoke",
                                 "--seeds", 1, "--folds", 2, "--quiet"))
        assert str(features) in text and not marker.exists(), text
    # blend: reads predictions and manifests only; predicting from the blend refuses the pickle
    a = _copy(runs["simple_nn"], tmp_path / "a")
    b = _copy(runs["resnet_2heads"], tmp_path / "b")
    for features in [*a.glob("stages/*/seed_*/features"), *b.glob("stages/*/seed_*/features/**/manifest.json")]:
        folder = features if features.is_dir() else features.parent
        _legacy(folder)
        craft(folder / "steps.joblib", marker)
    res = invoke("blend", a, b, "--out", tmp_path / "blend", "--method", "slsqp", "--data", sp_data)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert not marker.exists()
    text = clean_exit(invoke("predict", "--run", tmp_path / "blend", "--features", sp_data / "test_features.csv",
                             "--out", tmp_path / "sub.csv"))
    assert "unsupported format" in text and not marker.exists()


def test_old_run_folder_is_refused_naming_the_file(runs, sp_data, tmp_path):
    """A genuine old-format run (pickled feature steps): one clear error, nothing written."""
    run = _copy(runs["simple_nn"], tmp_path / "old")
    for manifest in run.glob("stages/*/seed_*/features/**/manifest.json"):
        _legacy(manifest.parent)
    sub = tmp_path / "sub.csv"
    text = clean_exit(invoke("predict", "--run", run, "--features", sp_data / "test_features.csv", "--out", sub))
    assert "unsupported format" in text and "steps.joblib" in text and "retrain" in text and not sub.exists()


def test_tabnet_state_dict_and_old_zip(tmp_path):
    """TabNet: spec.json + weights.pt (weights_only) reload bit-identical; pytorch-tabnet's
    zip of older moakit versions is refused (unsupported format), a crafted one runs nothing."""
    import contextlib
    import io

    from moakit.models.two_stage_tabnet import TabNetConfig, TabNetEstimator, fit_tabnet

    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 12)).astype(np.float32)
    X[:, 0], X[:, 1] = rng.integers(0, 3, 160), rng.integers(0, 2, 160)
    Y = (X[:, 2:4] > 0.8).astype(np.float32)
    cfg = TabNetConfig(n_d=4, n_a=4, max_epochs=2, patience=2, batch_size=64, virtual_batch_size=32)
    est = fit_tabnet(cfg, X[:120], Y[:120], X[120:], Y[120:], seed=1)
    est.save(tmp_path / "new")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["spec.json", "weights.pt"]
    np.testing.assert_array_equal(TabNetEstimator.load(tmp_path / "new").predict_proba(X), est.predict_proba(X))
    old = tmp_path / "old"
    old.mkdir()
    with contextlib.redirect_stdout(io.StringIO()):
        est.regressor.save_model(str(old / "tabnet"))
    (old / "spec.json").write_text(json.dumps({"kind": "tabnet_regressor", "info": est.info}))
    with pytest.raises(artifacts.PickleFormatError, match="tabnet.zip.*unsupported format"):
        TabNetEstimator.load(old)
    marker = tmp_path / "marker"
    craft(old / "tabnet.zip", marker)
    with pytest.raises(artifacts.PickleFormatError):
        TabNetEstimator.load(old)
    craft(tmp_path / "new" / "weights.pt", marker)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        TabNetEstimator.load(tmp_path / "new")
    assert not marker.exists()


# --------------------------------------------------------------------------- damaged run folders


def _predict(run: Path, sp_data: Path, out: Path):
    return invoke("predict", "--run", run, "--features", sp_data / "test_features.csv", "--out", out)


def test_predict_reproduces_every_familys_test_predictions(runs, sp_data, tmp_path):
    # (the 2-stage NN + TabNet: runner.predict_run in test_tabular_models; its TabNet builds
    # slowly, and `moakit predict` adds nothing model-specific)
    for family, run in runs.items():
        if family == "two_stage_nn_tabnet":
            continue
        out = tmp_path / f"{family}.csv"
        res = _predict(run, sp_data, out)
        assert res.exit_code == 0, res.stdout + res.stderr
        expected = pd.read_csv(run / "test_predictions.csv")
        got = pd.read_csv(out)
        assert list(got.columns) == list(expected.columns)
        np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), expected.iloc[:, 1:].to_numpy(), atol=1e-6,
                                   err_msg=family)


@pytest.mark.parametrize("damage", ["truncated_weights", "missing_spec", "missing_features", "missing_fold",
                                    "edited_config", "invalid_config_json", "invalid_columns_json",
                                    "invalid_steps_json"])
def test_damaged_run_folder_is_a_clean_error_naming_the_file(damage, runs, sp_data, tmp_path):
    run = _copy(runs["simple_nn"], tmp_path / "run")
    seed_dir = run / "stages" / "scored" / "seed_0"
    estimator = seed_dir / "fold_1" / "estimator"
    if damage == "truncated_weights":
        weights = estimator / "weights.pt"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        named = weights
    elif damage == "missing_spec":
        (estimator / "spec.json").unlink()
        named = estimator / "spec.json"
    elif damage == "missing_features":
        shutil.rmtree(seed_dir / "features")
        named = seed_dir / "features"
    elif damage == "missing_fold":
        shutil.rmtree(seed_dir / "fold_1")
        named = seed_dir / "fold_1" / "estimator"
    elif damage == "edited_config":  # a fold that was never trained: the edit itself is named
        config = json.loads((run / "config.json").read_text())
        config["cv"]["n_folds"] = 3
        (run / "config.json").write_text(json.dumps(config))
        named = run / "config.json"
    elif damage == "invalid_config_json":
        (run / "config.json").write_text("{not json")
        named = run / "config.json"
    elif damage == "invalid_columns_json":
        (run / "columns.json").write_text("[1, 2")
        named = run / "columns.json"
    else:
        (seed_dir / "features" / "steps.json").write_text('{"$": "object", "type": "os:system"')
        named = seed_dir / "features" / "steps.json"
    out = tmp_path / "sub.csv"
    text = clean_exit(_predict(run, sp_data, out))
    assert str(named) in text, text
    assert not out.exists()


@pytest.mark.parametrize("edit, message", [
    ({"model": "three_stage_nn"}, "config.json"),  # another model: its params do not fit
    ({"seeds": [0, 5]}, "config.json: edited after training"),
    ({"cv": {"scheme": "old", "n_folds": 1}}, "config.json"),  # invalid value
])
def test_edited_config_is_a_clean_error(edit, message, runs, sp_data, tmp_path):
    run = _copy(runs["simple_nn"], tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, **edit}))
    text = clean_exit(_predict(run, sp_data, tmp_path / "sub.csv"))
    assert message in text, text


# --------------------------------------------------------------------------- predict --out, moved runs


def test_predict_out_formats_and_refusals(runs, sp_data, tmp_path):
    run = runs["simple_nn"]
    features = tmp_path / "test_features.csv"
    shutil.copy(sp_data / "test_features.csv", features)
    before = features.read_bytes()
    text = clean_exit(invoke("predict", "--run", run, "--features", features, "--out", features), codes=(2,))
    assert "overwrite its input" in text and features.read_bytes() == before
    text = clean_exit(invoke("predict", "--run", run, "--features", features, "--out", tmp_path), codes=(2,))
    assert "is a folder" in text
    expected = pd.read_csv(run / "test_predictions.csv")
    for name, read in (("sub.parquet", pd.read_parquet), ("sub.csv.gz", pd.read_csv), ("sub.csv", pd.read_csv)):
        res = invoke("predict", "--run", run, "--features", features, "--out", tmp_path / name)
        assert res.exit_code == 0, res.stdout + res.stderr
        got = read(tmp_path / name)
        np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), expected.iloc[:, 1:].to_numpy(), atol=1e-6)
    assert (tmp_path / "sub.parquet").read_bytes()[:4] == b"PAR1"


def test_moved_run_resumes_predicts_and_reports_with_data(runs, sp_data, tmp_path):
    """Copy a finished run elsewhere (its data moved too): resume with nothing redone, predict
    from it, report and blend it with --data."""
    data = _copy(sp_data, tmp_path / "moved_data")
    run = _copy(runs["simple_nn"], tmp_path / "elsewhere" / "run")
    done = {str(p): p.read_bytes() for p in run.rglob("done.json")}
    res = invoke("train", "simple_nn", "--data", data, "--out", run, "--profile", "smoke", "--seeds", 1,
                 "--folds", 2, "--quiet")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert {str(p): p.read_bytes() for p in run.rglob("done.json")} == done  # nothing retrained
    out = tmp_path / "sub.csv"
    assert _predict(run, data, out).exit_code == 0
    np.testing.assert_allclose(pd.read_csv(out).iloc[:, 1:].to_numpy(),
                               pd.read_csv(run / "test_predictions.csv").iloc[:, 1:].to_numpy(), atol=1e-6)
    # the original data folder is gone: report and blend find it through --data
    other = _copy(runs["simple_nn"], tmp_path / "gone" / "run")
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "data_source": str(tmp_path / "no_such_data")}))
    res = invoke("report", other, "--data", data)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert (other / "report" / "index.html").exists()
    res = invoke("blend", other, run, "--out", tmp_path / "blend", "--method", "slsqp", "--data", data,
                 "--name", "a", "--name", "b")
    assert res.exit_code == 0, res.stdout + res.stderr
