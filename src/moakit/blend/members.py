"""The member runs of a blend, read through :mod:`moakit.runs`: their OOF and test
predictions aligned by sig_id to the first run's rows, the true targets (given, from the
data, or from the data folder a run's manifest records), the control rows, each run's CV
folds, and the blend's out-of-fold prior."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from moakit import metrics
from moakit.artifacts import resolve_recorded
from moakit.blend.search import BlendError, blend_predictions
from moakit.data import schema
from moakit.data.dataset import MoAData
from moakit.manifest import read_manifest
from moakit.runs import layout, records


@dataclass
class BlendInputs:
    names: list[str]
    oof: list[np.ndarray]  # per model (n_train, n_targets) float32, rows in train_sig_id order
    test: list[np.ndarray]  # per model (n_test, n_targets) float32, rows in test_sig_id order
    y: np.ndarray  # (n_train, n_targets) true 0/1 targets
    is_control: np.ndarray  # (n_train,) bool
    train_sig_id: np.ndarray
    test_sig_id: np.ndarray
    target_names: list[str]
    run_dirs: list[Path] = field(default_factory=list)
    test_is_control: np.ndarray | None = None  # (n_test,) bool when known (from the data)
    folds: list = field(default_factory=list)  # per model its CV folds (train rows) or None


def read_member_predictions(path: Path, name: str) -> pd.DataFrame:
    """A run's prediction file as a frame: sig_id (str) then the targets."""
    try:
        return records.read_predictions(path).reset_index()
    except records.RunFileError as exc:
        raise BlendError(f"run {name!r}: {exc}") from None


def align_rows(frame: pd.DataFrame, order: np.ndarray, name: str, path: Path, ref_name: str) -> np.ndarray:
    """The prediction rows of ``frame`` in ``order`` (the reference run's sig_ids)."""
    index = pd.Index(frame[schema.ID_COLUMN].to_numpy())
    pos = index.get_indexer(order)
    if (pos < 0).any():
        missing = order[np.flatnonzero(pos < 0)[0]]
        raise BlendError(f"run {name!r}: {path} has no row for sig_id {missing!r} "
                         f"(which run {ref_name!r} has); {int((pos < 0).sum())} row(s) missing")
    if len(index) != len(order):
        extra = index.difference(pd.Index(order))
        raise BlendError(f"run {name!r}: {path} has {len(extra)} row(s) that run {ref_name!r} lacks, "
                         f"e.g. sig_id {extra[0]!r}")
    return frame.iloc[pos, 1:].to_numpy(dtype=np.float32)


def _check_targets(cols: list[str], ref: list[str], name: str, path: Path, ref_name: str) -> None:
    if cols == ref:
        return
    missing = [c for c in ref if c not in cols]
    extra = [c for c in cols if c not in ref]
    if missing or extra:
        what = []
        if missing:
            what.append(f"lacks target(s) {', '.join(map(repr, missing[:3]))}" + (" ..." if len(missing) > 3 else ""))
        if extra:
            what.append(f"has other target(s) {', '.join(map(repr, extra[:3]))}" + (" ..." if len(extra) > 3 else ""))
        raise BlendError(f"run {name!r}: {path} {' and '.join(what)} compared with run {ref_name!r}")
    raise BlendError(f"run {name!r}: {path} lists the targets in another order than run {ref_name!r}")


def infer_controls(preds: Sequence[np.ndarray]) -> np.ndarray:
    """Rows every model predicts exactly 0 for every target: the control rows (moakit
    zeroes them in every run's predictions)."""
    out = np.ones(len(preds[0]), bool)
    for p in preds:
        out &= ~np.any(p != 0, axis=1)
    return out


