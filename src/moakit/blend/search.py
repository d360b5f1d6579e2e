"""The pure weight search of a blend: the objective (the competition metric of a weighted
average of OOF predictions, with its gradient), SLSQP / Optuna weights per model, SLSQP
weights per model and target, and the nested evaluation that scores each search only on
rows it was not searched on. Arrays in, arrays and dicts out: no file is read or written
here (an Optuna ``storage`` is the caller's).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from moakit import metrics
from moakit.choices import BLEND_METHODS, DEFAULT_BLEND_METHODS
from moakit.data import schema


# Weight searches: one weight per model (``slsqp``, ``optuna``) or one per model and target
# (``per_target``: SLSQP target by target, 206x the parameters). Without a preset the blend
# keeps the method with the lowest NESTED log loss (weights scored only on rows they were
# not searched on), so the many per-target weights win only where they generalise. All three
# are the default: on the realistic data per-target weights won the nested score for every
# split seed tried and the unseen-drug test (BENCHMARKS.md, blend methods).
METHODS = BLEND_METHODS
DEFAULT_METHODS = DEFAULT_BLEND_METHODS


class BlendError(ValueError):
    """Runs that cannot be blended (missing rows, other targets, unknown preset ...)."""


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
