"""New inputs for a trained run: GCTX / GCT files and dataset folders, aligned to the run's
gene columns by Entrez gene id (never by position), and compound-level calls.

Which Entrez id a run's gene column is:
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moakit.data import schema
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
    from moakit import inference

    _, dirs, _ = inference._model_dirs(Path(run_dir))
    model_dir = dirs[0]
    from moakit.runs import layout

    if not (model_dir / layout.COLUMNS).exists():
        raise inference.InferenceError(f"{model_dir}: no columns.json; the run cannot tell which genes it was "
                                       "trained on (retrain it with this moakit version)")
    saved = inference._columns(model_dir)
    genes = [str(g) for g in saved["genes"]]
    return genes, _entrez_of(model_dir, genes), len(saved["cells"])


def _entrez_of(model_dir: Path, genes: list[str]) -> list[str]:
    from moakit.data.column_maps import lish_moa_gene_ids

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
    """A GCTX / GCT file or a dataset folder as rows in the run's gene columns.
    ``cp_time`` / ``cp_dose``: the value of every row (replacing the input's), e.g. 24 and
    "D1" for a lish-moa run, whose vocabularies are lish-moa's, on L1000 profiles."""
    aligned = _load_input(features, run_dir, allow_missing_genes, siginfo)
    return _override_meta(aligned, cp_time, cp_dose) if cp_time is not None or cp_dose is not None else aligned


def _override_meta(aligned: AlignedInput, cp_time, cp_dose) -> AlignedInput:
    ds = aligned.dataset.subset(np.arange(len(aligned.dataset)))
    vocab, meta = dict(ds.vocab), list(ds.meta)
    for column, value in (("cp_time", cp_time), ("cp_dose", cp_dose)):
        if value is None:
            continue
        if column == "cp_time":
            value = int(value) if float(value).is_integer() else float(value)
        vocab[column] = (value,)
        setattr(ds, column, np.zeros(len(ds), np.int8))
        if column not in meta:
            meta.append(column)
        aligned.notes.append(f"{column} = {value} for every row (--{column.replace('_', '-')})")
    ds.vocab, ds.meta = vocab, tuple(c for c in schema.META_COLUMNS if c in meta)
    return AlignedInput(ds, aligned.groups, aligned.notes)


def _load_input(features: Path, run_dir: Path, allow_missing_genes: bool, siginfo: Path | None) -> AlignedInput:
    features = Path(features)
    genes, entrez, n_cells = run_genes(run_dir)
    if n_cells:
        from moakit.inference import InferenceError

        raise InferenceError(f"{features}: has gene expression only; the run was trained with {n_cells} cell "
                             "viability (c-) columns as well and needs them. Train a gene-only run (e.g. on the "
                             "output of `moakit dataset l1000`, or on lish-moa's g- columns alone) for such input")
    if features.is_dir():
        return _from_folder(features, genes, entrez, allow_missing_genes)
    return _from_matrix(features, genes, entrez, allow_missing_genes, siginfo, Path(run_dir))


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


def _from_folder(folder: Path, genes: list[str], entrez: list[str], allow_missing: bool) -> AlignedInput:
    """A dataset folder's test_features (train_features when it has none), with its
    compounds (answers/test_drug or train_drug)."""
    from moakit.data.io import find_file, read_features, read_gene_info, read_table
    from moakit.runs import layout

    path = find_file(folder, "test_features", required=False)
    split = "test"
    if path is None:
        path, split = find_file(folder, "train_features"), "train"
    ds = read_features(path)
    info = read_gene_info(folder, list(ds.gene_names))
    if info is None:
        raise DataError(f"{folder}: its genes' Entrez ids are unknown (no {schema.GENE_INFO}, and the gene columns "
                        "are not lish-moa's g-0 .. g-771)")
    pos, notes = _align_columns(str(path), info["entrez_id"].astype(str).tolist(), entrez, genes, allow_missing)
    aligned = ds.subset(np.arange(len(ds)))
    aligned.genes, aligned.gene_names = _fill(ds.genes, pos), list(genes)
    groups = None
    drug_path = find_file(layout.answers_dir(folder) if split == "test" else folder, f"{split}_drug",
                          required=False)
    if drug_path is not None:
        frame = read_table(drug_path)
        lookup = dict(zip(frame[schema.ID_COLUMN].astype(str), frame[schema.DRUG_COLUMN].astype(str)))
        groups = np.array([lookup.get(s, "") for s in ds.sig_id], dtype=object)
    notes.insert(0, f"predicting {path.name} of {folder} ({len(ds)} rows)")
    return AlignedInput(aligned, groups, notes)


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


def _from_matrix(path: Path, genes: list[str], entrez: list[str], allow_missing: bool,
                 siginfo: Path | None, run_dir: Path) -> AlignedInput:
    """Every signature of a GCTX / GCT file; only the run's genes are read."""
    from moakit.data.gctx import gctx_ids, read_matrix
    from moakit.data.io import parse_features

    if path.suffix.lower() == ".gct":
        whole = read_matrix(path)
        cids, rids = whole.index.to_numpy(dtype=object), whole.columns.to_numpy(dtype=object)
    else:
        cids, rids = gctx_ids(path)
    pos, notes = _align_columns(str(path), list(rids), entrez, genes, allow_missing)
    present = [str(rids[p]) for p in pos if p >= 0]
    values = read_matrix(path, rid=present).to_numpy()
    local = np.full(len(pos), -1)
    local[pos >= 0] = np.arange(len(present))
    meta, more = _matrix_meta(path, cids, siginfo)
    _neutral_controls(meta, run_dir)
    frame = pd.DataFrame(_fill(values, local), columns=genes, copy=False)
    table = pd.concat([pd.DataFrame({schema.ID_COLUMN: cids.astype(str)}),
                       meta.drop(columns="pert_id", errors="ignore").reset_index(drop=True), frame], axis=1)
    ds = parse_features(path, table, layout=schema.PANEL_LAYOUT)
    groups = meta["pert_id"].to_numpy(dtype=object) if "pert_id" in meta.columns else None
    return AlignedInput(ds, groups, [f"predicting {len(cids)} signatures of {path}", *more, *notes])


def _neutral_controls(meta: pd.DataFrame, run_dir: Path) -> None:
    """Vehicle controls are predicted 0 whatever their inputs: a control's time / dose the
    run never saw (e.g. "vehicle" for a run trained on treated signatures only) is set to
    the run's first value, so that it is not refused as an unseen value."""
    from moakit import inference

    if "cp_type" not in meta.columns:
        return
    control = (meta["cp_type"] == schema.CONTROL_TYPE).to_numpy()
    if not control.any():
        return
    _, dirs, _ = inference._model_dirs(run_dir)
    vocab = inference.run_panel(dirs[0]).get("vocab", {}) if hasattr(inference, "run_panel") else {}
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


def compound_calls(predictions: pd.DataFrame, groups: np.ndarray, top: int,
                   is_control: np.ndarray | None = None) -> pd.DataFrame:
    """Per compound, the ``top`` MoAs by the mean probability over its signatures (doses,
    times, cell lines, replicates): compound, signatures, rank, moa, probability. Control
    signatures and rows without a compound are left out."""
    names = [c for c in predictions.columns if c != schema.ID_COLUMN]
    keep = pd.Series(groups).fillna("").astype(str).ne("").to_numpy().copy()
    if is_control is not None:
        keep &= ~np.asarray(is_control, bool)
    values = predictions[names].to_numpy(dtype=np.float64)[keep]
    frame = pd.DataFrame(values, columns=names)
    frame["compound"] = np.asarray(groups, dtype=object)[keep]
    mean = frame.groupby("compound", sort=True)[names].mean()
    size = frame.groupby("compound", sort=True).size()
    k = max(1, min(int(top), len(names)))
    order = np.argsort(-mean.to_numpy(), axis=1, kind="stable")[:, :k]
    rows = len(mean) * k
    return pd.DataFrame({
        "compound": np.repeat(mean.index.to_numpy(), k),
        "signatures": np.repeat(size.to_numpy(), k),
        "rank": np.tile(np.arange(1, k + 1), len(mean)),
        "moa": np.asarray(names, dtype=object)[order].reshape(rows),
        "probability": np.take_along_axis(mean.to_numpy(), order, axis=1).reshape(rows),
    })


def compound_file(out: Path) -> Path:
    """Where the compound calls go: beside the per-signature file, ``<name>_by_compound.csv``."""
    name = out.name
    for suffix in (".csv.gz", ".csv.zip", ".csv", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}_by_compound.csv")
