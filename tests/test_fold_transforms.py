"""Transforms fitted inside fold estimators (the 1D-CNN's quantile + PCA; issue 29): an equal
fit of another seed is reused when training, and at prediction each distinct transform is
applied once per input; predictions are the same bit for bit as without either."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from moakit import fold_transforms, inference, runner
from moakit.config import load_config
from moakit.features import Pipeline, PipelineConfig
from moakit.models.cnn1d import Cnn1dEstimator
from moakit.runs import layout
from moakit.streaming import RunPredictor, folder_digest

SEEDS = [0, 1, 2]
N_FOLDS = 2


def _config():
    config = load_config("cnn1d", "smoke", folds=N_FOLDS).model_copy(update={"seeds": SEEDS})
    params = {**config.params, "train": {**config.params["train"], "epochs": 1}}  # seconds, not the point here
    return config.model_copy(update={"params": params})


@pytest.fixture(scope="module")
def runs(sim_data, tmp_path_factory):
    """The same 3-seed smoke cnn1d run trained with reuse and without (MOAKIT_FEATURE_REUSE=0),
    with the fold features' fits counted (the seed of each) and the fit caches the run made."""
    out = {}
    for name, env in (("reuse", "1"), ("plain", "0")):
        fits: list[int] = []
        caches: list[fold_transforms.FitCache] = []
        real = Pipeline.fit
        real_cache = fold_transforms.FitCache

        def fit(self, *args, _real=real, _fits=fits, **kwargs):
            if self.config.steps and self.config.steps[0].kind == "quantile":  # the fold features
                _fits.append(self.seed)
            return _real(self, *args, **kwargs)

        mp = pytest.MonkeyPatch()
        try:
            mp.setenv("MOAKIT_FEATURE_REUSE", env)
            mp.setattr(Pipeline, "fit", fit)
            mp.setattr(fold_transforms, "FitCache", lambda *a, **k: caches.append(real_cache(*a, **k)) or caches[-1])
            result = runner.train(_config(), sim_data, tmp_path_factory.mktemp(name) / "run", show_progress=False)
        finally:
            mp.undo()
        out[name] = (result, fits, caches)
    return out


def _estimator_dirs(run_dir, fold):
    return [layout.estimator_dir(layout.stage_dir(run_dir, "scored", s), fold) for s in SEEDS]


def test_equal_fold_fits_are_fitted_once_per_fold(runs):
    _, reuse_fits, _ = runs["reuse"]
    _, plain_fits, _ = runs["plain"]
    assert len(plain_fits) == len(SEEDS) * N_FOLDS and len(reuse_fits) == N_FOLDS
    run_dir = runs["reuse"][0].run_dir
    for fold in range(N_FOLDS):
        dirs = _estimator_dirs(run_dir, fold)
        assert len({folder_digest(d / layout.ESTIMATOR_FEATURES) for d in dirs}) == 1
        # each seed's saved copy names its own fold seed, as a fit of its own would
        seeds = [json.loads((d / layout.ESTIMATOR_FEATURES / layout.FEATURES_MANIFEST).read_text())["seed"]
                 for d in dirs]
        assert seeds == [s * 1000 + fold for s in SEEDS]
        # stored once: the seeds' state files are hard links to one file (without reuse: copies)
        for which, n_files in (("reuse", 1), ("plain", len(SEEDS))):
            dirs = _estimator_dirs(runs[which][0].run_dir, fold)
            files = [d / layout.ESTIMATOR_FEATURES / layout.FEATURES_ARRAYS for d in dirs]
            assert len({f.stat().st_ino for f in files}) == n_files


def test_training_results_are_the_same_with_and_without_reuse(runs):
    reuse, plain = runs["reuse"][0], runs["plain"][0]
    np.testing.assert_array_equal(reuse.oof, plain.oof)
    np.testing.assert_array_equal(reuse.test, plain.test)


@pytest.mark.parametrize("which", ["reuse", "plain"])
def test_each_fold_transform_is_applied_once_per_input(runs, which, sim_data, monkeypatch):
    run_dir = runs[which][0].run_dir
    rows = sim_data.test.subset(slice(0, 50))  # one block of rows
    calls = []
    real = Cnn1dEstimator.transform
    monkeypatch.setattr(Cnn1dEstimator, "transform", lambda self, X: calls.append(len(X)) or real(self, X))
    predictor = RunPredictor(run_dir)
    shared = predictor.predict(rows)
    # 3 seeds x 2 folds = 6 estimators; the seeds' fold transforms are equal: 2 distinct, 2 applied
    assert len(calls) == predictor.n_fold_transforms == N_FOLDS
    calls.clear()
    monkeypatch.setenv("MOAKIT_FEATURE_REUSE", "0")  # every estimator its own transform, as before
    alone = RunPredictor(run_dir).predict(rows)
    assert len(calls) == len(SEEDS) * N_FOLDS
    np.testing.assert_array_equal(shared, alone)


def test_a_predictor_reads_the_seeds_hard_linked_state_files_once(runs, sim_data, monkeypatch):
    run_dir = runs["reuse"][0].run_dir
    read = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda fh, name: read.append(os.fstat(fh.fileno()).st_ino)
                        or real(fh, name))
    predictor = RunPredictor(run_dir)
    predictor.predict(sim_data.test.subset(slice(0, 10)))
    arrays = {(d / layout.ESTIMATOR_FEATURES / layout.FEATURES_ARRAYS).stat().st_ino
              for fold in range(N_FOLDS) for d in _estimator_dirs(run_dir, fold)}
    assert len(arrays) == N_FOLDS and arrays <= set(read)  # one file per fold, linked by the seeds
    assert len(read) == len(set(read))  # no file read twice
    assert predictor.n_fold_transforms == N_FOLDS


