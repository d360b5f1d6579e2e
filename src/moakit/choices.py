"""Every closed set of choices, declared once: the configs validate against these, the CLI's
option enums and defaults are built from them, and the error messages list them.

Each vocabulary is a tuple of its values (in the order help texts show them) and a
``Literal`` type of the same values for the pydantic models.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

CV_SCHEMES = ("old", "drug")  # multilabel-stratified folds / drug-aware folds
DEFAULT_CV_SCHEME = "old"
SELECTION_POLICIES = ("holdout", "holdout_refit", "last", "oof")  # which rows choose a fold's epoch
DEFAULT_SELECTION_POLICY = "holdout"
DEVICES = ("auto", "cpu", "cuda")  # auto: a CUDA GPU when torch sees one
DEFAULT_DEVICE = "auto"
BLEND_METHODS = ("slsqp", "optuna", "per_target")  # weight searches
DEFAULT_BLEND_METHODS = BLEND_METHODS  # every search; the best under nested evaluation is kept
EXECUTORS = ("local", "ray")
DEFAULT_EXECUTOR = "local"
PROFILES = ("full", "cpu", "demo", "smoke")  # the profiles every shipped config defines
FILE_FORMATS = ("csv", "parquet")  # the table files moakit simulate writes
SIMULATE_LAYOUTS = ("lish-moa", "l1000")  # the competition's folder / a LINCS-style one
PROFILE_GENERATORS = ("pathway", "factor")  # how simulated profiles are made (moakit.data.generators)
DEFAULT_PROFILE_GENERATOR = "pathway"
GENE_SETS = ("landmark", "all")  # the genes `moakit dataset l1000` keeps
PREDICT_BY = ("signature", "compound")  # one row per signature / also the calls per compound
CALIBRATION_METHODS = ("platt", "isotonic")  # per-target calibration of a blend
EXPLAIN_METHODS = ("ig", "permutation")  # Integrated Gradients (networks) / permutation (any model)

CVScheme = Literal[CV_SCHEMES]  # type: ignore[valid-type]
SelectionPolicy = Literal[SELECTION_POLICIES]  # type: ignore[valid-type]
DeviceName = Literal[DEVICES]  # type: ignore[valid-type]
BlendMethod = Literal[BLEND_METHODS]  # type: ignore[valid-type]
CalibrationMethod = Literal[CALIBRATION_METHODS]  # type: ignore[valid-type]


def cli_enum(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum of ``values`` (member names = values) for Typer's choice options."""
    return Enum(name, {v.replace("-", "_"): v for v in values}, type=str)
