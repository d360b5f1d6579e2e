"""Weighted-average blending of single-model runs, weight search and model diversity.

The write-up blended its single models by a weighted average of their predicted
probabilities. The best-CV blend's weights were searched on the OOF predictions with
Optuna's TPE sampler and with SciPy's SLSQP ("the resulting weights ... are nearly the
same"); this module does both and keeps the better. Model diversity is measured as in the
write-up's "Model Diversity" section: the Pearson correlation of two models' predictions
per target (treated rows only), averaged over the targets.

A blend folder (``blend_runs``) holds::

    blend.json               per-model OOF log loss, per-method weights and log loss, the
                             chosen weights (per model; "weights_per_target" too when the
                             per-target search was chosen), the blended OOF log loss, the
                             nested evaluation (wall-clock times are kept apart under
                             "timings", so the rest is reproducible)
    oof_predictions.csv      blended OOF predictions (sig_id + scored targets, controls 0)
    submission.csv           blended test predictions (sig_id + scored targets, controls 0)
    per_target_log_loss.csv  OOF log loss per target: blend, prior (in sample), prior_oof (the
                             models' out-of-fold priors blended: what the blend's OOF must beat),
                             every model
    correlation_oof.csv/.png, correlation_test.csv/.png   mean target-wise correlations
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from moakit import metrics
from moakit.choices import BLEND_METHODS, DEFAULT_BLEND_METHODS
from moakit.artifacts import atomic_file, resolve_recorded
from moakit.data import schema
from moakit.data.dataset import MoAData
from moakit.manifest import read_manifest
from moakit.runs import layout, records

# Weight searches: one weight per model (``slsqp``, ``optuna``) or one per model and target
# (``per_target``: SLSQP target by target, 206x the parameters). Without a preset the blend
# keeps the method with the lowest NESTED log loss (weights scored only on rows they were
# not searched on), so the many per-target weights win only where they generalise. All three
# are the default: on the realistic data per-target weights won the nested score for every
# split seed tried and the unseen-drug test (BENCHMARKS.md, blend methods).
METHODS = BLEND_METHODS
DEFAULT_METHODS = DEFAULT_BLEND_METHODS

# Fixed weights, keyed by the model entry names of the shipped blend configs
# (src/moakit/configs/blend_*.yaml).
#
# ``best_cv``: write-up Table 3, "Best CV Blend with 5 Models (CV: 0.015107, Private LB:
# 0.01601)".
#
# ``best_lb``: the winning submission (write-up Table 1, private LB 0.01599), as set in the
# winners' final/blend.py: (0.37 3-stage NN + 0.10 Simple NN + 0.18 EfficientNet-B3 + 0.15
# ResNeSt V2) x 0.9, plus 0.10 2-stage NN+TabNet, 0.09 Simple NN and 0.09 2-heads ResNet.
# The two Simple NN slots are the old-CV and the new-CV model (their Kaggle blend notebook,
# final/Best LB/fork-of-blending-with-6-models-5old-1new.ipynb, reads the old-CV file
# into the 0.09 slot); final/blend.py reads the new-CV file into both, a defect moakit does
# not copy: old-CV and new-CV Simple NN get 0.09 each, as the winning submission did.
PRESETS: dict[str, dict[str, float]] = {
    "best_cv": {
        "three_stage_nn": 0.37,
        "resnet_2heads_v2": 0.08,
        "deepinsight_efficientnet": 0.17,
        "deepinsight_resnest": 0.11,  # ResNeSt V1
        "deepinsight_resnest_v2": 0.27,
    },
    "best_lb": {
        "three_stage_nn": 0.37 * 0.9,  # 0.333
        "two_stage_nn_tabnet": 0.10,
        "simple_nn": 0.09,  # old CV
        "simple_nn_drug_cv": 0.10 * 0.9,  # new CV, 0.09
        "resnet_2heads": 0.09,
        "deepinsight_efficientnet": 0.18 * 0.9,  # 0.162
        "deepinsight_resnest_v2": 0.15 * 0.9,  # 0.135
    },
}


class BlendError(ValueError):
    """Runs that cannot be blended (missing rows, other targets, unknown preset ...)."""


# --------------------------------------------------------------------------- inputs


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


def _read_predictions(path: Path, name: str) -> pd.DataFrame:
    """A run's prediction file as a frame: sig_id (str) then the targets."""
    try:
        return records.read_predictions(path).reset_index()
    except records.RunFileError as exc:
        raise BlendError(f"run {name!r}: {exc}") from None


def _align(frame: pd.DataFrame, order: np.ndarray, name: str, path: Path, ref_name: str) -> np.ndarray:
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


def _infer_controls(preds: Sequence[np.ndarray]) -> np.ndarray:
    """Rows every model predicts exactly 0 for every target: the control rows (moakit
    zeroes them in every run's predictions)."""
    out = np.ones(len(preds[0]), bool)
    for p in preds:
        out &= ~np.any(p != 0, axis=1)
    return out