def test_streamed_output_is_byte_identical_to_one_pass_and_to_the_plain_run(runs, sim_data, tmp_path):
    outputs = []
    for which in ("reuse", "plain"):
        run_dir = runs[which][0].run_dir
        one, _ = inference.predict_to_file(run_dir, sim_data.test, tmp_path / f"{which}_one.csv", chunk_rows=0)
        many, _ = inference.predict_to_file(run_dir, sim_data.test, tmp_path / f"{which}_many.csv", chunk_rows=100)
        assert one.read_bytes() == many.read_bytes()
        outputs.append(one.read_bytes())
    assert outputs[0] == outputs[1]


def test_fit_key_holds_the_seed_only_where_a_step_draws(sim_data):
    X = np.asarray(sim_data.train.genes[:60, :8], np.float32)
    fixed = PipelineConfig.model_validate({"steps": [
        {"kind": "quantile", "name": "q", "inputs": ["g"], "n_quantiles": 10, "random_state": 0},
        {"kind": "pca", "name": "p", "inputs": ["g"], "output": "pca", "n_components": 2, "random_state": 42}],
        "output": ["g", "pca"]})
    drawn = PipelineConfig.model_validate({"steps": [
        {"kind": "pca", "name": "p", "inputs": ["g"], "output": "pca", "n_components": 2}], "output": ["g", "pca"]})
    sig = [["g", 8]]
    key = fold_transforms.fit_key
    assert key(fixed, 1000, sig, X) == key(fixed, 2001, sig, X)  # every random state fixed: seedless
    assert key(drawn, 1000, sig, X) != key(drawn, 2001, sig, X)  # PCA's state from the seed
    assert key(fixed, 1000, sig, X) != key(fixed, 1000, sig, X[1:])  # other fit rows
    assert key(fixed, 1000, sig, X) != key(fixed, 1000, [["g", 4], ["c", 4]], X)  # other layout


def test_estimators_without_a_fold_transform_are_not_shared(tmp_path):
    class Plain:
        def predict_proba(self, X):
            return X

    assert fold_transforms.transform_identity(Plain(), tmp_path) is None
    shared = fold_transforms.SharedTransforms()
    X = np.ones((2, 3), np.float32)
    assert shared.predict(Plain(), None, X, "k") is X and shared.applied == 0


def test_each_run_reuses_fits_in_a_cache_of_its_own_released_at_its_end(runs):
    caches = [c for which in ("reuse", "plain") for c in runs[which][2]]
    assert len(caches) == 2 and caches[0] is not caches[1]  # one per run (the executor's)
    assert all(len(c) == 0 for c in caches)  # emptied when the run ended


def test_fits_are_reused_within_a_scope_only(sim_data, monkeypatch):
    X = np.asarray(sim_data.train.genes[:60, :8], np.float32)
    config = PipelineConfig.model_validate({"steps": [
        {"kind": "quantile", "name": "q", "inputs": ["g"], "n_quantiles": 10}], "output": ["g"]})
    fits = []
    real = Pipeline.fit
    monkeypatch.setattr(Pipeline, "fit", lambda self, *a, **k: fits.append(self.seed) or real(self, *a, **k))

    def fit(seed):
        return fold_transforms.fit_pipeline(config, seed, [["g", 8]], X, lambda X: {"g": X})

    for _ in range(2):  # two runs in one process: the second fits again, nothing left from the first
        with fold_transforms.reusing_fits() as cache:
            a, b = fit(1000), fit(2000)
            assert len(cache) == 1 and a.seed == 1000 and b.seed == 2000 and a.steps is b.steps
        assert len(cache) == 0
    assert len(fits) == 2
    fit(1000), fit(2000)  # outside a run: nothing kept, each fit its own
    assert len(fits) == 4
    assert fold_transforms.worker_cache("run-a") is fold_transforms.worker_cache("run-a")
    assert fold_transforms.worker_cache("run-b") is not fold_transforms.worker_cache("run-a")


@pytest.mark.parametrize("kept", [True, False])
def test_the_row_count_answer_loads_no_estimator_twice(runs, sim_data, monkeypatch, kept):
    """Estimators kept: those loaded to answer are the ones that predict; not kept (each chunk
    reloads them): the answer comes from the saved fold transforms, no estimator loaded for it."""
    from moakit import streaming

    run_dir = runs["reuse"][0].run_dir
    loads = []
    real = streaming.load_estimator
    monkeypatch.setattr(streaming, "load_estimator", lambda path: loads.append(path) or real(path))
    if not kept:
        monkeypatch.setattr(streaming, "KEEP_ESTIMATORS_BYTES", 0)
    assert fold_transforms.has_transform(_estimator_dirs(run_dir, 0)[0])
    predictor = RunPredictor(run_dir)
    assert predictor.reads_row_count is False  # quantile + PCA read no row count
    assert len(loads) == (len(SEEDS) * N_FOLDS if kept else 0)
    predictor.predict(sim_data.test.subset(slice(0, 10)))
    assert len(loads) == len(SEEDS) * N_FOLDS and len(set(loads)) == len(loads)  # each loaded once
    monkeypatch.setattr(Cnn1dEstimator, "transform_reads_row_count", classmethod(lambda cls, folder: True))
    assert fold_transforms.saved_reads_row_count(_estimator_dirs(run_dir, 0)[0])
    assert RunPredictor(run_dir).reads_row_count is (not kept)  # kept: the loaded estimators' own answer
