"""GCTX / GCT reading and writing (moakit.data.gctx): round trips, slab selection, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moakit.data import gctx
from moakit.data.io import DataError


def _frame(n_sig: int = 300, n_gene: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.standard_normal((n_sig, n_gene)).astype(np.float32),
                        index=[f"SIG{i:04d}:X" for i in range(n_sig)],
                        columns=[str(1000 + 7 * j) for j in range(n_gene)])


@pytest.fixture
def written(tmp_path):
    frame = _frame()
    col_meta = pd.DataFrame({"pert_id": [f"BRD-{i % 17}" for i in range(len(frame))],
                             "pert_time": np.arange(len(frame)) % 3 * 24}, index=frame.index)
    path = gctx.write_gctx(tmp_path / "m.gctx", frame, chunks=(32, 50), col_meta=col_meta)
    return path, frame, col_meta


def test_round_trip_ids_values_and_meta(written):
    path, frame, col_meta = written
    back = gctx.read_gctx(path)
    assert back.index.tolist() == frame.index.tolist() and back.columns.tolist() == frame.columns.tolist()
    assert back.dtypes.unique().tolist() == [np.float32]
    np.testing.assert_array_equal(back.to_numpy(), frame.to_numpy())
    cids, rids = gctx.gctx_ids(path)
    assert list(cids) == frame.index.tolist() and list(rids) == frame.columns.tolist()
    meta = gctx.read_gctx_meta(path, "col")
    assert meta["pert_id"].tolist() == col_meta["pert_id"].tolist()
    assert meta["pert_time"].tolist() == col_meta["pert_time"].tolist()
    import h5py

    with h5py.File(path, "r") as h:  # CMap's layout: signatures x genes, ids as bytes
        assert h[gctx.MATRIX].shape == frame.shape and h[gctx.MATRIX].dtype == np.float32
        assert h[gctx.COL_ID].dtype.kind == "S" and h[gctx.MATRIX].chunks == (32, 50)


@pytest.mark.parametrize("window_bytes", [gctx.WINDOW_BYTES, 4 * 120 * 7])  # one window / many small ones
def test_slab_equals_the_full_reads_slice_in_requested_order(written, monkeypatch, window_bytes):
    monkeypatch.setattr(gctx, "WINDOW_BYTES", window_bytes)
    path, frame, _ = written
    rng = np.random.default_rng(1)
    for n_sig, n_gene in ((250, 40), (12, 120), (1, 1), (300, 3)):  # dense, sparse, single, all
        cid = list(rng.choice(frame.index, n_sig, replace=False))
        rid = list(rng.choice(frame.columns, n_gene, replace=False))
        slab = gctx.read_gctx(path, rid=rid, cid=cid)
        assert slab.index.tolist() == cid and slab.columns.tolist() == rid
        np.testing.assert_array_equal(slab.to_numpy(), frame.loc[cid, rid].to_numpy())
    genes_only = gctx.read_gctx(path, rid=list(frame.columns[5:9]))
    np.testing.assert_array_equal(genes_only.to_numpy(), frame.iloc[:, 5:9].to_numpy())


def test_block_writer_streams_and_checks_the_row_count(tmp_path):
    frame = _frame(50, 10)
    blocks = (frame.to_numpy()[i:i + 7] for i in range(0, 50, 7))
    path = gctx.write_gctx_blocks(tmp_path / "b.gctx", frame.index, frame.columns, blocks)
    np.testing.assert_array_equal(gctx.read_gctx(path).to_numpy(), frame.to_numpy())
    with pytest.raises(ValueError, match="held 14 signatures"):
        gctx.write_gctx_blocks(tmp_path / "c.gctx", frame.index, frame.columns, iter([frame.to_numpy()[:14]]))
    assert not (tmp_path / "c.gctx").exists() and not list(tmp_path.glob(".c.gctx*"))


def test_gct_text_round_trip_and_selection(tmp_path):
    frame = _frame(20, 9)
    path = gctx.write_gct(tmp_path / "m.gct", frame)
    back = gctx.read_gct(path)
    np.testing.assert_allclose(back.to_numpy(), frame.to_numpy(), rtol=1e-5)
    assert back.index.tolist() == frame.index.tolist()
    slab = gctx.read_matrix(path, rid=[frame.columns[3], frame.columns[0]], cid=[frame.index[7]])
    np.testing.assert_allclose(slab.to_numpy(), frame.loc[[frame.index[7]], [frame.columns[3], frame.columns[0]]],
                               rtol=1e-5)


def test_gct_with_annotations_and_version_1_2(tmp_path):
    v13 = ("#1.3\n2\t3\t1\t1\n"
           "id\tpr_gene_symbol\tS1\tS2\tS3\n"
           "pert_id\tna\tA\tB\tB\n"
           "5720\tPSME1\t1.5\t-2\t0\n"
           "23\tABCF1\t0.25\t3\t-1\n")
    (tmp_path / "a.gct").write_text(v13)
    frame = gctx.read_gct(tmp_path / "a.gct")
    assert frame.index.tolist() == ["S1", "S2", "S3"] and frame.columns.tolist() == ["5720", "23"]
    np.testing.assert_allclose(frame.to_numpy(), [[1.5, 0.25], [-2, 3], [0, -1]])
    v12 = "#1.2\n2\t2\nName\tDescription\tS1\tS2\n5720\tx\t1\t2\n23\ty\t3\t4\n"
    (tmp_path / "b.gct").write_text(v12)
    np.testing.assert_allclose(gctx.read_gct(tmp_path / "b.gct").to_numpy(), [[1, 3], [2, 4]])


def test_errors_name_the_file_the_field_and_the_ids(tmp_path, written):
    path, frame, _ = written
    text = tmp_path / "not.gctx"
    text.write_text("sig_id,g-0\n")
    with pytest.raises(DataError, match=r"not\.gctx: not an HDF5 file"):
        gctx.read_gctx(text)
    with pytest.raises(DataError, match="file not found"):
        gctx.read_gctx(tmp_path / "missing.gctx")
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h:
        h.create_dataset("x", data=np.zeros(3))
    with pytest.raises(DataError, match=r"other\.h5: no '0/DATA/0/matrix'"):
        gctx.read_gctx(other)
    with pytest.raises(DataError, match=r"2 of 3 requested id\(s\) are not in '0/META/COL/id', e\.g\. 'nope', 'gone'"):
        gctx.read_gctx(path, cid=[frame.index[0], "nope", "gone"])
    with pytest.raises(DataError, match=r"1 of 1 requested id\(s\) are not in '0/META/ROW/id', e\.g\. '99'"):
        gctx.read_gctx(path, rid=["99"])
    with pytest.raises(DataError, match="repeat some ids, e.g. 'SIG0001:X'"):
        gctx.read_gctx(path, cid=["SIG0001:X", "SIG0001:X"])
    dup = tmp_path / "dup.gctx"
    gctx.write_gctx(dup, _frame(4, 3))
    with h5py.File(dup, "a") as h:
        del h[gctx.COL_ID]
        h.create_dataset(gctx.COL_ID, data=np.array([b"a", b"b", b"a", b"c"]))
    with pytest.raises(DataError, match=r"dup\.gctx: '0/META/COL/id': 1 id\(s\) appear more than once, e\.g\. 'a'"):
        gctx.read_gctx(dup)
    bad_gct = tmp_path / "bad.gct"
    bad_gct.write_text("#1.3\n1\t1\t0\t0\nid\tS1\n5720\tabc\n")
    with pytest.raises(DataError, match="row id '5720', column id 'S1': non-numeric value 'abc'"):
        gctx.read_gct(bad_gct)


@pytest.mark.filterwarnings("ignore::Warning:cmapPy.*")  # its pandas deprecations, not ours
def test_cmappy_parse_agrees_where_it_imports(tmp_path):
    try:
        from cmapPy.pandasGEXpress.parse import parse
    except Exception as exc:  # an install without the dev extra, or pins cmapPy cannot import with
        pytest.skip(f"cmapPy does not import here ({type(exc).__name__}: {exc})")
    # a file without annotation fields: cmapPy 4.0.1 parses those with
    # pd.to_numeric(errors="ignore"), which pandas 3 removed (BENCHMARKS.md, "GCTX slab reading")
    frame = _frame(200, 60, seed=3)
    path = gctx.write_gctx(tmp_path / "plain.gctx", frame, chunks=(16, 32))
    cid, rid = list(frame.index[::-7]), list(frame.columns[::5])
    theirs = parse(str(path), rid=rid, cid=cid).data_df  # genes x signatures
    ours = gctx.read_gctx(path, rid=rid, cid=cid)
    np.testing.assert_array_equal(ours.to_numpy(), theirs.loc[rid, cid].T.to_numpy())
