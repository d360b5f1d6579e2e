"""The per-target prior judged like the models it judges: out of fold on the model's own
folds (issue 27). Simulated data; one smoke-trained drug-CV Simple NN."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moakit import metrics
from moakit.cv import assign_folds


def test_oof_prior_predicts_each_fold_with_the_other_folds_means():
    y = np.array([[1, 0], [0, 0], [1, 1], [0, 1], [0, 0], [0, 0]], float)
    ctl = np.array([False, False, False, False, False, True])
    folds = np.array([0, 0, 1, 1, 2, 2])
    p = metrics.oof_prior_predictions(y, ctl, folds)
    # fold 0's rows: the means of rows 2, 3, 4 (treated rows of folds 1 and 2)
    assert p[0].tolist() == pytest.approx([1 / 3, 2 / 3]) and p[1].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert p[2].tolist() == pytest.approx([1 / 3, 0.0])  # rows 0, 1, 4
    assert p[4].tolist() == pytest.approx([0.5, 0.5]) and p[5].tolist() == [0.0, 0.0]  # control: 0
    scores = metrics.prior_scores(y, ctl, folds)
    assert scores["oof"]["log_loss"] > scores["in_sample"]["log_loss"]


def test_one_drug_target_under_drug_cv_oof_prior_far_above_in_sample(sim_data):
    """A target whose positives are all one drug sits in one fold under the drug-aware CV:
    the out-of-fold prior predicts it 0 there (clipped as the metric clips), so its loss is
    far above the in-sample prior's, which has seen those rows."""
    train = sim_data.train
    y = np.array(train.scored, float)
    ctl = np.asarray(train.is_control)
    drugs, counts = np.unique(train.drug_id[~ctl], return_counts=True)
    drug = drugs[np.flatnonzero(counts == 6)[0]]
    y[:, 0] = (train.drug_id == drug).astype(float)
    train_one = train.subset(np.arange(len(train)))
    train_one.scored = y.astype(np.float32)
    folds = assign_folds(train_one, "drug", 5, 0)
    assert len(np.unique(folds[y[:, 0] > 0])) == 1  # the drug is held out whole
    oof = metrics.per_target_log_loss(y, metrics.oof_prior_predictions(y, ctl, folds))[0]
    in_sample = metrics.per_target_log_loss(y, metrics.prior_predictions(y, ctl, len(y)))[0]
    assert oof > 4 * in_sample, (oof, in_sample)
    # the positives' fold predicts 0 there, clipped to EPS: each positive costs -log(EPS)
    from moakit.data.schema import EPS

    n_pos = int(y[:, 0].sum())
    assert oof >= n_pos * -np.log(EPS) / len(y) - 1e-9


@pytest.fixture(scope="module")
def drug_cv_run(sim_folder, tmp_path_factory):
    from moakit import runner
    from moakit.config import load_config
    from moakit.data.io import load

    out = tmp_path_factory.mktemp("prior") / "simple_nn_drug_cv"
    cfg = load_config("simple_nn_drug_cv", profile="smoke")
    runner.train(cfg, load(sim_folder), out, show_progress=False)
    return out


def test_drug_cv_model_is_judged_against_its_out_of_fold_prior(drug_cv_run):
    from moakit.report import collect_report

    m = json.loads((drug_cv_run / "metrics.json").read_text())
    assert {"prior", "prior_oof"} <= set(m)
    folds = np.load(drug_cv_run / "folds.npy")
    assert len(np.unique(folds)) == json.loads((drug_cv_run / "config.json").read_text())["cv"]["n_folds"]
    # the drug-aware CV's out-of-fold prior is far worse than the in-sample one (rare targets'
    # positives in one fold), and the smoke-trained model beats it
    assert m["prior_oof"]["log_loss"] > 1.5 * m["prior"]["log_loss"]
    assert m["log_loss"] < m["prior_oof"]["log_loss"]
    report = collect_report(drug_cv_run)
    assert not [w for w in report["warnings"] if "no better than the per-target prior (OOF" in w["text"]]
    assert report["prior"]["oof_log_loss"] == pytest.approx(m["prior_oof"]["log_loss"])
    assert report["per_target"]["prior_label"] == "out-of-fold prior"


def test_a_model_worse_than_its_out_of_fold_prior_is_flagged(drug_cv_run, tmp_path):
    """The same judgement flags a model that does not beat its out-of-fold prior, and says which prior."""
    import shutil

    from moakit.report import collect_report

    run = tmp_path / "run"
    shutil.copytree(drug_cv_run, run)
    m = json.loads((run / "metrics.json").read_text())
    m["log_loss"] = m["prior_oof"]["log_loss"] + 0.001
    (run / "metrics.json").write_text(json.dumps(m))
    warnings = [w["text"] for w in collect_report(run)["warnings"]]
    assert any("no better than the per-target prior" in w and "out-of-fold prior, same folds" in w for w in warnings)
