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
    (run / "manifest.json").write_text(json.dumps({
        "kind": "workflow", "status": "complete", "versions": {"moakit": "0.1", "optuna": "5.0"},
        "profile": "smoke", "data_fingerprint": "feedbeef", "data_source": data.source, "n_train": len(data.train),
        "n_test": len(data.test), "models": {n: {"status": "complete", "seconds": 2.0} for n in names},
        "total_seconds": 12.5}))
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


def test_cli_report(workflow_run):
    from typer.testing import CliRunner

    from moakit.cli import app

    run, _ = workflow_run
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(run / "r2")])
    assert result.exit_code == 0, result.output
    assert (run / "r2" / "index.html").exists()
