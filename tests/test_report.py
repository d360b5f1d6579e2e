"""The HTML report of single-model and multi-model run folders (fake runs, nothing trained)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from moakit import blend
from moakit.report import ReportError, write_report

from test_blend import tiny_runs, write_fake_run  # noqa: F401  (fixture)


def _png(path: Path) -> Path:
    """A small real PNG (a DeepInsight-like feature map stand-in)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.imshow(np.arange(16).reshape(4, 4))
    fig.savefig(path)
    plt.close(fig)
    return path


def _images(index: Path) -> list[str]:
    text = index.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    for src in srcs:
        assert "/" not in src and (index.parent / src).is_file(), src
    assert "<script" not in text and "<link" not in text and "http" not in text.split("<body>")[0]
    return srcs


@pytest.fixture
def workflow_run(tiny_runs, tmp_path):
    """RUN/models/<name>/ (single-model runs), RUN/blend/ and a workflow manifest."""
    runs, data, _ = tiny_runs
    run = tmp_path / "RUN"
    names = ["three_stage_nn", "simple_nn", "deepinsight_efficientnet"]
    for name, src in zip(names, runs):
        shutil.copytree(src, run / "models" / name)
    _png(run / "models" / "deepinsight_efficientnet" / "report" / "feature_map.png")
    blend.blend_runs([run / "models" / n for n in names], run / "blend", names=names, n_trials=15, data=data)
    (run / "workflow.json").write_text(json.dumps({"blend_config": {"models": [{"name": n} for n in names]},
                                                   "model_configs": {}}))
    (run / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "kind": "workflow", "status": "complete", "versions": {"moakit": "0.1", "optuna": "5.0"},
        "profile": "smoke", "data_fingerprint": "feedbeef", "data_source": data.source, "n_train": len(data.train),
        "n_test": len(data.test), "models": {n: {"status": "complete", "seconds": 2.0} for n in names},
        "timings": {"total_seconds": 12.5}}))
    return run, names


def test_report_of_a_workflow_run(workflow_run):
    run, names = workflow_run
    index = write_report(run)
    assert index == run / "report" / "index.html" and index.exists()
    text = index.read_text()
    srcs = _images(index)
    for f in ("correlation_oof.png", "correlation_test.png", "per_target_log_loss.png", "model_scores.png",
              "deepinsight_deepinsight_efficientnet_0.png"):
        assert f in srcs, f
    summary = json.loads((run / "blend" / "blend.json").read_text())
    for name in names:
        assert name in text
        assert f"{summary['models'][name]['log_loss']:.6f}" in text
        assert f"{summary['models'][name]['log_loss_treated']:.6f}" in text
        assert f"{summary['weights'][name]:.3f}" in text
    assert f"{summary['log_loss']:.6f}" in text  # the blend
    assert "prior (baseline)" in text and "feedbeef" in text and "slsqp" in text and "optuna" in text
    assert "OOF log loss per seed" in text
    metrics_seed = json.loads((run / "models" / "simple_nn" / "metrics.json").read_text())["seeds"]["1"]
    assert f"{metrics_seed['log_loss']:.6f}" in text
    # A second report replaces the first atomically and leaves no temporary folder.
    write_report(run)
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_report_of_a_single_model_run(tiny_runs, tmp_path):
    runs, data, _ = tiny_runs
    run = runs[0]
    _png(run / "stages" / "scored" / "seed_0" / "feature_map_seed0.png")
    out = tmp_path / "rep"
    index = write_report(run, out)
    assert index == out / "index.html"
    srcs = _images(index)
    assert "per_target_log_loss.png" in srcs  # the truth comes from the run's data folder
    assert "deepinsight_model_a_0.png" in srcs
    m = json.loads((run / "metrics.json").read_text())
    text = index.read_text()
    assert "model_a" in text and f"{m['log_loss']:.6f}" in text and f"{m['prior']['log_loss']:.6f}" in text
    assert "abc123" in text  # data fingerprint from manifest.json


def test_report_without_data_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.array([f"id_{i}" for i in range(20)])
    run = write_fake_run(tmp_path / "solo", ids, ids[:5], rng.random((20, 3)), rng.random((5, 3)),
                         ["t1", "t2", "t3"], model="solo_model", data_source=str(tmp_path / "gone"))
    index = write_report(run)
    text = index.read_text()
    assert "solo_model" in text and "not available" in text
    _images(index)
    with pytest.raises(ReportError):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="not a moakit run"):
        write_report(tmp_path / "empty")


