"""Streaming `moakit predict`: the input read, predicted and written chunk by chunk (CSV,
Parquet, GCTX, a dataset folder; a model run and a blend) gives the bytes of one pass; a bad
row in a late chunk is the one-pass error (same file, column, row) and leaves nothing
written; compound means kept across chunks; ``open_run(path).predict(data)``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import conftest
from conftest import invoke

from moakit import inference
from moakit.data.chunked import TableChunks, chunk_slices, offset_rows
from moakit.data.io import DataError
from moakit.predict_inputs import CompoundMeans, compound_calls
from moakit.runs import open_run

BATCH = 8  # a small inference batch, so that small inputs are predicted in several chunks


@pytest.fixture(scope="module")
def runs(sim_folder, tmp_path_factory):
    """Two smoke runs on the simulated folder and a `moakit blend` of them."""
    root = tmp_path_factory.mktemp("stream_runs")
    for name in ("simple_nn", "simple_nn_drug_cv"):
        res = invoke("train", name, "--data", sim_folder, "--out", root / name, "--profile", "smoke", "--quiet")
        assert res.exit_code == 0, res.stdout + res.stderr
    res = invoke("blend", root / "simple_nn", root / "simple_nn_drug_cv", "--out", root / "blend", "--method",
                 "per_target")
    assert res.exit_code == 0, res.stdout + res.stderr
    return {"model": root / "simple_nn", "blend": root / "blend"}


@pytest.fixture(scope="module")
def gene_only(tmp_path_factory):
    """A gene-only lish-moa folder (no c- columns) and a simple_nn smoke run on it."""
    return conftest.gene_only_run(tmp_path_factory.mktemp("stream_genes"), n_rows=400)


def test_chunk_slices_and_row_renumbering():
    assert chunk_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert chunk_slices(9, 4) == [slice(0, 4), slice(4, 9)]  # no chunk of one row after others
    assert chunk_slices(1, 4) == [slice(0, 1)]
    err = offset_rows(DataError("f.csv: column 'g-1', row 3: non-numeric value 'x'"), 32, "f.csv")
    assert isinstance(err, DataError) and str(err) == "f.csv: column 'g-1', row 35: non-numeric value 'x'"
    renamed = offset_rows(DataError("row 2.csv: row 3: sig_id 'a'"), 10, "row 2.csv")
    assert str(renamed) == "row 2.csv: row 13: sig_id 'a'"  # the file name's "row 2" is not renumbered


@pytest.mark.parametrize("kind", ["model", "blend"])
@pytest.mark.parametrize("chunk", [BATCH, 3 * BATCH, 7 * BATCH])
def test_streamed_csv_is_byte_identical_to_one_pass(runs, sim_folder, kind, chunk, tmp_path):
    features = sim_folder / "test_features.csv"
    one, frame = inference.predict_to_file(runs[kind], features, tmp_path / "one.csv", BATCH, chunk_rows=0)
    many, _ = inference.predict_to_file(runs[kind], features, tmp_path / "many.csv", BATCH, chunk_rows=chunk)
    assert len(frame) > 2 * chunk
    assert one.read_bytes() == many.read_bytes()
    # and the run-module entry point gives the same frame
    pd.testing.assert_frame_equal(open_run(runs[kind]).predict(features, BATCH, chunk_rows=chunk), frame)


def test_parquet_in_and_out_and_compressed_csv(runs, sim_folder, tmp_path):
    features = pd.read_csv(sim_folder / "test_features.csv")
    features.index = features.index + 100  # a stored pandas index column: not a feature column
    features.to_parquet(tmp_path / "rows.parquet")
    inference.predict_to_file(runs["blend"], sim_folder / "test_features.csv", tmp_path / "ref.csv", BATCH, 0)
    inference.predict_to_file(runs["blend"], tmp_path / "rows.parquet", tmp_path / "p.csv", BATCH, 2 * BATCH)
    assert (tmp_path / "p.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    ref = pd.read_csv(tmp_path / "ref.csv")
    for name in ("p.parquet", "p.csv.gz", "p.csv.zip"):
        inference.predict_to_file(runs["blend"], tmp_path / "rows.parquet", tmp_path / name, BATCH, 2 * BATCH)
        got = pd.read_parquet(tmp_path / name) if name.endswith("parquet") else pd.read_csv(tmp_path / name)
        pd.testing.assert_frame_equal(got, ref if not name.endswith("parquet") else got)
    # the Parquet output holds the values written (not rounded to %.8g as the CSV)
    direct = inference.predict(runs["blend"], tmp_path / "rows.parquet", BATCH, chunk_rows=0)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "p.parquet"), direct)


def _bad_copy(sim_folder, tmp_path, column, row, value) -> tuple:
    frame = pd.read_csv(sim_folder / "test_features.csv", dtype=str)
    frame.loc[row - 1, column] = value if value is not None else frame.loc[4, "sig_id"]
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path, len(frame)


@pytest.mark.parametrize("column,value,message", [
    ("g-3", "abc", "column 'g-3', row {row}: non-numeric value 'abc'"),
    ("c-7", "nan", "column 'c-7', row {row}: value nan is not finite"),
    ("cp_time", "36", "column 'cp_time', row {row}: unknown value 36"),
    ("sig_id", None, "row {row}: sig_id"),
])
def test_a_bad_row_in_a_late_chunk_is_the_one_pass_error(runs, sim_folder, tmp_path, column, value, message):
    row = 150
    path, n = _bad_copy(sim_folder, tmp_path, column, row, value)
    assert n > row > 4 * BATCH
    errors = []
    for chunk in (0, BATCH, 3 * BATCH):
        out = tmp_path / f"out_{chunk}.csv"
        with pytest.raises(DataError) as info:
            inference.predict_to_file(runs["model"], path, out, BATCH, chunk_rows=chunk)
        errors.append(str(info.value))
        assert not out.exists()
    assert errors[0] == errors[1] == errors[2]
    assert errors[0].startswith(f"{path}: {message.format(row=row)}")
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]  # no temporary file left


def test_chunks_are_bounded(runs, sim_folder):
    table = TableChunks(sim_folder / "test_features.csv")
    sizes = [len(frame) for _, frame in table.frames(BATCH)]
    assert sum(sizes) == table.n_rows == len(table.sig_id) and max(sizes) <= BATCH + 1 and len(sizes) > 4
    predictor = open_run(runs["blend"]).predictor(BATCH)
    seen = [len(ds) for _, ds, _, _ in predictor.stream(table, BATCH)]
    assert seen == sizes


def test_meta_columns_are_typed_over_the_whole_file(tmp_path):
    """A numeric dose column reads "10.0" in every chunk when any row has a fraction (as a
    one-pass read types it), also in chunks whose doses are all whole numbers."""
    frame = pd.DataFrame({"sig_id": [f"s{i}" for i in range(40)], "cp_dose": [10] * 39 + [0.5],
                          "g-0": np.arange(40, dtype=float)})
    frame.to_csv(tmp_path / "x.csv", index=False)
    table = TableChunks(tmp_path / "x.csv")
    parts = [ds for _, ds in table.datasets(8)]
    assert len(parts) == 5 and all(len(ds) == 8 for ds in parts)
    doses = [str(v) for ds in parts for v in np.asarray(ds.vocab["cp_dose"], dtype=object)[ds.cp_dose]]
    from moakit.data.io import read_features

    whole = read_features(tmp_path / "x.csv")
    assert doses == [str(v) for v in np.asarray(whole.vocab["cp_dose"], dtype=object)[whole.cp_dose]]
    assert doses[0] == "10.0"


def _gctx(data, path):
    from moakit.data import gctx
    from moakit.data.column_maps import lish_moa_gene_ids

    frame = pd.read_parquet(data / "test_features.parquet")
    ids = lish_moa_gene_ids()
    genes = [c for c in frame.columns if c.startswith("g-")]
    order = np.random.default_rng(0).permutation(len(genes))
    matrix = pd.DataFrame(frame[genes].to_numpy()[:, order], index=frame.sig_id,
                          columns=[ids[genes[j]] for j in order])
    return gctx.write_gctx(path, matrix, col_meta=frame.set_index("sig_id")[["cp_type", "cp_time", "cp_dose"]])


def test_gctx_and_folder_inputs_stream_identically(gene_only, tmp_path):
    data, run = gene_only
    matrix = _gctx(data, tmp_path / "x.gctx")
    groups = pd.read_parquet(data / "answers" / "test_drug.parquet")
    groups.to_csv(tmp_path / "groups.csv", index=False)
    outputs = {}
    for name, features, extra in (("gctx", matrix, {"groups_file": tmp_path / "groups.csv"}), ("folder", data, {})):
        for chunk in (0, BATCH, 5 * BATCH):
            out = tmp_path / f"{name}_{chunk}.csv"
            done = inference.predict_file(run, features, out, BATCH, chunk_rows=chunk, by_compound=True, top=3,
                                          **extra)
            assert done["rows"] == len(groups) > 5 * BATCH
            outputs.setdefault(name, []).append((out.read_bytes(), (tmp_path / f"{name}_{chunk}_by_compound.csv")
                                                 .read_bytes()))
        assert len(set(outputs[name])) == 1
    # GCTX (genes shuffled, matched by Entrez id) and the folder's table predict the same rows alike
    gctx_frame = pd.read_csv(tmp_path / "gctx_0.csv").set_index("sig_id")
    folder_frame = pd.read_csv(tmp_path / "folder_0.csv").set_index("sig_id")
    np.testing.assert_array_equal(gctx_frame.loc[folder_frame.index].to_numpy(), folder_frame.to_numpy())


def test_compound_means_do_not_depend_on_chunks():
    rng = np.random.default_rng(0)
    values = rng.random((500, 6))
    groups = rng.choice(["b", "a", "c", "", None], 500).astype(object)
    control = rng.random(500) < 0.1
    names = [f"t{j}" for j in range(6)]
    one = CompoundMeans(names)
    one.add(values, groups, control)
    many = CompoundMeans(names)
    for rows in chunk_slices(500, 37):
        many.add(values[rows], groups[rows], control[rows])
    pd.testing.assert_frame_equal(one.calls(3), many.calls(3))
    frame = pd.DataFrame(values, columns=names)
    frame.insert(0, "sig_id", [f"s{i}" for i in range(500)])
    calls = compound_calls(frame, groups, 2, control)
    keep = ~control & pd.Series(groups).fillna("").ne("").to_numpy()
    mean = frame[names][keep].groupby(groups[keep]).mean()
    assert calls.compound.unique().tolist() == ["a", "b", "c"]
    for compound, part in calls.groupby("compound"):
        best = mean.loc[compound].sort_values(ascending=False, kind="stable")[:2]
        assert part.moa.tolist() == best.index.tolist()
        np.testing.assert_allclose(part.probability.to_numpy(), best.to_numpy(), rtol=1e-12)


def test_cli_predict_streams_with_progress_off_and_json(runs, sim_folder, tmp_path):
    import json

    res = invoke("predict", "--run", runs["blend"], "--features", sim_folder / "test_features.csv", "--out",
                 tmp_path / "a.csv", "--chunk-rows", 50, "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    info = json.loads(res.stdout)
    assert info["rows"] == len(pd.read_csv(tmp_path / "a.csv")) and info["rows_per_second"] > 0
    res = invoke("predict", "--run", runs["blend"], "--features", sim_folder / "test_features.csv", "--out",
                 tmp_path / "b.csv", "--chunk-rows", 0, "--quiet")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
