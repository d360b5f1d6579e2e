"""End-to-end workflow (train models -> blend -> report), resume after a real kill -9,
inference from saved artifacts, and the validation of what inference writes.

Tiny simulated data and the `smoke` profiles of the two Simple NN configs; the blend
searches only a few Optuna trials."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from moakit import inference, runner
from moakit.config import ConfigError
from moakit.manifest import read_manifest
from moakit.workflow import WorkflowError, load_blend_config, resolve_models, run_workflow

MODELS = ("simple_nn", "simple_nn_drug_cv")


def write_blend_config(folder: Path, **extra) -> Path:
    config = {
        "description": "two Simple NNs (tests)",
        "models": [{"name": "simple_nn", "config": "simple_nn"},
                   {"name": "simple_nn_drug_cv", "config": "simple_nn_drug_cv"}],
        "blend": {"methods": ["slsqp", "optuna"], "optuna_trials": 8},
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "blend_two.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def wf_data(tmp_path_factory) -> Path:
    from moakit.data.simulate import simulate

    return Path(simulate(tmp_path_factory.mktemp("wf") / "data", n_rows=600, seed=11))


@pytest.fixture(scope="module")
def blend_config(tmp_path_factory) -> Path:
    return write_blend_config(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, wf_data, blend_config):
    """An uninterrupted workflow run (the reference the other tests compare against)."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    result = run_workflow(blend_config, wf_data, out, profile="smoke", show_progress=False)
    return result


def _frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def _assert_same_predictions(a: Path, b: Path, atol: float = 1e-6) -> None:
    fa, fb = _frame(a), _frame(b)
    assert list(fa.columns) == list(fb.columns)
    assert (fa["sig_id"].to_numpy() == fb["sig_id"].to_numpy()).all()
    np.testing.assert_allclose(fa.iloc[:, 1:].to_numpy(), fb.iloc[:, 1:].to_numpy(), atol=atol, rtol=0)


# --------------------------------------------------------------------------- workflow


def test_workflow_end_to_end(reference_run, wf_data):
    out = reference_run.run_dir
    manifest = runner.read_json(out / "manifest.json")
    assert manifest["status"] == "complete"
    assert manifest["kind"] == "workflow"
    assert manifest["profile"] == "smoke"
    assert manifest["versions"]["torch"]
    from moakit.data.io import load

    assert manifest["data_fingerprint"] == runner.data_fingerprint(load(wf_data))
    assert set(manifest["models"]) == set(MODELS)
    for name in MODELS:
        info = manifest["models"][name]
        assert info["status"] == "complete" and info["seconds"] > 0 and info["log_loss"] > 0
        model_dir = out / "models" / name
        own = read_manifest(model_dir)  # one schema: a model's run folder and the workflow's
        assert own.kind == "model" and own.status == "complete" and own.model == info["model"]
        assert own.versions == manifest["versions"] and own.data_fingerprint == manifest["data_fingerprint"]
        assert own.timings["total_seconds"] > 0
        assert len(list(model_dir.glob("stages/*/seed_*/fold_*/done.json"))) == 3
    assert manifest["models"]["simple_nn_drug_cv"]["cv"] == "drug"
    assert manifest["blend"]["status"] == "complete"
    assert read_manifest(out).timings["total_seconds"] > 0
    assert (out / "blend" / "blend.json").exists()
    assert (out / "submission.csv").read_bytes() == (out / "blend" / "submission.csv").read_bytes()
    assert reference_run.report is not None and Path(reference_run.report).exists()
    assert (out / "report" / "index.html").exists()
    sub = _frame(out / "submission.csv")
    test_ids = pd.read_csv(wf_data / "test_features.csv", usecols=["sig_id"])["sig_id"]
    assert (sub["sig_id"].to_numpy() == test_ids.to_numpy()).all()
    values = sub.iloc[:, 1:].to_numpy()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    assert not list(out.rglob(".*"))  # no temporary files left behind


