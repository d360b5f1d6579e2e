"""CMap GCTX (HDF5) and GCT (text) matrices: read a slab, write a file.

Layout of a GCTX file (the Connectivity Map's format, an HDF5 file):

- ``0/DATA/0/matrix``: float32, HDF5 shape (n_columns, n_rows). In CMap's vocabulary the
  *rows* are genes (``rid``) and the *columns* are signatures (``cid``), so the stored
  matrix is signatures x genes.
- ``0/META/ROW/id`` and ``0/META/COL/id``: the gene ids and the signature ids (byte
  strings); further arrays in ``0/META/ROW`` / ``0/META/COL`` are annotations.

Every function here returns **signatures x genes**: a DataFrame indexed by signature id
(``cid``) with one column per gene id (``rid``), the orientation of moakit's feature tables.

:func:`read_gctx` reads only the requested slab: the selected signatures are visited in
storage order, in windows of consecutive storage rows of bounded size (dense windows read as
one hyperslab, sparse ones as a point list), and each window's rows go straight to their
place in the output, so the peak memory is the output plus a few windows (``WINDOW_BYTES``)
and the chunk cache (``CACHE_BYTES``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from moakit.artifacts import atomic_file, atomic_path
from moakit.data.io import DataError

MATRIX = "0/DATA/0/matrix"
ROW_META = "0/META/ROW"
COL_META = "0/META/COL"
ROW_ID = f"{ROW_META}/id"
COL_ID = f"{COL_META}/id"
VERSION = "GCTX1.0"
# Upper bound of the temporary block read per window, bytes. The peak memory of a read is
# about the output + 3 windows (the block, h5py's buffers) + the chunk cache; smaller
# windows were no slower (BENCHMARKS.md, "GCTX slab reading").
WINDOW_BYTES = 16 << 20
# HDF5 chunk cache of the matrix: holds a band of ~1 MiB chunks across the genes (h5py's
# default, 1 MiB, would re-read a chunk for every window that touches it).
CACHE_BYTES = 32 << 20
# A window whose selected rows are at least this share of its span is read as one slice.
DENSE_SHARE = 0.25
# Target size of one HDF5 chunk written by write_gctx, bytes (~1 MiB).
CHUNK_BYTES = 1 << 20


# --------------------------------------------------------------------------------------
# reading


def _open(path: Path):
    import h5py

    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file() or not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file (a GCTX file is HDF5; a text .gct file is read with read_gct)")
    try:
        return h5py.File(path, "r", rdcc_nbytes=CACHE_BYTES, rdcc_nslots=100_003)
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened as HDF5 ({exc})") from None


def _require(handle, path: Path, field: str):
    if field not in handle:
        raise DataError(f"{path}: no {field!r} (not a GCTX file)")
    return handle[field]


def _ids(handle, path: Path, field: str, expected: int) -> np.ndarray:
    """The id array at ``field`` as str, checked for length and duplicates."""
    dset = _require(handle, path, field)
    raw = dset[()]
    if raw.ndim != 1 or len(raw) != expected:
        raise DataError(f"{path}: {field!r} has {raw.size} ids, the matrix {expected} along that axis")
    ids = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in raw], dtype=object)
    ids = np.array([s.strip() for s in ids], dtype=object)
    dup = pd.Index(ids).duplicated()
    if dup.any():
        names = pd.unique(ids[dup])
        shown = ", ".join(repr(s) for s in names[:3])
        raise DataError(f"{path}: {field!r}: {len(names)} id(s) appear more than once, e.g. {shown}")
    return ids


def _matrix(handle, path: Path):
    dset = _require(handle, path, MATRIX)
    if dset.ndim != 2:
        raise DataError(f"{path}: {MATRIX!r} has {dset.ndim} dimensions, expected 2")
    return dset


def gctx_ids(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(signature ids ``cid``, gene ids ``rid``) of a GCTX file, as str arrays in storage order."""
    path = Path(path)
    with _open(path) as handle:
        return _matrix_and_ids(handle, path)[1:]


def read_gctx_meta(path: str | Path, axis: str = "col") -> pd.DataFrame:
    """The annotations of the signatures (``axis="col"``) or genes (``"row"``): one row per
    id (index), one column per further field of ``0/META/COL`` / ``0/META/ROW``."""
    if axis not in ("col", "row"):
        raise ValueError(f"axis must be 'col' or 'row', not {axis!r}")
    path = Path(path)
    group_name = COL_META if axis == "col" else ROW_META
    with _open(path) as handle:
        shape = _matrix(handle, path).shape
        n = shape[0] if axis == "col" else shape[1]
        ids = _ids(handle, path, f"{group_name}/id", n)
        columns = {}
        for name, dset in _require(handle, path, group_name).items():
            if name == "id" or getattr(dset, "ndim", 0) != 1 or len(dset) != n:
                continue
            values = dset[()]
            if values.dtype.kind in "SO":
                values = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)
            columns[name] = values
    return pd.DataFrame(columns, index=pd.Index(ids, name="id"))


