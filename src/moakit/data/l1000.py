"""A LINCS L1000 folder -> a moakit dataset folder (``moakit dataset l1000``).

The source folder holds what LINCS distributes (CMap 2020 "beta" release names; found by
pattern, or given explicitly): a level-5 matrix (``*.gctx``, or a ``*.gct`` text file),
``siginfo*.txt`` (one row per signature: sig_id, pert_id, pert_type, cell_iname, pert_time,
pert_dose, ...), ``geneinfo*.txt`` (gene_id, gene_symbol, feature_space) and
``compoundinfo*.txt`` (pert_id, moa; several MoAs joined by ``|``, possibly one row per
target). The output is the moakit dataset folder (Parquet): compounds (``pert_id``) are the
groups; each MoA with at least ``min_compounds`` compounds is a scored target; whole
compounds are held out as the test split. Only the matrix columns (signatures) and rows
(genes) that survive the filters are read.

Judgments, each reported (stderr and ``dataset.json``):
- siginfo rows without a matrix column are ignored (the real siginfo covers every matrix
  of the release); matrix columns without a siginfo row are dropped;
- signatures of other perturbation types than trt_cp (and ctl_vehicle with
  ``keep_controls``) are dropped;
- treated signatures of a compound without a MoA (no compoundinfo row, or an empty ``moa``)
  are dropped: they have no label to learn from;
- a compound's MoAs are the union over its compoundinfo rows;
- a compound whose MoAs were all dropped (too few compounds) stays, with all targets 0;
- the dropped MoAs with a positive training signature become the non-scored (auxiliary)
  targets, ``train_targets_nonscored`` (as lish-moa's non-scored targets: MoAs too rare to
  score), which the models with a non-scored stage or pre-training need.

Finding and reading the source files is :mod:`moakit.data.l1000_files`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from moakit.artifacts import atomic_dir
from moakit.data import schema
from moakit.data.io import DataError
from moakit.data.l1000_files import (  # noqa: F401  (find_files, read_siginfo, dose_label re-exported)
    EXAMPLES, L1000Files, shown_values, dose_label, find_files, read_compound_moas, read_geneinfo, read_siginfo,
)
from moakit.runs import layout

TREATED, CONTROL = "trt_cp", "ctl_vehicle"


@dataclass
class Filters:
    """What ``moakit dataset l1000`` keeps."""

    cells: list[str] = field(default_factory=list)  # cell_iname; empty: all
    keep_controls: bool = False
    times: list[float] = field(default_factory=list)  # hours; empty: all
    doses: list[str] = field(default_factory=list)  # "10 uM" or "10"; empty: all
    genes: str = "landmark"  # or "all"
    min_compounds: int = 5
    test_fraction: float = 0.2
    seed: int = 0


# --------------------------------------------------------------------------------------
# the dataset


def _matrix_ids(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(signature ids, gene ids) of the matrix, without reading its values (a GCT's first
    column and header only)."""
    from moakit.data.gctx import gctx_ids, read_gct

    if path.suffix.lower() != ".gct":
        return gctx_ids(path)
    frame = read_gct(path)
    return frame.index.to_numpy(dtype=object), frame.columns.to_numpy(dtype=object)


def _match(sig: pd.DataFrame, cids: np.ndarray, files: L1000Files, info: dict, log) -> pd.DataFrame:
    """Only the siginfo rows with a matrix column; both kinds of mismatch counted."""
    in_matrix = sig["sig_id"].isin(set(cids))
    not_in_siginfo = np.setdiff1d(cids.astype(str), sig["sig_id"].to_numpy(dtype=str))
    info["siginfo_rows_without_matrix_column"] = int((~in_matrix).sum())
    info["matrix_columns_without_siginfo_row"] = int(len(not_in_siginfo))
    if not in_matrix.any():
        raise DataError(f"{files.siginfo}: none of its {len(sig)} sig_ids is a column of {files.matrix.name} "
                        f"(matrix columns e.g. {shown_values(cids[:EXAMPLES])})")
    if (~in_matrix).any():
        log(f"{files.siginfo.name}: {int((~in_matrix).sum())} of {len(sig)} rows have no column in "
            f"{files.matrix.name} (ignored), e.g. {shown_values(sig.loc[~in_matrix, 'sig_id'].head(EXAMPLES))}")
    if len(not_in_siginfo):
        log(f"{files.matrix.name}: {len(not_in_siginfo)} of {len(cids)} columns have no row in "
            f"{files.siginfo.name} (dropped), e.g. {shown_values(not_in_siginfo[:EXAMPLES])}")
    return sig[in_matrix]


