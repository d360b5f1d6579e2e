"""The runner split into its parts (executors, fold jobs, stage chain, model checks, data
identity), the stage-seed plan object, one resume rule, and an exact holdout fraction."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from moakit import cv, executors, fold_jobs, runner, stages, workflow
from moakit.config import load_config
from moakit.data import identity
from moakit.models import checks
from moakit.runs import run as runs_run

SPLIT = {executors: ["EXECUTORS", "Executor", "FailureRecorder", "LocalExecutor", "as_executor", "execute",
                     "make_executor", "node_error", "write_trace"],
         fold_jobs: ["FoldJob", "StageArrays", "fit_stage_seed", "fold_done", "fold_seed", "gather_stage_seed",
                     "load_saved_features", "run_fold_job", "train_fold"],
         stages: ["StageChain", "predict_run", "stage_dir", "stage_targets", "training_rows"],
         checks: ["build_model", "check_config"],
         identity: ["data_fingerprint", "data_source"],
         runs_run: ["check_resume", "resume_identity"]}


def test_the_runners_old_names_are_the_moved_objects():
    for module, names in SPLIT.items():
        for name in names:
            assert getattr(runner, name) is getattr(module, name), name
    assert runner.stage_blocks is stages.stage_blocks
    # explain / streaming import the stage chain from moakit.stages, not through private runner aliases
    assert not hasattr(runner, "_stage_blocks") and not hasattr(runner, "_fit_blocks")
    from moakit.feature_reuse import _fingerprint  # noqa: F401 (imports data_fingerprint from its module)


def test_split_modules_are_small_with_short_functions():
    src = Path(runner.__file__).parent
    for path in [src / "runner.py", src / "executors.py", src / "fold_jobs.py", src / "stages.py",
                 src / "models" / "checks.py", src / "data" / "identity.py"]:
        text = path.read_text()
        assert len(text.splitlines()) < 500, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 75, (path.name, node.name)


def test_one_resume_rule():
    """The workflow and the runner both refuse a folder through moakit.runs.check_resume."""
    assert not hasattr(workflow, "_check_resume")
    assert "check_resume(" in inspect.getsource(workflow._WorkflowRun.run)
    assert "check_resume(" in inspect.getsource(runner.prepare_run)


def test_plan_fold_job_rows(sim_data, tmp_path):
    """A fold trains on the stage's rows of the other folds minus its judge rows, is judged
    on its judge rows only and predicts every row of its fold (controls included)."""
    config = load_config("simple_nn", profile="smoke", selection="holdout")
    model = checks.build_model(config)
    tr = sim_data.train
    folds = cv.assign_folds(tr, config.cv.scheme, config.cv.n_folds, config.cv.seed)
    judge = runner.judge_masks(config, tr, folds)
    plan = runner.ModelPlan("m", config, model, sim_data, tmp_path, folds, judge, device="cpu")
    stage = model.stages()[0]
    treated = ~tr.is_control
    for k in range(config.cv.n_folds):
        job = plan.fold_job(stage, config.seeds[0], k)
        fit, held = np.zeros(len(tr), bool), np.zeros(len(tr), bool)
        fit[job.fit_rows], held[job.judge_rows] = True, True
        assert np.array_equal(fit, treated & (folds != k) & ~judge[k])
        assert np.array_equal(held, treated & judge[k]) and not (held & (folds == k)).any()
        assert np.array_equal(job.oof_rows, np.flatnonzero(folds == k))
        assert job.device == "cpu" and not job.refit
        assert Path(job.out_dir) == tmp_path / "stages" / stage.name / f"seed_{config.seeds[0]}" / f"fold_{k}"


@pytest.mark.parametrize("fraction,parts", [(0.1, (1, 10)), (0.15, (3, 20)), (0.2, (1, 5)), (0.3, (3, 10)),
                                            (0.45, (9, 20)), (0.01, (1, 100)), (0.123, (1, 8))])
def test_holdout_parts(fraction, parts):
    assert cv.holdout_parts(fraction) == parts


def test_holdout_fraction_is_exact(sim_data):
    """0.15 holds out 15% of the training rows (it was 1/7 = 14.3%), split like the CV."""
    tr = sim_data.train
    rows = np.arange(len(tr))
    for fraction in (0.15, 0.3):
        mask = cv.holdout_mask(tr, rows, "old", fraction, seed=5)
        assert abs(mask.sum() - round(fraction * len(rows))) <= 3, (fraction, mask.sum(), len(rows))
    # a unit fraction is the one part of a k-way split it always was
    tenth = cv.holdout_mask(tr, rows, "old", 0.1, seed=5)
    assert np.array_equal(tenth, cv.assign_folds(tr.subset(rows), "old", 10, 5) == 0)
    drug = cv.holdout_mask(tr, rows, "drug", 0.15, seed=5)
    assert 0.10 < drug.mean() < 0.20
    with pytest.raises(ValueError, match=r"15% \(3 of 20 parts\) from 12 training rows"):
        cv.holdout_mask(tr, rows[:12], "old", 0.15, seed=5)


def test_selection_summary_says_what_a_fraction_rounds_to():
    exact = load_config("simple_nn", profile="smoke", selection="holdout")
    assert "holdout_parts" not in runner.selection_summary(exact)
    cfg = exact.model_copy(update={"selection": exact.selection.model_copy(update={"holdout_fraction": 0.123})})
    assert runner.selection_summary(cfg)["holdout_parts"] == [1, 8]