def data_from_manifests(run_dirs: list[Path], names: list[str]) -> MoAData:
    """The data of the first run whose manifest.json names a data folder that exists (a
    relative one is resolved inside the run folder); BlendError when none does."""
    from moakit.data.io import load

    tried = []
    for d, name in zip(run_dirs, names):
        if not (d / layout.MANIFEST).exists():
            continue
        try:
            recorded = read_manifest(d).data_source
        except ValueError as exc:
            raise BlendError(str(exc)) from None
        source = resolve_recorded(recorded, d)  # relative: inside the run folder
        if source and Path(source).exists():
            return load(source)
        if source:
            tried.append(f"{name}: {source!r}")
    detail = f" (data folders recorded but not found: {'; '.join(tried)})" if tried else ""
    raise BlendError("the true targets are needed: pass the data folder (--data) or targets; "
                     f"no run's manifest.json names a data folder that exists{detail}")


def load_runs(
    run_dirs: Sequence[str | Path],
    names: Sequence[str] | None = None,
    data: MoAData | None = None,
    targets: np.ndarray | pd.DataFrame | None = None,
    is_control: np.ndarray | None = None,
) -> BlendInputs:
    """Read the OOF and test predictions of single-model runs, aligned by sig_id.

    Rows follow the first run's order. The true targets come from ``targets`` (a
    (n, targets) array in the first run's row order, or a frame with a sig_id column),
    else from ``data``, else from the data folder in the first run manifest.json that names
    one (``data_source``). Without data, ``is_control`` (first run's row order) may be
    given; otherwise control rows are the rows every run predicts as all 0.
    """
    run_dirs = [Path(d) for d in run_dirs]
    names = _run_names(run_dirs, names)
    oofs, tests, ref_oof, ref_test, target_names = _read_runs(run_dirs, names)
    test_is_control = None
    if targets is not None:
        y = _given_targets(targets, target_names, ref_oof, oofs[0].shape, names[0])
        if is_control is None:
            is_control = infer_controls(oofs) & (y.sum(axis=1) == 0)
        is_control = np.asarray(is_control, bool)
    else:
        if data is None:
            data = data_from_manifests(run_dirs, names)
        y, is_control, test_is_control = _data_targets(data, target_names, ref_oof, ref_test, names[0])
    if is_control.shape != (len(y),):
        raise BlendError(f"is_control has shape {is_control.shape}, expected ({len(y)},)")
    if test_is_control is None:
        test_is_control = infer_controls(tests)
    return BlendInputs(names=names, oof=oofs, test=tests, y=y, is_control=is_control,
                       train_sig_id=ref_oof, test_sig_id=ref_test, target_names=target_names,
                       run_dirs=run_dirs, test_is_control=test_is_control, folds=_read_folds(run_dirs, ref_oof))


def _read_folds(run_dirs: list[Path], ref_oof: np.ndarray) -> list[np.ndarray | None]:
    """Each run's CV folds (folds.npy: a fold id per row of its oof_predictions.csv, in that
    file's row order) in the first run's row order; None for a run without usable folds."""
    out: list[np.ndarray | None] = []
    for d in run_dirs:
        try:
            folds = np.load(d / layout.FOLDS, allow_pickle=False)
            ids = records.read_prediction_ids(d / layout.OOF_PREDICTIONS)
        except (OSError, ValueError):
            out.append(None)
            continue
        pos = pd.Index(ids).get_indexer(np.asarray(ref_oof).astype(str))
        out.append(folds[pos] if folds.shape == (len(ids),) and (pos >= 0).all() else None)
    return out


def oof_prior(inputs: BlendInputs, weights) -> np.ndarray | None:
    """The blend's out-of-fold prior: each model's per-target prior out of fold on its own
    folds, blended with the blend's weights, so no row's prior has seen that row (the
    prior the blend's OOF predictions are compared with). None when a run has no folds.npy."""
    if len(inputs.folds) != len(inputs.oof) or any(f is None for f in inputs.folds):
        return None
    priors = [metrics.oof_prior_predictions(inputs.y, inputs.is_control, f) for f in inputs.folds]
    return metrics.zero_controls(np.clip(blend_predictions(priors, weights), 0.0, 1.0), inputs.is_control)