def _matches_dose(labels: pd.Series, wanted: str) -> pd.Series:
    wanted = " ".join(str(wanted).split())
    try:
        number = float(wanted.split()[0])
    except (ValueError, IndexError):
        return labels.str.lower() == wanted.lower()
    numbers = pd.to_numeric(labels.str.split().str[0], errors="coerce")
    same = np.isclose(numbers, float(f"{number:.3g}"), rtol=1e-6)
    if len(wanted.split()) > 1:
        same &= (labels.str.lower() == dose_label(number, wanted.split(None, 1)[1]).lower()).to_numpy()
    return pd.Series(same, index=labels.index)


def _filter(sig: pd.DataFrame, f: Filters, files: L1000Files, info: dict, log) -> pd.DataFrame:
    """pert_type, cell line, time and dose filters; a filter value matching nothing is an error."""
    types = [TREATED, CONTROL] if f.keep_controls else [TREATED]
    other = sig.loc[~sig["pert_type"].isin(types), "pert_type"].value_counts()
    info["dropped_pert_types"] = {str(k): int(v) for k, v in other.items()}
    if len(other):
        log(f"dropped {int(other.sum())} signatures of other perturbation types: "
            + ", ".join(f"{k} ({v})" for k, v in other.items())
            + ("; --keep-controls keeps the vehicle controls" if CONTROL in other.index else ""))
    sig = sig[sig["pert_type"].isin(types)]
    control = sig["pert_type"] == CONTROL
    if f.cells:
        known = sorted(sig["cell_iname"].unique())
        for cell in f.cells:
            if cell not in known:
                raise DataError(f"{files.siginfo}: --cell {cell!r}: no signature of that cell line "
                                f"(cell lines: {', '.join(known[:20])})")
        sig, control = sig[sig["cell_iname"].isin(f.cells)], control[sig["cell_iname"].isin(f.cells)]
    if f.times:
        keep = np.zeros(len(sig), bool)
        for t in f.times:
            hit = np.isclose(sig["hours"].to_numpy(dtype=float), float(t))
            if not hit.any():
                known = sorted(set(sig["hours"].dropna()))
                raise DataError(f"{files.siginfo}: --time {t:g}: no signature at that time "
                                f"(hours: {', '.join(f'{h:g}' for h in known)})")
            keep |= hit
        sig, control = sig[keep], control[keep]
    if f.doses:
        keep = control.to_numpy().copy()  # controls have no dose
        for d in f.doses:
            hit = _matches_dose(sig["dose"], d).to_numpy() & ~control.to_numpy()
            if not hit.any():
                known = sorted(set(sig.loc[~control, "dose"]), key=lambda s: (len(s.split()) < 1, s))
                raise DataError(f"{files.siginfo}: --dose {d!r}: no signature at that dose "
                                f"(doses: {', '.join(known[:20])})")
            keep |= hit
        sig = sig[keep]
    if not (sig["pert_type"] == TREATED).any():
        raise DataError(f"{files.siginfo}: no treated (trt_cp) signature left after the filters")
    return sig