def test_rerun_of_a_finished_run_trains_nothing(reference_run, wf_data, blend_config, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference_run.run_dir, out)
    before = {p: p.stat().st_mtime_ns for p in out.glob("models/*/stages/*/seed_*/fold_*/estimator/weights.pt")}
    start = time.perf_counter()
    result = run_workflow(blend_config, wf_data, out, profile="smoke", show_progress=False)
    assert time.perf_counter() - start < 30
    after = {p: p.stat().st_mtime_ns for p in out.glob("models/*/stages/*/seed_*/fold_*/estimator/weights.pt")}
    assert before == after  # no fold retrained
    _assert_same_predictions(result.submission, reference_run.submission, atol=0)

    # a model entry whose config changed is refused, naming the entry (nothing retrained)
    changed = write_blend_config(tmp_path / "changed", profiles={"smoke": {"models": {"simple_nn": {"folds": 2}}}})
    with pytest.raises(WorkflowError, match=r"model entry 'simple_nn'.*different config"):
        run_workflow(changed, wf_data, out, profile="smoke", show_progress=False)


def test_resume_after_kill_gives_the_same_result(reference_run, wf_data, blend_config, tmp_path):
    """Start `moakit run` in a subprocess, kill -9 it once a fold is done, plant a
    half-written fold, resume, and compare with the uninterrupted reference run."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "moakit.cli", "run", str(blend_config), "--data", str(wf_data),
           "--out", str(out), "--profile", "smoke", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob("models/*/stages/*/seed_*/fold_*/done.json")):
            assert proc.poll() is None, f"moakit run ended early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no fold finished within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert runner.read_json(out / "manifest.json")["status"] == "running"
    done = list(out.glob("models/*/stages/*/seed_*/fold_*/done.json"))
    assert 1 <= len(done) < 6
    assert not (out / "submission.csv").exists()

    # A fold folder without done.json holding junk (as a kill mid-save could leave) must be
    # retrained, not trusted.
    planted = out / "models" / "simple_nn_drug_cv" / "stages" / "scored" / "seed_0" / "fold_1"
    assert not (planted / "done.json").exists()
    (planted / "estimator").mkdir(parents=True, exist_ok=True)
    (planted / "estimator" / "weights.pt").write_bytes(b"half-written")
    np.save(planted / "valid_pred.npy", np.full((3, 3), 0.5, np.float32))

    result = run_workflow(blend_config, wf_data, out, profile="smoke", show_progress=False)
    assert runner.read_json(out / "manifest.json")["status"] == "complete"
    assert len(list(out.glob("models/*/stages/*/seed_*/fold_*/done.json"))) == 6
    for name in MODELS:
        for kind in ("oof_predictions.csv", "test_predictions.csv"):
            _assert_same_predictions(out / "models" / name / kind, reference_run.run_dir / "models" / name / kind)
    _assert_same_predictions(result.submission, reference_run.submission)
    got, want = (runner.read_json(d / "blend" / "blend.json") for d in (out, reference_run.run_dir))
    assert got["weights"] == pytest.approx(want["weights"], abs=1e-6)
    assert got["method"] == want["method"] and got["log_loss"] == pytest.approx(want["log_loss"], abs=1e-9)


# --------------------------------------------------------------------------- config errors


def test_missing_profile_names_the_entry_and_fallback_applies(blend_config, tmp_path):
    with pytest.raises(ConfigError, match=r"model entry 'simple_nn'.*no profile 'tiny'"):
        resolve_models(load_blend_config(blend_config, "tiny"))
    path = write_blend_config(tmp_path, model_profile_fallback={"tiny": "smoke"},
                              profiles={"tiny": {"blend": {"optuna_trials": 2},
                                                 "models": {"simple_nn": {"folds": 2}}}})
    config = load_blend_config(path, "tiny")
    assert config.blend.optuna_trials == 2
    resolved = resolve_models(config)
    assert resolved["simple_nn"].profile == "smoke" and resolved["simple_nn"].cv.n_folds == 2
    assert resolved["simple_nn_drug_cv"].cv.n_folds == 3 and resolved["simple_nn_drug_cv"].cv.scheme == "drug"


def test_shipped_blend_configs_list_the_papers_models():
    lb = load_blend_config("blend_best_lb")
    assert [e.name for e in lb.models] == ["three_stage_nn", "two_stage_nn_tabnet", "simple_nn", "simple_nn_drug_cv",
                                           "resnet_2heads", "deepinsight_efficientnet", "deepinsight_resnest_v2"]
    assert lb.blend.optuna_trials == 3000 and lb.blend.methods == ["slsqp", "optuna"]
    cv = load_blend_config("blend_best_cv")
    assert [e.name for e in cv.models] == ["three_stage_nn", "resnet_2heads_v2", "deepinsight_efficientnet",
                                           "deepinsight_resnest", "deepinsight_resnest_v2"]
    assert (cv.models[0].seeds, cv.models[0].folds) == (5, 10)
    cpu = load_blend_config("blend_best_cv", "cpu")
    assert (cpu.models[0].seeds, cpu.models[0].folds) == (None, None)
    # every model of both shipped blends has its own demo profile: no fallback needed
    from moakit.config import load_config

    for blend_name in ("blend_best_lb", "blend_best_cv"):
        blend = load_blend_config(blend_name, "demo")
        assert blend.model_profile_fallback == {}
        for entry in blend.models:
            assert load_config(entry.config, "demo").profile == "demo"


def test_duplicate_entry_names_are_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "a", "config": "simple_nn"},
                                               {"name": "a", "config": "simple_nn_drug_cv"}]}))
    with pytest.raises(ConfigError, match="'a' appears more than once"):
        load_blend_config(path)


def test_model_missing_its_data_fails_before_training(wf_data, blend_config, tmp_path):
    data = tmp_path / "no_drug"
    shutil.copytree(wf_data, data)
    (data / "train_drug.csv").unlink()
    out = tmp_path / "run"
    with pytest.raises(WorkflowError, match=r"model entry 'simple_nn_drug_cv'.*train_drug"):
        run_workflow(blend_config, data, out, profile="smoke", show_progress=False)
    assert not (out / "models").exists()  # nothing trained


def test_unknown_model_fails_clearly(wf_data, tmp_path):
    (tmp_path / "mystery.yaml").write_text(yaml.safe_dump({"model": "no_such_model", "params": {}}))
    path = tmp_path / "blend.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "simple_nn", "config": "simple_nn"},
                                               {"name": "mystery", "config": "mystery.yaml"}]}))
    with pytest.raises(WorkflowError, match=r"model entry 'mystery'.*unknown model 'no_such_model'"):
        run_workflow(path, wf_data, tmp_path / "run", show_progress=False)


# --------------------------------------------------------------------------- inference


def test_predict_reproduces_the_workflow_submission(reference_run, wf_data, tmp_path):
    from typer.testing import CliRunner

    from moakit.cli import app

    out = tmp_path / "sub.csv"
    res = CliRunner().invoke(app, ["predict", "--run", str(reference_run.run_dir), "--features",
                                   str(wf_data / "test_features.csv"), "--out", str(out), "--batch-size", "97"])
    assert res.exit_code == 0, res.output
    _assert_same_predictions(out, reference_run.submission)


def test_predict_reproduces_a_single_model_run(reference_run, wf_data):
    model_dir = reference_run.run_dir / "models" / "simple_nn_drug_cv"
    frame = inference.predict(model_dir, wf_data / "test_features.csv")
    expected = _frame(model_dir / "test_predictions.csv")
    assert list(frame.columns) == list(expected.columns)
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(), expected.iloc[:, 1:].to_numpy(), atol=1e-6, rtol=0)


def test_predict_from_a_blend_folder_of_separate_runs(reference_run, wf_data, tmp_path):
    """`moakit blend RUN... --out DIR` then `moakit predict --run DIR` gives the blend's own
    submission; the blend folder finds the runs even after both are moved together."""
    from moakit.blend import blend_runs

    home = tmp_path / "project"
    runs = [shutil.copytree(reference_run.run_dir / "models" / n, home / "runs" / n) for n in MODELS]
    # a fixed mix, so both models are used (a search may drop one)
    blend_runs(runs, home / "blend", methods=[], preset={"simple_nn": 0.3, "simple_nn_drug_cv": 0.7})
    moved = shutil.move(home, tmp_path / "elsewhere")
    frame = inference.predict(Path(moved) / "blend", wf_data / "test_features.csv")
    expected = _frame(Path(moved) / "blend" / "submission.csv")
    assert list(frame.columns) == list(expected.columns)
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(), expected.iloc[:, 1:].to_numpy(), atol=1e-6, rtol=0)
    shutil.rmtree(Path(moved) / "runs" / "simple_nn")
    with pytest.raises(inference.InferenceError, match="run folder of model 'simple_nn'"):
        inference.predict(Path(moved) / "blend", wf_data / "test_features.csv")


def test_predict_applies_per_target_blend_weights(reference_run, wf_data, tmp_path):
    """A blend that keeps per-target weights (models x targets): predict applies them
    target by target and reproduces the blend's submission."""
    from moakit.blend import blend_runs

    runs = [reference_run.run_dir / "models" / n for n in MODELS]
    res = blend_runs(runs, tmp_path / "blend", methods=["per_target"], nested_folds=0)
    assert res.method == "per_target" and np.ndim(res.weights) == 2
    frame = inference.predict(tmp_path / "blend", wf_data / "test_features.csv")
    expected = _frame(tmp_path / "blend" / "submission.csv")
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(), expected.iloc[:, 1:].to_numpy(), atol=1e-6, rtol=0)


