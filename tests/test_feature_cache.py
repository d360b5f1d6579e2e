"""The feature cache across runs (moakit.feature_cache): entries stored whole and checked,
LRU eviction, damaged entries refitted, concurrent writers, and a run reusing its fits."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from moakit import feature_cache
from moakit.feature_cache import FeatureCache, FeatureCacheWarning


def _state(folder: Path, n_bytes: int, seed: int = 0) -> Path:
    """A stand-in fitted state: a JSON file and an array file in a nested folder."""
    (folder / "own").mkdir(parents=True, exist_ok=True)
    (folder / "own" / "steps.json").write_text('{"steps": []}')
    np.save(folder / "own" / "steps.npy", np.random.default_rng(seed).random(max(n_bytes // 8, 1)))
    return folder


def _same_files(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


def test_store_then_restore(tmp_path):
    cache = FeatureCache(tmp_path / "cache", int(1e9))
    src = _state(tmp_path / "fitted", 4000)
    assert cache.restore("k1", tmp_path / "miss") is None
    assert cache.store("k1", src, {"model": "m"})
    assert (tmp_path / "cache" / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    out = tmp_path / "run" / "features"
    assert cache.restore("k1", out) is True
    assert _same_files(src, out)
    assert os.stat(out / "own" / "steps.npy").st_ino != os.stat(src / "own" / "steps.npy").st_ino  # copies
    loaded = cache.restore("k1", tmp_path / "run2" / "features", load=lambda p: sorted(os.listdir(p)))
    assert loaded == ["own"]
    assert not [p for p in cache.entries_dir.iterdir() if p.name.startswith(".")]  # no temporary left


def test_eviction_least_recently_used(tmp_path):
    cache = FeatureCache(tmp_path / "cache", 25_000)  # room for two 10 kB entries, not three
    for i, key in enumerate(["a", "b"]):
        cache.store(key, _state(tmp_path / key, 10_000, i))
    old = time.time() - 100
    os.utime(cache.entry_dir("a") / feature_cache.USED, (old, old))
    os.utime(cache.entry_dir("b") / feature_cache.USED, (old + 10, old + 10))
    assert cache.restore("a", tmp_path / "hit") is True  # a hit makes "a" the most recently used
    cache.store("c", _state(tmp_path / "c", 10_000, 2))
    assert sorted(e.name for _, _, e in cache.entries()) == ["a", "c"]  # "b" evicted
    assert cache.size_bytes() <= 25_000
    with pytest.warns(FeatureCacheWarning, match="larger than the cache bound"):
        assert not cache.store("huge", _state(tmp_path / "huge", 40_000, 3))
    assert not cache.entry_dir("huge").exists()


@pytest.mark.parametrize("damage", ["changed", "missing", "entry_json"])
def test_damaged_entry_ignored_and_removed(tmp_path, damage):
    cache = FeatureCache(tmp_path / "cache", int(1e9))
    src = _state(tmp_path / "fitted", 4000)
    cache.store("k", src)
    npy = cache.entry_dir("k") / feature_cache.STATE_DIR / "own" / "steps.npy"
    if damage == "changed":
        data = bytearray(npy.read_bytes())
        data[-1] ^= 0xFF
        npy.unlink()  # replaced, as the run folder never shares a file with the cache
        npy.write_bytes(bytes(data))
    elif damage == "missing":
        npy.unlink()
    else:
        (cache.entry_dir("k") / feature_cache.ENTRY).write_text("{not json")
    target = tmp_path / "run" / "features"
    with pytest.warns(FeatureCacheWarning, match="damaged"):
        assert cache.restore("k", target) is None
    assert not target.exists() and not cache.entry_dir("k").exists()
    assert (src / "own" / "steps.npy").exists()  # the source of the fit is untouched


def test_unloadable_entry_is_damaged(tmp_path):
    cache = FeatureCache(tmp_path / "cache", int(1e9))
    cache.store("k", _state(tmp_path / "fitted", 100))

    def refuse(path):
        raise ValueError(f"{path}: not a state")

    with pytest.warns(FeatureCacheWarning, match="not a state"):
        assert cache.restore("k", tmp_path / "t", load=refuse) is None
    assert not cache.entry_dir("k").exists() and not (tmp_path / "t").exists()


def _store_one(args):
    root, src, key = args
    return FeatureCache(Path(root), int(1e9)).store(key, Path(src))


def test_two_writers_of_one_key_both_succeed(tmp_path):
    srcs = [_state(tmp_path / f"w{i}", 200_000, 7) for i in range(4)]  # equal fits
    with ProcessPoolExecutor(4) as pool:
        done = list(pool.map(_store_one, [(str(tmp_path / "cache"), str(s), "same") for s in srcs]))
    assert done == [True] * 4
    cache = FeatureCache(tmp_path / "cache", int(1e9))
    assert [e.name for _, _, e in cache.entries()] == ["same"]
    assert not [p for p in cache.entries_dir.iterdir() if p.name.startswith(".")]
    assert cache.restore("same", tmp_path / "out") is True and _same_files(srcs[0], tmp_path / "out")


def test_settings_from_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(feature_cache.ENV_DIR, raising=False)
    monkeypatch.delenv(feature_cache.ENV_MAX_GB, raising=False)
    assert feature_cache.settings() is None  # off by default
    with feature_cache.using(tmp_path / "c", 0.5) as conf:
        assert conf == {"dir": str((tmp_path / "c").resolve()), "max_gb": 0.5}
        assert FeatureCache.from_settings(conf).max_bytes == 500_000_000
    assert feature_cache.settings() is None
    monkeypatch.setenv(feature_cache.ENV_DIR, str(tmp_path / "d"))
    assert feature_cache.settings()["max_gb"] == feature_cache.DEFAULT_MAX_GB
    monkeypatch.setenv(feature_cache.ENV_MAX_GB, "-1")
    with pytest.raises(ValueError, match="positive number of GB"):
        feature_cache.settings()


def test_cache_key_follows_the_upstream_inputs():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    k = feature_cache.cache_key("s", (a, None))
    assert k == feature_cache.cache_key("s", (a.copy(), None))
    assert k != feature_cache.cache_key("s", (a + 1, None))
    assert k != feature_cache.cache_key("t", (a, None))
    assert k != feature_cache.cache_key("s", (a.reshape(2, 3), None))


# --------------------------------------------------------------------------- in a run


def _feature_files(run) -> dict[str, object]:
    """Every file of the run's features folders; a pipeline manifest without its fit time
    (the one thing two fits of one state write differently)."""
    import json

    from moakit.runs import layout

    out: dict[str, object] = {}
    for folder in sorted(Path(run).glob(f"{layout.STAGES_DIR}/*/seed_*/{layout.FEATURES_DIR}")):
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            if f.name == layout.FEATURES_MANIFEST:
                out[str(f.relative_to(run))] = {k: v for k, v in json.loads(f.read_text()).items() if k != "fit_seconds"}
            else:
                out[str(f.relative_to(run))] = f.read_bytes()
    return out


def _sources(run) -> dict[str, str]:
    from moakit.runs import ModelRun

    return {f"{stage}/{seed}": rec.origin for stage, seed, rec in ModelRun(run).feature_sources()}


@pytest.fixture(scope="module")
def three_stage_runs(sim_data, tmp_path_factory):
    """three_stage_nn (smoke, 1 seed): a first run with a cache; a second with a new stage-3
    width, with the cache (no feature may be fitted: fit_features raises) and without it."""
    from unittest import mock

    from moakit import runner
    from moakit.config import deep_merge, load_config
    from moakit.models.stacked import StackedModel

    root = tmp_path_factory.mktemp("feature_cache")
    first_cfg = load_config("three_stage_nn", profile="smoke")
    second_cfg = first_cfg.model_copy(update={"params": deep_merge(first_cfg.params,
                                                                   {"stage3": {"network": {"hidden": [48, 48]}}})})
    with mock.patch.dict(os.environ), torch_one_thread():
        os.environ.pop(feature_cache.ENV_DIR, None)
        os.environ.pop("MOAKIT_FEATURE_REUSE", None)
        with feature_cache.using(root / "cache"):
            first = runner.train(first_cfg, sim_data, root / "first", show_progress=False)
            with mock.patch.object(StackedModel, "fit_features", side_effect=AssertionError("fitted")):
                second = runner.train(second_cfg, sim_data, root / "second", show_progress=False)
        plain = runner.train(second_cfg, sim_data, root / "plain", show_progress=False)
    return root, first, second, plain


def torch_one_thread():
    import contextlib

    import torch

    @contextlib.contextmanager
    def one():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)
    return one()


def test_second_run_reuses_every_fit_with_equal_results(three_stage_runs, sim_data):
    from moakit import runner

    root, first, second, plain = three_stage_runs
    assert set(_sources(first.run_dir).values()) == {"fit"}
    assert len(_sources(first.run_dir)) == 3  # 3 stages x 1 seed, each fitted and stored
    assert set(_sources(second.run_dir).values()) == {"cache"}  # 0 fits
    assert set(_sources(plain.run_dir).values()) == {"fit"}
    files = _feature_files(second.run_dir)
    assert files and files == _feature_files(first.run_dir) == _feature_files(plain.run_dir)
    np.testing.assert_allclose(second.oof, plain.oof, atol=1e-6)
    np.testing.assert_allclose(second.test, plain.test, atol=1e-6)
    np.testing.assert_allclose(runner.predict_run(second.run_dir, sim_data.test),
                               runner.predict_run(plain.run_dir, sim_data.test), atol=1e-6)
    assert not np.allclose(first.oof, second.oof)  # the stage-3 width did change the model


def test_run_records_the_cache_key(three_stage_runs):
    from moakit.runs import ModelRun

    root, first, second, _ = three_stage_runs
    stored = {(s, seed): r for s, seed, r in ModelRun(first.run_dir).feature_sources()}
    hits = {(s, seed): r for s, seed, r in ModelRun(second.run_dir).feature_sources()}
    assert stored.keys() == hits.keys()
    cache = FeatureCache(root / "cache", int(1e9))
    for where, rec in hits.items():
        assert rec.source == "cache" and rec.cache == str((root / "cache").resolve())
        assert rec.cache_key == stored[where].cache_key and rec.key == stored[where].key
        assert cache.entry_dir(rec.cache_key).is_dir()


def test_damaged_entry_in_a_run_is_refitted(three_stage_runs, sim_data, tmp_path):
    """A damaged cache entry: a warning, the stage refitted, results as without the cache."""
    import shutil

    from moakit import runner
    from moakit.config import load_config
    from moakit.runs import ModelRun

    root, first, _, _ = three_stage_runs
    cache_dir = tmp_path / "cache"
    shutil.copytree(root / "cache", cache_dir)
    stack_key = next(r.cache_key for s, _, r in ModelRun(first.run_dir).feature_sources() if s == "stack")
    state = cache_dir / feature_cache.VERSION_DIR / stack_key / feature_cache.STATE_DIR
    victim = next(p for p in sorted(state.rglob("*.npz")))
    victim.write_bytes(victim.read_bytes()[:-10])
    with feature_cache.using(cache_dir), torch_one_thread(), pytest.warns(FeatureCacheWarning, match="damaged"):
        again = runner.train(load_config("three_stage_nn", profile="smoke"), sim_data, tmp_path / "run",
                             show_progress=False)
    assert _sources(again.run_dir) == {"nonscored/0": "cache", "scored/0": "cache", "stack/0": "fit"}
    np.testing.assert_allclose(again.oof, first.oof, atol=1e-6)
    assert FeatureCache(cache_dir, int(1e9)).restore(stack_key, tmp_path / "x") is True  # stored again, whole


def test_api_feature_cache(sim_folder, tmp_path, monkeypatch):
    import json

    import moakit
    from moakit.runs import layout

    monkeypatch.delenv(feature_cache.ENV_DIR, raising=False)
    data = moakit.load_dataset(sim_folder)
    kwargs = dict(profile="smoke", feature_cache=tmp_path / "cache", feature_cache_max_gb=1)
    with torch_one_thread():
        a = moakit.MoAModel("simple_nn", run_dir=tmp_path / "a", **kwargs).fit(data.X, data.Y, X_test=data.X_test)
        b = moakit.MoAModel("simple_nn", run_dir=tmp_path / "b", params={"network": {"hidden": [32, 32]}},
                            **kwargs).fit(data.X, data.Y, X_test=data.X_test)
    assert set(_sources(a.run_dir_).values()) == {"fit"} and set(_sources(b.run_dir_).values()) == {"cache"}
    assert _feature_files(a.run_dir_) == _feature_files(b.run_dir_)
    assert feature_cache.ENV_DIR not in os.environ  # the setting ends with fit
    saved = json.loads((tmp_path / "b" / layout.ESTIMATOR).read_text())["params"]
    assert "feature_cache" not in saved  # a machine's folder, not part of the saved model
    assert moakit.MoAModel(**{**b.get_params(), "run_dir": None}).get_params()["feature_cache"] == tmp_path / "cache"


def test_cli_feature_cache(sim_folder, tmp_path, monkeypatch):
    from conftest import clean_exit, invoke

    monkeypatch.delenv(feature_cache.ENV_DIR, raising=False)
    monkeypatch.delenv(feature_cache.ENV_MAX_GB, raising=False)
    args = ["train", "simple_nn", "--profile", "smoke", "--data", sim_folder, "--quiet"]
    with torch_one_thread():
        first = invoke(*args, "--out", tmp_path / "a", "--feature-cache", tmp_path / "cache",
                       "--feature-cache-max-gb", "0.5")
        assert first.exit_code == 0, first.stdout + first.stderr
        monkeypatch.setenv(feature_cache.ENV_DIR, str(tmp_path / "cache"))  # the variable, as the option
        second = invoke(*args, "--out", tmp_path / "b", "--folds", "2")
        assert second.exit_code == 0, second.stdout + second.stderr
    assert set(_sources(tmp_path / "a").values()) == {"fit"}
    assert set(_sources(tmp_path / "b").values()) == {"cache"}  # folds are not part of a feature fit
    monkeypatch.setenv(feature_cache.ENV_MAX_GB, "lots")
    text = clean_exit(invoke(*args, "--out", tmp_path / "c"), codes=(2,))
    assert "MOAKIT_FEATURE_CACHE_MAX_GB" in text and not (tmp_path / "c").exists()
    assert "--feature-cache-max-gb" in clean_exit(invoke(*args, "--out", tmp_path / "d", "--feature-cache-max-gb", "0"),
                                                  codes=(2,))
