"""A realistic simulator of lish-moa data.

:func:`simulate` writes a complete lish-moa folder (features, scored / non-scored targets,
drug ids, sample submission, and ``answers/`` with the test labels and the planted
signatures of the targets, ``answers/signatures.npz``). It is moakit's
embedded default data for the demo and the tests and, built on the real label matrices
(``labels_from``), the realistic benchmark dataset.

How the data are made
---------------------
Labels are per drug: every replicate of a drug shares its 206 scored and 402 non-scored
labels. Simulated labels follow the facts of the real set: about 8 % control rows (one
"drug", ``cacb2b860``, all targets zero), drugs of mostly 6 replicates (3 times x 2 doses),
a few of 1-19 and a handful with hundreds of rows; about 40 % of rows without a scored
target; a long-tailed number of positives per target; a few rows with 2-7 targets (mostly
from one family of related MoAs); non-scored labels sparser, mostly on drugs without a
scored MoA, 71 of them never positive.

Profiles come from a latent-pathway model. 772 genes load sparsely on 50 pathways. Each
row is ``baseline pathway activity + amplitude x drug effect``, mapped to genes, plus a
gene-level part, a stress response proportional to cytotoxicity, and Student-t noise.
The drug effect sums the signatures of its MoAs (scored and non-scored; related MoAs,
and a non-scored target and its scored partner, share part of a signature) and an
idiosyncratic off-target effect. Signature strength varies by target, from nearly
invisible to obvious. The amplitude is the drug's potency times dose (D2 stronger) and
time (stronger later) factors. Cell viability (``c-`` columns) drops across the cell
lines with the row's toxicity (large for cytotoxic MoAs such as proteasome or tubulin
inhibitors), so those columns are skewed negative. Values are clipped to [-10, 10]
(genes) and [-10, 6.5] (cells) and written with 4 decimals.

The test set holds drugs unseen in training (whole drugs, about ``test_fraction`` of the
rows; controls are split row-wise); a drug whose removal would leave one of its scored
targets without a positive training row stays in training.

The rows and labels are drawn by :mod:`moakit.data.simulate_labels`, the profiles by
:mod:`moakit.data.simulate_profiles` (or :mod:`moakit.data.generators`); this module checks
the arguments and writes the folder.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from moakit import choices
from moakit.data import schema, simulate_profiles
from moakit.data.simulate_labels import (CONTROL_DRUG, LABEL_FILES, Labels, draw_simulated_labels, draw_test_split,
                                         read_real_labels)
from moakit.data.simulate_profiles import N_DIRECT_GENES, draw_profiles
from moakit.runs import layout

__all__ = ["CONTROL_DRUG", "FORMATS", "LABEL_FILES", "N_DIRECT_GENES", "SIGNATURES_FILE", "simulate"]

FORMATS = choices.FILE_FORMATS
SIGNATURES_FILE = "signatures.npz"  # in answers/: the planted truth of each scored target


# --------------------------------------------------------------------------------------
# public entry point


def simulate(out_dir, n_rows: int = 6000, seed: int = 0, labels_from: str | Path | None = None,
             test_fraction: float = 0.2, file_format: str = "csv", generator: str = "pathway",
             effect_scale: float = 1.0) -> Path:
    """Write a simulated lish-moa folder at ``out_dir`` and return its path.

    ``n_rows`` rows in all (train + test; ignored with ``labels_from``, where all 23,814
    real rows are used), deterministic for ``seed``. ``labels_from`` is a folder holding the
    real ``train_targets_scored.csv.zip``, ``train_targets_nonscored.csv.zip`` and
    ``train_drug.csv.zip``: profiles are then simulated on the real labels, sig_ids and
    drug ids. ``test_fraction`` of the rows (whole drugs) go to the test split, whose
    labels are written to ``answers/``. ``file_format`` is ``"csv"`` or ``"parquet"``.
    ``generator`` chooses the latent structure of the profiles (``"pathway"``, this module's
    model, or ``"factor"``: :mod:`moakit.data.generators`); labels, drugs and split do not
    depend on it. ``effect_scale`` multiplies the MoA-caused part of the profiles.

    Raises FileExistsError if ``out_dir`` exists and is not empty, FileNotFoundError if a
    label file is missing, ValueError for bad arguments.
    """
    out_dir = Path(out_dir)
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {', '.join(FORMATS)}, not {file_format!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), not {test_fraction}")
    from moakit.data.generators import check_generator, factor_profiles

    check_generator(generator, float(effect_scale))
    if labels_from is None and int(n_rows) < 100:
        raise ValueError(f"n_rows must be at least 100, not {n_rows}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: already exists and is not empty; choose a new folder or remove it")

    rng = np.random.default_rng([int(seed), 0x6D6F61])
    if labels_from is not None:
        labels = read_real_labels(Path(labels_from), rng)
    else:
        labels = draw_simulated_labels(int(n_rows), rng)
    is_test = draw_test_split(labels, float(test_fraction), rng)
    truth: dict[str, np.ndarray] = {}
    if generator == "factor":
        genes, cells = factor_profiles(labels, rng, truth, float(effect_scale))
    else:
        genes, cells = draw_profiles(labels, rng, truth, float(effect_scale))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _write(tmp, labels, is_test, genes, cells, file_format)
        _write_signatures(layout.answers_dir(tmp) / SIGNATURES_FILE, truth)
        if out_dir.exists():
            if any(out_dir.iterdir()):  # filled meanwhile by someone else
                raise FileExistsError(f"{out_dir}: already exists and is not empty; choose a new folder or remove it")
            out_dir.rmdir()
        os.rename(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------------------
# writing


def _write(folder: Path, labels: Labels, is_test: np.ndarray, genes: np.ndarray, cells: np.ndarray,
           file_format: str) -> None:
    layout.answers_dir(folder).mkdir()
    scored_names, nonscored_names = schema.scored_target_names(), schema.nonscored_target_names()
    scored, nonscored = labels.scored, labels.nonscored
    drug_of_row = labels.drug_names[labels.drug_index]
    for split, mask in (("train", ~is_test), ("test", is_test)):
        rows = np.flatnonzero(mask)
        rows = rows[np.argsort(labels.sig_id[rows], kind="stable")]
        ids = labels.sig_id[rows]
        features = {
            schema.ID_COLUMN: ids,
            "cp_type": np.array(schema.CP_TYPES)[labels.control[rows].astype(int)],
            "cp_time": np.array(schema.CP_TIMES)[labels.cp_time[rows]],
            "cp_dose": np.array(schema.CP_DOSES)[labels.cp_dose[rows]],
        }
        floats = {**{c: genes[rows, j] for j, c in enumerate(schema.GENE_COLUMNS)},
                  **{c: cells[rows, j] for j, c in enumerate(schema.CELL_COLUMNS)}}
        target_dir = folder if split == "train" else layout.answers_dir(folder)
        _write_table(folder / f"{split}_features", {**features, **floats}, file_format)
        _write_table(target_dir / f"{split}_targets_scored",
                     {schema.ID_COLUMN: ids, **{c: scored[rows, j] for j, c in enumerate(scored_names)}}, file_format)
        _write_table(target_dir / f"{split}_targets_nonscored",
                     {schema.ID_COLUMN: ids, **{c: nonscored[rows, j] for j, c in enumerate(nonscored_names)}},
                     file_format)
        _write_table(target_dir / f"{split}_drug", {schema.ID_COLUMN: ids, schema.DRUG_COLUMN: drug_of_row[rows]},
                     file_format)
        if split == "test":
            half = np.full(len(rows), 0.5)
            _write_table(folder / "sample_submission", {schema.ID_COLUMN: ids, **{c: half for c in scored_names}},
                         file_format)


def _write_signatures(path: Path, truth: dict) -> None:
    """``answers/signatures.npz``: what each scored target does to the genes, at unit
    amplitude (a row's effect is its drug's potency x dose x time factor times this).

    Arrays: ``targets`` (206 names), ``gene_columns`` (772), ``direct`` (206 x 772: the
    gene-level part, nonzero on the target's ``N_DIRECT_GENES`` directly hit genes),
    ``total`` (206 x 772: direct part + the target's pathway activity mapped to the genes
    through the loadings, family part included), ``direct_genes`` (206 x 15 sorted column
    indices), ``strength`` (206: the target's signature strength; about a fifth nearly
    invisible), ``toxicity`` (206: the loss of cell viability it causes), ``signal``
    (the global factor already applied to ``direct`` and ``total``). Written from values
    already drawn: the random stream and every other file are unchanged."""
    signal = float(truth.get("signal", simulate_profiles.SIGNAL))  # (the generator's strength x effect_scale)
    direct = signal * truth["gene"]
    total = signal * truth["path"] @ truth["loadings"] + direct
    direct_genes = np.sort(np.argsort(-np.abs(direct), axis=1, kind="stable")[:, :N_DIRECT_GENES], axis=1)
    np.savez_compressed(path, targets=np.array(schema.scored_target_names()),
                        gene_columns=np.array(schema.GENE_COLUMNS), direct=direct, total=total,
                        direct_genes=direct_genes, strength=truth["strength"], toxicity=truth["toxicity"],
                        signal=np.float64(signal))


def _write_table(stem: Path, columns: dict[str, np.ndarray], file_format: str) -> None:
    """Write columns (str, int or 4-decimal float arrays) as ``stem.csv`` or ``stem.parquet``."""
    import pyarrow as pa

    arrays = []
    for values in columns.values():
        if values.dtype.kind in "US" or values.dtype == object:
            arrays.append(pa.array(values.astype(str), type=pa.string()))
        elif values.dtype.kind == "f":
            arrays.append(pa.array(values.astype(np.float32 if file_format == "parquet" else np.float64)))
        else:
            arrays.append(pa.array(values.astype(np.int64)))
    table = pa.Table.from_arrays(arrays, names=list(columns))
    if file_format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, stem.with_name(stem.name + ".parquet"), compression="zstd")
        return
    import pyarrow.csv as pcsv

    with open(stem.with_name(stem.name + ".csv"), "wb") as fh:
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(list(columns))  # some names hold commas
        fh.write(header.getvalue().encode())
        pcsv.write_csv(table, fh, pcsv.WriteOptions(include_header=False, quoting_style="none"))
