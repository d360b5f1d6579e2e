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

The package: :mod:`~moakit.blend.search` (the objective, SLSQP / Optuna / per-target
weights, the nested evaluation: arrays only), :mod:`~moakit.blend.presets` (fixed weights,
the weights a blend.json records), :mod:`~moakit.blend.diversity` (mean target-wise
correlation), :mod:`~moakit.blend.choice` (which weights, whether calibration is kept),
:mod:`~moakit.blend.members` (reading the member runs) and :mod:`~moakit.blend.folder`
(:func:`blend_runs`: writing the blend folder). Everything is importable from
``moakit.blend``.
"""

from moakit.blend.diversity import mean_target_correlation, plot_correlation
from moakit.blend.folder import CALIBRATION_FILE, BlendResult, apply_saved_calibration, blend_runs
from moakit.blend.members import BlendInputs, load_runs, oof_prior
from moakit.blend.presets import PRESETS, apply_preset, prediction_weights, recorded_weights
from moakit.blend.search import (DEFAULT_METHODS, METHODS, BlendError, BlendObjective, WeightSearch,
                                 blend_predictions, nested_evaluation, search_weights, search_weights_per_target)

__all__ = ["CALIBRATION_FILE", "DEFAULT_METHODS", "METHODS", "PRESETS", "BlendError", "BlendInputs", "BlendObjective",
           "BlendResult", "WeightSearch", "apply_preset", "apply_saved_calibration", "blend_predictions", "blend_runs",
           "load_runs", "mean_target_correlation", "nested_evaluation", "oof_prior", "plot_correlation",
           "prediction_weights", "recorded_weights", "search_weights", "search_weights_per_target"]
