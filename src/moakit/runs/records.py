"""Typed records of a run folder's JSON files, one ``schema_version`` check, and the one
reader / writer of its prediction CSVs (aligned by ``sig_id``) and of a data folder's
test answers.

Every reader raises :class:`RunFileError` (a ValueError) naming the file. The writers
produce exactly the bytes moakit has always written (JSON via
:func:`moakit.artifacts.write_json`; predictions as ``sig_id`` + one column per target,
``%.8g``), each file atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moakit.artifacts import atomic_file, read_json, write_json
from moakit.data import schema
from moakit.runs import layout

SCHEMA_VERSION = 1  # of every record that carries one (manifest.json); another one: another moakit wrote it


class RunFileError(ValueError):
    """A run-folder file that is missing, unreadable, or of an unsupported format."""


def unsupported(path: str | Path, why: str) -> RunFileError:
    """The one error for a folder of a format this moakit does not read."""
    return RunFileError(f"{path}: unsupported format ({why}); retrain the run with this moakit version")


def check_schema_version(raw: dict, path: str | Path) -> None:
    """Refuse a JSON record written under another schema (one rule for every record)."""
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise unsupported(path, f"schema_version {version!r}, this moakit reads {SCHEMA_VERSION}")


def format_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """A pydantic error as one line (:func:`moakit.config.format_errors`)."""
    from moakit.config import format_errors

    return format_errors(exc, limit)


def read_object(path: str | Path) -> dict:
    """A JSON file holding an object (RunFileError naming the file otherwise)."""
    path = Path(path)
    if not path.exists():
        raise RunFileError(f"{path}: missing")
    try:
        raw = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunFileError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise RunFileError(f"{path}: damaged (a JSON object was expected)")
    check_schema_version(raw, path)
    return raw


class _Record(BaseModel):
    """A JSON record: the fields moakit reads are typed, the rest kept as written."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def read(cls, path: str | Path):
        raw = read_object(path)
        try:
            return cls(**raw)
        except ValidationError as exc:
            raise RunFileError(f"{path}: damaged ({format_validation_error(exc)})") from None


class Columns(_Record):
    """``columns.json``: the input columns the run was trained on and its output targets."""

    genes: list[str]
    cells: list[str]
    scored: list[str]


class Metrics(_Record):
    """``metrics.json``: OOF scores overall, per seed (and per stage), and the prior's."""

    model: str | None = None
    profile: str | None = None
    log_loss: float
    log_loss_treated: float
    seeds: dict[str, dict[str, Any]] = {}
    prior: dict[str, Any] = {}


class Done(_Record):
    """A fold's ``done.json``: written last, so the fold is complete."""

    fit_seconds: float
    seed: int
    fold: int
    info: dict[str, Any] = {}


class History(_Record):
    """A fold's ``history.json``: one record per epoch."""

    epochs: list[dict[str, Any]] = []


class BlendSummary(_Record):
    """``blend.json``: the chosen weights and the scores of the blend, its models, the prior."""

    names: list[str]
    method: str | None = None
    weights: dict[str, float] = {}
    log_loss: float | None = None
    log_loss_treated: float | None = None
    models: dict[str, dict[str, Any]] = {}


class FeaturesKey(_Record):
    """A stage-seed's ``features_key.json``: its features' content key and where they came
    from: ``source`` fit (fitted in this run), link (``from``: the equal fit of another
    seed, relative to the stage-seed folder) or cache (``cache_key`` in the feature cache
    ``cache``; a fit stored in the cache records its ``cache_key`` too)."""

    key: str
    source: str | None = None  # None: written before the record had it (fit, or link with "from")
    from_: str | None = Field(None, alias="from")
    cache_key: str | None = None
    cache: str | None = None

    @property
    def origin(self) -> str:
        return self.source or ("link" if self.from_ else "fit")


