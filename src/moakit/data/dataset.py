"""Typed, validated in-memory form of a lish-moa split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moakit.data import schema


@dataclass
class Dataset:
    """One split (train or test) of a lish-moa folder or of any panel.

    Feature matrices are float32; ``cells`` has zero columns on a gene-only panel.
    Categorical columns are small integer codes: cp_type's is the position in
    ``schema.CP_TYPES`` (0 = trt_cp, 1 = ctl_vehicle; all 0 when the data has no cp_type),
    cp_time's / cp_dose's the position in ``vocab["cp_time"]`` / ``vocab["cp_dose"]`` (an empty
    vocabulary, all codes 0: the data has no such column). ``meta`` names the meta columns
    the data has. The defaults are lish-moa's: all three, 24 / 48 / 72 h and D1 / D2.
    Target matrices are float32 0/1 and absent (None) for an unlabelled split.
    """

    sig_id: np.ndarray  # (n,) str
    genes: np.ndarray  # (n, n_genes) float32
    cells: np.ndarray  # (n, n_cells) float32
    cp_type: np.ndarray  # (n,) int8, 0 = trt_cp, 1 = ctl_vehicle
    cp_time: np.ndarray  # (n,) int8 code into CP_TIMES
    cp_dose: np.ndarray  # (n,) int8 code into CP_DOSES
    gene_names: list[str] = field(default_factory=lambda: list(schema.GENE_COLUMNS))
    cell_names: list[str] = field(default_factory=lambda: list(schema.CELL_COLUMNS))
    scored: np.ndarray | None = None  # (n, 206) float32
    nonscored: np.ndarray | None = None  # (n, 402) float32
    scored_names: list[str] = field(default_factory=list)
    nonscored_names: list[str] = field(default_factory=list)
    drug_id: np.ndarray | None = None  # (n,) str
    vocab: dict[str, tuple] = field(default_factory=lambda: dict(schema.LISH_MOA_VOCAB))
    meta: tuple[str, ...] = tuple(schema.META_COLUMNS)

    def __post_init__(self) -> None:
        n = len(self.sig_id)
        for name in ("genes", "cells", "cp_type", "cp_time", "cp_dose"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Dataset.{name} has {len(getattr(self, name))} rows, sig_id has {n}")
        for name in ("scored", "nonscored", "drug_id"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Dataset.{name} has {len(value)} rows, sig_id has {n}")

    def __len__(self) -> int:
        return len(self.sig_id)

    @property
    def n_rows(self) -> int:
        return len(self.sig_id)

    @property
    def is_control(self) -> np.ndarray:
        """Boolean mask of ctl_vehicle rows (their targets are all zero by design)."""
        return self.cp_type == schema.CP_TYPES.index(schema.CONTROL_TYPE)

    @property
    def features(self) -> np.ndarray:
        """Genes then cells, (n, n_genes + n_cells) float32."""
        return np.concatenate([self.genes, self.cells], axis=1)

    @property
    def feature_names(self) -> list[str]:
        return list(self.gene_names) + list(self.cell_names)

    def cp_onehot(self) -> np.ndarray:
        """One-hot of cp_time then cp_dose over their vocabularies, (n, n_times + n_doses)
        float32: (n, 5) on lish-moa, (n, 0) on a panel without cp_time / cp_dose."""
        times, doses = len(self.vocab.get("cp_time", ())), len(self.vocab.get("cp_dose", ()))
        out = np.zeros((self.n_rows, times + doses), np.float32)
        rows = np.arange(self.n_rows)
        if times:
            out[rows, self.cp_time.astype(np.int64)] = 1.0
        if doses:
            out[rows, times + self.cp_dose.astype(np.int64)] = 1.0
        return out

    def cp_codes(self) -> np.ndarray:
        """cp_type, cp_dose, cp_time as numbers, (n, 3) float32 on lish-moa: trt_cp 1 /
        ctl_vehicle 0, D1 0 / D2 1, 24 h 0 / 48 h 0.5 / 72 h 1 (the label encoding of the
        winners' DeepInsight CNN scripts, which put these three columns first). A dose or
        time code k of a vocabulary of n values is k / (n - 1). Only the columns the data
        has: (n, 0) on a panel without cp_type, cp_dose and cp_time."""
        columns = []
        if "cp_type" in self.meta:
            columns.append((~self.is_control).astype(np.float32))
        for name, codes in (("cp_dose", self.cp_dose), ("cp_time", self.cp_time)):
            n_values = len(self.vocab.get(name, ()))
            if n_values:
                columns.append(codes.astype(np.float32) / np.float32(max(n_values - 1, 1)))
        if not columns:
            return np.zeros((self.n_rows, 0), np.float32)
        return np.stack(columns, axis=1)

    @property
    def panel(self) -> dict:
        """What a trained run stores to encode new rows as these: the meta columns present
        and the cp_time / cp_dose vocabularies (JSON-ready)."""
        return {"meta": list(self.meta),
                "vocab": {k: [v.item() if hasattr(v, "item") else v for v in values]
                          for k, values in self.vocab.items()}}

    @property
    def is_lish_moa_panel(self) -> bool:
        """True when the meta columns and vocabularies are lish-moa's (nothing to store)."""
        return tuple(self.meta) == tuple(schema.META_COLUMNS) and \
            {k: tuple(v) for k, v in self.vocab.items()} == dict(schema.LISH_MOA_VOCAB)

    def subset(self, index: np.ndarray) -> "Dataset":
        """Rows ``index`` (an integer array or boolean mask) as a new Dataset."""
        take = lambda a: None if a is None else a[index]  # noqa: E731
        return Dataset(
            sig_id=self.sig_id[index], genes=self.genes[index], cells=self.cells[index],
            cp_type=self.cp_type[index], cp_time=self.cp_time[index], cp_dose=self.cp_dose[index],
            gene_names=self.gene_names, cell_names=self.cell_names,
            scored=take(self.scored), nonscored=take(self.nonscored),
            scored_names=self.scored_names, nonscored_names=self.nonscored_names,
            drug_id=take(self.drug_id), vocab=dict(self.vocab), meta=tuple(self.meta),
        )


@dataclass
class MoAData:
    """A whole lish-moa folder (or a dataset folder of any panel): the labelled train split
    and the unlabelled test split (0 rows when the folder has no test_features). ``genes``:
    column, entrez_id, symbol of each gene column when known (genes.csv, or the organisers'
    mapping for lish-moa's g-0 .. g-771), else None; ``info``: the folder's dataset.json."""

    train: Dataset
    test: Dataset
    source: str = ""
    genes: "object | None" = None  # pandas DataFrame
    info: dict = field(default_factory=dict)

    @property
    def scored_names(self) -> list[str]:
        return self.train.scored_names
