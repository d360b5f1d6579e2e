"""Checks made before any work, so that nothing is silently wrong and nothing half-made.

* Rows of the Python API's arguments matched by ``sig_id`` (:func:`align_rows`): ``X``,
  ``Y``, ``Y_nonscored`` and ``drug_id`` may each carry their ids as a ``sig_id`` column or
  as an index named ``sig_id``; rows are matched by them, and ids that do not match are
  refused, naming a few. Pandas objects without sig_ids are matched by their index as
  pandas does; arrays (and pandas objects with a plain 0..n-1 index) by position.
* A run folder written only by a command of its own kind (:func:`check_folder_kind`,
  :func:`check_report_dir`).
* What the configs need of the data, named as the API argument to pass
  (:func:`check_fit_arguments`); training data that is all controls.
* Whole configs: dropout rates, layer sizes, activations, devices (:func:`check_param_values`,
  :func:`check_device`), before the first feature fit.
* Column sets compared by name, naming the columns and the file that lacks them
  (:func:`same_columns`, :func:`answers_for`), misspelled gene / cell columns.
* A run folder as it was trained: config.json unedited (:func:`check_config_unchanged`),
  weights that fit their network (:func:`load_weights`); finished before report / blend
  (:func:`check_finished`); the lock's owner (:func:`pid_reused`); temporary files of a
  killed run removed (:func:`clean_leftovers`): these in :mod:`moakit.validate_run`,
  re-exported here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from moakit.data import schema
from moakit.data.io import DataError
from moakit.runs import layout
from moakit.validate_run import (  # noqa: F401  (the checks of a run folder on disk, re-exported)
    ArtifactError, check_config_unchanged, check_finished, clean_leftovers, config_digest, load_weights,
    lock_held_message, pid_reused,
)

ID = schema.ID_COLUMN


# --------------------------------------------------------------------------- rows matched by sig_id


def few(values: Sequence[Any], k: int = 3) -> str:
    """The first ``k`` values for a message: ``'a', 'b', 'c' and 12 more``."""
    values = list(values)
    shown = ", ".join(repr(str(v)) for v in values[:k])
    return shown + (f" and {len(values) - k} more" if len(values) > k else "")


def sig_ids_of(obj: Any) -> np.ndarray | None:
    """The sig_ids an argument carries: its ``sig_id`` column, else its index when that is
    named ``sig_id``; None for arrays and for pandas objects without them."""
    if isinstance(obj, pd.DataFrame) and ID in obj.columns:
        return obj[ID].astype(str).to_numpy()
    if isinstance(obj, (pd.DataFrame, pd.Series)) and obj.index.name == ID:
        return obj.index.astype(str).to_numpy()
    return None


def match_ids(what: str, ids: np.ndarray, target: np.ndarray, target_what: str = "X") -> np.ndarray:
    """Positions in ``ids`` of each id of ``target``; ids repeated, missing or extra are a
    DataError naming a few of them."""
    index = pd.Index(ids)
    if index.has_duplicates:
        raise DataError(f"{what}: sig_id(s) {few(index[index.duplicated()].unique())} appear more than once")
    pos = index.get_indexer(target)
    missing = target[pos < 0]
    extra = index.difference(pd.Index(target), sort=False)
    problems = []
    if len(missing):
        problems.append(f"no row for {len(missing)} sig_id(s) of {target_what} ({few(missing)})")
    if len(extra):
        problems.append(f"{len(extra)} sig_id(s) that are not in {target_what} ({few(extra)})")
    if problems:
        raise DataError(f"{what}: " + "; ".join(problems))
    return pos


def _plain_index(index: pd.Index) -> bool:
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


def row_order(what: str, arg: Any, X: Any) -> np.ndarray | None:
    """Positions of ``arg``'s rows in ``X``'s row order, or None when ``arg`` is matched
    by position (an array; a pandas object already in X's order or with a plain index)."""
    x_ids = sig_ids_of(X)
    ids = sig_ids_of(arg)
    if ids is not None:
        if x_ids is None:
            raise DataError(f"{what}: carries sig_ids but X has none, so its rows cannot be matched; give X its "
                            f"sig_id column (or a sig_id index), or pass {what} without sig_ids in X's row order")
        return match_ids(what, ids, x_ids)
    if not isinstance(arg, (pd.DataFrame, pd.Series)):
        return None
    index = arg.index
    x_index = X.index if isinstance(X, pd.DataFrame) else None
    if x_index is not None and index.equals(x_index):
        return None
    if x_index is not None and index.is_unique and len(index) == len(x_index):
        pos = index.get_indexer(x_index)
        if (pos >= 0).all():  # the same labels in another order: matched as pandas would
            return pos
    if x_ids is not None and index.is_unique and len(index) == len(x_ids):
        pos = index.astype(str).get_indexer(x_ids)
        if (pos >= 0).all():  # an unnamed index holding X's sig_ids
            return pos
    if _plain_index(index):
        return None
    raise DataError(f"{what}: its index matches neither X's sig_ids nor X's index (e.g. {few(index)}); pass it "
                    f"with a sig_id column or a sig_id index, or as an array in X's row order")


def align_rows(what: str, arg: Any, X: Any) -> Any:
    """``arg`` with its rows in ``X``'s order (see :func:`row_order`); arrays as given."""
    if arg is None:
        return None
    pos = row_order(what, arg, X)
    if pos is None:
        return arg
    return arg.iloc[pos]


def canonical_order(sig_id: np.ndarray) -> np.ndarray:
    """Row positions that sort ``sig_id``: training sees the rows in this order whatever
    the order they were given in (the competition's and moakit's files are in it)."""
    return np.argsort(np.asarray(sig_id).astype(str), kind="stable")


# --------------------------------------------------------------------------- folders of one kind

_KIND_WORDS = {"model": "a model run (moakit train / MoAModel)",
               "workflow": "a workflow run (moakit run / moakit demo / MoABlend)",
               "blend": "a blend folder (moakit blend)",
               "report": "a report folder (moakit report)",
               "data": "a lish-moa data folder"}


class FolderKindError(ValueError):
    """A write into a folder that holds something of another kind; the message names both."""


def folder_kind(path: str | Path) -> str | None:
    """What a folder holds: a run folder's kind (:func:`moakit.runs.kind_of`), ``"data"``
    for a lish-moa data folder (it has train_features), or None."""
    from moakit.runs import kind_of

    path = Path(path)
    kind = kind_of(path)
    if kind is None and path.is_dir():
        if any((path / f"train_features{ext}").exists() for ext in schema.EXTENSIONS):
            return "data"
    return kind


def check_folder_kind(path: str | Path, kind: str, where: str = "--out") -> None:
    """Refuse to write ``kind`` (model / workflow / blend / report) into a folder that holds
    another kind, before any work: it would mix the two (a model's manifest over a
    workflow's, a report replacing a run)."""
    found = folder_kind(path)
    if found is None or found == kind:
        return
    raise FolderKindError(f"{path}: holds {_KIND_WORDS[found]}; {_KIND_WORDS[kind]} cannot be written into it "
                          f"(the two would be mixed): give {where} another folder")


def check_report_dir(path: str | Path) -> None:
    """A report folder is written whole and replaces what was there: refuse a run or data
    folder, and a non-empty folder that is not an earlier report."""
    path = Path(path)
    check_folder_kind(path, "report")
    if path.is_dir() and any(path.iterdir()) and not any((path / f).exists() for f in (layout.REPORT_JSON, layout.REPORT_HTML)):
        raise FolderKindError(f"{path}: a folder with other files, not an earlier report; writing the report would "
                              "replace everything in it: give --out a new or empty folder")


# --------------------------------------------------------------------------- what the configs need of the data


def _train_file(data) -> str:
    """The training features file of ``data`` for a message ("X" for the Python API's)."""
    if not getattr(data, "source", ""):
        return "X"
    from moakit.data.io import find_file

    try:
        path = find_file(Path(data.source), "train_features", required=False)
    except DataError:
        path = None
    return str(path) if path is not None else f"{data.source}: train_features"


def check_training_rows(data) -> None:
    """Rows to learn from: training data that is all controls is one DataError naming the
    file (their targets are all 0 by design; nothing would be learned)."""
    train = data.train
    if len(train) and bool(np.all(train.is_control)):
        raise DataError(f"{_train_file(data)}: all {len(train)} rows are controls (cp_type "
                        f"{schema.CONTROL_TYPE}), whose targets are 0 by design: there is no treated row to learn from")


def needs_of(config) -> set[str]:
    """What a resolved model config needs besides X and Y: ``drug_id`` (the drug-aware CV)
    and ``Y_nonscored`` (a non-scored stage, or pre-training on the non-scored targets)."""
    from moakit.models.checks import build_model

    needs = set()
    if config.cv.scheme == "drug":
        needs.add("drug_id")
    for stage in build_model(config).stages():
        if "nonscored" in (stage.targets, stage.aux_targets):
            needs.add("Y_nonscored")
    return needs


def check_fit_arguments(configs: dict, data, who: str) -> None:
    """The Python API's ``fit``: a missing ``drug_id`` / ``Y_nonscored`` is named as the
    argument to pass (not as a data-folder file), before any work."""
    check_training_rows(data)
    given = {"drug_id": data.train.drug_id is not None, "Y_nonscored": data.train.nonscored is not None}
    for name, cfg in configs.items():
        for arg in sorted(needs_of(cfg)):
            if not given[arg]:
                why = ("uses the drug-aware CV (cv.scheme: drug)" if arg == "drug_id" else
                       "trains on the non-scored targets")
                what = ("one drug id per row of X: a Series or list, or the train_drug table" if arg == "drug_id"
                        else "the train_targets_nonscored table: sig_id + one 0/1 column per non-scored target")
                raise ValueError(f"{who}: {name} {why}: pass {arg}=... to fit ({what})")


# --------------------------------------------------------------------------- whole configs, before any work


def _fields(obj: Any, where: str):
    """(field path, field name, value) of every field inside a pydantic model / list / dict."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            yield f"{where}.{name}", name, value
            yield from _fields(value, f"{where}.{name}")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, (BaseModel, dict, list)):
                yield from _fields(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            if isinstance(value, (BaseModel, dict)):
                yield from _fields(value, f"{where}.{i}")


def _numbers(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _value_problem(name: str, value: Any) -> str | None:
    """What is wrong with a params field, by the rules every model shares (None: nothing):
    dropout rates in [0, 1), layer sizes >= 1, a known activation, a known device."""
    if "dropout" in name or name == "drop_path":
        bad = [v for v in _numbers(value) if not 0 <= v < 1]
        return f"{bad[0]} is not a dropout rate (0 <= rate < 1)" if bad else None
    if name == "hidden" or name.startswith("hidden_"):
        bad = [v for v in _numbers(value) if v < 1]
        return f"a layer of {bad[0]} units (every layer needs at least 1)" if bad else None
    if name == "activation" and isinstance(value, str):
        from moakit.nn.blocks import ACTIVATIONS

        if value not in ACTIVATIONS:
            return f"unknown activation {value!r} (known: {', '.join(sorted(ACTIVATIONS))})"
    if name == "device" and isinstance(value, str):
        return device_problem(value, allow_auto=True)
    return None


def check_param_values(params: Any, where: str) -> None:
    """The rules of :func:`_value_problem` over a model's validated params: ConfigError
    naming the config and the field, before the first feature fit (not in a fold job)."""
    from moakit.config import ConfigError

    for path, name, value in _fields(params, "params"):
        problem = _value_problem(name, value)
        if problem is not None:
            raise ConfigError(f"{where}: {path}: {problem}")


def device_problem(device: str | None, allow_auto: bool = True) -> str | None:
    """Why ``device`` cannot be used here (None: it can): not cpu / cuda (/ auto), or cuda
    without a GPU torch can see."""
    if device is None:
        return None
    allowed = ("auto", "cpu", "cuda") if allow_auto else ("cpu", "cuda")
    if device not in allowed:
        return f"device {device!r} is not one of {', '.join(allowed)}"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "device 'cuda' asked for, but torch sees no CUDA GPU on this machine (use cpu or auto)"
    return None


def check_device(device: str | None, where: str = "device") -> None:
    """A device argument (``--device``, ``MoAModel(device=...)``) checked before any work."""
    from moakit.config import ConfigError

    problem = device_problem(device)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")


# --------------------------------------------------------------------------- column sets


_MISNAMED = re.compile(r"^\s*([gGcC])\s*[-_ .]?\s*(\d+)\s*$")


def check_misnamed_columns(path: Any, columns: Sequence[Any]) -> None:
    """A column that looks like a gene / cell column but is not spelled ``g-<n>`` /
    ``c-<n>`` (``G-5``, ``g_5``, `` g-5``) would be silently left out of the features:
    a DataError naming it and the file."""
    for column in map(str, columns):
        match = _MISNAMED.match(column)
        if match and not re.fullmatch(r"[gc]-\d+", column):
            proper = f"{match.group(1).lower()}-{match.group(2)}"
            raise DataError(f"{path}: column {column!r} looks like {proper!r} but is not spelled so; it would be "
                            f"left out of the features: rename it to {proper!r}")


def name_differences(where: str, have: Sequence[str], ref_where: str, want: Sequence[str], kind: str) -> str | None:
    """Why the columns ``have`` (of ``where``) are not the set ``want`` (of ``ref_where``),
    naming the columns and the file that lacks them; None when the sets are equal."""
    have_set, want_set = set(have), set(want)
    missing = [c for c in want if c not in have_set]
    extra = [c for c in have if c not in want_set]
    problems = []
    if missing:
        problems.append(f"{where}: lacks {len(missing)} {kind} column(s) of {ref_where}: {few(missing, 5)}")
    if extra:
        problems.append(f"{ref_where}: lacks {len(extra)} {kind} column(s) of {where}: {few(extra, 5)}")
    return "; ".join(problems) or None


def same_columns(ds, ref, where: str, ref_where: str):
    """``ds`` (a Dataset) with its gene and cell columns in ``ref``'s order (matched by
    name); columns one lacks are a DataError naming them and the file that lacks them."""
    import dataclasses

    for names, block, kind in (("gene_names", "genes", "gene"), ("cell_names", "cells", "cell")):
        have, want = list(getattr(ds, names)), list(getattr(ref, names))
        if have == want:
            continue
        problem = name_differences(where, have, ref_where, want, kind)
        if problem is not None:
            raise DataError(problem)
        order = [have.index(c) for c in want]  # the same columns in another order: matched by name
        ds = dataclasses.replace(ds, **{block: getattr(ds, block)[:, order], names: want})
    return ds


def answers_for(submission: Any, sub, answers: Any) -> np.ndarray:
    """The 0/1 answers in the rows and columns of a parsed submission ``sub`` (of the file
    ``submission``). A target or sig_id the submission lacks, or has beyond the answers,
    is a DataError that blames the submission (the answers are the reference)."""
    from moakit.data.io import numeric_block, read_table

    frame = read_table(Path(answers))
    if ID not in frame.columns:
        raise DataError(f"{answers}: missing column {ID!r}")
    ids = frame[ID].astype(str).to_numpy()
    repeated = pd.Index(ids)[pd.Index(ids).duplicated()]
    if len(repeated):
        raise DataError(f"{answers}: sig_id(s) {few(repeated.unique())} appear more than once")
    names = [str(c) for c in frame.columns if c != ID]
    frame.columns = [str(c) for c in frame.columns]
    problem = name_differences(str(submission), list(sub.names), str(answers), names, "target")
    if problem is not None:
        raise DataError(problem)
    match_ids(str(submission), np.asarray(sub.sig_id).astype(str), ids, str(answers))
    values = numeric_block(Path(answers), frame, list(sub.names))
    bad = (values != 0) & (values != 1)
    if bad.any():
        row, j = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(f"{answers}: column {sub.names[j]!r}, row {row + 1}: target {values[row, j]} is not 0 or 1")
    return values[pd.Index(ids).get_indexer(np.asarray(sub.sig_id).astype(str))]
