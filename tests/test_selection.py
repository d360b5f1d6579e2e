"""The selection policy: which rows judge a fold's epochs (issue: honest out-of-fold predictions).

Under ``holdout`` the rows of fold k decide nothing for fold k's network, so its weights
(and its out-of-fold predictions) are the same whatever labels those rows carry."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from moakit import runner
from moakit.config import load_config
from moakit.data.dataset import MoAData
from moakit.nn.train import TrainParams, fit_network


def _shuffled_fold_labels(data: MoAData, folds: np.ndarray, k: int) -> MoAData:
    """The labels of fold k's rows shuffled among them: garbage for those rows, while every
    column sum (hence the targets a stage learns) stays the same."""
    tr = data.train
    rows = np.flatnonzero(folds == k)
    perm = np.random.default_rng(1).permutation(rows)
    scored, nonscored = tr.scored.copy(), tr.nonscored.copy()
    scored[rows], nonscored[rows] = tr.scored[perm], tr.nonscored[perm]
    assert not np.array_equal(scored, tr.scored)
    return MoAData(train=dataclasses.replace(tr, scored=scored, nonscored=nonscored), test=data.test, source="garbage")


def _weights(path) -> dict:
    est = path / "estimator"
    if (est / "network").is_dir():  # the 1D-CNN: its network beside its fold features
        est = est / "network"
    return torch.load(est / "weights.pt", weights_only=True)


# For a stacked model its first stage: a later stage reads the earlier stage's OOF predictions
# of every fold, which by design carry every fold's labels (the TabNet stage: the next test).
@pytest.mark.parametrize("name,stage", [("simple_nn", "scored"), ("three_stage_nn", "nonscored"),
                                        ("resnet_2heads", "scored"), ("deepinsight_efficientnet", "scored"),
                                        ("cnn1d", "scored")])
def test_holdout_weights_ignore_the_oof_folds_labels(name, stage, sim_data, tmp_path):
    config = load_config(name, profile="smoke", selection="holdout")
    first = runner.train(config, sim_data, tmp_path / "a", show_progress=False)
    folds = np.load(first.run_dir / "folds.npy")
    k = 0
    garbage = _shuffled_fold_labels(sim_data, folds, k)
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "b" / "folds.npy", folds)  # the same folds (they are drawn from the labels)
    second = runner.train(config, garbage, tmp_path / "b", show_progress=False)
    a = first.run_dir / "stages" / stage / "seed_0" / f"fold_{k}"
    b = second.run_dir / "stages" / stage / "seed_0" / f"fold_{k}"
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    np.testing.assert_array_equal(np.load(a / "valid_pred.npy"), np.load(b / "valid_pred.npy"))
    # ... while fold 1 (whose training rows include fold 0's) did change
    w1a = _weights(first.run_dir / "stages" / stage / "seed_0" / "fold_1")
    w1b = _weights(second.run_dir / "stages" / stage / "seed_0" / "fold_1")
    assert any(not torch.equal(w1a[key], w1b[key]) for key in w1a)


def test_holdout_tabnet_fold_ignores_its_oof_rows_labels(sim_data, tmp_path):
    """The 2-stage NN's TabNet stage: a fold job of the runner, on the stage's matrices, gives
    bit-identical weights whatever scored labels its OOF rows carry."""
    config = load_config("two_stage_nn_tabnet", profile="smoke", selection="holdout")
    run = runner.train(config, sim_data, tmp_path / "run", show_progress=False).run_dir
    model, seeds = runner.build_model(config), config.seeds
    upstream = [(np.load(run / "stages" / "nonscored" / f"seed_{s}" / "oof.npy"),
                 np.load(run / "stages" / "nonscored" / f"seed_{s}" / "test.npy")) for s in seeds]
    arrays = runner.fit_stage_seed(sim_data, *upstream, model=model, index=1, seed=seeds[0], seeds=seeds,
                                   run_dir=str(run))  # the saved stage-2 features, reloaded
    folds, judge = np.load(run / "folds.npy"), np.load(run / "holdout.npy").astype(bool)
    k, treated = 0, ~sim_data.train.is_control
    oof_rows = np.flatnonzero(folds == k)
    garbage = dataclasses.replace(arrays, Y=arrays.Y.copy())
    garbage.Y[oof_rows] = np.random.default_rng(1).permutation(arrays.Y[oof_rows])
    assert not np.array_equal(garbage.Y, arrays.Y)
    weights = []
    for name, arr in (("a", arrays), ("b", garbage)):
        # the fold job reads its stage's fitted features (TabNet's categorical sizes) beside its folder
        shutil.copytree(run / "stages" / "scored" / f"seed_{seeds[0]}" / "features", tmp_path / name / "features")
        job = runner.FoldJob(model_name=config.model, params=config.params, stage=model.stages()[1], seed=seeds[0],
                             fold=k, out_dir=str(tmp_path / name / f"fold_{k}"), arrays=arr,
                             fit_rows=np.flatnonzero(treated & (folds != k) & ~judge[k]),
                             judge_rows=np.flatnonzero(treated & judge[k]), oof_rows=oof_rows)
        weights.append(_weights(Path(runner.run_fold_job(job))))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    # the same fold as the run trained it
    trained = _weights(run / "stages" / "scored" / f"seed_{seeds[0]}" / f"fold_{k}")
    assert all(torch.equal(trained[key], weights[0][key]) for key in trained)


def test_judge_masks_per_policy(sim_data):
    config = load_config("simple_nn", profile="smoke")
    folds = np.arange(len(sim_data.train)) % config.cv.n_folds
    for policy in ("oof", "last", "holdout"):
        cfg = load_config("simple_nn", profile="smoke", selection=policy)
        judge = runner.judge_masks(cfg, sim_data.train, folds)
        for k, mask in judge.items():
            if policy == "oof":
                assert np.array_equal(mask, folds == k)
            elif policy == "last":
                assert not mask.any()
            else:  # a tenth of the other folds' rows, never a row of fold k
                assert not (mask & (folds == k)).any()
                assert 0.07 < mask.sum() / (folds != k).sum() < 0.13


def test_holdout_is_drug_aware_under_the_drug_cv(sim_data):
    cfg = load_config("simple_nn_drug_cv", profile="smoke", selection="holdout")
    tr = sim_data.train
    folds = runner.assign_folds(tr, "drug", cfg.cv.n_folds, cfg.cv.seed, cfg.cv.max_replicates)
    judge = runner.judge_masks(cfg, tr, folds)
    drugs, counts = np.unique(tr.drug_id, return_counts=True)
    small = set(drugs[counts <= cfg.cv.max_replicates])
    for k, mask in judge.items():
        train_rows = (folds != k)
        for drug in small:
            rows = (tr.drug_id == drug) & train_rows
            # a drug's training rows are all held out or all kept
            assert mask[rows].all() or not mask[rows].any()


def test_last_policy_keeps_the_last_epoch():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    Y = (rng.random((200, 3)) < 0.2).astype(np.float32)
    net = torch.nn.Sequential(torch.nn.Linear(8, 3))
    result = fit_network(net, X, Y, X[:0], Y[:0], TrainParams(epochs=4, batch_size=50), seed=0)
    assert result.best_epoch == 3 and result.best_loss is None
    assert [h["valid_loss"] for h in result.history] == [None] * 4


def test_oof_policy_is_flagged_optimistic(sim_data, tmp_path):
    cfg = load_config("simple_nn", profile="smoke", selection="oof")
    result = runner.train(cfg, sim_data, tmp_path / "run", show_progress=False)
    assert result.metrics["selection"]["policy"] == "oof" and result.metrics["selection"]["optimistic"]


def test_tabnet_without_judge_rows_runs_every_epoch_and_keeps_the_last():
    from moakit.models.two_stage_tabnet import TabNetConfig, fit_tabnet

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10)).astype(np.float32)
    Y = (rng.random((300, 4)) < 0.2).astype(np.float32)
    cfg = TabNetConfig(max_epochs=3, batch_size=128, virtual_batch_size=64, cat_idxs=[], cat_dims=[], cat_emb_dim=[])
    est = fit_tabnet(cfg, X, Y, X[:0], Y[:0], seed=0)
    assert est.info["epochs_run"] == 3 and est.info["best_epoch"] == 2
    assert est.predict_proba(X[:5]).shape == (5, 4)


def test_progress_bars_show_epochs_without_judge_rows(sim_data, tmp_path):
    cfg = load_config("simple_nn", profile="smoke", selection="last")
    result = runner.train(cfg, sim_data, tmp_path / "run", show_progress=True)
    assert result.metrics["selection"]["policy"] == "last"