def _labels(sig: pd.DataFrame, moas: dict[str, list[str]], f: Filters, files: L1000Files, info: dict, log):
    """(signatures kept, their 0/1 targets, target columns, the dropped MoAs' 0/1 matrix,
    their column -> MoA): unannotated compounds dropped, MoAs with fewer than
    ``min_compounds`` compounds dropped from the scored targets and listed."""
    from moakit.data.simulate_l1000 import moa_column

    treated = sig["pert_type"] == TREATED
    absent = sorted(set(sig.loc[treated & ~sig["pert_id"].isin(moas.keys()), "pert_id"]))
    empty = sorted(p for p in set(sig.loc[treated, "pert_id"]) if p in moas and not moas[p])
    info["compounds_without_compoundinfo_row"] = len(absent)
    info["compounds_with_empty_moa"] = len(empty)
    if absent:
        log(f"{files.compoundinfo.name}: {len(absent)} compound(s) of the signatures have no row (their signatures "
            f"are dropped), e.g. {shown_values(absent)}")
    if empty:
        log(f"{files.compoundinfo.name}: {len(empty)} compound(s) have an empty moa (their signatures are "
            f"dropped), e.g. {shown_values(empty)}")
    sig = sig[~(treated & sig["pert_id"].isin(set(absent) | set(empty)))]
    treated = sig["pert_type"] == TREATED
    if not treated.any():
        raise DataError(f"{files.compoundinfo}: no compound of the selected signatures has a MoA")
    compounds = sorted(set(sig.loc[treated, "pert_id"]))
    counts = pd.Series([m for p in compounds for m in moas[p]]).value_counts()
    kept = sorted((m for m, n in counts.items() if n >= f.min_compounds), key=moa_column)
    dropped = [{"moa": m, "compounds": int(n)} for m, n in counts.items() if n < f.min_compounds]
    info["dropped_targets"] = dropped
    if dropped:
        log(f"dropped {len(dropped)} MoA(s) with fewer than {f.min_compounds} compounds: "
            + ", ".join(f"{d['moa']} ({d['compounds']})" for d in dropped))
    if not kept:
        top = counts.index[0]
        raise DataError(f"{files.compoundinfo}: no MoA has {f.min_compounds} compounds after the filters (the most: "
                        f"{top!r}, {int(counts.iloc[0])}); lower --min-compounds or widen the filters")
    columns = [moa_column(m) for m in kept]
    clash = pd.Series(columns).duplicated()
    if clash.any() or "" in columns:
        j = int(np.flatnonzero(clash.to_numpy())[0]) if clash.any() else columns.index("")
        raise DataError(f"{files.compoundinfo}: MoA {kept[j]!r} gives the target column {columns[j]!r}, "
                        "as another MoA does (or an empty one); rename one")
    info["targets"] = dict(zip(columns, kept))
    rare = sorted((d["moa"] for d in dropped), key=moa_column)
    Y, Y_rare = (_indicator(sig, treated, moas, names) for names in (kept, rare))
    rare_columns = _unique_columns([moa_column(m) for m in rare], set(columns))
    return sig, Y, columns, Y_rare, dict(zip(rare_columns, rare))


def _indicator(sig: pd.DataFrame, treated: pd.Series, moas: dict[str, list[str]], names: list[str]) -> np.ndarray:
    """0/1 per signature (row) and MoA (``names``): the signature's compound has that MoA."""
    index = {m: j for j, m in enumerate(names)}
    Y = np.zeros((len(sig), len(names)), dtype=np.uint8)
    for i, (pert, is_treated) in enumerate(zip(sig["pert_id"], treated)):
        if is_treated:
            for m in moas[pert]:
                if m in index:
                    Y[i, index[m]] = 1
    return Y


def _unique_columns(columns: list[str], taken: set[str]) -> list[str]:
    """Non-scored column names, made distinct from the scored ones and each other by a
    numeric suffix (two rare MoAs whose names differ only in punctuation)."""
    out, seen = [], set(taken)
    for c in columns:
        name, k = c or "moa", 2
        while name in seen:
            name, k = f"{c or 'moa'}_{k}", k + 1
        seen.add(name)
        out.append(name)
    return out