def _positions(path: Path, ids: np.ndarray, wanted, field: str) -> np.ndarray:
    """Storage positions of the ``wanted`` ids, in the requested order (all when None)."""
    if wanted is None:
        return np.arange(len(ids))
    wanted = np.asarray([str(w) for w in wanted], dtype=object)
    dup = pd.Index(wanted).duplicated()
    if dup.any():
        shown = ", ".join(repr(s) for s in pd.unique(wanted[dup])[:3])
        raise DataError(f"{path}: the requested ids for {field!r} repeat some ids, e.g. {shown}")
    pos = pd.Index(ids).get_indexer(wanted)
    absent = wanted[pos < 0]
    if len(absent):
        shown = ", ".join(repr(s) for s in absent[:5])
        raise DataError(f"{path}: {len(absent)} of {len(wanted)} requested id(s) are not in {field!r}, e.g. {shown}")
    return pos.astype(np.int64)


def _windows(sorted_pos: np.ndarray, span: int) -> Iterable[tuple[int, int]]:
    """(start, stop) index ranges of ``sorted_pos`` whose storage rows lie within ``span``."""
    i, n = 0, len(sorted_pos)
    while i < n:
        j = int(np.searchsorted(sorted_pos, sorted_pos[i] + span, side="left"))
        yield i, max(j, i + 1)
        i = max(j, i + 1)


