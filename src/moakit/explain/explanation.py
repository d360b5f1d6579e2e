"""One whole explanation of a target: baseline, rows, attribution, stability, deletion curve,
ranked columns (:func:`explain`)."""

from __future__ import annotations

import difflib

import numpy as np

from moakit import choices
from moakit.data.dataset import Dataset
from moakit.explain.attribution import integrated_gradients, permutation_importance
from moakit.explain.faithfulness import deletion_curve, stability
from moakit.explain.loaded import ExplainError, LoadedRun, column_info, raw_columns

METHODS = choices.EXPLAIN_METHODS


# ----------------------------------------------------------------------------- the whole explanation


def _baseline(reference: Dataset) -> tuple[dict[str, np.ndarray], list, str]:
    """(baseline blocks g / c / cp as (1, width) rows, per raw column baseline values, what
    it is): the control rows' mean profile when the reference has controls, else the mean of
    its rows; cp_time / cp_dose at their most frequent value (one-hot at the mean)."""
    from moakit.stages import stage_blocks

    ctl = reference.is_control
    rows = reference.subset(ctl) if ctl.sum() >= 2 else reference
    what = (f"mean of {int(ctl.sum())} control rows" if ctl.sum() >= 2 else f"mean of {len(reference)} rows")
    blocks = stage_blocks(rows, None)
    base = {b: blocks[b].astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32) for b in ("g", "c", "cp")}
    values = [*base["g"][0], *base["c"][0]]
    for c in raw_columns(reference)[len(reference.gene_names) + len(reference.cell_names):]:
        values.append(int(np.bincount(getattr(rows, c).astype(np.int64)).argmax()))
    return base, values, what


def resolve_target(run: LoadedRun, target: str) -> int:
    if target in run.scored:
        return run.scored.index(target)
    close = difflib.get_close_matches(target, run.scored, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ExplainError(f"unknown target {target!r}: the run predicts {len(run.scored)} targets{hint}")


def _explained_rows(run: LoadedRun, ds: Dataset, y: np.ndarray | None, t: int, max_rows: int,
                    seed: int) -> tuple[np.ndarray, str]:
    """Row indices to attribute with IG: the target's positive rows (labels), else the rows
    the run calls most strongly; at most ``max_rows`` (a seeded sample of the positives)."""
    if y is not None and y.sum() > 0:
        pos = np.flatnonzero(y > 0.5)
        if len(pos) > max_rows:
            pos = np.sort(np.random.default_rng(seed).choice(pos, max_rows, replace=False))
        return pos, f"{len(pos)} rows labelled positive"
    pred = run.predict(ds, t)
    top = np.sort(np.argsort(-pred, kind="stable")[:max_rows])
    return top, f"{len(top)} rows with the highest predicted probability"


def _eval_rows(y_t: np.ndarray, negatives: int | None, seed: int) -> np.ndarray:
    """The labelled rows permutation and deletion are scored on: every positive and a seeded
    sample of ``negatives`` negative rows (None: all rows). Each evaluated row costs one
    prediction per permuted column, and a rare target's loss is carried by its positives."""
    if negatives is None:
        return np.arange(len(y_t))
    pos, neg = np.flatnonzero(y_t > 0.5), np.flatnonzero(y_t <= 0.5)
    if len(neg) > negatives:
        neg = np.random.default_rng(seed + 1).choice(neg, negatives, replace=False)
    return np.sort(np.concatenate([pos, neg]))


def explain(run: LoadedRun, target: str, ds: Dataset, y: np.ndarray | None = None,
            reference: Dataset | None = None, method: str = "ig", top: int = 50, max_rows: int = 64,
            n_steps: int = 32, n_repeats: int = 2, negatives: int | None = 200, seed: int = 0,
            deletion: bool = True, gene_info=None, rows_note: str = "") -> dict:
    """Attributions of every raw column of ``ds`` for ``target`` (a JSON-ready dict, ranked).

    ``y``: the rows' labels (of the target, or of all the run's targets), needed by
    ``permutation`` and used by the deletion curve, both scored on the positives and
    ``negatives`` sampled negative rows (None: all). ``reference``: the rows whose controls
    (else mean) give the baseline (default ``ds``). Control rows are left out."""
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    t = resolve_target(run, target)
    if y is not None:
        y = np.asarray(y, np.float64)
        if y.shape[0] != len(ds) or y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] != len(run.scored)):
            raise ExplainError(f"labels of shape {y.shape}: expected {len(ds)} rows of the target's 0/1 labels "
                               f"or of all {len(run.scored)} targets")
    treated = ~ds.is_control
    ds = ds.subset(treated)
    y_t = None if y is None else (y if y.ndim == 1 else y[:, t])[treated]
    if len(ds) == 0:
        raise ExplainError("no treated rows to explain (all rows are controls)")
    scored_rows = _eval_rows(y_t, negatives, seed) if y_t is not None else None
    eval_ds = ds.subset(scored_rows) if scored_rows is not None else None
    eval_y = y_t[scored_rows] if scored_rows is not None else None
    base, base_values, base_what = _baseline(reference if reference is not None else ds)
    result: dict = {"target": target, "method": method, "run": str(run.run_dir),
                    "models": [m.name for m in run.models], "n_members": len(run.members),
                    "baseline": base_what, "held_out": rows_note}
    if method == "ig":
        rows, why = _explained_rows(run, ds, y_t, t, max_rows, seed)
        out = integrated_gradients(run, ds.subset(rows), t, base, n_steps=n_steps)
        scores, member_scores = out["rows"].mean(axis=0), out["members"].mean(axis=1)
        result.update(rows_explained=why, n_steps=n_steps, held_constant=out["held_constant"],
                      mean_abs=out["rows"].__abs__().mean(axis=0),
                      completeness={"mean_abs_error": float(out["completeness_error"].mean()),
                                    "mean_abs_gap": float(np.abs(out["gap"]).mean())})
    else:
        if y_t is None:
            raise ExplainError("permutation importance needs held-out labelled rows: a --data folder with "
                               "answers/test_targets_scored, or --features FILE with --labels FILE")
        out = permutation_importance(run, eval_ds, eval_y, t, n_repeats=n_repeats, seed=seed)
        scores, member_scores = out["scores"], out["member_scores"]
        result.update(rows_explained=f"{len(eval_ds)} labelled rows ({int(eval_y.sum())} positive)",
                      n_repeats=n_repeats, base_log_loss=out["base_loss"], rows_predicted=out["rows_predicted"])
    result["seconds"] = round(out["seconds"], 3)
    result["stability"] = stability(member_scores, run.members)
    order = np.argsort(-scores, kind="stable")
    if deletion:
        if eval_ds is not None:
            result["deletion"] = deletion_curve(run, eval_ds, eval_y, t, order, base_values, seed=seed)
        else:  # no labels: how the call on the explained rows weakens
            result["deletion"] = deletion_curve(run, ds.subset(rows), None, t, order, base_values, seed=seed)
        result["deletion"]["rows"] = len(eval_ds) if eval_ds is not None else len(rows)
    info = column_info(ds, gene_info)
    ranked = []
    for r, j in enumerate(order[:top]):
        row = {"rank": r + 1, **info[j], "score": float(scores[j])}
        if "mean_abs" in result:
            row["mean_abs"] = float(result["mean_abs"][j])
        ranked.append(row)
    result.pop("mean_abs", None)
    result.update(n_columns=len(info), top=ranked,
                  scores={info[j]["column"]: float(scores[j]) for j in range(len(info))})
    return result
