"""Streaming prediction (moakit.streaming): chunked output equals one pass byte for byte,
and a transform shared by several stage-seeds is applied once per chunk; equal feature fits
of a run are fitted once (moakit.feature_reuse)."""

from __future__ import annotations

import numpy as np
import pytest

from moakit import inference, runner, streaming
from moakit.config import load_config
from moakit.features import Pipeline
from moakit.models.stacked import StackedFeatures
from moakit.streaming import RunPredictor, chunks, folder_digest
from moakit.runs import layout


@pytest.fixture(scope="module")
def simple_run(sim_data, tmp_path_factory):
    config = load_config("simple_nn", profile="smoke")
    return runner.train(config, sim_data, tmp_path_factory.mktemp("stream_simple") / "run", show_progress=False)


@pytest.fixture(scope="module")
def three_stage_run(sim_data, tmp_path_factory):
    config = load_config("three_stage_nn", profile="smoke").model_copy(update={"seeds": [0, 1]})
    return runner.train(config, sim_data, tmp_path_factory.mktemp("stream_three") / "run", show_progress=False)


def test_chunks_cover_every_row_once():
    assert chunks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert chunks(10, 0) == chunks(10, None) == [slice(0, 10)]
    assert chunks(3, 5) == [slice(0, 3)]
    assert chunks(0, 5) == [slice(0, 0)]


@pytest.mark.parametrize("which", ["simple_run", "three_stage_run"])
def test_chunked_csv_is_byte_identical_to_one_pass(which, request, sim_data, tmp_path):
    run = request.getfixturevalue(which).run_dir
    one, _ = inference.predict_to_file(run, sim_data.test, tmp_path / "one.csv", chunk_rows=0)
    many, frame = inference.predict_to_file(run, sim_data.test, tmp_path / "many.csv", chunk_rows=37)
    assert len(frame) == len(sim_data.test) > 37 * 3
    assert one.read_bytes() == many.read_bytes()
    # and one pass is what predict_run (the training-time replay) gives
    np.testing.assert_array_equal(runner.predict_run(run, sim_data.test),
                                  RunPredictor(run).predict(sim_data.test))


def test_shared_transforms_are_applied_once_per_chunk(three_stage_run, sim_data):
    run = three_stage_run.run_dir
    # stage 1's FA / UMAP / quantile have fixed random states: the two seeds' fits are the same state
    digests = {folder_digest(layout.stage_dir(run, "nonscored", s) / layout.FEATURES_DIR) for s in (0, 1)}
    assert len(digests) == 1
    predictor = RunPredictor(run)
    predictor.predict(sim_data.test.subset(slice(0, 50)))
    # 3 stages x 2 seeds = 6 stage-seeds; seed-mean meta and fixed random states: 3 transforms
    assert len(predictor.parts) == 6
    assert predictor.n_transforms == 3


def test_seed_dependent_features_are_not_shared(sim_data, tmp_path):
    """A step that takes the run seed (no random_state) gives each seed its own state."""
    import copy

    config = load_config("three_stage_nn", profile="smoke").model_copy(update={"seeds": [0, 1]})
    params = copy.deepcopy(config.params)
    for step in params["stage1"]["features"]["steps"]:
        if step["kind"] == "umap":
            step.pop("random_state")
    result = runner.train(config.model_copy(update={"params": params}), sim_data, tmp_path / "run",
                          show_progress=False)
    run = result.run_dir
    digests = {folder_digest(layout.stage_dir(run, "nonscored", s) / layout.FEATURES_DIR) for s in (0, 1)}
    assert len(digests) == 2
    # the training fitted each seed's stage 1 (and 2) itself; stage 3 reads only the seed-mean meta
    assert _reused_from(run, "nonscored", 1) is None and _reused_from(run, "scored", 1) is None
    assert _reused_from(run, "stack", 1) == "../seed_0/features"
    predictor = RunPredictor(run)
    np.testing.assert_array_equal(predictor.predict(sim_data.test), runner.predict_run(run, sim_data.test))
    # stage 2 reads its seed's stage-1 base: 2 transforms; stage 3 reads only the seed-mean meta: 1
    assert predictor.n_transforms == 2 + 2 + 1


def _reused_from(run, stage: str, seed: int):
    import json

    return json.loads((layout.stage_dir(run, stage, seed) / layout.FEATURES_KEY).read_text()).get("from")


