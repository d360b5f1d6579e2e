"""New inputs for a trained run: GCTX / GCT files and dataset folders, aligned to the run's
gene columns by Entrez gene id (never by position), and compound-level calls.

Which Entrez id a run's gene column is:
- the ``gene_ids`` its ``columns.json`` records (written when the training data knew them:
  a dataset folder's ``genes.csv``, or lish-moa's ``g-0`` .. ``g-771``); for runs without them:
- a run trained on lish-moa's ``g-0`` .. ``g-771``: the organisers' mapping
  (:func:`moakit.data.column_maps.lish_moa_gene_ids`);
- otherwise the ``genes.csv`` of the data folder the run's manifest records, when it still
  lists the run's columns; else a column named ``g-<digits>`` (how ``moakit dataset l1000``
  names them) is that Entrez id.

Which Entrez id an input gene is: a GCTX / GCT row id (LINCS uses Entrez ids); a dataset
folder's ``genes.csv`` (or the lish-moa mapping for ``g-0`` .. ``g-771``).

A gene the run needs that the input lacks is an error naming the genes, unless
``allow_missing_genes``: it is then filled with 0, the level-5 z-score of "no change" (and
about the middle of every quantile-normalised gene of lish-moa), and the filled genes are
reported. Input genes the run does not use are ignored (counted). A run that needs the
cell (``c-``) block refuses gene-only input with that reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from moakit.data import schema
from moakit.data.chunked import at_rows, chunk_slices, no_single_row_tail
from moakit.data.dataset import Dataset
from moakit.data.io import DataError

IMPUTATION = "0 (the z-score of an unchanged gene)"
MATRIX_SUFFIXES = (".gctx", ".gct", ".h5", ".hdf5")
_ENTREZ_COLUMN = re.compile(r"^g-(\d+)$")


@dataclass
class AlignedInput:
    """Rows ready for the run, and what alignment did."""

    dataset: Dataset
    groups: np.ndarray | None  # compound (pert_id / drug_id) of each row, when known
    notes: list[str]  # what a user should be told (stderr)


def is_matrix_file(path: Path) -> bool:
    return Path(path).suffix.lower() in MATRIX_SUFFIXES


# --------------------------------------------------------------------------------------
# the run's genes


def run_genes(run_dir: Path) -> tuple[list[str], list[str], int]:
    """(gene columns, their Entrez ids, number of cell columns) a run was trained on (a
    blend's first model: every model of a blend is trained on the same data)."""
    from moakit.runs import layout
    from moakit.runs.predict import InferenceError, columns, model_dirs

    model_dir = model_dirs(Path(run_dir))[1][0]
    if not (model_dir / layout.COLUMNS).exists():
        raise InferenceError(f"{model_dir}: no columns.json; the run cannot tell which genes it was "
                             "trained on (retrain it with this moakit version)")
    saved = columns(model_dir)
    genes = [str(g) for g in saved["genes"]]
    return genes, _entrez_of(model_dir, genes, saved.get("gene_ids")), len(saved["cells"])


def _entrez_of(model_dir: Path, genes: list[str], recorded_ids: list | None = None) -> list[str]:
    """The Entrez id of each of the run's gene columns: the ids its columns.json records
    (runs of this moakit trained on data that knew them), else (older runs) the rules of
    the module docstring."""
    from moakit.data.column_maps import lish_moa_gene_ids
    from moakit.runs import layout
    from moakit.runs.predict import InferenceError

    if recorded_ids is not None:
        if len(recorded_ids) != len(genes) or any(v is None or not str(v).strip() for v in recorded_ids):
            raise InferenceError(f"{model_dir / layout.COLUMNS}: damaged: gene_ids must give one Entrez id per "
                                 f"gene column ({len(genes)})")
        return [str(v).strip() for v in recorded_ids]
    if genes == list(schema.GENE_COLUMNS[: len(genes)]) and len(genes) == schema.N_GENES:
        ids = lish_moa_gene_ids()
        return [ids[g] for g in genes]
    recorded = _recorded_gene_info(model_dir, genes)
    if recorded is not None:
        return recorded
    out = []
    for g in genes:
        match = _ENTREZ_COLUMN.match(g)
        if not match:
            raise DataError(f"{model_dir}: gene column {g!r} has no known Entrez id (not lish-moa's g-0..g-771, not "
                            "g-<Entrez id>, and the training data's genes.csv is not found)")
        out.append(match.group(1))
    return out


def _recorded_gene_info(model_dir: Path, genes: list[str]) -> list[str] | None:
    """Entrez ids from the genes.csv of the data folder in the run's manifest, if it still
    describes exactly these columns."""
    from moakit.artifacts import read_json, resolve_recorded
    from moakit.manifest import MANIFEST_FILE

    for folder in (model_dir, model_dir.parent.parent):  # a model run, or a workflow's model
        manifest = folder / MANIFEST_FILE
        if not manifest.exists():
            continue
        try:
            source = read_json(manifest).get("data_source")
            data_dir = Path(resolve_recorded(source, folder)) if source else None
        except (OSError, ValueError, TypeError):
            data_dir = None
        path = data_dir / schema.GENE_INFO if data_dir is not None else None
        if path is not None and path.is_file():
            frame = pd.read_csv(path, dtype=str)
            if "column" in frame.columns and "entrez_id" in frame.columns and frame["column"].tolist() == genes:
                return frame["entrez_id"].str.strip().tolist()
    return None


# --------------------------------------------------------------------------------------
# inputs


def load_input(features: Path, run_dir: Path, allow_missing_genes: bool = False,
               siginfo: Path | None = None, cp_time: float | None = None,
               cp_dose: str | None = None) -> AlignedInput:
    """A GCTX / GCT file or a dataset folder as rows in the run's gene columns, all in
    memory (:func:`open_input` read in one chunk). ``cp_time`` / ``cp_dose``: the value of
    every row (replacing the input's), e.g. 24 and "D1" for a lish-moa run, whose
    vocabularies are lish-moa's, on L1000 profiles."""
    source = open_input(features, run_dir, allow_missing_genes, siginfo, cp_time, cp_dose)
    (_, ds), = source.datasets(0)
    return AlignedInput(ds, source.groups, source.notes)


class InputSource:
    """A GCTX / GCT file or a dataset folder, aligned to the run's genes, as a source of
    chunks: ``n_rows``, ``sig_id`` (every row's), ``groups`` (compound per row, or None),
    ``notes``, ``where``, and ``datasets(chunk_rows)`` yielding (first row, Dataset)."""

    def __init__(self, where: str, sig_id: np.ndarray | None, n_rows: int, notes: list[str],
                 groups: np.ndarray | None, chunks: Callable[[int | None], Iterator[tuple[int, Dataset]]]) -> None:
        self.where, self.sig_id, self.n_rows, self.notes, self.groups = where, sig_id, n_rows, notes, groups
        self._chunks = chunks
        self._meta: dict[str, object] = {}

    def override_meta(self, cp_time: float | None, cp_dose: str | None) -> None:
        """Every row's cp_time / cp_dose set to these values (None: the input's)."""
        for column, value in (("cp_time", cp_time), ("cp_dose", cp_dose)):
            if value is None:
                continue
            if column == "cp_time":
                value = int(value) if float(value).is_integer() else float(value)
            self._meta[column] = value
            self.notes.append(f"{column} = {value} for every row (--{column.replace('_', '-')})")

    def datasets(self, chunk_rows: int | None) -> Iterator[tuple[int, Dataset]]:
        for start, ds in self._chunks(chunk_rows):
            yield start, _override_meta(ds, self._meta) if self._meta else ds


def open_input(features: Path, run_dir: Path, allow_missing_genes: bool = False, siginfo: Path | None = None,
               cp_time: float | None = None, cp_dose: str | None = None) -> InputSource:
    """A GCTX / GCT file or a dataset folder as an :class:`InputSource` in the run's gene
    columns: what needs every row (ids, annotations, the gene alignment) is read first, the
    expression values chunk by chunk."""
    features = Path(features)
    genes, entrez, n_cells = run_genes(run_dir)
    if n_cells:
        from moakit.runs.predict import InferenceError

        raise InferenceError(f"{features}: has gene expression only; the run was trained with {n_cells} cell "
                             "viability (c-) columns as well and needs them. Train a gene-only run (e.g. on the "
                             "output of `moakit dataset l1000`, or on lish-moa's g- columns alone) for such input")
    if features.is_dir():
        source = _folder_source(features, genes, entrez, allow_missing_genes)
    else:
        source = _matrix_source(features, genes, entrez, allow_missing_genes, siginfo, Path(run_dir))
    source.override_meta(cp_time, cp_dose)
    return source


def _override_meta(ds: Dataset, values: dict[str, object]) -> Dataset:
    vocab, meta, codes = dict(ds.vocab), list(ds.meta), {}
    for column, value in values.items():
        vocab[column] = (value,)
        codes[column] = np.zeros(len(ds), np.int8)
        if column not in meta:
            meta.append(column)
    return replace(ds, **codes, vocab=vocab, meta=tuple(c for c in schema.META_COLUMNS if c in meta))


def _align_columns(where: str, have: list[str], entrez: list[str], genes: list[str],
                   allow_missing: bool) -> tuple[np.ndarray, list[str]]:
    """Per run gene, the position of its Entrez id among ``have`` (-1 when missing), and notes."""
    index = pd.Index([str(h) for h in have])
    if index.has_duplicates:
        raise DataError(f"{where}: Entrez id {index[index.duplicated()][0]!r} appears more than once")
    pos = index.get_indexer([str(e) for e in entrez])
    if not (pos >= 0).any():
        raise DataError(f"{where}: none of the run's {len(genes)} genes is among its {len(index)} gene ids (e.g. "
                        f"{', '.join(repr(h) for h in index[:3])}; the run's e.g. {', '.join(map(repr, entrez[:3]))}); "
                        "genes are matched by Entrez gene id")
    missing = [f"{g} (Entrez {e})" for g, e, p in zip(genes, entrez, pos) if p < 0]
    notes = []
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        if not allow_missing:
            raise DataError(f"{where}: {len(missing)} of the run's {len(genes)} genes are missing: {shown}; "
                            f"--allow-missing-genes fills them with {IMPUTATION}")
        notes.append(f"{len(missing)} of the run's {len(genes)} genes are missing from {where}, filled with "
                     f"{IMPUTATION}: {shown}")
    unused = len(index) - int((pos >= 0).sum())
    if unused:
        notes.append(f"{where}: {unused} genes the run does not use are ignored")
    return pos, notes


def _fill(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Columns ``pos`` of ``values`` (-1: a column of zeros), float32."""
    out = np.zeros((len(values), len(pos)), dtype=np.float32)
    ok = pos >= 0
    out[:, ok] = values[:, pos[ok]]
    return out


def _folder_source(folder: Path, genes: list[str], entrez: list[str], allow_missing: bool) -> InputSource:
    """A dataset folder's test_features (train_features when it has none), with its
    compounds (answers/test_drug or train_drug)."""
    from moakit.data.chunked import TableChunks
    from moakit.data.io import find_file, read_gene_info, read_table
    from moakit.runs import layout

    path = find_file(folder, "test_features", required=False)
    split = "test"
    if path is None:
        path, split = find_file(folder, "train_features"), "train"
    table = TableChunks(path)
    info = read_gene_info(folder, [c for c in table.columns if str(c).startswith(schema.GENE_PREFIX)])
    if info is None:
        raise DataError(f"{folder}: its genes' Entrez ids are unknown (no {schema.GENE_INFO}, and the gene columns "
                        "are not lish-moa's g-0 .. g-771)")
    pos, notes = _align_columns(str(path), info["entrez_id"].astype(str).tolist(), entrez, genes, allow_missing)

    def chunks(chunk_rows: int | None) -> Iterator[tuple[int, Dataset]]:
        for start, ds in table.datasets(chunk_rows):
            yield start, replace(ds, genes=_fill(ds.genes, pos), gene_names=list(genes))

    groups = None
    drug_path = find_file(layout.answers_dir(folder) if split == "test" else folder, f"{split}_drug",
                          required=False)
    if drug_path is not None and table.sig_id is not None:
        frame = read_table(drug_path)
        lookup = dict(zip(frame[schema.ID_COLUMN].astype(str), frame[schema.DRUG_COLUMN].astype(str)))
        groups = np.array([lookup.get(s, "") for s in table.sig_id], dtype=object)
    notes.insert(0, f"predicting {path.name} of {folder} ({table.n_rows} rows)")
    return InputSource(str(path), table.sig_id, table.n_rows, notes, groups, chunks)


def _find_siginfo(matrix: Path) -> Path | None:
    found = [p for p in sorted(matrix.parent.iterdir()) if re.search(r"sig_?info", p.name, re.I)
             and p.name.lower().endswith((".txt", ".tsv", ".txt.gz"))]
    return found[0] if len(found) == 1 else None


def _matrix_meta(matrix: Path, cids: np.ndarray, siginfo: Path | None) -> tuple[pd.DataFrame, list[str]]:
    """cp_type / cp_time / cp_dose (those known) and pert_id per signature: from siginfo
    (given, or the one siginfo*.txt beside the matrix), else from the GCTX's own column
    annotations (cp_* or pert_* fields)."""
    from moakit.data.gctx import read_gctx_meta
    from moakit.data.l1000 import dose_label, read_siginfo

    siginfo = siginfo or _find_siginfo(matrix)
    meta = pd.DataFrame(index=pd.Index(cids.astype(str)))
    if siginfo is not None:
        sig = read_siginfo(siginfo).set_index("sig_id").reindex(meta.index)
        if sig["pert_id"].isna().any():
            lacking = meta.index[sig["pert_id"].isna().to_numpy()]
            raise DataError(f"{siginfo}: {len(lacking)} signatures of {matrix.name} have no row, e.g. {lacking[0]!r}")
        meta["cp_type"], meta["pert_id"] = sig["pert_type"], sig["pert_id"]
        meta["cp_time"] = np.rint(sig["hours"].to_numpy(dtype=float))
        meta["cp_dose"] = np.where(sig["pert_type"] == "ctl_vehicle", "vehicle", sig["dose"])
        return meta, [f"signature annotations from {siginfo}"]
    if matrix.suffix.lower() == ".gct":
        return meta, []
    cols = read_gctx_meta(matrix, "col").reindex(meta.index)
    for name in ("cp_type", "cp_time", "cp_dose", "pert_id"):
        alias = {"cp_type": "pert_type", "cp_time": "pert_time", "cp_dose": "pert_dose"}.get(name)
        if name in cols.columns:
            meta[name] = cols[name].to_numpy()
        elif alias in cols.columns:
            meta[name] = cols[alias].to_numpy()
            if name == "cp_dose" and "pert_dose_unit" in cols.columns:
                meta[name] = [dose_label(d, u) for d, u in zip(cols[alias], cols["pert_dose_unit"])]
    return meta, [f"signature annotations from {matrix.name}: {', '.join(meta.columns)}"] if len(meta.columns) else []


def _matrix_source(path: Path, genes: list[str], entrez: list[str], allow_missing: bool,
                   siginfo: Path | None, run_dir: Path) -> InputSource:
    """Every signature of a GCTX / GCT file; only the run's genes are read, a GCTX's chunk
    by chunk (a GCT text file is parsed whole)."""
    from moakit.data.gctx import gctx_ids, iter_gctx, read_matrix

    whole = None
    if path.suffix.lower() == ".gct":
        whole = read_matrix(path)
        cids, rids = whole.index.to_numpy(dtype=object), whole.columns.to_numpy(dtype=object)
    else:
        cids, rids = gctx_ids(path)
    pos, notes = _align_columns(str(path), list(rids), entrez, genes, allow_missing)
    present = [str(rids[p]) for p in pos if p >= 0]
    local = np.full(len(pos), -1)
    local[pos >= 0] = np.arange(len(present))
    meta, more = _matrix_meta(path, cids, siginfo)
    _neutral_controls(meta, run_dir)
    groups = meta["pert_id"].to_numpy(dtype=object) if "pert_id" in meta.columns else None
    meta = meta.drop(columns="pert_id", errors="ignore").reset_index(drop=True)
    sig_id = cids.astype(str)

    def blocks(chunk_rows: int | None) -> Iterator[np.ndarray]:
        if whole is not None:
            values = whole[present].to_numpy()
            for rows in chunk_slices(len(values), chunk_rows):
                yield values[rows]
        else:
            blocks_ = (block.to_numpy() for block in iter_gctx(path, rid=present, chunk_rows=chunk_rows))
            yield from no_single_row_tail(blocks_, len, lambda a, b: np.concatenate([a, b]))

    def chunks(chunk_rows: int | None) -> Iterator[tuple[int, Dataset]]:
        from moakit.data.io import parse_features

        start = 0
        for values in blocks(chunk_rows):
            stop = start + len(values)
            table = pd.concat([pd.DataFrame({schema.ID_COLUMN: sig_id[start:stop]}),
                               meta.iloc[start:stop].reset_index(drop=True),
                               pd.DataFrame(_fill(values, local), columns=genes, copy=False)], axis=1)
            yield start, at_rows(start, str(path), lambda: parse_features(path, table, layout=schema.PANEL_LAYOUT))
            start = stop

    notes = [f"predicting {len(cids)} signatures of {path}", *more, *notes]
    return InputSource(str(path), sig_id, len(cids), notes, groups, chunks)


def _neutral_controls(meta: pd.DataFrame, run_dir: Path) -> None:
    """Vehicle controls are predicted 0 whatever their inputs: a control's time / dose the
    run never saw (e.g. "vehicle" for a run trained on treated signatures only) is set to
    the run's first value, so that it is not refused as an unseen value."""
    from moakit.runs.predict import model_dirs, run_panel

    if "cp_type" not in meta.columns:
        return
    control = (meta["cp_type"] == schema.CONTROL_TYPE).to_numpy()
    if not control.any():
        return
    vocab = run_panel(model_dirs(run_dir)[1][0]).get("vocab", {})
    for column in ("cp_time", "cp_dose"):
        known = list(vocab.get(column) or [])
        if column in meta.columns and known:
            values = meta[column].to_numpy(dtype=object)
            unseen = control & ~pd.Series(values).isin(known).to_numpy()
            values[unseen] = known[0]
            meta[column] = values


# --------------------------------------------------------------------------------------
# compound-level calls


def read_groups(path: Path, sig_id: np.ndarray) -> np.ndarray:
    """A ``--groups`` table: sig_id and one of drug_id / pert_id / compound, every
    signature of the input listed."""
    from moakit.data.io import read_table

    frame = pd.read_csv(path, sep=None, engine="python", dtype=str) if path.suffix.lower() in (".txt", ".tsv") \
        else read_table(path)
    column = next((c for c in (schema.DRUG_COLUMN, "pert_id", "compound") if c in frame.columns), None)
    if schema.ID_COLUMN not in frame.columns or column is None:
        raise DataError(f"{path}: needs a sig_id column and one of drug_id, pert_id, compound")
    lookup = dict(zip(frame[schema.ID_COLUMN].astype(str), frame[column].astype(str)))
    missing = [s for s in sig_id if str(s) not in lookup]
    if missing:
        raise DataError(f"{path}: {len(missing)} signatures have no row, e.g. {missing[0]!r}")
    return np.array([lookup[str(s)] for s in sig_id], dtype=object)


class CompoundMeans:
    """Per compound, the sums and counts of its signatures' probabilities, kept across
    chunks: rows are added one by one in input order (``numpy.add.at``), so the means are
    the same bit for bit however the rows were chunked. Control signatures and rows without
    a compound are left out."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.index: dict[object, int] = {}
        self.sums = np.zeros((0, len(self.names)), np.float64)
        self.counts = np.zeros(0, np.int64)

    def add(self, values: np.ndarray, groups: np.ndarray, is_control: np.ndarray | None = None) -> None:
        keep = pd.Series(groups, dtype=object).fillna("").astype(str).ne("").to_numpy().copy()
        if is_control is not None:
            keep &= ~np.asarray(is_control, bool)
        labels = np.asarray(groups, dtype=object)[keep]
        codes = np.fromiter((self.index.setdefault(g, len(self.index)) for g in labels), np.int64, len(labels))
        grow = len(self.index) - len(self.counts)
        if grow:
            self.sums = np.vstack([self.sums, np.zeros((grow, len(self.names)))])
            self.counts = np.concatenate([self.counts, np.zeros(grow, np.int64)])
        np.add.at(self.sums, codes, np.asarray(values, np.float64)[keep])
        np.add.at(self.counts, codes, 1)

    def calls(self, top: int) -> pd.DataFrame:
        """Per compound (sorted), the ``top`` MoAs by the mean probability: compound,
        signatures, rank, moa, probability."""
        order_c = sorted(self.index, key=lambda g: g)
        rows_c = np.array([self.index[g] for g in order_c], np.int64)
        mean = self.sums[rows_c] / np.maximum(self.counts[rows_c], 1)[:, None]
        k = max(1, min(int(top), len(self.names)))
        order = np.argsort(-mean, axis=1, kind="stable")[:, :k]
        rows = len(order_c) * k
        return pd.DataFrame({
            "compound": np.repeat(np.asarray(order_c, dtype=object), k),
            "signatures": np.repeat(self.counts[rows_c], k),
            "rank": np.tile(np.arange(1, k + 1), len(order_c)),
            "moa": np.asarray(self.names, dtype=object)[order].reshape(rows),
            "probability": np.take_along_axis(mean, order, axis=1).reshape(rows),
        })


def compound_calls(predictions: pd.DataFrame, groups: np.ndarray, top: int,
                   is_control: np.ndarray | None = None) -> pd.DataFrame:
    """Per compound, the ``top`` MoAs by the mean probability over its signatures (doses,
    times, cell lines, replicates): compound, signatures, rank, moa, probability. Control
    signatures and rows without a compound are left out (:class:`CompoundMeans`)."""
    names = [c for c in predictions.columns if c != schema.ID_COLUMN]
    means = CompoundMeans(names)
    means.add(predictions[names].to_numpy(dtype=np.float64), groups, is_control)
    return means.calls(top)


def compound_file(out: Path) -> Path:
    """Where the compound calls go: beside the per-signature file, ``<name>_by_compound.csv``."""
    name = out.name
    for suffix in (".csv.gz", ".csv.zip", ".csv", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}_by_compound.csv")
