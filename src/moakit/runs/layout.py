"""Every path and file name of a run folder, and :func:`kind_of`, the one rule that tells
which kind of folder a path is. No other module spells these names.

A model run (``moakit train``; ``models/<name>`` of a workflow; a saved ``MoAModel``)::

    RUN/
      config.json            resolved config (model, profile, cv, seeds, params)
      manifest.json          versions, data fingerprint, timings, status
      columns.json           gene / cell / scored target columns the run was trained on
      folds.npy              fold id per training row
      holdout.npy            (selection.policy: holdout) per fold, the rows that judge epochs
      stages/<stage>/seed_<s>/features/          fitted feature transform
      stages/<stage>/seed_<s>/features_key.json  its content key and source: fit, link ("from": the
                                                 equal fit it links to) or cache ("cache_key")
      stages/<stage>/seed_<s>/targets.json       target columns this stage predicts
      stages/<stage>/seed_<s>/fold_<k>/          estimator/, valid_pred.npy, test_pred.npy,
                                                 history.json, done.json (written last)
      stages/<stage>/seed_<s>/oof.npy, test.npy  out-of-fold / fold-averaged test predictions
      oof_predictions.csv    sig_id + scored targets (controls 0), averaged over seeds
      test_predictions.csv   the same for the test rows: a submission
      metrics.json           OOF log loss per seed and overall
      graph.json             the task graph's nodes and what each ran
      estimator.json         (a saved MoAModel) the estimator's constructor arguments
      report/                index.html, report.json

A workflow run (``moakit run``; a saved ``MoABlend``)::

    RUN/
      workflow.json  manifest.json  graph.json  estimator.json
      models/<name>/         a model run per entry
      blend/                 a blend folder
      submission.csv         copy of blend/submission.csv
      report/

A blend folder (``moakit blend RUN... --out DIR``; ``RUN/blend`` of a workflow)::

    DIR/
      blend.json             weights, scores, and each model's run folder (relative to DIR)
      oof_predictions.csv    the blended OOF predictions
      submission.csv         the blended test predictions
      per_target_log_loss.csv, correlation_oof.csv / .png, correlation_test.csv / .png
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Kind = Literal["model", "workflow", "blend"]

# --------------------------------------------------------------------------- every folder
MANIFEST = "manifest.json"
GRAPH = "graph.json"
ESTIMATOR = "estimator.json"  # a saved API estimator's constructor arguments
REPORT_DIR = "report"
REPORT_HTML = "index.html"
REPORT_JSON = "report.json"
REPORT_MODEL_SCORES_PNG = "model_scores.png"  # the report's own figures, beside index.html
REPORT_PER_TARGET_PNG = "per_target_log_loss.png"
REPORT_EVALUATION_PNG = "evaluation_pr_auc.png"  # a copy of RUN/evaluation/pr_auc.png
REPORT_DELETION_PNG = "deletion_{target}_{method}.png"  # an explanation's deletion curve
REPORT_CURVES_PNG = "curves_{name}.png"  # a model's training curves
REPORT_FEATURE_MAP_PNG = "deepinsight_{name}_{k}.png"  # a copy of a DeepInsight model's feature map

# --------------------------------------------------------------------------- a model run
CONFIG = "config.json"
COLUMNS = "columns.json"
FOLDS = "folds.npy"
HOLDOUT = "holdout.npy"
STAGES_DIR = "stages"
OOF_PREDICTIONS = "oof_predictions.csv"
TEST_PREDICTIONS = "test_predictions.csv"
METRICS = "metrics.json"
# a stage-seed folder
FEATURES_DIR = "features"
# the fitted features' content key, and the stage-seed whose equal fit they link to (if any)
FEATURES_KEY = "features_key.json"
TARGETS = "targets.json"
STAGE_OOF = "oof.npy"
STAGE_TEST = "test.npy"
# a fold folder
ESTIMATOR_DIR = "estimator"
VALID_PRED = "valid_pred.npy"
TEST_PRED = "test_pred.npy"
HISTORY = "history.json"
DONE = "done.json"  # written last: the fold is complete
FOLD_FILES = (DONE, VALID_PRED, TEST_PRED, ESTIMATOR_DIR)
# inside features/ (a fitted feature pipeline)
FEATURES_MANIFEST = "manifest.json"
FEATURES_STATES = "steps.json"
FEATURES_ARRAYS = "steps.npz"

# inside estimator/ (a fold's fitted estimator; models/estimators.py reads SPEC for its kind)
ESTIMATOR_SPEC = "spec.json"  # its kind and what rebuilds it
ESTIMATOR_WEIGHTS = "weights.pt"  # a torch state dict, loaded with weights_only=True
ESTIMATOR_FEATURES = "features"  # a fold-fitted feature pipeline (the 1D-CNN's quantile + PCA)
ESTIMATOR_NETWORK = "network"  # the network of an estimator that holds one beside its features
STACKED_SPEC = "stacked.json"  # a stacked stage: whether a base stage is inside
POWERSET_COMBOS = "combos.npy"  # label powerset: the label combinations (classes)
POWERSET_OTHER = "other.npy"  # label powerset: the rare combinations' mean label row
DEEPINSIGHT_SPEC = "deepinsight.json"  # DeepInsight features: blocks, resolution, groups
DEEPINSIGHT_SCALER = "scaler.npz"
DEEPINSIGHT_FEATURE_MAP = "feature_map.npz"
DEEPINSIGHT_FEATURE_MAP_PNG = "feature_map.png"
DEEPINSIGHT_RENDER = "render.npz"  # the renderer's pixel coordinates, grid and image size

# --------------------------------------------------------------------------- a workflow run
WORKFLOW = "workflow.json"
MODELS_DIR = "models"
BLEND_DIR = "blend"
SUBMISSION = "submission.csv"

# --------------------------------------------------------------------------- a blend folder
BLEND = "blend.json"
BLEND_OOF = OOF_PREDICTIONS
BLEND_TEST = SUBMISSION
PER_TARGET_LOSS = "per_target_log_loss.csv"
CORRELATION_CSV = {"oof": "correlation_oof.csv", "test": "correlation_test.csv"}
CORRELATION_PNG = {"oof": "correlation_oof.png", "test": "correlation_test.png"}
CALIBRATION = "calibration.json"  # a kept per-target calibration (moakit blend --calibrate)

# --------------------------------------------------------------------------- moakit evaluate (any run)
EVALUATION_DIR = "evaluation"  # evaluation.json, per_target.csv, pr_auc.png
EVALUATION = "evaluation.json"
EVALUATION_PNG = "pr_auc.png"
EVALUATION_CSV = "per_target.csv"
SHUFFLED_DIR = "shuffled"  # the label-shuffled baseline: shuffled/seed_<s>/<member>/, model runs

# --------------------------------------------------------------------------- moakit explain (a model run)
EXPLAIN_DIR = "explain"  # RUN/explain/<target>.<method>.json
EXPLAIN_GLOB = "*.json"

# --------------------------------------------------------------------------- a data folder
ANSWERS_DIR = "answers"
TEST_ANSWERS_STEM = "test_targets_scored"
TEST_DRUG_STEM = "test_drug"  # the test rows' drug ids (sig_id, drug_id)


SEED_PREFIX, FOLD_PREFIX = "seed_", "fold_"
# every fold's history.json, relative to RUN/stages
FOLD_HISTORY_GLOB = f"*/{SEED_PREFIX}*/{FOLD_PREFIX}*/{HISTORY}"


def stage_dir(run_dir: str | Path, stage: str, seed: int) -> Path:
    """``RUN/stages/<stage>/seed_<seed>`` (``stage``: a stage's name)."""
    return Path(run_dir) / STAGES_DIR / stage / f"{SEED_PREFIX}{seed}"


def fold_dir(stage_dir_: str | Path, fold: int) -> Path:
    return Path(stage_dir_) / f"{FOLD_PREFIX}{fold}"


def sibling_seed_dirs(stage_dir_: str | Path) -> list[Path]:
    """The other seeds' folders of the stage a ``seed_<s>`` folder belongs to, by seed."""
    here = Path(stage_dir_)
    found = [p for p in here.parent.glob(f"{SEED_PREFIX}*") if p.is_dir() and p.name != here.name]
    return sorted((p for p in found if p.name.removeprefix(SEED_PREFIX).isdigit()), key=lambda p: seed_of(p.name))


def seed_of(name: str) -> int:
    """The seed of a ``seed_<s>`` folder name; ValueError for any other name."""
    return _number(name, SEED_PREFIX)


def fold_of(name: str) -> int:
    """The fold of a ``fold_<k>`` folder name; ValueError for any other name."""
    return _number(name, FOLD_PREFIX)


def _number(name: str, prefix: str) -> int:
    rest = name.removeprefix(prefix)
    if rest == name or not rest.isdigit():
        raise ValueError(f"{name!r}: not a {prefix}<n> folder name")
    return int(rest)


def estimator_dir(stage_dir_: str | Path, fold: int) -> Path:
    return fold_dir(stage_dir_, fold) / ESTIMATOR_DIR


def model_dir(workflow_dir: str | Path, name: str) -> Path:
    """A workflow's model entry ``name``: ``RUN/models/<name>``."""
    return Path(workflow_dir) / MODELS_DIR / name


def blend_dir(workflow_dir: str | Path) -> Path:
    return Path(workflow_dir) / BLEND_DIR


def report_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / REPORT_DIR


def answers_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / ANSWERS_DIR


def explain_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / EXPLAIN_DIR


def explain_file(run_dir: str | Path, target: str, method: str) -> Path:
    """RUN/explain/<target>.<method>.json, the target's name made file-safe."""
    import re

    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", target)
    return explain_dir(run_dir) / f"{safe}.{method}.json"


def evaluation_dir(root: str | Path) -> Path:
    """``ROOT/evaluation`` of ``moakit evaluate`` (ROOT: a model, workflow or blend folder)."""
    return Path(root) / EVALUATION_DIR


def shuffled_root(root: str | Path) -> Path:
    """``ROOT/shuffled``: the label-shuffled baseline's runs of ``moakit evaluate``."""
    return Path(root) / SHUFFLED_DIR


def shuffled_dir(root: str | Path, seed: int, member: str) -> Path:
    """``ROOT/shuffled/seed_<seed>/<member>``: one baseline model run."""
    return shuffled_root(root) / f"{SEED_PREFIX}{seed}" / member


def shuffled_seeds(root: str | Path) -> list[int]:
    """The permutation seeds with a ``ROOT/shuffled/seed_<s>`` folder, ascending."""
    seeds = []
    for path in shuffled_root(root).glob(f"{SEED_PREFIX}*"):
        try:
            seeds.append(seed_of(path.name))
        except ValueError:
            continue
    return sorted(seeds)


def kind_of(path: str | Path) -> Kind | None:
    """What ``path`` holds: ``"workflow"`` (it has workflow.json), ``"model"`` (config.json),
    ``"blend"`` (blend.json, as ``moakit blend --out`` and a workflow's ``blend/`` write), or
    None (not a moakit run folder, or not a folder). A model run and a workflow write
    their marker first, so an interrupted one is still recognised; a blend folder writes
    blend.json last, so a half-written one is not. The markers never share a folder."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / WORKFLOW).is_file():
        return "workflow"
    if (path / CONFIG).is_file():
        return "model"
    if (path / BLEND).is_file():
        return "blend"
    return None


def describe_kind(kind: Kind | None) -> str:
    """Words for error messages: "a model run", "a workflow run", "a blend folder", ..."""
    return {"model": "a model run", "workflow": "a workflow run", "blend": "a blend folder"}.get(
        kind, "not a moakit run folder")