def _read_slab(dset, sig_pos: np.ndarray, gene_pos: np.ndarray) -> np.ndarray:
    """float32 (len(sig_pos), len(gene_pos)): dset[sig_pos][:, gene_pos], read window by window."""
    out = np.empty((len(sig_pos), len(gene_pos)), dtype=np.float32)
    if out.size == 0:
        return out
    g_lo, g_hi = int(gene_pos.min()), int(gene_pos.max()) + 1
    gene_take = gene_pos - g_lo
    all_genes = g_hi - g_lo == len(gene_pos) and bool((np.diff(gene_take) == 1).all())
    order = np.argsort(sig_pos, kind="stable")
    sorted_pos = sig_pos[order]
    span = max(1, WINDOW_BYTES // (4 * (g_hi - g_lo)))
    for i, j in _windows(sorted_pos, span):
        rows = sorted_pos[i:j]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if len(rows) >= DENSE_SHARE * (hi - lo):
            block, take = dset[lo:hi, g_lo:g_hi], rows - lo
        else:
            block, take = dset[rows.tolist(), g_lo:g_hi], slice(None)  # h5py point selection: increasing order
        out[order[i:j]] = block[take] if all_genes else block[np.ix_(np.arange(len(block))[take], gene_take)]
    return out


def _matrix_and_ids(handle, path: Path):
    """The matrix dataset of an open GCTX file and its column (signature) and row (gene) ids."""
    dset = _matrix(handle, path)
    n_col, n_row = dset.shape
    return dset, _ids(handle, path, COL_ID, n_col), _ids(handle, path, ROW_ID, n_row)


def read_gctx(path: str | Path, rid: Sequence[str] | None = None, cid: Sequence[str] | None = None) -> pd.DataFrame:
    """Signatures x genes from a GCTX file: the signatures ``cid`` (all when None) and the
    genes ``rid`` (all when None), in the requested order, float32.

    Only that slab is read (see the module's notes); ids are compared as strings. Raises
    DataError for a file that is not HDF5 or lacks ``0/DATA/0/matrix`` or its ids, for
    duplicate ids in the file or the request, and for requested ids the file lacks (how
    many, and a few of them by name)."""
    path = Path(path)
    with _open(path) as handle:
        dset, cids, rids = _matrix_and_ids(handle, path)
        sig_pos = _positions(path, cids, cid, COL_ID)
        gene_pos = _positions(path, rids, rid, ROW_ID)
        values = _read_slab(dset, sig_pos, gene_pos)
    return pd.DataFrame(values, index=pd.Index(cids[sig_pos], name="cid"),
                        columns=pd.Index(rids[gene_pos], name="rid"), copy=False)


def iter_gctx(path: str | Path, rid: Sequence[str] | None = None, chunk_rows: int | None = None
              ) -> Iterator[pd.DataFrame]:
    """Every signature of a GCTX file in storage order, ``chunk_rows`` signatures at a time
    (None / 0: all at once), as :func:`read_gctx` frames of the genes ``rid``: the file is
    opened and its ids read once, and each chunk's slab is read as :func:`read_gctx` reads
    it, so the chunks hold the values of one whole read."""
    path = Path(path)
    with _open(path) as handle:
        dset, cids, rids = _matrix_and_ids(handle, path)
        n_col = dset.shape[0]
        gene_pos = _positions(path, rids, rid, ROW_ID)
        step = chunk_rows or max(n_col, 1)
        for lo in range(0, max(n_col, 1), step):
            sig_pos = np.arange(lo, min(lo + step, n_col), dtype=np.int64)
            yield pd.DataFrame(_read_slab(dset, sig_pos, gene_pos), index=pd.Index(cids[sig_pos], name="cid"),
                               columns=pd.Index(rids[gene_pos], name="rid"), copy=False)


def read_gct(path: str | Path, rid: Sequence[str] | None = None, cid: Sequence[str] | None = None) -> pd.DataFrame:
    """Signatures x genes from a GCT text file (versions #1.2 and #1.3), same orientation
    and selection as :func:`read_gctx` (the whole file is parsed)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="replace") as fh:
        version = fh.readline().strip()
        dims = fh.readline().rstrip("\n\r").split("\t")
    if version not in ("#1.2", "#1.3"):
        raise DataError(f"{path}: not a GCT file (first line {version[:20]!r}, expected '#1.2' or '#1.3')")
    try:
        sizes = [int(x) for x in dims if x.strip()]
        n_row, n_col = sizes[:2]
        n_rmeta, n_cmeta = (sizes[2], sizes[3]) if version == "#1.3" else (1, 0)
    except (ValueError, IndexError):
        raise DataError(f"{path}: line 2: dimensions {dims!r} are not GCT's (rows, columns[, row / column "
                        "annotation counts])") from None
    try:
        table = pd.read_csv(path, sep="\t", skiprows=2, header=0, dtype=str, keep_default_na=False)
    except Exception as exc:  # parser errors
        raise DataError(f"{path}: cannot be read ({exc})") from None
    header = [str(c) for c in table.columns]
    if len(header) != 1 + n_rmeta + n_col or len(table) != n_cmeta + n_row:
        raise DataError(f"{path}: {len(table)} lines x {len(header)} fields after the header, line 2 announces "
                        f"{n_cmeta + n_row} x {1 + n_rmeta + n_col}")
    body = table.iloc[n_cmeta:]
    rids = body.iloc[:, 0].str.strip().to_numpy(dtype=object)
    cids = np.array([c.strip() for c in header[1 + n_rmeta:]], dtype=object)
    for ids, field in ((rids, "row ids"), (cids, "column ids")):
        dup = pd.Index(ids).duplicated()
        if dup.any():
            raise DataError(f"{path}: {field}: {int(dup.sum())} id(s) appear more than once, e.g. "
                            f"{pd.unique(ids[dup])[0]!r}")
    sig_pos = _positions(path, cids, cid, "column ids")
    gene_pos = _positions(path, rids, rid, "row ids")
    raw = body.iloc[gene_pos, 1 + n_rmeta + sig_pos]
    numbers = raw.apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna() & ~raw.isin(["", "NaN", "nan", "NA"])
    if bad.to_numpy().any():
        r, c = (int(v[0]) for v in np.nonzero(bad.to_numpy()))
        raise DataError(f"{path}: row id {rids[gene_pos[r]]!r}, column id {cids[sig_pos[c]]!r}: "
                        f"non-numeric value {raw.iat[r, c]!r}")
    values = numbers.to_numpy(dtype=np.float32).T
    return pd.DataFrame(values, index=pd.Index(cids[sig_pos], name="cid"),
                        columns=pd.Index(rids[gene_pos], name="rid"))


def read_matrix(path: str | Path, rid: Sequence[str] | None = None, cid: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`read_gctx` for HDF5 files, :func:`read_gct` for text (``.gct``) files."""
    path = Path(path)
    if path.suffix.lower() == ".gct":
        return read_gct(path, rid=rid, cid=cid)
    return read_gctx(path, rid=rid, cid=cid)


# --------------------------------------------------------------------------------------
# writing


def default_chunks(n_sig: int, n_gene: int) -> tuple[int, int]:
    """~1 MiB chunks: up to 1024 genes wide, as many signatures as fit, both sizes evened
    out so that the last chunk of each axis is not mostly padding. Reading a subset of
    signatures touches only the chunks of their storage rows, and a subset of the genes
    (e.g. the landmarks stored first) only their bands of genes."""
    def even(n: int, most: int) -> int:
        most = max(1, min(n, most))
        return max(1, -(-n // -(-n // most)))  # n split into ceil(n / most) equal parts

    gene_chunk = even(n_gene, 1024)
    return even(n_sig, CHUNK_BYTES // (4 * gene_chunk)), gene_chunk


def _bytes(values: Iterable) -> np.ndarray:
    encoded = [str(v).encode() for v in values]
    width = max((len(v) for v in encoded), default=1)
    return np.array(encoded, dtype=f"S{max(width, 1)}")


def _write_meta(group, ids: Sequence, meta: pd.DataFrame | None) -> None:
    group.create_dataset("id", data=_bytes(ids))
    if meta is None:
        return
    meta = meta.reindex(pd.Index([str(i) for i in ids]))
    for name in meta.columns:
        if str(name) == "id":
            continue
        col = meta[name]
        if pd.api.types.is_numeric_dtype(col) and not col.isna().any():
            group.create_dataset(str(name), data=col.to_numpy())
        else:
            group.create_dataset(str(name), data=_bytes(col.fillna("").astype(str)))


def write_gctx_blocks(path: str | Path, cid: Sequence[str], rid: Sequence[str], blocks: Iterable[np.ndarray],
                      chunks: tuple[int, int] | None = None, col_meta: pd.DataFrame | None = None,
                      row_meta: pd.DataFrame | None = None, compression: str | None = None) -> Path:
    """Write a GCTX file block by block: ``blocks`` yields float arrays of consecutive
    signatures (each (k, len(rid))), len(cid) rows in all, so a file larger than memory can
    be written. Written to a temporary name and renamed: nothing half-written is left."""
    import h5py

    path = Path(path)
    n_sig, n_gene = len(cid), len(rid)
    chunks = chunks or default_chunks(n_sig, n_gene)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["version"] = VERSION
            dset = handle.create_dataset(MATRIX, shape=(n_sig, n_gene), dtype=np.float32,
                                         chunks=(min(chunks[0], max(n_sig, 1)), min(chunks[1], max(n_gene, 1))),
                                         compression=compression)
            start = 0
            for block in blocks:
                block = np.asarray(block, dtype=np.float32)
                if block.ndim != 2 or block.shape[1] != n_gene or start + len(block) > n_sig:
                    raise ValueError(f"block of shape {block.shape} does not fit rows {start}.. of ({n_sig}, {n_gene})")
                dset[start:start + len(block)] = block
                start += len(block)
            if start != n_sig:
                raise ValueError(f"the blocks held {start} signatures, cid {n_sig}")
            _write_meta(handle.create_group(COL_META), cid, col_meta)
            _write_meta(handle.create_group(ROW_META), rid, row_meta)
    return path


def write_gctx(path: str | Path, frame: pd.DataFrame, chunks: tuple[int, int] | None = None,
               col_meta: pd.DataFrame | None = None, row_meta: pd.DataFrame | None = None,
               compression: str | None = None) -> Path:
    """Write a signatures x genes DataFrame (index: signature ids, columns: gene ids) as a
    GCTX file; ``col_meta`` / ``row_meta``: annotations indexed by those ids (one dataset
    per column). ``chunks``: HDF5 chunk shape (signatures, genes), default
    :func:`default_chunks`."""
    values = frame.to_numpy(dtype=np.float32)
    step = max(1, (64 << 20) // max(1, 4 * values.shape[1]))
    blocks = (values[i:i + step] for i in range(0, len(values), step))
    return write_gctx_blocks(path, list(frame.index), list(frame.columns), blocks, chunks=chunks,
                             col_meta=col_meta, row_meta=row_meta, compression=compression)


def write_gct(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write a signatures x genes DataFrame as a GCT #1.3 text file (no annotations)."""
    path = Path(path)
    n_sig, n_gene = frame.shape
    body = frame.T.copy()
    body.index = pd.Index([str(i) for i in frame.columns], name="id")
    body.columns = [str(c) for c in frame.index]
    with atomic_file(path, "w", encoding="utf-8") as fh:
        fh.write(f"#1.3\n{n_gene}\t{n_sig}\t0\t0\n")
        body.to_csv(fh, sep="\t", float_format="%.6g", lineterminator="\n")
    return path