def test_report_of_a_blend_folder_shows_the_blend(tiny_runs, tmp_path):
    """A folder of `moakit blend RUN... --out DIR` is reported as a blend (its models, the
    blend section, heatmaps, the test loss of the blended submission), not as one model."""
    from moakit.report import collect_report

    runs, data, _ = tiny_runs
    y_test = _answers(Path(data.source), data)
    out = tmp_path / "blended"
    res = blend.blend_runs(runs, out, names=["a", "b", "c"], methods=("slsqp",), nested_folds=0, data=data)
    report = collect_report(out)
    assert report["multi"] and [r["name"] for r in report["models"]] == ["a", "b", "c"]
    assert report["blend"]["log_loss"] == pytest.approx(res.log_loss)
    from moakit import metrics

    want = metrics.score(y_test, res.test, data.test.is_control)["log_loss"]
    assert report["blend"]["test_log_loss"] == pytest.approx(want, rel=1e-6)
    assert len(report["heatmaps"]) == 2
    index = write_report(out)
    assert index == out / "report" / "index.html"
    text = index.read_text()
    assert "slsqp" in text and f"{res.log_loss:.6f}" in text
    assert "correlation_oof.png" in _images(index)


def test_cli_report(workflow_run):
    from typer.testing import CliRunner

    from moakit.cli import app

    run, _ = workflow_run
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(run / "r2")])
    assert result.exit_code == 0, result.output
    assert (run / "r2" / "index.html").exists()


# --------------------------------------------------------------------------- scores, curves, warnings