def _split(sig: pd.DataFrame, Y: np.ndarray, f: Filters) -> np.ndarray:
    """Test mask: whole treated compounds, about ``test_fraction`` of the treated rows, and
    that share of the controls row-wise. A compound whose move would leave one of its
    targets without a positive training compound stays in training (as the simulator)."""
    rng = np.random.default_rng([int(f.seed), 0x6C31])
    is_test = np.zeros(len(sig), bool)
    if f.test_fraction <= 0:
        return is_test
    control = (sig["pert_type"] == CONTROL).to_numpy()
    ctrl_rows = np.flatnonzero(control)
    is_test[rng.permutation(ctrl_rows)[: int(round(f.test_fraction * len(ctrl_rows)))]] = True
    codes, names = pd.factorize(sig["pert_id"])
    codes = np.where(control, -1, codes)
    n_comp = len(names)
    sizes = np.bincount(codes[codes >= 0], minlength=n_comp)
    comp_y = np.zeros((n_comp, Y.shape[1]), dtype=np.uint8)
    comp_y[codes[codes >= 0]] = Y[codes >= 0]
    per_target = comp_y[sizes > 0].sum(axis=0).astype(int)
    goal = f.test_fraction * int((~control).sum())
    in_test, taken = np.zeros(n_comp, bool), 0
    for c in rng.permutation(n_comp):
        if taken >= goal:
            break
        if sizes[c] == 0 or taken + sizes[c] > goal * 1.05 + 3:
            continue
        targets = np.flatnonzero(comp_y[c])
        if (per_target[targets] <= 1).any():
            continue
        per_target[targets] -= 1
        in_test[c] = True
        taken += sizes[c]
    is_test |= (codes >= 0) & in_test[np.maximum(codes, 0)]
    return is_test


def _select_genes(rids: np.ndarray, geneinfo: pd.DataFrame, which: str, files: L1000Files,
                  info: dict, log) -> pd.DataFrame:
    """gene_id, symbol of the genes to keep, in geneinfo's order (then the matrix's)."""
    rid_set = set(map(str, rids))
    if which == "landmark":
        if "feature_space" not in geneinfo.columns:
            raise DataError(f"{files.geneinfo}: no 'feature_space' column, so the landmark genes are unknown; "
                            "use --genes all")
        wanted = geneinfo[geneinfo["feature_space"].str.lower() == "landmark"]
        if wanted.empty:
            raise DataError(f"{files.geneinfo}: no gene has feature_space 'landmark'")
        missing = wanted.loc[~wanted["gene_id"].isin(rid_set), "gene_id"]
        if len(missing) == len(wanted):
            raise DataError(f"{files.matrix}: none of the {len(wanted)} landmark genes of {files.geneinfo.name} is a "
                            f"row of the matrix (e.g. {shown_values(missing)})")
        if len(missing):
            log(f"{files.matrix.name}: {len(missing)} of {len(wanted)} landmark genes are not rows of the matrix "
                f"(left out), e.g. {shown_values(missing)}")
        info["landmark_genes_missing"] = int(len(missing))
        chosen = wanted[wanted["gene_id"].isin(rid_set)]
    elif which == "all":
        known = geneinfo[geneinfo["gene_id"].isin(rid_set)]
        rest = [r for r in map(str, rids) if r not in set(known["gene_id"])]
        chosen = pd.concat([known, pd.DataFrame({"gene_id": rest})], ignore_index=True)
    else:
        raise ValueError(f"genes must be 'landmark' or 'all', not {which!r}")
    symbol = chosen["gene_symbol"] if "gene_symbol" in chosen.columns else pd.Series([""] * len(chosen))
    return pd.DataFrame({"gene_id": chosen["gene_id"].astype(str).to_numpy(),
                         "symbol": symbol.fillna("").astype(str).to_numpy()})


def _features(sig: pd.DataFrame, values: np.ndarray, gene_columns: list[str], files: L1000Files) -> pd.DataFrame:
    """sig_id, cp_type, cp_time (hours, int), cp_dose (label; "vehicle" for controls), genes."""
    control = (sig["pert_type"] == CONTROL).to_numpy()
    hours = sig["hours"].to_numpy(dtype=float)
    dose = sig["dose"].to_numpy(dtype=object)
    for bad, what in ((~np.isfinite(hours), "pert_time"), ((dose == "") & ~control, "pert_dose")):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{files.siginfo}: sig_id {sig['sig_id'].iloc[row]!r} has no {what}")
    finite = np.isfinite(values)
    if not finite.all():
        r, c = (int(v[0]) for v in np.nonzero(~finite))
        raise DataError(f"{files.matrix}: signature {sig['sig_id'].iloc[r]!r}, gene {gene_columns[c][2:]!r}: value "
                        f"{values[r, c]} is not finite")
    frame = pd.DataFrame({"sig_id": sig["sig_id"].to_numpy(dtype=str),
                          "cp_type": sig["pert_type"].to_numpy(dtype=str),
                          "cp_time": np.rint(hours).astype(np.int64),
                          "cp_dose": np.where(control, "vehicle", dose).astype(str)})
    genes = pd.DataFrame(values, columns=gene_columns, copy=False)
    return pd.concat([frame, genes], axis=1)