def _data_from_manifests(run_dirs: list[Path], names: list[str]) -> MoAData:
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
            is_control = _infer_controls(oofs) & (y.sum(axis=1) == 0)
        is_control = np.asarray(is_control, bool)
    else:
        if data is None:
            data = _data_from_manifests(run_dirs, names)
        y, is_control, test_is_control = _data_targets(data, target_names, ref_oof, ref_test, names[0])
    if is_control.shape != (len(y),):
        raise BlendError(f"is_control has shape {is_control.shape}, expected ({len(y)},)")
    if test_is_control is None:
        test_is_control = _infer_controls(tests)
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
            ids = pd.read_csv(d / layout.OOF_PREDICTIONS, usecols=[0], dtype=str).iloc[:, 0]
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
        f_oof = _read_predictions(oof_path, name)
        f_test = _read_predictions(test_path, name)
        if ref_oof is None:
            ref_oof = f_oof[schema.ID_COLUMN].to_numpy()
            ref_test = f_test[schema.ID_COLUMN].to_numpy()
            target_names = [str(c) for c in f_oof.columns[1:]]
        for frame, path in ((f_oof, oof_path), (f_test, test_path)):
            _check_targets([str(c) for c in frame.columns[1:]], target_names, name, path, names[0])
        oofs.append(_align(f_oof, ref_oof, name, oof_path, names[0]))
        tests.append(_align(f_test, ref_test, name, test_path, names[0]))
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
        return _align(frame, ref_oof, "targets", Path("<targets>"), first).astype(np.float64)
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
        aligned = _align(frame, ref_oof, "data", Path(data.source or "<data>"), first)
    except BlendError as exc:
        raise BlendError(f"the runs and the data do not have the same training rows: {exc}") from None
    tpos = pd.Index(np.asarray(data.test.sig_id).astype(str)).get_indexer(ref_test)
    test_is_control = np.asarray(data.test.is_control, bool)[tpos] if (tpos >= 0).all() else None
    return aligned[:, :-1].astype(np.float64), aligned[:, -1] > 0.5, test_is_control


# --------------------------------------------------------------------------- objective


class BlendObjective:
    """The competition metric of a weighted average of OOF predictions, as a function of
    the weights: mean column-wise log loss over all rows, controls predicted 0.

    Vectorised over rows x targets; the control rows add a constant. Since targets are
    0/1, only one log per element is needed: log(1 - p) where y = 0, log(p) where y = 1.
    """

    def __init__(self, oofs: Sequence[np.ndarray], y: np.ndarray, is_control: np.ndarray | None = None,
                 eps: float = schema.EPS) -> None:
        y = np.asarray(y)
        if not oofs:
            raise BlendError("no predictions to blend")
        for k, p in enumerate(oofs):
            if np.shape(p) != y.shape:
                raise BlendError(f"model {k}: predictions have shape {np.shape(p)}, the targets {y.shape}")
        is_control = np.zeros(len(y), bool) if is_control is None else np.asarray(is_control, bool)
        treated = ~is_control
        self.eps = eps
        self.m = len(oofs)
        self.size = y.size  # rows x targets, over all rows
        yt = y[treated].ravel()
        self.stack = [np.ascontiguousarray(np.asarray(p, dtype=np.float32)[treated]).ravel() for p in oofs]
        self.pos = np.flatnonzero(yt > 0.5)
        self.stack_pos = [s[self.pos] for s in self.stack]
        # Control rows are predicted 0 whatever the weights: clipped to eps.
        yc = y[is_control]
        self.const = -float((yc * math.log(eps)).sum() + ((1 - yc) * math.log1p(-eps)).sum())
        self.n_evals = 0

    def blend(self, w: np.ndarray) -> np.ndarray:
        acc = np.zeros(self.stack[0].shape, np.float64)
        for wk, s in zip(w, self.stack):
            if wk != 0:
                acc += s * np.float64(wk)
        return acc

    def __call__(self, w: np.ndarray) -> float:
        return self.value_and_grad(w, grad=False)[0]

    def value_and_grad(self, w: np.ndarray, grad: bool = True) -> tuple[float, np.ndarray | None]:
        self.n_evals += 1
        w = np.asarray(w, np.float64)
        p = self.blend(w)
        pc = np.clip(p, self.eps, 1.0 - self.eps)
        pp = pc[self.pos]
        total = np.log1p(-pc).sum() - np.log1p(-pp).sum() + np.log(pp).sum()
        loss = (self.const - total) / self.size
        if not grad:
            return float(loss), None
        inside = (p > self.eps) & (p < 1.0 - self.eps)
        g = np.where(inside, 1.0 / (1.0 - pc), 0.0)  # d(-log(1-p))/dp where y = 0
        gp = g[self.pos]
        gpos = np.where(inside[self.pos], -1.0 / pp, 0.0)  # d(-log p)/dp where y = 1
        out = np.empty(self.m)
        for k, (s, sp) in enumerate(zip(self.stack, self.stack_pos)):
            # einsum, not np.dot: BLAS dot is slow on mixed float64 x float32 and when
            # its threads compete for the cores.
            out[k] = (np.einsum("i,i->", g, s) - np.einsum("i,i->", gp, sp) + np.einsum("i,i->", gpos, sp)) / self.size
        return float(loss), out


# --------------------------------------------------------------------------- search


@dataclass
class WeightSearch:
    weights: np.ndarray
    log_loss: float
    method: str
    seconds: float
    n_evals: int
    info: dict = field(default_factory=dict)


def _normalise(raw: np.ndarray) -> np.ndarray:
    raw = np.clip(np.asarray(raw, np.float64), 0.0, None)
    s = raw.sum()
    return np.full(len(raw), 1.0 / len(raw)) if s <= 0 else raw / s