def _answers(data_dir: Path, data, seed: int = 5) -> np.ndarray:
    """Write answers/test_targets_scored.csv (random 0/1 labels, controls 0) for the data."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = (rng.random((len(data.test), len(data.train.scored_names))) < 0.3).astype(int)
    y[data.test.is_control] = 0
    frame = pd.DataFrame(y, columns=list(data.train.scored_names))
    frame.insert(0, "sig_id", data.test.sig_id)
    (data_dir / "answers").mkdir(exist_ok=True)
    frame.to_csv(data_dir / "answers" / "test_targets_scored.csv", index=False)
    return y


def _history(run: Path, stage: str, seed: int, fold: int, n: int, judged: bool = True) -> None:
    folder = run / "stages" / stage / f"seed_{seed}" / f"fold_{fold}"
    folder.mkdir(parents=True, exist_ok=True)
    epochs = [{"epoch": e, "train_loss": 0.1 / (e + 1), "valid_loss": 0.12 / (e + 1) if judged else None}
              for e in range(n)]
    (folder / "history.json").write_text(json.dumps({"epochs": epochs}))


def test_report_scores_folds_test_and_curves(tiny_runs):
    import pandas as pd

    from moakit import metrics
    from moakit.report import collect_report

    runs, data, oofs = tiny_runs
    run = runs[0]
    y_test = _answers(Path(data.source), data)
    for fold in range(3):
        _history(run, "scored", 0, fold, 4 + fold)
        _history(run, "scored", 1, fold, 6)
    report = collect_report(run)
    row = report["models"][0]
    test = pd.read_csv(run / "test_predictions.csv").iloc[:, 1:].to_numpy()
    expected = metrics.score(y_test, test, data.test.is_control)["log_loss"]
    assert row["test_log_loss"] == pytest.approx(expected, rel=1e-9)
    prior = metrics.prior_predictions(data.train.scored, data.train.is_control, len(data.test))
    assert report["prior"]["test_log_loss"] == pytest.approx(
        metrics.score(y_test, prior, data.test.is_control)["log_loss"], rel=1e-9)
    folds = np.load(run / "folds.npy")
    for f in report["folds"][row["name"]]:
        k = folds == f["fold"]
        want = metrics.score(data.train.scored[k], oofs[0][k], data.train.is_control[k])
        assert f["log_loss"] == pytest.approx(want["log_loss"], rel=1e-6) and f["rows"] == int(k.sum())
        assert f["epochs"] == pytest.approx(((4 + f["fold"]) + 6) / 2)
    assert len(report["curves"][row["name"]]) == 6

    index = write_report(run)
    text = index.read_text()
    assert "test log loss" in text and f"{expected:.6f}" in text
    assert "OOF log loss per fold" in text and "Learning curves" in text
    assert "curves_model_a.png" in _images(index)
    saved = json.loads((index.parent / "report.json").read_text())  # strict JSON: no NaN
    assert saved["models"][0]["test_log_loss"] == pytest.approx(expected)


def test_report_warns_on_oof_selection_and_on_models_no_better_than_the_prior(tiny_runs):
    runs, _, _ = tiny_runs
    run = runs[2]  # pure noise: worse than the prior
    m = json.loads((run / "metrics.json").read_text())
    assert m["log_loss"] > m["prior"]["log_loss"]
    m["selection"] = {"policy": "oof", "optimistic": True}
    (run / "metrics.json").write_text(json.dumps(m))
    text = write_report(run).read_text()
    assert "no better than the per-target prior" in text
    assert "selection policy oof" in text and "(optimistic)" in text
    good = runs[0]
    m = json.loads((good / "metrics.json").read_text())
    m["selection"] = {"policy": "holdout", "holdout_fraction": 0.1}
    (good / "metrics.json").write_text(json.dumps(m))
    text = write_report(good).read_text()
    assert 'class="warn"' not in text
    assert ">holdout<" in text


def test_report_of_a_workflow_run_with_answers_shows_the_nested_and_test_scores(workflow_run):
    from moakit.report import collect_report

    run, names = workflow_run
    data_dir = Path(json.loads((run / "manifest.json").read_text())["data_source"])
    from moakit.data.io import load

    _answers(data_dir, load(data_dir))
    report = collect_report(run)
    blend_json = json.loads((run / "blend" / "blend.json").read_text())
    assert report["blend"]["nested_log_loss"] == blend_json["nested"]["methods"][blend_json["method"]]["log_loss"]
    assert report["blend"]["test_log_loss"] is not None
    assert all(m["test_log_loss"] is not None for m in report["models"])
    text = write_report(run).read_text()
    assert f"{report['blend']['nested_log_loss']:.6f}" in text and f"{report['blend']['test_log_loss']:.6f}" in text


def test_report_of_a_moved_data_folder_with_data(tiny_runs, tmp_path):
    runs, data, _ = tiny_runs
    run = runs[0]
    moved = tmp_path / "elsewhere"
    shutil.move(data.source, moved)
    text = write_report(run).read_text()
    assert "not available" in text and "--data" in text and "per_target_log_loss.png" not in text
    index = write_report(run, data=moved)
    assert "per_target_log_loss.png" in _images(index)
    assert "OOF log loss per fold" in index.read_text()


def test_report_escapes_what_it_reads(tiny_runs):
    runs, _, _ = tiny_runs
    run = runs[0]
    m = json.loads((run / "metrics.json").read_text())
    m["model"] = "<b>bold</b>"
    (run / "metrics.json").write_text(json.dumps(m))
    text = write_report(run).read_text()
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text


def test_the_template_ships_with_the_package():
    from importlib import resources

    text = resources.files("moakit").joinpath("templates", "report.html.j2").read_text()
    assert "{{ r.title }}" in text


def test_cli_report_with_data(tiny_runs, tmp_path):
    from typer.testing import CliRunner

    from moakit.cli import app

    runs, data, _ = tiny_runs
    moved = tmp_path / "moved"
    shutil.move(data.source, moved)
    result = CliRunner().invoke(app, ["report", str(runs[0]), "--data", str(moved)])
    assert result.exit_code == 0, result.output
    assert "per_target_log_loss.png" in (runs[0] / "report" / "index.html").read_text()
    result = CliRunner().invoke(app, ["report", str(runs[0]), "--data", str(tmp_path / "nope")])
    assert result.exit_code == 2


def test_training_keeps_each_folds_learning_curve_and_the_report_plots_it(sim_data, tmp_path):
    import math

    from moakit import runner
    from moakit.config import load_config
    from moakit.report import collect_report

    config = load_config("simple_nn", profile="smoke", folds=2).model_copy(update={"seeds": [0]})
    config = config.model_copy(update={"selection": config.selection.model_copy(update={"policy": "holdout"})})
    run = tmp_path / "run"
    runner.train(config, sim_data, run, show_progress=False)
    epochs = config.params["train"]["epochs"]
    for k in range(2):
        records = json.loads((run / "stages" / "scored" / "seed_0" / f"fold_{k}" / "history.json").read_text())["epochs"]
        assert [r["epoch"] for r in records] == list(range(epochs))
        assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["valid_loss"]) for r in records)
    report = collect_report(run)
    assert [len(c["epochs"]) for c in report["curves"]["simple_nn"]] == [epochs, epochs]
    assert [f["epochs"] for f in report["folds"]["simple_nn"]] == [epochs, epochs]
    assert "curves_simple_nn.png" in _images(write_report(run))