def write_features_key(stage_dir: str | Path, key: str, source: str, from_: str | None = None,
                       cache_key: str | None = None, cache: str | None = None) -> None:
    """``features_key.json`` of a stage-seed (see :class:`FeaturesKey`)."""
    entry = {"key": key, "source": source, "from": from_, "cache_key": cache_key, "cache": cache}
    write_json(Path(stage_dir) / layout.FEATURES_KEY, {k: v for k, v in entry.items() if v is not None})


def read_manifest(run_dir: str | Path):
    """``manifest.json`` (:class:`moakit.manifest.Manifest`) as RunFileError-raising reader."""
    from moakit.manifest import read_manifest as _read

    try:
        return _read(run_dir)
    except RunFileError:
        raise
    except ValueError as exc:
        raise RunFileError(str(exc)) from None


class WorkflowRecord(_Record):
    """``workflow.json``: the resolved blend config and every resolved model config."""

    blend_config: dict[str, Any]
    model_configs: dict[str, dict[str, Any]] = {}


# --------------------------------------------------------------------------- writers of the JSON records


def columns_record(data) -> dict:
    """What ``columns.json`` records of the training data (a ``MoAData``): the input columns
    and the output targets inference checks new data against; the ``panel`` (how
    prediction encodes new rows' meta columns) of a non-lish-moa data set; and, where the
    data knows them (``data.genes``: its genes.csv, or the organisers' mapping of lish-moa's
    g-0 .. g-771), ``gene_ids`` (Entrez) and ``gene_symbols`` (null where unknown) of the gene
    columns in order, so prediction aligns new inputs by these ids wherever the run goes."""
    train = data.train
    columns = {"genes": list(train.gene_names), "cells": list(train.cell_names), "scored": list(train.scored_names)}
    if not train.is_lish_moa_panel:
        columns["panel"] = train.panel
    genes = getattr(data, "genes", None)
    if genes is not None and list(genes["column"]) == columns["genes"]:
        columns["gene_ids"] = [str(v).strip() for v in genes["entrez_id"]]
        columns["gene_symbols"] = [None if v is None or pd.isna(v) or not str(v).strip() else str(v).strip()
                                   for v in genes["symbol"]]
    return columns


def write_columns(run_dir: str | Path, columns: dict) -> None:
    """``columns.json``: ``genes``, ``cells``, ``scored`` (lists), and what else the data
    layer records about the input columns (e.g. the ``panel`` of a non-lish-moa data set)."""
    write_json(Path(run_dir) / layout.COLUMNS, columns)


def write_done(fold_dir: str | Path, fit_seconds: float, seed: int, fold: int, info: dict) -> None:
    write_json(Path(fold_dir) / layout.DONE, {"fit_seconds": fit_seconds, "seed": seed, "fold": fold, "info": info})


def write_history(fold_dir: str | Path, epochs: list[dict]) -> None:
    write_json(Path(fold_dir) / layout.HISTORY, {"epochs": epochs})


def write_metrics(run_dir: str | Path, metrics: dict) -> None:
    write_json(Path(run_dir) / layout.METRICS, metrics)


def write_blend_summary(blend_dir: str | Path, summary: dict) -> None:
    write_json(Path(blend_dir) / layout.BLEND, summary)


def write_workflow(run_dir: str | Path, blend_config: dict, model_configs: dict) -> None:
    write_json(Path(run_dir) / layout.WORKFLOW, {"blend_config": blend_config, "model_configs": model_configs})


def write_config(run_dir: str | Path, config: dict) -> None:
    write_json(Path(run_dir) / layout.CONFIG, config)


# --------------------------------------------------------------------------- prediction CSVs


