"""Prediction on fixed row blocks (moakit.streaming.row_blocks, issue 29): a matrix product's
rounding depends on its row count (OpenBLAS's small-matrix kernels: the 2-stage NN's PCA of
the cell block differed by 5e-6 between a 904-row and a 5,000-row matrix), so every transform
and network runs on blocks of one size from row 0, and streaming with an odd chunk size
equals one pass bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from moakit import inference, runner, streaming
from moakit.config import load_config
from moakit.streaming import row_blocks

BATCH = 32  # a small block, so that the test rows make several blocks and chunks


def test_row_blocks_count_from_row_0_and_leave_the_last_block_unpadded():
    assert [rows.tolist() for rows in row_blocks(11, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert list(row_blocks(21, 8))[-1].tolist() == [16, 17, 18, 19, 20]
    assert [len(rows) for rows in row_blocks(3, 16)] == [3]
    assert [len(rows) for rows in row_blocks(8, 4)] == [4, 4]
    assert list(row_blocks(0, 4)) == []


def test_openblas_rounding_depends_on_the_row_count():
    """The cause, kept visible: the same rows in a smaller matrix may round differently."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5000, 100)).astype(np.float32)
    B = rng.standard_normal((100, 3)).astype(np.float32)
    differs = any(not np.array_equal((A @ B)[t:], A[t:] @ B) for t in (4096, 2500, 4999))
    if not differs:
        pytest.skip("this BLAS rounds these products alike for every row count")
    blocks = [A[rows] @ B for rows in row_blocks(5000, 1024)]
    tail = [A[4096:][rows] @ B for rows in row_blocks(904, 1024)]
    np.testing.assert_array_equal(blocks[-1][:904], tail[0][:904])


def _train(name: str, sim_data, root):
    config = load_config(name, profile="smoke")
    config = config.model_copy(update={"seeds": [0], "cv": config.cv.model_copy(update={"n_folds": 2})})
    return runner.train(config, sim_data, root / "run", show_progress=False)


@pytest.fixture(scope="module")
def two_stage_run(sim_data, tmp_path_factory):
    return _train("two_stage_nn_tabnet", sim_data, tmp_path_factory.mktemp("blocks_tabnet"))


@pytest.fixture(scope="module")
def simple_run(sim_data, tmp_path_factory):
    return _train("simple_nn", sim_data, tmp_path_factory.mktemp("blocks_simple"))


@pytest.mark.parametrize("which", ["two_stage_run", "simple_run"])
def test_streaming_with_an_odd_chunk_equals_one_pass(which, request, sim_data):
    run = request.getfixturevalue(which).run_dir
    ds = sim_data.test
    assert len(ds) % 64 not in (0, 1) and len(ds) % BATCH  # chunks of 37 -> 64 rows (2 blocks), the last partial
    _, one, _ = inference.predict_arrays(run, ds, batch_size=BATCH, chunk_rows=0)
    _, many, _ = inference.predict_arrays(run, ds, batch_size=BATCH, chunk_rows=37)
    assert np.array_equal(one, many)
    np.testing.assert_array_equal(runner.predict_run(run, ds, batch_size=BATCH), one)


def test_default_blocks_stream_bit_for_bit_past_one_block(two_stage_run, sim_data, monkeypatch):
    """Without a batch size: blocks of BLOCK_ROWS (made small here); an input of more rows,
    chunks of 37 asked (rounded up to one block), the last chunk partial."""
    monkeypatch.setattr(streaming, "BLOCK_ROWS", 64)
    ds = sim_data.test
    assert len(ds) % 64 not in (0, 1)
    run = two_stage_run.run_dir
    predictor = inference.open_run_for_predict(run).predictor(None)
    assert predictor.aligned_chunk_rows(37) == 64
    _, one, _ = inference.predict_arrays(run, ds, chunk_rows=0)
    _, many, _ = inference.predict_arrays(run, ds, chunk_rows=37)
    assert np.array_equal(one, many)


def test_an_input_of_one_block_gets_the_runs_own_test_predictions(simple_run, sim_data):
    """Fewer rows than a block: predicted as one block of exactly those rows, as training
    predicted its test rows, so `predict` gives the run's test predictions bit for bit."""
    assert len(sim_data.test) < streaming.BLOCK_ROWS
    np.testing.assert_array_equal(runner.predict_run(simple_run.run_dir, sim_data.test), simple_run.test)
