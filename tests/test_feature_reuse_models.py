"""Feature-fit reuse for the models whose features are not the plain-pipeline MLPs' (issue 29):
the 2-heads ResNet's scaler + exact PCAs are seedless, so its seeds share one fit with the
results of a run without reuse; the DeepInsight CNNs' t-SNE map is keyed per seed (it draws
from it) and comes back from the feature cache across runs unchanged."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from moakit import feature_cache, feature_reuse, runner
from moakit.config import deep_merge, load_config
from moakit.data.dataset import MoAData
from moakit.runs import layout, ModelRun
from moakit.stages import StageChain


@pytest.fixture(scope="module")
def small_data(sim_data) -> MoAData:
    """400 training rows (controls included) and 60 test rows of the simulated data."""
    return MoAData(train=sim_data.train.subset(np.arange(400)), test=sim_data.test.subset(np.arange(60)),
                   source=sim_data.source)


def _sources(run) -> dict[str, str]:
    return {f"{stage}/{seed}": rec.origin for stage, seed, rec in ModelRun(run).feature_sources()}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _keys(config, data) -> list[str]:
    model = runner.build_model(config)
    chain = StageChain(model, list(config.seeds))
    return [feature_reuse.stage_key(model, chain, 0, s, data) for s in config.seeds]


# --------------------------------------------------------------------------- 2-heads ResNet


def _resnet_config(**params):
    config = load_config("resnet_2heads", profile="smoke")
    update = {"seeds": [0, 1], "cv": config.cv.model_copy(update={"n_folds": 2})}
    if params:
        update["params"] = deep_merge(config.params, params)
    return config.model_copy(update=update)


def test_resnet_keys_leave_the_seed_out_only_with_an_exact_pca(small_data):
    model = runner.build_model(_resnet_config())
    assert feature_reuse.shares(model, model.stages()[0])
    exact = _keys(_resnet_config(), small_data)
    assert exact[0] == exact[1]
    drawn = _keys(_resnet_config(features={"pca_solver": "randomized"}), small_data)
    assert drawn[0] != drawn[1] and exact[0] not in drawn
    # a network setting is not part of the feature fit
    assert _keys(_resnet_config(network={"r1": 24}), small_data) == exact


@pytest.fixture(scope="module")
def resnet_runs(small_data, tmp_path_factory):
    """The 2-seed smoke 2-heads ResNet with reuse and with MOAKIT_FEATURE_REUSE=0."""
    config = _resnet_config()
    root = tmp_path_factory.mktemp("resnet_reuse")
    with mock.patch.dict(os.environ):
        os.environ.pop(feature_cache.ENV_DIR, None)
        os.environ["MOAKIT_FEATURE_REUSE"] = "1"
        reuse = runner.train(config, small_data, root / "reuse", show_progress=False)
        os.environ["MOAKIT_FEATURE_REUSE"] = "0"
        plain = runner.train(config, small_data, root / "plain", show_progress=False)
    return reuse, plain


def test_resnet_seeds_fit_features_once_with_equal_results(resnet_runs, small_data):
    reuse, plain = resnet_runs
    assert _sources(reuse.run_dir) == {"scored/0": "fit", "scored/1": "link"}
    assert _sources(plain.run_dir) == {"scored/0": "fit", "scored/1": "fit"}
    # what the seedless key promises, on the real pipeline: two seeds' own fits are equal
    folders = [layout.stage_dir(plain.run_dir, "scored", s) / layout.FEATURES_DIR for s in (0, 1)]
    assert _files(folders[0]).keys() == _files(folders[1]).keys()
    archives = sorted(p.relative_to(folders[0]) for p in folders[0].rglob("*.npz"))
    assert archives
    for rel in archives:  # every saved array equal (the archives' bytes hold their write time)
        with np.load(folders[0] / rel) as a, np.load(folders[1] / rel) as b:
            assert a.files == b.files
            for name in a.files:
                np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_allclose(reuse.oof, plain.oof, atol=1e-6)
    np.testing.assert_allclose(reuse.test, plain.test, atol=1e-6)
    np.testing.assert_allclose(runner.predict_run(reuse.run_dir, small_data.test),
                               runner.predict_run(plain.run_dir, small_data.test), atol=1e-6)


# --------------------------------------------------------------------------- DeepInsight


def _deepinsight_config(**params):
    config = load_config("deepinsight_efficientnet", profile="smoke")
    return config.model_copy(update={"params": deep_merge(config.params, params)}) if params else config


def test_deepinsight_keys_hold_the_seed_and_the_map_settings(small_data):
    base = _deepinsight_config().model_copy(update={"seeds": [0, 1]})
    keys = _keys(base, small_data)
    assert keys[0] != keys[1]  # the t-SNE's PCA start and row subsample draw from the seed
    assert _keys(base, small_data) == keys  # and nothing else varies
    for change in ({"image_size": 24}, {"feature_map": {"perplexity": 7}}, {"feature_map": {"max_samples": 150}}):
        assert _keys(base.model_copy(update={"params": deep_merge(base.params, change)}), small_data)[0] != keys[0]
    for change in ({"dropout": 0.1}, {"train": {"epochs": 2}}, {"swap_noise": {"p": 0.2}}):  # training only
        assert _keys(base.model_copy(update={"params": deep_merge(base.params, change)}), small_data) == keys


def test_deepinsight_map_comes_back_from_the_cache(small_data, tmp_path):
    """The features node of a second run (another dropout) restores the first run's t-SNE map
    from the cache, fits nothing, and hands training the same matrices."""
    from moakit.fold_jobs import fit_stage_seed
    from moakit.models.deepinsight_cnn import DeepInsightModel

    def features_node(config, run_dir):
        model = runner.build_model(config)
        return fit_stage_seed(small_data, model=model, index=0, seed=0, seeds=[0], run_dir=str(run_dir),
                              feature_cache=settings)

    with mock.patch.dict(os.environ), feature_cache.using(tmp_path / "cache") as settings:
        os.environ.pop("MOAKIT_FEATURE_REUSE", None)
        first = features_node(_deepinsight_config(), tmp_path / "first")
        with mock.patch.object(DeepInsightModel, "fit_features", side_effect=AssertionError("fitted")):
            second = features_node(_deepinsight_config(dropout=0.1), tmp_path / "second")
    sources = {run: ModelRun(tmp_path / run).feature_sources()[0][2] for run in ("first", "second")}
    assert sources["first"].origin == "fit" and sources["first"].cache_key  # fitted and stored
    assert sources["second"].origin == "cache" and sources["second"].cache_key == sources["first"].cache_key
    folders = [layout.stage_dir(tmp_path / run, "scored", 0) / layout.FEATURES_DIR for run in ("first", "second")]
    assert _files(folders[0]) == _files(folders[1])
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.X_test, second.X_test)