def write_predictions(path: str | Path, sig_id, values: np.ndarray, names: list[str]) -> None:
    """``sig_id`` + one column per target (``%.8g``), atomically."""
    frame = pd.DataFrame(np.asarray(values, np.float64), columns=names)
    frame.insert(0, schema.ID_COLUMN, sig_id)
    with atomic_file(path, "w") as fh:
        frame.to_csv(fh, index=False, float_format="%.8g")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A prediction CSV as a float frame indexed by ``sig_id`` (str), one column per target.
    Missing file, a first column other than sig_id, a repeated sig_id or a non-numeric
    value raise RunFileError naming the file (and the row)."""
    path = Path(path)
    if not path.exists():
        raise RunFileError(f"{path}: missing")
    try:
        frame = pd.read_csv(path, dtype={schema.ID_COLUMN: str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RunFileError(f"{path}: cannot be read ({exc})") from None
    if len(frame.columns) == 0 or frame.columns[0] != schema.ID_COLUMN:
        raise RunFileError(f"{path}: does not start with a {schema.ID_COLUMN!r} column")
    ids = frame[schema.ID_COLUMN].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise RunFileError(f"{path}: lists sig_id {str(dup.iloc[0])!r} more than once")
    values = frame.drop(columns=schema.ID_COLUMN)
    bad = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
    if bad:
        raise RunFileError(f"{path}: column {bad[0]!r} is not numeric")
    return pd.DataFrame(values.to_numpy(np.float64), index=pd.Index(ids.to_numpy(), name=schema.ID_COLUMN),
                        columns=[str(c) for c in values.columns])


def read_prediction_ids(path: str | Path) -> np.ndarray:
    """The ``sig_id`` column of a prediction CSV (str), in the file's row order; only that
    column is read. OSError / ValueError when the file cannot be read."""
    return pd.read_csv(path, usecols=[0], dtype=str).iloc[:, 0].to_numpy()


def align(frame: pd.DataFrame, sig_id, names: list[str] | None = None, path: str | Path = "predictions",
          exact: bool = False) -> np.ndarray:
    """The values of a frame of :func:`read_predictions` with rows in ``sig_id``'s order and
    columns in ``names``' (default: the frame's own). Raises RunFileError naming the first
    missing row or target; with ``exact``, rows the frame has beyond ``sig_id`` too."""
    order = np.asarray(sig_id).astype(str)
    pos = frame.index.get_indexer(order)
    if (pos < 0).any():
        missing = str(order[np.flatnonzero(pos < 0)[0]])
        raise RunFileError(f"{path}: has no row for sig_id {missing!r}; {int((pos < 0).sum())} row(s) missing")
    if exact and len(frame.index) != len(order):
        extra = frame.index.difference(pd.Index(order))
        raise RunFileError(f"{path}: has {len(extra)} row(s) more, e.g. sig_id {str(extra[0])!r}")
    cols = list(frame.columns) if names is None else list(names)
    absent = [n for n in cols if n not in set(frame.columns)]
    if absent:
        raise RunFileError(f"{path}: target {absent[0]!r} is missing")
    return frame[cols].to_numpy(np.float64)[pos]


def read_aligned(path: str | Path, sig_id, names: list[str] | None = None) -> np.ndarray:
    """:func:`read_predictions` then :func:`align`."""
    return align(read_predictions(path), sig_id, names, path)


# --------------------------------------------------------------------------- test answers


def find_test_answers(data_dir: str | Path) -> Path | None:
    """A data folder's test answers (``answers/test_targets_scored`` as .csv, .csv.zip or
    .parquet), or None when it has none."""
    from moakit.data.io import find_file

    answers = layout.answers_dir(data_dir)
    if not answers.is_dir():
        return None
    return find_file(answers, layout.TEST_ANSWERS_STEM, required=False)


def read_test_answers(data_dir: str | Path, sig_id, names: list[str] | None = None) -> np.ndarray | None:
    """The 0/1 test answers aligned to ``sig_id`` (and checked against ``names``), or None
    when the data folder has none."""
    from moakit.data.io import read_answers

    path = find_test_answers(data_dir)
    return None if path is None else read_answers(path, np.asarray(sig_id), names)
