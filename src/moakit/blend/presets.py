"""Fixed blend weights: the write-up's presets, a preset as a weight vector for given models,
and the chosen weights as a blend.json records them (what prediction applies)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from moakit.blend.search import BlendError

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


def weights_as_dict(names: Sequence[str], w: np.ndarray) -> dict[str, float]:
    """Per model its weight (per-target weights: their mean over the targets)."""
    w = np.asarray(w, np.float64)
    return {n: float(v) for n, v in zip(names, w.mean(axis=1) if w.ndim == 2 else w)}
