"""A blend folder: :func:`blend_runs` reads the member runs (:mod:`moakit.blend.members`),
searches and chooses (:mod:`moakit.blend.search`, :mod:`moakit.blend.choice`) and writes
the folder through :mod:`moakit.runs` (:mod:`moakit.runs.layout` names every file);
:func:`apply_saved_calibration` applies a blend folder's kept calibration."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from moakit import metrics
from moakit.artifacts import atomic_file, write_json
from moakit.blend.choice import blend_score, calibrate_blend, check_settings, choose_weights, chosen_summary
from moakit.blend.diversity import mean_target_correlation, offdiag_mean, plot_correlation
from moakit.blend.members import BlendInputs, load_runs, oof_prior
from moakit.blend.presets import apply_preset, weights_as_dict
from moakit.blend.search import (DEFAULT_METHODS, BlendError, WeightSearch, blend_predictions, nested_evaluation,
                                 search_weights)
from moakit.data.dataset import MoAData
from moakit.runs import layout, records

CALIBRATION_FILE = layout.CALIBRATION


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
    lowers the chosen method's nested log loss (:func:`calibrate_blend`). Writes the blend
    folder described in :mod:`moakit.blend` into ``out_dir`` (each file atomically;
    blend.json last). ``choose="nested"`` (with a preset and the nested evaluation): the
    preset or the best search, whichever has the lower nested log loss (blend.json
    "choice"). ``skipped`` ({models, reason}): entries the blend config's profile left out;
    a preset's weights on them are dropped. ``note``: kept in blend.json and shown beside
    the weights."""
    out_dir = Path(out_dir)
    from moakit.validate import check_folder_kind

    check_folder_kind(out_dir, "blend")  # never into a run or data folder
    methods = check_settings(methods, preset, choose, calibrate, nested_folds)
    inputs = load_runs(run_dirs, names, data=data, targets=targets)
    names, y, ctl = inputs.names, inputs.y, inputs.is_control
    skipped_names = list((skipped or {}).get("models") or [])
    preset_w = apply_preset(names, preset, skipped_names) if preset is not None else None
    t_start = time.perf_counter()
    searches = {mth: search_weights(inputs.oof, y, ctl, method=mth, n_trials=n_trials, storage=storage,
                                    study_name=_study_name(names, inputs) if storage else None, seed=seed,
                                    names=names) for mth in methods}
    method_summary = {mth: {"weights": weights_as_dict(names, s.weights), **blend_score(inputs, s.weights)[1],
                            "n_evals": s.n_evals, **s.info} for mth, s in searches.items()}
    t_nested = time.perf_counter()
    nested = (nested_evaluation(inputs.oof, y, ctl, methods=methods, n_trials=n_trials, n_folds=nested_folds,
                                seed=seed, preset=preset_w, calibrate=calibrate) if nested_folds else None)
    nested_seconds = time.perf_counter() - t_nested
    chosen = choose_weights(inputs, methods, searches, method_summary, nested, preset, preset_w, choose)
    blended_oof, chosen_score = blend_score(inputs, chosen.weights)
    blended_test = blend_predictions(inputs.test, chosen.weights)
    if inputs.test_is_control is not None:
        blended_test = metrics.zero_controls(blended_test, inputs.test_is_control)
    calibration = None
    if calibrate is not None:
        blended_oof, blended_test, calibration, calibrators = calibrate_blend(inputs, chosen, nested, blended_oof,
                                                                         blended_test, calibrate)
        if calibrators is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json(out_dir / CALIBRATION_FILE, calibrators)
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
        **chosen_summary(inputs, chosen, chosen_score, model_summary),
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
        "mean_correlation": {"oof": dict(zip(names, offdiag_mean(corr_oof))),
                             "test": dict(zip(names, offdiag_mean(corr_test)))},
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