def search_weights(
    oofs: Sequence[np.ndarray],
    y: np.ndarray,
    is_control: np.ndarray | None = None,
    method: str = "slsqp",
    n_trials: int = 300,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> WeightSearch:
    """Non-negative weights summing to 1 that minimise the OOF log loss of the blend.

    ``slsqp``: SciPy SLSQP from equal weights, bounds [0, 1], constraint sum = 1, analytic
    gradient. ``optuna``: TPE (seeded) over raw weights in [0, 1] per model, normalised to
    sum 1 (all zero: equal weights); a fresh study first tries equal weights and each model
    alone. ``storage`` (e.g. ``sqlite:///blend.db`` or a PostgreSQL URL) keeps the study,
    ``study_name`` names it: a study of that name is resumed (its trials count too).
    ``names`` name the Optuna parameters (default w0, w1, ...).
    """
    objective = BlendObjective(oofs, y, is_control)
    m = objective.m
    start = time.perf_counter()
    if method == "per_target":  # weights: models x targets
        W = search_weights_per_target(oofs, y, is_control)
        loss = metrics.score(np.asarray(y), blend_predictions(oofs, W),
                             np.zeros(len(y), bool) if is_control is None else np.asarray(is_control, bool))
        return WeightSearch(W, loss["log_loss"], "per_target", time.perf_counter() - start, W.shape[1])
    if m == 1:
        w = np.ones(1)
        return WeightSearch(w, objective(w), method, time.perf_counter() - start, 1)
    if method == "slsqp":
        w, loss, n_evals, info = _search_slsqp(objective)
    elif method == "optuna":
        w, loss, n_evals, info = _search_optuna(objective, n_trials, storage, study_name, seed, names)
    else:
        raise BlendError(f"unknown weight search method {method!r} (use one of {', '.join(METHODS)})")
    return WeightSearch(w, loss, method, time.perf_counter() - start, n_evals, info)


def _search_slsqp(objective: BlendObjective) -> tuple[np.ndarray, float, int, dict]:
    """(weights, log loss, objective evaluations, info) of SciPy SLSQP from equal weights."""
    from scipy.optimize import minimize

    m = objective.m
    res = minimize(objective.value_and_grad, np.full(m, 1.0 / m), jac=True, method="SLSQP",
                   bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                   options={"maxiter": 500, "ftol": 1e-12})
    w = _normalise(res.x)
    info = {"success": bool(res.success), "message": str(res.message), "iterations": int(res.nit)}
    loss = objective(w)
    # SLSQP may stop early on a flat objective: never return worse than its start.
    w0 = np.full(m, 1.0 / m)
    l0 = objective(w0)
    if l0 < loss:
        w, loss = w0, l0
    return w, loss, objective.n_evals, info


def _search_optuna(objective: BlendObjective, n_trials: int, storage: str | None, study_name: str | None,
                   seed: int, names: Sequence[str] | None) -> tuple[np.ndarray, float, int, dict]:
    """(weights, log loss, trials run now, info) of a seeded TPE study over raw weights in
    [0, 1] (see :func:`search_weights`)."""
    import optuna

    m = objective.m
    keys = [f"w{k}" for k in range(m)] if names is None else [f"w_{n}" for n in names]
    if len(set(keys)) != m:
        raise BlendError("model names must be distinct")
    sampler = optuna.samplers.TPESampler(seed=seed)
    with _optuna_warnings_only():
        study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler,
                                    direction="minimize", load_if_exists=True)
    before = len(study.trials)
    done = [t for t in study.trials if t.params]
    if done and set(done[0].params) != set(keys):
        raise BlendError(f"Optuna study {study.study_name!r} in {storage} holds trials over other models "
                         f"({', '.join(sorted(done[0].params))}); use another study name")
    if not study.trials and n_trials > 0:
        starts = [np.ones(m)] + [np.eye(m)[k] for k in range(m)]
        for raw in starts[:n_trials]:
            study.enqueue_trial({key: float(v) for key, v in zip(keys, raw)})

    def trial_loss(trial) -> float:
        raw = np.array([trial.suggest_float(key, 0.0, 1.0) for key in keys])
        w = _normalise(raw)
        trial.set_user_attr("weights", w.tolist())
        return objective(w)

    with _optuna_warnings_only():
        study.optimize(trial_loss, n_trials=n_trials, gc_after_trial=False, show_progress_bar=False)
    best = study.best_trial
    w = _normalise(np.array([best.params[key] for key in keys]))
    info = {"study_name": study.study_name, "n_trials_total": len(study.trials), "best_trial": best.number}
    return w, float(best.value), len(study.trials) - before, info


def search_weights_per_target(oofs: Sequence[np.ndarray], y: np.ndarray,
                              is_control: np.ndarray | None = None) -> np.ndarray:
    """Per-target weights (models x targets): for each target its own non-negative weights
    summing to 1, by SLSQP on that target's log loss over the treated rows (the winners
    tried per-target weights; moakit reports them under nested evaluation)."""
    from scipy.optimize import minimize

    y = np.asarray(y, np.float64)
    treated = np.ones(len(y), bool) if is_control is None else ~np.asarray(is_control, bool)
    m, n_targets = len(oofs), y.shape[1]
    W = np.full((m, n_targets), 1.0 / m)
    if m == 1:
        return W
    eps = schema.EPS
    for j in range(n_targets):
        P = np.stack([np.asarray(o, np.float64)[treated, j] for o in oofs], axis=1)
        t = y[treated, j]

        def loss(w, P=P, t=t):
            p = np.clip(P @ w, eps, 1.0 - eps)
            d = np.where(t > 0.5, -1.0 / p, 1.0 / (1.0 - p)) / len(t)
            return float(metrics.per_target_log_loss(t[:, None], p[:, None], eps)[0]), P.T @ d

        res = minimize(loss, W[:, j], jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                       options={"maxiter": 200, "ftol": 1e-10})
        w = _normalise(res.x)
        if loss(w)[0] <= loss(W[:, j])[0]:
            W[:, j] = w
    return W