def _write_split(folder: Path, split: str, features: pd.DataFrame, Y: np.ndarray, columns: list[str],
                 drug: np.ndarray) -> None:
    target_dir = folder if split == "train" else layout.answers_dir(folder)
    target_dir.mkdir(exist_ok=True)
    ids = features["sig_id"].to_numpy()
    features.to_parquet(folder / f"{split}_features.parquet", index=False)
    targets = pd.DataFrame(Y.astype(np.int64), columns=columns)
    targets.insert(0, "sig_id", ids)
    targets.to_parquet(target_dir / f"{split}_targets_scored.parquet", index=False)
    pd.DataFrame({"sig_id": ids, "drug_id": drug}).to_parquet(target_dir / f"{split}_drug.parquet", index=False)


def _copy_truth(src: Path, folder: Path, columns: list[str], gene_columns: list[str]) -> bool:
    """A simulated source's planted truth (answers/signatures.npz), restricted to the kept
    targets and genes (genes it does not cover: 0)."""
    from moakit.data.simulate_l1000 import N_DIRECT_GENES, SIGNATURES_FILE

    path = layout.answers_dir(src) / SIGNATURES_FILE
    if not path.is_file():
        return False
    with np.load(path, allow_pickle=False) as z:
        truth = {k: z[k] for k in z.files}
    t_index = pd.Index(truth["targets"].astype(str)).get_indexer(columns)
    g_index = pd.Index(truth["gene_columns"].astype(str)).get_indexer(gene_columns)
    if (t_index < 0).any():
        return False
    out = {"targets": np.array(columns), "gene_columns": np.array(gene_columns), "signal": truth["signal"]}
    for key in ("direct", "total"):
        m = truth[key][t_index][:, np.maximum(g_index, 0)]
        m[:, g_index < 0] = 0.0
        out[key] = m
    for key in ("strength", "toxicity"):
        out[key] = truth[key][t_index]
    k = min(N_DIRECT_GENES, len(gene_columns))
    out["direct_genes"] = np.sort(np.argsort(-np.abs(out["direct"]), axis=1, kind="stable")[:, :k], axis=1)
    layout.answers_dir(folder).mkdir(exist_ok=True)
    np.savez_compressed(layout.answers_dir(folder) / SIGNATURES_FILE, **out)
    return True


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def build_l1000_dataset(src: str | Path, out: str | Path, filters: Filters | None = None,
                        files: L1000Files | None = None, log=_stderr) -> dict:
    """Write the moakit dataset folder ``out`` from the LINCS folder ``src`` and return
    what dataset.json records (counts, filters, dropped targets, ...). Report lines (what
    was dropped and why) go to ``log``. Raises DataError for bad input (nothing written),
    FileExistsError when ``out`` exists and is not empty."""
    from moakit.data.gctx import read_matrix

    f = filters or Filters()
    if not 0.0 <= float(f.test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), not {f.test_fraction}")
    if int(f.min_compounds) < 1:
        raise ValueError(f"min_compounds must be at least 1, not {f.min_compounds}")
    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists and is not empty; choose a new folder or remove it")
    files = files or find_files(src)
    info: dict = {"layout": "l1000", "source": str(src),
                  "files": {k: Path(v).name for k, v in vars(files).items()},
                  "filters": {"cells": list(f.cells), "keep_controls": f.keep_controls, "times": list(f.times),
                              "doses": list(f.doses), "genes": f.genes, "min_compounds": f.min_compounds,
                              "test_fraction": f.test_fraction, "seed": f.seed}}
    sig = read_siginfo(files.siginfo)
    cids, rids = _matrix_ids(files.matrix)
    sig = _match(sig, cids, files, info, log)
    sig = _filter(sig, f, files, info, log)
    sig, Y, columns, Y_rare, rare = _labels(sig, read_compound_moas(files.compoundinfo), f, files, info, log)
    genes = _select_genes(rids, read_geneinfo(files.geneinfo), f.genes, files, info, log)
    order = np.argsort(sig["sig_id"].to_numpy(dtype=str), kind="stable")
    sig, Y, Y_rare = sig.iloc[order].reset_index(drop=True), Y[order], Y_rare[order]
    is_test = _split(sig, Y, f)
    in_train = Y_rare[~is_test].any(axis=0)  # an auxiliary target without a training positive teaches nothing
    info["nonscored_targets"] = {c: m for (c, m), k in zip(rare.items(), in_train) if k}
    nonscored = (Y_rare[:, in_train], list(info["nonscored_targets"]))
    matrix = read_matrix(files.matrix, rid=list(genes["gene_id"]), cid=list(sig["sig_id"]))
    gene_columns = [f"g-{g}" for g in genes["gene_id"]]
    features = _features(sig, matrix.to_numpy(), gene_columns, files)
    del matrix
    drug = sig["pert_id"].to_numpy(dtype=str)
    info.update(_counts(sig, is_test, genes))
    _write_folder(out, src, info, features, (Y, columns), nonscored, drug, is_test, genes, gene_columns)
    return info