def test_predict_keeps_input_order_and_zeroes_controls(reference_run, wf_data, tmp_path):
    features = pd.read_csv(wf_data / "test_features.csv")
    shuffled = features.sample(frac=1.0, random_state=0).iloc[:50]
    path = tmp_path / "some.csv"
    shuffled.to_csv(path, index=False)
    frame = inference.predict(reference_run.run_dir, path)
    assert frame["sig_id"].tolist() == shuffled["sig_id"].tolist()
    full = _frame(reference_run.submission).set_index("sig_id").loc[shuffled["sig_id"]]
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(), full.to_numpy(), atol=1e-6, rtol=0)
    controls = (shuffled["cp_type"] == "ctl_vehicle").to_numpy()
    assert (frame.iloc[:, 1:].to_numpy()[controls] == 0).all()


def test_predict_validation_errors(reference_run, wf_data, tmp_path):
    names = [c for c in _frame(reference_run.submission).columns if c != "sig_id"]
    ids = np.array(["a", "b"])
    good = pd.DataFrame(np.full((2, len(names)), 0.1), columns=names)
    good.insert(0, "sig_id", ids)
    inference.validate_submission(good, ids, names)
    cases = {
        "not finite": lambda f: f.__setitem__(names[3], [0.1, np.nan]),
        "outside": lambda f: f.__setitem__(names[0], [1.5, 0.1]),
    }
    for message, spoil in cases.items():
        bad = good.copy()
        spoil(bad)
        with pytest.raises(inference.InferenceError, match=message):
            inference.validate_submission(bad, ids, names)
    with pytest.raises(inference.InferenceError, match="row 1 is sig_id 'b'"):
        inference.validate_submission(good.iloc[::-1].reset_index(drop=True), ids, names)
    with pytest.raises(inference.InferenceError, match="column 2 is"):
        inference.validate_submission(good[["sig_id", *names[::-1]]], ids, names)

    # input with a gene column missing: a clear error, and no file written
    features = pd.read_csv(wf_data / "test_features.csv").drop(columns=["g-5"])
    path = tmp_path / "bad.csv"
    features.to_csv(path, index=False)
    out = tmp_path / "never.csv"
    with pytest.raises(inference.InferenceError, match=r"gene columns differ.*g-5"):
        inference.predict_to_file(reference_run.run_dir, path, out)
    assert not out.exists()
    with pytest.raises(inference.InferenceError, match="not a moakit run folder"):
        inference.predict(tmp_path, wf_data / "test_features.csv")

    from typer.testing import CliRunner

    from moakit.cli import app

    res = CliRunner().invoke(app, ["predict", "--run", str(reference_run.run_dir), "--features", str(path),
                                   "--out", str(out)])
    assert res.exit_code == 1 and "gene columns differ" in res.output  # bad data: a runtime failure
    assert not out.exists()