def nested_evaluation(
    oofs: Sequence[np.ndarray],
    y: np.ndarray,
    is_control: np.ndarray,
    methods: Sequence[str] = DEFAULT_METHODS,
    n_trials: int = 300,
    n_folds: int = 5,
    seed: int = 0,
    per_target: bool = True,
    preset: np.ndarray | None = None,
    calibrate: str | None = None,
) -> dict:
    """The blend validated like a model: the OOF rows are split into ``n_folds`` parts
    (multilabel-stratified on the targets); for each part k the weights are searched on the
    other parts and scored on part k only, so no weight is ever scored on a row it was
    searched on. The held-out blends of all parts are scored together.

    Reported per method (each search method; ``per_target`` SLSQP weights; ``best_single``,
    the model with the lowest log loss on the other parts: the honest reference a weight
    search must beat; ``preset`` fixed weights, which are searched on nothing).

    ``calibrate`` (platt / isotonic, :mod:`moakit.calibration`): each method's blend is also
    calibrated inside the scheme, per target, by calibrators fitted on the other parts'
    blended rows only (``calibrated`` beside each method's score)."""
    from moakit import calibration
    from moakit.cv import multilabel_folds

    y = np.asarray(y)
    ctl = np.asarray(is_control, bool)
    parts = multilabel_folds(y, n_folds, seed)
    oofs = [np.asarray(o, np.float32) for o in oofs]
    searched = [m for m in methods if m != "per_target"]
    candidates = ["best_single", *searched, *(["per_target"] if per_target or "per_target" in methods else []),
                  *(["preset"] if preset is not None else [])]
    held = {c: np.zeros(y.shape, np.float64) for c in candidates}
    held_cal = {c: np.zeros(y.shape, np.float64) for c in candidates if c != "best_single"} if calibrate else {}
    picks: dict[str, list] = {c: [] for c in candidates}
    for k in range(n_folds):
        fit, out = parts != k, parts == k
        fit_oofs = [o[fit] for o in oofs]
        for c in candidates:
            if c == "best_single":
                losses = [metrics.score(y[fit], o, ctl[fit])["log_loss"] for o in fit_oofs]
                w = np.eye(len(oofs))[int(np.argmin(losses))]
            elif c == "per_target":
                w = search_weights_per_target(fit_oofs, y[fit], ctl[fit])
            elif c == "preset":
                w = preset
            else:
                w = search_weights(fit_oofs, y[fit], ctl[fit], method=c, n_trials=n_trials, seed=seed).weights
            if c != "per_target":  # per-target weights (models x targets) are not recorded per part
                picks[c].append(np.round(w, 4).tolist())
            held[c][out] = blend_predictions([o[out] for o in oofs], w)
            if c in held_cal:  # calibrators fitted on the other parts' rows, applied to part k only
                cals = calibration.fit(np.clip(blend_predictions(fit_oofs, w), 0.0, 1.0), y[fit], ~ctl[fit], calibrate)
                held_cal[c][out] = calibration.apply(cals, np.clip(held[c][out], 0.0, 1.0), ctl[out])
    result = {"n_folds": n_folds, "seed": seed, "methods": {}, **({"calibrate": calibrate} if calibrate else {})}
    for c in candidates:
        sc = metrics.score(y, metrics.zero_controls(np.clip(held[c], 0.0, 1.0), ctl), ctl)
        result["methods"][c] = {**sc, **({"weights_per_part": picks[c]} if c not in ("per_target",) else {})}
        if c in held_cal:
            result["methods"][c]["calibrated"] = metrics.score(y, metrics.zero_controls(held_cal[c], ctl), ctl)
    single = result["methods"]["best_single"]["log_loss"]
    searched = [c for c in candidates if c not in ("best_single", "preset")]
    if searched:
        best = min(searched, key=lambda c: result["methods"][c]["log_loss"])
        result["best_search"] = best
        result["gain_vs_best_single"] = result["methods"][best]["log_loss"] / single - 1.0
        result["beats_best_single"] = bool(result["methods"][best]["log_loss"] < single)
    return result