def _counts(sig: pd.DataFrame, is_test: np.ndarray, genes: pd.DataFrame) -> dict:
    treated = (sig["pert_type"] == TREATED).to_numpy()
    return {"cell_lines": sorted(set(sig["cell_iname"])), "genes": int(len(genes)),
            "train_signatures": int((~is_test).sum()), "test_signatures": int(is_test.sum()),
            "train_compounds": int(sig.loc[~is_test & treated, "pert_id"].nunique()),
            "test_compounds": int(sig.loc[is_test & treated, "pert_id"].nunique()),
            "controls": int((~treated).sum())}


def _write_folder(out: Path, src: Path, info: dict, features: pd.DataFrame, scored: tuple[np.ndarray, list[str]],
                  nonscored: tuple[np.ndarray, list[str]], drug: np.ndarray, is_test: np.ndarray, genes: pd.DataFrame,
                  gene_columns: list[str]) -> None:
    """Everything into a temporary folder beside ``out``, then one rename. ``scored`` /
    ``nonscored``: (0/1 matrix over all signatures, column names); no non-scored file
    without a non-scored column."""
    (Y, columns), (Y_rare, rare_columns) = scored, nonscored
    with atomic_dir(out) as tmp:
        train = ~is_test
        _write_split(tmp, "train", features[train].reset_index(drop=True), Y[train], columns, drug[train])
        if rare_columns:
            frame = pd.DataFrame(Y_rare[train].astype(np.int64), columns=rare_columns)
            frame.insert(0, "sig_id", features["sig_id"].to_numpy()[train])
            frame.to_parquet(tmp / "train_targets_nonscored.parquet", index=False)
        if is_test.any():
            _write_split(tmp, "test", features[is_test].reset_index(drop=True), Y[is_test], columns, drug[is_test])
        pd.DataFrame({"column": gene_columns, "entrez_id": genes["gene_id"], "symbol": genes["symbol"]}).to_csv(
            tmp / schema.GENE_INFO, index=False)
        info["planted_truth"] = _copy_truth(src, tmp, columns, gene_columns)
        (tmp / schema.DATASET_INFO).write_text(json.dumps(info, indent=2) + "\n")


def simulate_l1000_dataset(out_dir: str | Path, n_signatures: int = 4000, seed: int = 0,
                           test_fraction: float = 0.2, log=None) -> Path:
    """A simulated LINCS folder (``OUT/lincs``, :func:`moakit.data.simulate_l1000.simulate_l1000`)
    turned into a dataset folder (``OUT/dataset``) with the default filters; returns the latter."""
    from moakit.data.simulate_l1000 import simulate_l1000

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: already exists and is not empty; choose a new folder or remove it")
    src = simulate_l1000(out_dir / "lincs", n_signatures=n_signatures, seed=seed)
    build_l1000_dataset(src, out_dir / "dataset", Filters(test_fraction=test_fraction, seed=seed),
                        log=log or (lambda line: None))
    return out_dir / "dataset"