def _run_names(run_dirs: list[Path], names: Sequence[str] | None) -> list[str]:
    if not run_dirs:
        raise BlendError("no runs to blend")
    names = [d.name for d in run_dirs] if names is None else [str(n) for n in names]
    if len(names) != len(run_dirs):
        raise BlendError(f"{len(names)} name(s) for {len(run_dirs)} run(s)")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise BlendError(f"model name {dup!r} is used twice; give the runs distinct names")
    return names


def _read_runs(run_dirs: list[Path], names: list[str]):
    """(OOF predictions, test predictions, the first run's train and test sig_ids, target
    names): every run's rows put in the first run's order."""
    oofs, tests = [], []
    ref_oof = ref_test = None
    target_names: list[str] = []
    for d, name in zip(run_dirs, names):
        oof_path, test_path = d / layout.OOF_PREDICTIONS, d / layout.TEST_PREDICTIONS
        f_oof = read_member_predictions(oof_path, name)
        f_test = read_member_predictions(test_path, name)
        if ref_oof is None:
            ref_oof = f_oof[schema.ID_COLUMN].to_numpy()
            ref_test = f_test[schema.ID_COLUMN].to_numpy()
            target_names = [str(c) for c in f_oof.columns[1:]]
        for frame, path in ((f_oof, oof_path), (f_test, test_path)):
            _check_targets([str(c) for c in frame.columns[1:]], target_names, name, path, names[0])
        oofs.append(align_rows(f_oof, ref_oof, name, oof_path, names[0]))
        tests.append(align_rows(f_test, ref_test, name, test_path, names[0]))
    return oofs, tests, ref_oof, ref_test, target_names


def _given_targets(targets: np.ndarray | pd.DataFrame, target_names: list[str], ref_oof: np.ndarray,
                   shape: tuple, first: str) -> np.ndarray:
    """The caller's targets in the first run's row order."""
    if isinstance(targets, pd.DataFrame):
        if schema.ID_COLUMN not in targets.columns:
            raise BlendError(f"targets frame has no {schema.ID_COLUMN!r} column")
        missing = [c for c in target_names if c not in targets.columns]
        if missing:
            raise BlendError(f"targets frame lacks target {missing[0]!r} of run {first!r}")
        frame = targets[[schema.ID_COLUMN, *target_names]].copy()
        frame[schema.ID_COLUMN] = frame[schema.ID_COLUMN].astype(str)
        return align_rows(frame, ref_oof, "targets", Path("<targets>"), first).astype(np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if y.shape != shape:
        raise BlendError(f"targets have shape {y.shape}, the predictions {shape}")
    return y


def _data_targets(data: MoAData, target_names: list[str], ref_oof: np.ndarray, ref_test: np.ndarray,
                  first: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(targets, control rows, test control rows or None) of ``data`` in the runs' row order."""
    train = data.train
    if train.scored is None:
        raise BlendError(f"data {data.source!r}: has no scored training targets")
    data_names = list(train.scored_names)
    missing = [c for c in target_names if c not in data_names]
    if missing:
        raise BlendError(f"run {first!r}: target {missing[0]!r} is not a scored target of the data "
                         f"{data.source!r}")
    cols = [data_names.index(c) for c in target_names]
    frame = pd.DataFrame(train.scored[:, cols], columns=target_names)
    frame.insert(0, schema.ID_COLUMN, np.asarray(train.sig_id).astype(str))
    frame["__control"] = train.is_control
    try:
        aligned = align_rows(frame, ref_oof, "data", Path(data.source or "<data>"), first)
    except BlendError as exc:
        raise BlendError(f"the runs and the data do not have the same training rows: {exc}") from None
    tpos = pd.Index(np.asarray(data.test.sig_id).astype(str)).get_indexer(ref_test)
    test_is_control = np.asarray(data.test.is_control, bool)[tpos] if (tpos >= 0).all() else None
    return aligned[:, :-1].astype(np.float64), aligned[:, -1] > 0.5, test_is_control