def test_equal_feature_fits_are_fitted_once_and_linked(three_stage_run, sim_data, tmp_path_factory):
    """A 2-seed 3-stage run: every stage's seed-1 features are seed 0's (fixed random states,
    seed-mean meta), linked not refitted; OOF / test equal a run that fits every stage-seed."""
    import os

    run = three_stage_run.run_dir
    for stage in ("nonscored", "scored", "stack"):
        assert _reused_from(run, stage, 0) is None
        assert _reused_from(run, stage, 1) == "../seed_0/features"
    src = layout.stage_dir(run, "nonscored", 0) / layout.FEATURES_DIR
    dst = layout.stage_dir(run, "nonscored", 1) / layout.FEATURES_DIR
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file())
    assert all((src / f).read_bytes() == (dst / f).read_bytes() for f in files)
    config = load_config("three_stage_nn", profile="smoke").model_copy(update={"seeds": [0, 1]})
    os.environ["MOAKIT_FEATURE_REUSE"] = "0"
    try:
        plain = runner.train(config, sim_data, tmp_path_factory.mktemp("no_reuse") / "run", show_progress=False)
    finally:
        del os.environ["MOAKIT_FEATURE_REUSE"]
    assert _reused_from(plain.run_dir, "nonscored", 1) is None
    np.testing.assert_allclose(three_stage_run.oof, plain.oof, atol=1e-6)
    np.testing.assert_allclose(three_stage_run.test, plain.test, atol=1e-6)
    np.testing.assert_allclose(runner.predict_run(run, sim_data.test), runner.predict_run(plain.run_dir, sim_data.test),
                               atol=1e-6)


def _umap_pipeline(**umap):
    return Pipeline.from_config({"steps": [{"kind": "umap", "name": "u", "inputs": ["g"], "output": "u",
                                            "n_components": 2, **umap}], "output": ["g", "u"]})


def test_only_umap_steps_of_umap_learns_transform_read_the_row_count():
    reads = _umap_pipeline(transform="umap")
    assert reads.reads_row_count
    assert not _umap_pipeline().reads_row_count  # transform: rows, each row on its own
    assert not _umap_pipeline(transform="umap", n_epochs=30).reads_row_count  # its epochs fixed
    assert StackedFeatures(_umap_pipeline(), base=reads).reads_row_count
    assert not StackedFeatures(_umap_pipeline()).reads_row_count


@pytest.fixture(scope="module")
def umap_run(sim_data, tmp_path_factory):
    """simple_nn (smoke, one seed) with a umap step of umap-learn's transform and no n_epochs:
    the one kind of step whose values depend on the number of rows transformed at once."""
    config = load_config("simple_nn", profile="smoke").model_copy(update={"seeds": [0]})
    features = config.params["features"]
    umap = {"kind": "umap", "name": "umap_g", "inputs": ["g"], "output": "umap_g", "n_components": 2,
            "n_neighbors": 10, "max_fit_rows": 200, "random_state": 1, "transform": "umap"}
    features = {**features, "steps": [*features["steps"], umap], "output": [*features["output"], "umap_g"]}
    config = config.model_copy(update={"params": {**config.params, "features": features}})
    return runner.train(config, sim_data, tmp_path_factory.mktemp("stream_umap") / "run", show_progress=False)


@pytest.mark.parametrize("which, reads", [("simple_run", False), ("three_stage_run", False), ("umap_run", True)])
def test_the_rows_hint_is_entered_only_for_runs_that_read_the_row_count(which, reads, request, sim_data,
                                                                        monkeypatch, tmp_path):
    """three_stage_nn's smoke umap steps fix n_epochs: their transform does not read the row count."""
    run = request.getfixturevalue(which).run_dir
    entered = []
    real = streaming.umap_rows_hint
    monkeypatch.setattr(streaming, "umap_rows_hint", lambda n: entered.append(n) or real(n))
    predictor = RunPredictor(run)
    assert predictor.reads_row_count == reads
    assert reads == any(features.reads_row_count for _, _, features, _, _ in predictor.parts)
    one, _ = inference.predict_to_file(run, sim_data.test, tmp_path / "one.csv", batch_size=64, chunk_rows=0)
    assert entered == ([len(sim_data.test)] if reads else [])  # the whole input's rows
    entered.clear()
    many, _ = inference.predict_to_file(run, sim_data.test, tmp_path / "many.csv", batch_size=64, chunk_rows=100)
    assert len(entered) == (-(-len(sim_data.test) // 128) if reads else 0)  # each chunk: 2 blocks of 64
    assert set(entered) <= {len(sim_data.test)}
    assert one.read_bytes() == many.read_bytes()


def test_file_digests_read_a_hard_linked_file_once_and_a_changed_file_again(tmp_path, monkeypatch):
    import hashlib
    import os

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "state.npz").write_bytes(b"x" * 100)
    os.link(a / "state.npz", b / "state.npz")
    read = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda fh, name: read.append(fh.name) or real(fh, name))
    digests = streaming.FileDigests()
    before = digests.folder(a)
    assert digests.folder(b) == before == folder_digest(a)
    assert len(read) == 2  # once for the memo's two folders, once for folder_digest's own new memo
    (b / "state.npz").write_bytes(b"y" * 101)  # the linked file changed (size, time): read again, once
    assert digests.folder(b) == digests.folder(a) != before and len(read) == 3
