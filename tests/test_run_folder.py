"""Run folders that can be moved, shared and trusted to say what they hold: a resume
identity without paths, the report written after the manifest is complete, a lock against
a second run into the same folder, the usual file modes, and clean errors for a config or
--out that cannot be used (before any work).

Small simulated data and the `smoke` profile of the Simple NN."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import moakit
from moakit import artifacts, runner
from moakit.cli import app
from moakit.config import ConfigError, RunConfig, load_config, packaged_configs


def invoke(*args):
    try:
        cli = CliRunner(mix_stderr=False)  # click < 8.2: keep stderr apart
    except TypeError:
        cli = CliRunner()
    return cli.invoke(app, [str(a) for a in args])


def clean_exit(res, codes=(1, 2)) -> str:
    """The command ended with a handled error: exit code 1/2, no traceback; its text."""
    text = res.stdout + res.stderr
    assert res.exit_code in codes, text
    assert isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in text
    return text


class NoTraining:
    """An executor that fails the test if any fold job would be trained."""

    def run(self, jobs, progress):
        raise AssertionError(f"{len(jobs)} fold job(s) would be retrained")


@pytest.fixture(scope="module")
def rf_data(tmp_path_factory) -> Path:
    from moakit.data.simulate import simulate

    return Path(simulate(tmp_path_factory.mktemp("rf") / "data", n_rows=400, seed=5))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, rf_data):
    """A finished smoke run of a config read from a copy of simple_nn.yaml (checkout A)."""
    from moakit.data.io import load

    checkout = tmp_path_factory.mktemp("checkout_a")
    config_path = checkout / "simple_nn.yaml"
    shutil.copy(packaged_configs()["simple_nn"], config_path)
    out = tmp_path_factory.mktemp("runs") / "original"
    runner.train(load_config(config_path, "smoke"), load(rf_data), out, show_progress=False)
    return out


def _done_markers(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("done.json"))}


# --------------------------------------------------------------------------- 1. relocatable


def test_copied_run_resumes_from_another_checkout(finished_run, rf_data, tmp_path):
    from moakit.data.io import load

    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(finished_run, moved)
    before = _done_markers(moved)
    assert len(before) == 3  # 1 seed x 3 folds
    other_checkout = tmp_path / "checkout_b"
    other_checkout.mkdir()
    shutil.copy(packaged_configs()["simple_nn"], other_checkout / "simple_nn.yaml")
    config = load_config(other_checkout / "simple_nn.yaml", "smoke")
    assert config.source != RunConfig(**json.loads((moved / "config.json").read_text())).source

    result = runner.train(config, load(rf_data), moved, executor=NoTraining(), show_progress=False)

    assert _done_markers(moved) == before  # nothing retrained
    manifest = json.loads((moved / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert Path(manifest["data_source"]) == Path(rf_data).resolve()  # outside the run: absolute
    original = np.loadtxt(finished_run / "test_predictions.csv", delimiter=",", skiprows=1, usecols=range(1, 5))
    copied = np.loadtxt(moved / "test_predictions.csv", delimiter=",", skiprows=1, usecols=range(1, 5))
    np.testing.assert_array_equal(original, copied)
    assert result.metrics["log_loss"] == json.loads((finished_run / "metrics.json").read_text())["log_loss"]


def test_resume_identity_still_refuses_other_config_and_version(finished_run, rf_data, tmp_path):
    from moakit.data.io import load

    data = load(rf_data)
    moved = tmp_path / "copy"
    shutil.copytree(finished_run, moved)
    other = load_config("simple_nn", "smoke", folds=4)
    with pytest.raises(ValueError, match="different config"):
        runner.train(other, data, moved, executor=NoTraining(), show_progress=False)
    manifest = json.loads((moved / "manifest.json").read_text())
    (moved / "manifest.json").write_text(json.dumps({**manifest, "moakit_version": "0.0.1"}))
    with pytest.raises(ValueError, match=r"moakit 0\.0\.1"):
        runner.train(load_config("simple_nn", "smoke"), data, moved, executor=NoTraining(), show_progress=False)


def test_recorded_paths_relative_inside_the_run(tmp_path):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    assert artifacts.recorded_path(run / "data", run) == "data"
    assert artifacts.recorded_path(tmp_path / "data", run) == str((tmp_path / "data").resolve())
    assert artifacts.recorded_path("", run) == ""
    moved = tmp_path / "moved"
    assert artifacts.resolve_recorded("data", moved) == str(moved / "data")
    assert artifacts.resolve_recorded("/abs/data", moved) == "/abs/data"


# --------------------------------------------------------------------------- 2. report status


def test_workflow_report_written_after_manifest_complete(rf_data, tmp_path, monkeypatch):
    from moakit import report as report_mod
    from moakit.workflow import run_workflow

    config = tmp_path / "blend_one.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "nn", "config": "simple_nn"}],
                                      "blend": {"methods": ["slsqp"], "optuna_trials": 2}}))
    seen = []
    real = report_mod.write_report

    def spy(run_dir, *args, **kwargs):
        seen.append(json.loads((Path(run_dir) / "manifest.json").read_text())["status"])
        return real(run_dir, *args, **kwargs)

    monkeypatch.setattr(report_mod, "write_report", spy)
    out = tmp_path / "wf"
    result = run_workflow(config, rf_data, out, profile="smoke", show_progress=False)
    assert seen == ["complete"]
    assert result.manifest["status"] == "complete"
    html = (out / "report" / "index.html").read_text()
    assert "complete" in html and "running" not in html