@contextlib.contextmanager
def _optuna_warnings_only():
    """Optuna's per-trial INFO lines off for the block only; the caller's verbosity is restored."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def blend_predictions(preds: Sequence[np.ndarray], weights: Sequence | np.ndarray) -> np.ndarray:
    """The weighted average of the models' probabilities (weights as given, not normalised):
    one weight per model, or one row of per-target weights per model (models x targets)."""
    weights = np.asarray(weights, np.float64)
    if len(weights) != len(preds):
        raise BlendError(f"{len(weights)} weight(s) for {len(preds)} model(s)")
    out = np.zeros(np.shape(preds[0]), np.float64)
    if weights.ndim == 2 and weights.shape[1] != out.shape[-1]:
        raise BlendError(f"per-target weights for {weights.shape[1]} targets, predictions of {out.shape[-1]}")
    for w, p in zip(weights, preds):
        if np.any(w != 0):
            out += np.asarray(p, np.float64) * w
    return out


def prediction_weights(summary: Mapping) -> dict[str, float | np.ndarray]:
    """The chosen weights of a blend.json as prediction applies them: entry name -> weight,
    or -> per-target weight array when the per-target search was chosen."""
    per_target = summary.get("weights_per_target")
    if isinstance(per_target, Mapping) and per_target:
        return {str(k): np.asarray(v, np.float64) for k, v in per_target.items()}
    return recorded_weights(summary)


def recorded_weights(summary: Mapping) -> dict[str, float]:
    """The chosen weights (entry name -> weight) recorded in a blend.json (per-target
    weights: their mean per model)."""
    weights = summary.get("weights")
    if isinstance(weights, Mapping):
        return {str(k): float(v) for k, v in weights.items()}
    if isinstance(weights, list) and "names" in summary:
        return {str(n): float(w) for n, w in zip(summary["names"], weights)}
    return {}


# --------------------------------------------------------------------------- diversity


def mean_target_correlation(preds: Sequence[np.ndarray], is_control: np.ndarray | None = None) -> np.ndarray:
    """(m x m) mean over targets of the Pearson correlation of two models' predictions.

    Rows are the treated rows (``is_control`` False); a target on which either model's
    predictions are constant is skipped for that pair. NaN where no target is left."""
    rows = slice(None) if is_control is None else ~np.asarray(is_control, bool)
    z, ok = [], []
    for p in preds:
        x = np.asarray(p, np.float64)[rows]
        varies = (x.max(axis=0, initial=-np.inf) > x.min(axis=0, initial=np.inf)) if len(x) else np.zeros(x.shape[1], bool)
        x = x - x.mean(axis=0)
        norm = np.sqrt((x * x).sum(axis=0))
        good = varies & (norm > 0)
        z.append(np.divide(x, norm, out=np.zeros_like(x), where=good))
        ok.append(good)
    m = len(preds)
    out = np.full((m, m), np.nan)
    for a in range(m):
        for b in range(a, m):
            both = ok[a] & ok[b]
            if both.any():
                r = np.einsum("ij,ij->j", z[a][:, both], z[b][:, both])
                out[a, b] = out[b, a] = float(np.clip(r, -1.0, 1.0).mean())
    return out


def plot_correlation(matrix: np.ndarray, names: Sequence[str], path: str | Path, title: str) -> Path:
    """A heatmap of a correlation matrix with its values written in the cells (PNG)."""
    import textwrap

    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    m = len(names)
    longest = max((len(str(n)) for n in names), default=1)
    size = max(4.0, 1.0 + 0.9 * m) + 0.07 * longest
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    try:
        finite = matrix[np.isfinite(matrix)]
        vmin = min(0.0, float(finite.min())) if finite.size else 0.0
        im = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdYlBu_r", vmin=vmin, vmax=1.0)
        ax.set_xticks(range(m), labels=list(names), rotation=45, ha="right")
        ax.set_yticks(range(m), labels=list(names))
        for i in range(m):
            for j in range(m):
                v = matrix[i, j]
                text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
                dark = np.isfinite(v) and (v > 0.85 or v < vmin + 0.15 * (1 - vmin))
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title("\n".join(textwrap.wrap(title, 40)), fontsize=11)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        fig.clear()  # a pyplot-free Figure is registered nowhere; free its artists
    with atomic_file(path, "wb") as fh:
        fh.write(buf.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- presets


def apply_preset(names: Sequence[str], preset: str | Mapping[str, float], skipped: Sequence[str] = ()) -> np.ndarray:
    """The weight vector of ``preset`` (a name in PRESETS or a name -> weight mapping) for
    the models ``names``: every model of the preset must be there, but for those in
    ``skipped`` (left out by the blend config's profile: their weights are dropped); a model
    the preset does not name gets 0. Normalised to sum 1."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise BlendError(f"unknown blend preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
        label, table = preset, PRESETS[preset]
    else:
        label, table = "preset", dict(preset)
    table = {n: w for n, w in table.items() if n not in set(skipped)}
    missing = [n for n in table if n not in names]
    if missing:
        raise BlendError(f"blend preset {label!r} weighs model {missing[0]!r}, which is not among the runs "
                         f"({', '.join(names)})")
    w = np.array([float(table.get(n, 0.0)) for n in names])
    if (w < 0).any() or w.sum() <= 0:
        raise BlendError(f"blend preset {label!r}: weights must be non-negative and not all 0")
    return w / w.sum()


# --------------------------------------------------------------------------- blend runs


@dataclass
class BlendResult:
    names: list[str]
    weights: np.ndarray  # the chosen weights
    method: str  # "slsqp", "optuna" or "preset:<name>"
    log_loss: float  # blended OOF log loss, all rows
    log_loss_treated: float
    searches: dict[str, WeightSearch]
    preset_weights: np.ndarray | None
    oof: np.ndarray
    test: np.ndarray
    correlation_oof: np.ndarray
    correlation_test: np.ndarray
    out_dir: Path
    summary: dict


def _write_matrix(path: Path, matrix: np.ndarray, names: list[str]) -> None:
    frame = pd.DataFrame(matrix, index=names, columns=names)
    frame.index.name = "model"
    with atomic_file(path, "w") as fh:
        frame.to_csv(fh, float_format="%.6f")


def _study_name(names: list[str], inputs: BlendInputs) -> str:
    """A stored Optuna study is resumed only for the very same inputs: same models, same
    OOF predictions, same targets."""
    import hashlib

    h = hashlib.sha256("\x00".join(names).encode())
    for arr in (*inputs.oof, inputs.y.astype(np.uint8), inputs.is_control.astype(np.uint8)):
        h.update(np.ascontiguousarray(arr).tobytes())
    return f"moakit-blend-{len(names)}models-{h.hexdigest()[:16]}"


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` where possible (blend.json then does not depend on
    where the whole run folder lives)."""
    import os

    try:
        return os.path.relpath(Path(path).resolve(), Path(start).resolve())
    except ValueError:  # another drive
        return str(path)


def _as_dict(names: Sequence[str], w: np.ndarray) -> dict[str, float]:
    """Per model its weight (per-target weights: their mean over the targets)."""
    w = np.asarray(w, np.float64)
    return {n: float(v) for n, v in zip(names, w.mean(axis=1) if w.ndim == 2 else w)}


def blend_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    n_trials: int = 300,
    storage: str | None = None,
    preset: str | Mapping[str, float] | None = None,
    data: MoAData | None = None,
    seed: int = 0,
    targets: np.ndarray | pd.DataFrame | None = None,
    nested_folds: int = 5,
    calibrate: str | None = None,
    choose: str = "preset",
    note: str | None = None,
    skipped: Mapping | None = None,
) -> BlendResult:
    """Blend single-model runs: search weights with every method in ``methods`` and keep
    the one with the lowest nested log loss (the in-sample OOF log loss when
    ``nested_folds`` is 0); with ``preset`` the preset's fixed weights are used instead
    (the searches, if any, are still run and recorded for comparison). ``nested_folds``
    (0: off) adds the nested evaluation of :func:`nested_evaluation` to blend.json: the
    honest score of the weight search, beside the in-sample one. ``calibrate`` (platt /
    isotonic, needs the nested evaluation): per-target calibration, kept only when it
    lowers the chosen method's nested log loss (:func:`_calibrate`). Writes the blend
    folder described in the module docstring into ``out_dir`` (each file atomically;
    blend.json last). ``choose="nested"`` (with a preset and the nested evaluation): the
    preset or the best search, whichever has the lower nested log loss (blend.json
    "choice"). ``skipped`` ({models, reason}): entries the blend config's profile left out;
    a preset's weights on them are dropped. ``note``: kept in blend.json and shown beside
    the weights."""
    out_dir = Path(out_dir)
    from moakit.validate import check_folder_kind

    check_folder_kind(out_dir, "blend")  # never into a run or data folder
    methods = _check_methods(methods, preset)
    if choose not in ("preset", "nested"):
        raise BlendError(f"choose must be 'preset' or 'nested', not {choose!r}")
    if choose == "nested" and preset is not None and not (methods and nested_folds):
        raise BlendError("choose: nested compares the preset with the searches by the nested score: it needs a "
                         "search method and nested_folds > 0")
    if calibrate is not None:
        from moakit.calibration import check_method

        check_method(calibrate)
        if not nested_folds:
            raise BlendError("calibration is kept only when it improves the nested score: it needs nested_folds > 0")
    inputs = load_runs(run_dirs, names, data=data, targets=targets)
    names, y, ctl = inputs.names, inputs.y, inputs.is_control
    skipped_names = list((skipped or {}).get("models") or [])
    preset_w = apply_preset(names, preset, skipped_names) if preset is not None else None
    t_start = time.perf_counter()
    searches = {mth: search_weights(inputs.oof, y, ctl, method=mth, n_trials=n_trials, storage=storage,
                                    study_name=_study_name(names, inputs) if storage else None, seed=seed,
                                    names=names) for mth in methods}
    method_summary = {mth: {"weights": _as_dict(names, s.weights), **_blend_score(inputs, s.weights)[1],
                            "n_evals": s.n_evals, **s.info} for mth, s in searches.items()}
    t_nested = time.perf_counter()
    nested = (nested_evaluation(inputs.oof, y, ctl, methods=methods, n_trials=n_trials, n_folds=nested_folds,
                                seed=seed, preset=preset_w, calibrate=calibrate) if nested_folds else None)
    nested_seconds = time.perf_counter() - t_nested
    chosen = _choose_weights(inputs, methods, searches, method_summary, nested, preset, preset_w, choose)
    blended_oof, chosen_score = _blend_score(inputs, chosen.weights)
    blended_test = blend_predictions(inputs.test, chosen.weights)
    if inputs.test_is_control is not None:
        blended_test = metrics.zero_controls(blended_test, inputs.test_is_control)
    calibration = None
    if calibrate is not None:
        blended_oof, blended_test, calibration = _calibrate(inputs, chosen, nested, blended_oof, blended_test,
                                                            calibrate, out_dir)
        chosen_score = metrics.score(y, blended_oof, ctl)
    if not (calibration or {}).get("kept"):
        (out_dir / CALIBRATION_FILE).unlink(missing_ok=True)  # none from an earlier blend into this folder
    prior_oof = oof_prior(inputs, chosen.weights)
    model_summary, per_target = _model_scores(inputs, blended_oof, out_dir, prior_oof)
    corr_oof = mean_target_correlation(inputs.oof, ctl)
    corr_test = mean_target_correlation(inputs.test, inputs.test_is_control)
    seconds = time.perf_counter() - t_start

    _write_blend_files(out_dir, inputs, blended_oof, blended_test, per_target, corr_oof, corr_test)
    summary = {
        **_chosen_summary(inputs, chosen, chosen_score, model_summary),
        # what the blend's OOF numbers must beat: the prior out of fold (None: a run lacks folds.npy)
        "prior_oof": (None if prior_oof is None else
                      {**metrics.score(y, prior_oof, ctl), "how": "each model's out-of-fold prior (its own "
                       "folds) blended with the chosen weights"}),
        "methods": method_summary, "preset": chosen.preset_summary,
        # preset or search, and by which score (both nested scores when the nested score chose)
        "choice": chosen.choice,
        **({"note": note} if note else {}), **({"skipped": dict(skipped)} if skipped else {}),
        # the in-sample numbers above score weights on the rows they were searched on; these
        # score them only on rows they were not searched on
        "nested": nested,
        "calibration": calibration,
        "settings": {"methods": methods, "n_trials": n_trials, "storage": storage, "seed": seed,
                     "calibrate": calibrate, "choose": choose},
        "mean_correlation": {"oof": dict(zip(names, _offdiag_mean(corr_oof))),
                             "test": dict(zip(names, _offdiag_mean(corr_test)))},
        "n_train": int(len(y)), "n_train_treated": int((~ctl).sum()), "n_test": int(len(inputs.test_sig_id)),
        "targets": len(inputs.target_names),
        # Wall-clock times only here (everything else in blend.json is reproducible).
        "timings": {**{f"{m}_seconds": round(s.seconds, 3) for m, s in searches.items()},
                    "nested_seconds": round(nested_seconds, 3), "total_seconds": round(seconds, 3)},
    }
    records.write_blend_summary(out_dir, summary)
    return BlendResult(names=names, weights=chosen.weights, method=chosen.method, log_loss=chosen_score["log_loss"],
                       log_loss_treated=chosen_score["log_loss_treated"], searches=searches,
                       preset_weights=preset_w, oof=blended_oof, test=blended_test, correlation_oof=corr_oof,
                       correlation_test=corr_test, out_dir=out_dir, summary=summary)


@dataclass
class _Choice:
    """The weights a blend uses: how they were chosen, and the preset's summary if any."""

    method: str
    weights: np.ndarray
    by: str  # "preset", "nested" or "in-sample"
    preset_summary: dict | None = None
    choice: dict | None = None


def _choose_weights(inputs: BlendInputs, methods: list[str], searches: dict[str, WeightSearch],
                    method_summary: dict, nested: dict | None, preset, preset_w: np.ndarray | None,
                    choose: str = "preset") -> _Choice:
    """The preset's weights when there is one (``choose="nested"``: unless the best search
    has a lower nested log loss); else the search of the lowest nested (else in-sample) OOF
    log loss, the first method on a tie."""
    judge = nested["methods"] if nested else method_summary
    best = min(methods, key=lambda m: judge[m]["log_loss"]) if methods else None
    if preset_w is None:
        return _Choice(best, searches[best].weights, "nested" if nested else "in-sample",
                       choice={"chosen": best, "by": "nested" if nested else "in-sample"})
    label = preset if isinstance(preset, str) else "custom"
    preset_summary = {"name": label, "weights": _as_dict(inputs.names, preset_w), **_blend_score(inputs, preset_w)[1]}
    if choose != "nested":
        return _Choice(f"preset:{label}", preset_w, "preset", preset_summary,
                       choice={"chosen": "preset", "by": "config (choose: preset)"})
    p_nested, s_nested = judge["preset"]["log_loss"], judge[best]["log_loss"]
    keep_preset = p_nested <= s_nested  # a tie keeps the preset
    choice = {"chosen": "preset" if keep_preset else best, "by": "nested",
              "nested_log_loss": {"preset": p_nested, "search": s_nested}, "search_method": best}
    if keep_preset:
        return _Choice(f"preset:{label}", preset_w, "nested", preset_summary, choice)
    return _Choice(best, searches[best].weights, "nested", preset_summary, choice)


CALIBRATION_FILE = layout.CALIBRATION


def _calibrate(inputs: BlendInputs, chosen: _Choice, nested: dict, oof: np.ndarray, test: np.ndarray, method: str,
               out_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-target calibration of the chosen blend, kept only if it lowers the chosen method's
    NESTED log loss (calibrators fitted inside the nested scheme, never on the rows they are
    scored on). Kept: the test predictions are calibrated by calibrators fitted on all OOF
    rows (saved in calibration.json, which prediction applies), and the OOF predictions
    written are cross-fitted (each nested part calibrated by the other parts' calibrators),
    so they stay honest. Returns (OOF, test, the decision with both scores)."""
    from moakit import calibration
    from moakit.cv import multilabel_folds

    y, ctl = inputs.y, inputs.is_control
    key = "preset" if chosen.method.startswith("preset:") else chosen.method
    off = nested["methods"][key]["log_loss"]
    on = nested["methods"][key]["calibrated"]["log_loss"]
    summary = {"method": method, "kept": bool(on < off), "decided_by": f"nested log loss of {key!r}",
               "nested_log_loss": {"off": off, "on": on}, "oof_uncalibrated": metrics.score(y, oof, ctl)}
    if not summary["kept"]:
        return oof, test, summary
    parts = multilabel_folds(np.asarray(y), nested["n_folds"], nested["seed"])
    oof_cal = calibration.cross_fit(np.clip(oof, 0.0, 1.0), y, ctl, parts, method)
    cals = calibration.fit(np.clip(oof, 0.0, 1.0), y, ~ctl, method)
    test_ctl = inputs.test_is_control if inputs.test_is_control is not None else _infer_controls([test])
    test_cal = calibration.apply(cals, np.clip(test, 0.0, 1.0), test_ctl)
    out_dir.mkdir(parents=True, exist_ok=True)
    from moakit.artifacts import write_json

    write_json(out_dir / CALIBRATION_FILE, {"method": method, "targets": inputs.target_names, "calibrators": cals})
    summary.update({"file": CALIBRATION_FILE, "oof": "cross-fitted over the nested parts (honest)"})
    return oof_cal, test_cal, summary


def apply_saved_calibration(blend_dir: str | Path, pred: np.ndarray, target_names: Sequence[str],
                            is_control: np.ndarray | None = None) -> np.ndarray:
    """``pred`` (a blend's weighted average) calibrated as the blend kept it (its
    calibration.json), or unchanged when the blend has no kept calibration."""
    from moakit import calibration
    from moakit.artifacts import read_json

    path = Path(blend_dir) / CALIBRATION_FILE
    if not path.exists():
        return pred
    saved = read_json(path)
    if list(saved.get("targets") or []) != list(target_names):
        raise BlendError(f"{path}: calibrates other targets than the blend predicts")
    return calibration.apply(saved["calibrators"], np.clip(pred, 0.0, 1.0), is_control)


def _chosen_summary(inputs: BlendInputs, chosen: _Choice, chosen_score: dict, model_summary: dict) -> dict:
    """blend.json's head: the chosen weights and their scores, beside every model's and the prior's."""
    names, y, ctl = inputs.names, inputs.y, inputs.is_control
    return {
        "names": names, "method": chosen.method, "chosen_by": chosen.by, "weights": _as_dict(names, chosen.weights),
        **({"weights_per_target": {n: w.tolist() for n, w in zip(names, chosen.weights)}}
           if np.ndim(chosen.weights) == 2 else {}),
        **chosen_score,
        "best_single": min(names, key=lambda n: model_summary[n]["log_loss"]),
        "models": model_summary,
        "prior": metrics.score(y, metrics.zero_controls(metrics.prior_predictions(y, ctl, len(y)), ctl), ctl),
    }


def _check_methods(methods: Sequence[str], preset) -> list[str]:
    methods = list(methods)
    for mth in methods:
        if mth not in METHODS:
            raise BlendError(f"unknown weight search method {mth!r} (use one of {', '.join(METHODS)})")
    if not methods and preset is None:
        raise BlendError("nothing to blend with: give a search method or a preset")
    return methods


def _blend_score(inputs: BlendInputs, w: np.ndarray) -> tuple[np.ndarray, dict]:
    """The blended OOF predictions of weights ``w`` (controls 0) and their scores."""
    blended = metrics.zero_controls(blend_predictions(inputs.oof, w), inputs.is_control)
    return blended, metrics.score(inputs.y, blended, inputs.is_control)


def _model_scores(inputs: BlendInputs, blended_oof: np.ndarray, out_dir: Path,
                  prior_oof: np.ndarray | None = None) -> tuple[dict, dict]:
    """(per model: run folder and OOF scores; per-target OOF log loss of the blend, the
    prior (in sample; out of fold as ``prior_oof`` when known) and every model)."""
    y, ctl = inputs.y, inputs.is_control
    prior = metrics.zero_controls(metrics.prior_predictions(y, ctl, len(y)), ctl)
    per_target = {"blend": metrics.per_target_log_loss(y, blended_oof), "prior": metrics.per_target_log_loss(y, prior)}
    if prior_oof is not None:
        per_target["prior_oof"] = metrics.per_target_log_loss(y, prior_oof)
    models = {}
    for name, d, p in zip(inputs.names, inputs.run_dirs, inputs.oof):
        models[name] = {"run_dir": _relative(d, out_dir), **metrics.score(y, p, ctl)}
        per_target[name] = metrics.per_target_log_loss(y, metrics.zero_controls(p, ctl))
    return models, per_target


def _write_blend_files(out_dir: Path, inputs: BlendInputs, blended_oof: np.ndarray, blended_test: np.ndarray,
                       per_target: dict, corr_oof: np.ndarray, corr_test: np.ndarray) -> None:
    """Everything of the blend folder but blend.json (written last)."""
    names = inputs.names
    out_dir.mkdir(parents=True, exist_ok=True)
    records.write_predictions(out_dir / layout.BLEND_OOF, inputs.train_sig_id, blended_oof, inputs.target_names)
    records.write_predictions(out_dir / layout.BLEND_TEST, inputs.test_sig_id, blended_test, inputs.target_names)
    frame = pd.DataFrame(per_target, index=pd.Index(inputs.target_names, name="target"))
    with atomic_file(out_dir / layout.PER_TARGET_LOSS, "w") as fh:
        frame.to_csv(fh, float_format="%.8g")
    _write_matrix(out_dir / layout.CORRELATION_CSV["oof"], corr_oof, names)
    _write_matrix(out_dir / layout.CORRELATION_CSV["test"], corr_test, names)
    plot_correlation(corr_oof, names, out_dir / layout.CORRELATION_PNG["oof"],
                     "Mean target-wise correlation of OOF predictions")
    plot_correlation(corr_test, names, out_dir / layout.CORRELATION_PNG["test"],
                     "Mean target-wise correlation of test predictions")


def _offdiag_mean(c: np.ndarray) -> list[float | None]:
    """Per model, its mean correlation with the other models (None: no finite value)."""
    rows = []
    for i in range(len(c)):
        vals = [c[i, j] for j in range(len(c)) if j != i and np.isfinite(c[i, j])]
        rows.append(float(np.mean(vals)) if vals else None)
    return rows
