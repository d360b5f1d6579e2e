"""Per-MoA trust (`moakit evaluate`): per-target metrics on honest rows beside the prior and
a label-shuffled baseline. One smoke-trained Simple NN on ~1500 simulated rows, its
shuffled baseline at 2 seeds (smoke profile)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from moakit import evaluate as ev
from moakit import metrics
from moakit.cli import app


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, data folder, the CLI's --json output, the --out CSV)."""
    from moakit import runner
    from moakit.config import load_config
    from moakit.data.io import load
    from moakit.data.simulate import simulate

    root = tmp_path_factory.mktemp("evaluate")
    data_dir = simulate(root / "data", n_rows=1500, seed=0)
    run = root / "simple_nn"
    runner.train(load_config("simple_nn", profile="smoke"), load(data_dir), run, show_progress=False)
    csv = root / "trust.csv"
    result = CliRunner().invoke(app, ["evaluate", str(run), "--shuffled-baseline", "--seeds", "2", "--json",
                                      "--quiet", "--out", str(csv)])
    assert result.exit_code == 0, result.output
    return run, data_dir, json.loads(result.stdout), csv


def _frame(path):
    return pd.read_csv(path).set_index("sig_id")


def test_json_output_fields_and_files(trained):
    run, _, doc, csv = trained
    assert doc["kind"] == "model" and set(doc["sets"]) == {"oof", "test"}
    assert doc["shuffled"]["seeds"] == [0, 1]
    for key in ("oof", "test"):
        s = doc["sets"][key]
        for field in ("rows", "targets_with_positives", "mean_pr_auc", "mean_shuffled_pr_auc", "mean_prior_pr_auc",
                      "beats_shuffled", "no_better_than_shuffled", "log_loss", "prior_log_loss", "mean_ece",
                      "mean_compound_pr_auc"):
            assert field in s, (key, field)
        rec = doc["per_target"][key][0]
        for field in ("target", "positives", "log_loss", "pr_auc", "roc_auc", "brier", "ece", "prior_log_loss",
                      "shuffled_pr_auc_mean", "shuffled_pr_auc_sd", "trust", "compound_pr_auc"):
            assert field in rec, (key, field)
    assert doc["sets"]["oof"]["prior"].startswith("out of fold") and doc["sets"]["test"]["prior"] == "training means"
    assert "no better than shuffled" in doc["rule"] and "equal-count" in doc["calibration_bins"]
    table = pd.read_csv(csv)
    assert set(table["rows"]) == {"oof", "test"} and len(table) == 2 * doc["sets"]["oof"]["targets"]
    files = doc["files"]
    assert open(files["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert (run / "evaluation" / "evaluation.json").exists() and (run / "evaluation" / "per_target.csv").exists()


def test_metrics_are_those_of_the_honest_rows(trained):
    """PR-AUC, positives and the out-of-fold prior's loss recomputed independently from the run's files."""
    from moakit.data.io import load

    run, data_dir, doc, _ = trained
    data = load(data_dir)
    treated = ~data.train.is_control
    oof = _frame(run / "oof_predictions.csv").loc[data.train.sig_id]
    names = list(oof.columns)
    y = data.train.scored
    folds = np.load(run / "folds.npy")
    prior = metrics.oof_prior_predictions(y, data.train.is_control, folds)
    recs = {r["target"]: r for r in doc["per_target"]["oof"]}
    for name in [r["target"] for r in doc["per_target"]["oof"][:5]]:
        j = names.index(name)
        assert recs[name]["positives"] == int(y[treated, j].sum())
        assert recs[name]["pr_auc"] == pytest.approx(average_precision_score(y[treated, j], oof.to_numpy()[treated, j]))
        want = metrics.per_target_log_loss(y[treated][:, [j]], prior[treated][:, [j]])[0]
        assert recs[name]["prior_log_loss"] == pytest.approx(want)
    # the table is sorted by PR-AUC, best first
    aucs = [r["pr_auc"] for r in doc["per_target"]["oof"] if r["pr_auc"] is not None]
    assert aucs == sorted(aucs, reverse=True)


def test_flags_follow_the_rule(trained):
    """The shuffled baseline's PR-AUC per seed, read from its own run folders; flag iff
    PR-AUC <= mean + 2 sd (ddof=1)."""
    from moakit.data.io import load

    run, data_dir, doc, _ = trained
    data = load(data_dir)
    treated = ~data.train.is_control
    y = data.train.scored[treated]
    names = list(data.train.scored_names)
    base = [_frame(run / "shuffled" / f"seed_{s}" / "simple_nn" / "oof_predictions.csv").loc[data.train.sig_id]
            [names].to_numpy()[treated] for s in (0, 1)]
    checked = 0
    for rec in doc["per_target"]["oof"]:
        j = names.index(rec["target"])
        if y[:, j].sum() == 0:
            assert rec["trust"] == "no positives"
            continue
        b = np.array([average_precision_score(y[:, j], p[:, j]) for p in base])
        assert rec["shuffled_pr_auc_mean"] == pytest.approx(b.mean())
        want = "beats shuffled" if rec["pr_auc"] > b.mean() + 2 * b.std(ddof=1) else "no better than shuffled"
        assert rec["trust"] == want, rec
        checked += 1
    assert checked > 50
    s = doc["sets"]["oof"]
    assert s["beats_shuffled"] + s["no_better_than_shuffled"] == s["targets_with_positives"]
    assert s["beats_shuffled"] > 0 and s["mean_pr_auc"] > s["mean_shuffled_pr_auc"]


def test_baseline_runs_use_the_models_folds_and_shuffled_labels(trained):
    run, data_dir, _, _ = trained
    from moakit.data.io import load

    base = run / "shuffled" / "seed_0" / "simple_nn"
    assert np.array_equal(np.load(base / "folds.npy"), np.load(run / "folds.npy"))
    assert json.loads((base / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    data = load(data_dir)
    shuffled = ev.shuffle_labels(data, by_drug=False, seed=0)
    assert not np.array_equal(shuffled.train.scored, data.train.scored)
    assert np.array_equal(shuffled.train.features, data.train.features)


def test_rerun_reuses_the_baseline_and_the_report_shows_the_section(trained):
    run, _, doc, _ = trained
    from moakit.report import write_report

    stamp = (run / "shuffled" / "seed_1" / "simple_nn" / "metrics.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["evaluate", str(run), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["sets"]["oof"]["mean_shuffled_pr_auc"] == pytest.approx(
        doc["sets"]["oof"]["mean_shuffled_pr_auc"])
    assert (run / "shuffled" / "seed_1" / "simple_nn" / "metrics.json").stat().st_mtime_ns == stamp
    text = write_report(run).read_text()
    assert "Per-MoA trust" in text and "evaluation_pr_auc.png" in text
    table = CliRunner().invoke(app, ["evaluate", str(run)])
    assert table.exit_code == 0 and "beats shuffled" in table.output and "mean PR-AUC" in table.output


def test_evaluate_a_blend_folder(trained, tmp_path):
    """A blend folder's blended OOF is evaluated, against the members' blended out-of-fold prior."""
    from moakit import blend

    run, _, _, _ = trained
    out = tmp_path / "blend"
    blend.blend_runs([run, run], out, names=["a", "b"], methods=["slsqp"], nested_folds=2)
    res = ev.evaluate(out)
    assert res.summary["kind"] == "blend" and res.summary["members"] == ["a", "b"]
    assert res.summary["sets"]["oof"]["prior"].endswith("blended)")
    assert (res.tables["oof"]["trust"].isin(["no baseline", "no positives"])).all()
    single = ev.evaluate(run, write=False)
    pd.testing.assert_series_equal(res.tables["oof"]["pr_auc"].sort_index(),
                                   single.tables["oof"]["pr_auc"].sort_index(), rtol=1e-5)


def test_evaluate_a_workflow_run(trained, tmp_path):
    """RUN/models/<name>/ + RUN/blend/: the blend is evaluated and evaluation/ goes to RUN."""
    import shutil

    from moakit import blend

    run, _, _, _ = trained
    wf = tmp_path / "wf"
    for name in ("a", "b"):
        shutil.copytree(run, wf / "models" / name, ignore=shutil.ignore_patterns("shuffled", "evaluation"))
    blend.blend_runs([wf / "models" / "a", wf / "models" / "b"], wf / "blend", names=["a", "b"], methods=["slsqp"],
                     nested_folds=0)
    res = ev.evaluate(wf)
    assert res.summary["kind"] == "workflow" and (wf / "evaluation" / "evaluation.json").exists()
    assert set(res.summary["sets"]) == {"oof", "test"}


def test_prediction_applies_a_kept_calibration(trained, tmp_path):
    """`moakit predict` on a calibrated blend folder reproduces its submission.csv."""
    from moakit import blend
    from moakit.inference import predict

    run, data_dir, _, _ = trained
    out = tmp_path / "cal"
    res = blend.blend_runs([run, run], out, names=["a", "b"], methods=["slsqp"], nested_folds=3, calibrate="platt")
    assert res.summary["calibration"]["kept"] is (out / "calibration.json").exists()
    frame = predict(out, data_dir / "test_features.csv")
    sub = _frame(out / "submission.csv").loc[frame["sig_id"]]
    np.testing.assert_allclose(frame.drop(columns="sig_id").to_numpy(), sub.to_numpy(), atol=2e-6)


def test_errors_name_the_folder(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1 and "not a moakit run folder" in result.output


# --------------------------------------------------------------------------- units


def test_calibration_error_uses_equal_count_bins():
    y = np.array([0, 0, 0, 1] * 25, float)
    assert ev.calibration_error(y, np.full(100, 0.25)) == pytest.approx(0.0)
    assert ev.calibration_error(y, np.full(100, 0.75)) == pytest.approx(0.5)
    p = np.linspace(0, 1, 100)
    y = (p > 0.5).astype(float)  # 10 bins: five at rate 0, five at 1
    want = np.mean([abs(p[i * 10:(i + 1) * 10].mean() - y[i * 10:(i + 1) * 10].mean()) for i in range(10)])
    assert ev.calibration_error(y, p, n_bins=10) == pytest.approx(want)


def test_flag_rule():
    assert ev.flag(0.30, np.array([0.1, 0.2])) == "beats shuffled"  # 0.15 + 2 * 0.0707 = 0.291
    assert ev.flag(0.29, np.array([0.1, 0.2])) == "no better than shuffled"
    assert ev.flag(0.2, np.array([0.19])) == "beats shuffled"  # one seed: sd 0
    assert ev.flag(float("nan"), np.array([0.1])) == "no positives"
    assert ev.flag(0.5, np.array([])) == "no baseline"


def test_shuffle_by_drug_keeps_replicates_together(sim_data):
    data = ev.shuffle_labels(sim_data, by_drug=True, seed=1)
    train, before = data.train, sim_data.train
    treated = ~train.is_control
    assert np.array_equal(train.scored[~treated], before.scored[~treated])
    for drug in np.unique(train.drug_id[treated])[:50]:
        rows = train.scored[train.drug_id == drug]
        assert (rows == rows[0]).all()
    drug_labels = lambda ds: sorted(map(tuple, pd.DataFrame(ds.scored[treated]).groupby(ds.drug_id[treated])
                                        .first().to_numpy().astype(int)))
    assert drug_labels(train) == drug_labels(before)  # the drugs' label rows, permuted
    assert not np.array_equal(train.scored, before.scored)
    # scored and non-scored label rows move together (one permutation for both)
    pairs = lambda ds: {(tuple(s), tuple(n)) for s, n in zip(ds.scored[treated].astype(int),
                                                             ds.nonscored[treated].astype(int))}
    assert pairs(train) <= pairs(before)
