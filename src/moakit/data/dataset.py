"""Typed, validated in-memory form of a lish-moa split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moakit.data import schema


@dataclass
class Dataset:
    """One split (train or test) of a lish-moa folder.

    Feature matrices are float32; categorical columns are small integer codes whose
    meaning is the position in ``schema.CP_TYPES`` / ``CP_TIMES`` / ``CP_DOSES``.
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
        """One-hot of cp_time (3) and cp_dose (2), (n, 5) float32."""
        out = np.zeros((self.n_rows, len(schema.CP_TIMES) + len(schema.CP_DOSES)), np.float32)
        rows = np.arange(self.n_rows)
        out[rows, self.cp_time.astype(np.int64)] = 1.0
        out[rows, len(schema.CP_TIMES) + self.cp_dose.astype(np.int64)] = 1.0
        return out

    def cp_codes(self) -> np.ndarray:
        """cp_type, cp_dose, cp_time as numbers, (n, 3) float32: trt_cp 1 / ctl_vehicle 0,
        D1 0 / D2 1, 24 h 0 / 48 h 0.5 / 72 h 1 (the label encoding of the winners'
        DeepInsight CNN scripts, which put these three columns first)."""
        treated = (~self.is_control).astype(np.float32)
        dose = self.cp_dose.astype(np.float32)  # the code is the index into CP_DOSES
        hours = self.cp_time.astype(np.float32) / np.float32(len(schema.CP_TIMES) - 1)
        return np.stack([treated, dose, hours], axis=1)

    def subset(self, index: np.ndarray) -> "Dataset":
        """Rows ``index`` (an integer array or boolean mask) as a new Dataset."""
        take = lambda a: None if a is None else a[index]  # noqa: E731
        return Dataset(
            sig_id=self.sig_id[index], genes=self.genes[index], cells=self.cells[index],
            cp_type=self.cp_type[index], cp_time=self.cp_time[index], cp_dose=self.cp_dose[index],
            gene_names=self.gene_names, cell_names=self.cell_names,
            scored=take(self.scored), nonscored=take(self.nonscored),
            scored_names=self.scored_names, nonscored_names=self.nonscored_names,
            drug_id=take(self.drug_id),
        )


@dataclass
class MoAData:
    """A whole lish-moa folder: the labelled train split and the unlabelled test split."""

    train: Dataset
    test: Dataset
    source: str = ""

    @property
    def scored_names(self) -> list[str]:
        return self.train.scored_names
