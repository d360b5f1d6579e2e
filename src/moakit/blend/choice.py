"""The decisions of a blend, on arrays only: which weights it uses (the preset, or the
search of the lowest nested / in-sample log loss), whether a per-target calibration is kept
(only when it lowers the nested log loss), and blend.json's head. No file is read or
written here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from moakit import metrics
from moakit.blend.members import BlendInputs, infer_controls
from moakit.blend.presets import weights_as_dict
from moakit.blend.search import METHODS, BlendError, WeightSearch, blend_predictions
from moakit.runs import layout


@dataclass
class _Choice:
    """The weights a blend uses: how they were chosen, and the preset's summary if any."""

    method: str
    weights: np.ndarray
    by: str  # "preset", "nested" or "in-sample"
    preset_summary: dict | None = None
    choice: dict | None = None


def choose_weights(inputs: BlendInputs, methods: list[str], searches: dict[str, WeightSearch],
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
    preset_summary = {"name": label, "weights": weights_as_dict(inputs.names, preset_w),
                      **blend_score(inputs, preset_w)[1]}
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


def calibrate_blend(inputs: BlendInputs, chosen: _Choice, nested: dict, oof: np.ndarray, test: np.ndarray,
               method: str) -> tuple[np.ndarray, np.ndarray, dict, dict | None]:
    """Per-target calibration of the chosen blend, kept only if it lowers the chosen method's
    NESTED log loss (calibrators fitted inside the nested scheme, never on the rows they are
    scored on). Kept: the test predictions are calibrated by calibrators fitted on all OOF
    rows (saved in calibration.json, which prediction applies), and the OOF predictions
    written are cross-fitted (each nested part calibrated by the other parts' calibrators),
    so they stay honest. Returns (OOF, test, the decision with both scores, what
    calibration.json is to hold: None when the calibration is not kept)."""
    from moakit import calibration
    from moakit.cv import multilabel_folds

    y, ctl = inputs.y, inputs.is_control
    key = "preset" if chosen.method.startswith("preset:") else chosen.method
    off = nested["methods"][key]["log_loss"]
    on = nested["methods"][key]["calibrated"]["log_loss"]
    summary = {"method": method, "kept": bool(on < off), "decided_by": f"nested log loss of {key!r}",
               "nested_log_loss": {"off": off, "on": on}, "oof_uncalibrated": metrics.score(y, oof, ctl)}
    if not summary["kept"]:
        return oof, test, summary, None
    parts = multilabel_folds(np.asarray(y), nested["n_folds"], nested["seed"])
    oof_cal = calibration.cross_fit(np.clip(oof, 0.0, 1.0), y, ctl, parts, method)
    cals = calibration.fit(np.clip(oof, 0.0, 1.0), y, ~ctl, method)
    test_ctl = inputs.test_is_control if inputs.test_is_control is not None else infer_controls([test])
    test_cal = calibration.apply(cals, np.clip(test, 0.0, 1.0), test_ctl)
    saved = {"method": method, "targets": inputs.target_names, "calibrators": cals}
    summary.update({"file": layout.CALIBRATION, "oof": "cross-fitted over the nested parts (honest)"})
    return oof_cal, test_cal, summary, saved


def chosen_summary(inputs: BlendInputs, chosen: _Choice, chosen_score: dict, model_summary: dict) -> dict:
    """blend.json's head: the chosen weights and their scores, beside every model's and the prior's."""
    names, y, ctl = inputs.names, inputs.y, inputs.is_control
    return {
        "names": names, "method": chosen.method, "chosen_by": chosen.by,
        "weights": weights_as_dict(names, chosen.weights),
        **({"weights_per_target": {n: w.tolist() for n, w in zip(names, chosen.weights)}}
           if np.ndim(chosen.weights) == 2 else {}),
        **chosen_score,
        "best_single": min(names, key=lambda n: model_summary[n]["log_loss"]),
        "models": model_summary,
        "prior": metrics.score(y, metrics.zero_controls(metrics.prior_predictions(y, ctl, len(y)), ctl), ctl),
    }


def check_settings(methods: Sequence[str], preset, choose: str, calibrate: str | None, nested_folds: int) -> list[str]:
    """The search methods of a blend, its settings checked before any file is read."""
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
    return methods


def _check_methods(methods: Sequence[str], preset) -> list[str]:
    methods = list(methods)
    for mth in methods:
        if mth not in METHODS:
            raise BlendError(f"unknown weight search method {mth!r} (use one of {', '.join(METHODS)})")
    if not methods and preset is None:
        raise BlendError("nothing to blend with: give a search method or a preset")
    return methods


def blend_score(inputs: BlendInputs, w: np.ndarray) -> tuple[np.ndarray, dict]:
    """The blended OOF predictions of weights ``w`` (controls 0) and their scores."""
    blended = metrics.zero_controls(blend_predictions(inputs.oof, w), inputs.is_control)
    return blended, metrics.score(inputs.y, blended, inputs.is_control)
