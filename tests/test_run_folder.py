"""Run folders that can be moved, shared and trusted to say what they hold: a resume
identity without paths, the report written after the manifest is complete, a lock against
a second run into the same folder, the usual file modes, and clean errors for a config or
--out that cannot be used (before any work).

Small simulated data and the `smoke` profile of the Simple NN."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from moakit import artifacts, runner
from moakit.artifacts import LOCK_FILE, RunLockedError, run_lock
from moakit.config import ConfigError, RunConfig, load_config, packaged_configs

from conftest import clean_exit, invoke


class NoTraining(runner.LocalExecutor):
    """An executor that fails the test if any fold job would be trained."""

    def run_graph(self, graph, observer, progress):
        folds = [n for n in graph.nodes.values() if n.kind == "fold"]
        if folds:
            raise AssertionError(f"{len(folds)} fold job(s) would be retrained")
        super().run_graph(graph, observer, progress)


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
    manifest["versions"]["moakit"] = "0.0.1"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"moakit 0\.0\.1"):
        runner.train(load_config("simple_nn", "smoke"), data, moved, executor=NoTraining(), show_progress=False)
    assert not (moved / LOCK_FILE).exists()  # released after the refusal


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
    assert not (out / LOCK_FILE).exists() and not (out / "models" / "nn" / LOCK_FILE).exists()


# --------------------------------------------------------------------------- 3. lock


def _fake_lock(folder: Path, pid: int, host: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    # taken now: a lock older than its live pid's process would be stale (the pid reused)
    path.write_text(json.dumps({"pid": pid, "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_live_lock_fails_fast_naming_pid_and_host(rf_data, tmp_path):
    out = tmp_path / "busy"
    lock = _fake_lock(out, os.getpid(), socket.gethostname())  # a live process: this one
    res = invoke("train", "simple_nn", "--data", rf_data, "--out", out, "--profile", "smoke", "--quiet")
    text = clean_exit(res, codes=(1,))
    assert f"pid {os.getpid()}" in text and socket.gethostname() in text
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    assert json.loads(lock.read_text())["pid"] == os.getpid()  # the owner's lock is kept

    _fake_lock(out, 4242, "another-node")  # another host: cannot be checked, refused too
    with pytest.raises(RunLockedError, match="pid 4242 on host another-node"):
        with run_lock(out):
            pass


def test_stale_lock_is_taken_over_with_a_message(tmp_path):
    out = tmp_path / "stale"
    pid = _dead_pid()
    _fake_lock(out, pid, socket.gethostname())
    messages = []
    with run_lock(out, log=messages.append) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockedError):  # held now: a second taker is refused
            with run_lock(out):
                pass
    assert len(messages) == 1 and f"pid {pid}" in messages[0] and "stale" in messages[0]
    assert not (out / LOCK_FILE).exists()  # released
    assert [p.name for p in out.iterdir()] == []  # no temporary files left


# --------------------------------------------------------------------------- 4. file modes


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        assert artifacts.current_umask() == umask
        artifacts.write_json(tmp_path / "a.json", {"x": 1})
        artifacts.write_npy(tmp_path / "a.npy", np.zeros(3))
        with artifacts.atomic_file(tmp_path / "sub" / "b.csv", "w") as fh:
            fh.write("x\n")
        with artifacts.atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "inner.txt").write_text("y")
    finally:
        os.umask(old)
    for name in ("a.json", "a.npy", "sub/b.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == file_mode, name
    assert (tmp_path / "folder").stat().st_mode & 0o777 == dir_mode


# --------------------------------------------------------------------------- 5. clean errors


def test_seeds_zero_is_a_clean_error(rf_data, tmp_path):
    with pytest.raises(ConfigError, match="seeds"):
        load_config("simple_nn", "smoke", seeds=0)
    with pytest.raises(ValueError, match="seeds"):
        RunConfig(model="simple_nn", seeds=[])
    with pytest.raises(ValueError, match="twice"):
        RunConfig(model="simple_nn", seeds=[1, 1])
    out = tmp_path / "run"
    clean_exit(invoke("train", "simple_nn", "--data", rf_data, "--out", out, "--profile", "smoke", "--seeds", "0"))
    assert not out.exists()
    blend = tmp_path / "blend.yaml"
    blend.write_text(yaml.safe_dump({"models": [{"name": "nn", "config": "simple_nn", "seeds": 0}]}))
    text = clean_exit(invoke("run", blend, "--data", rf_data, "--out", out, "--profile", "smoke"))
    assert "seeds" in text and not out.exists()


def test_unknown_feature_block_is_a_clean_error_before_any_work(rf_data, tmp_path):
    raw = yaml.safe_load(packaged_configs()["simple_nn"].read_text())
    raw["params"]["features"]["output"].append("fa_x")
    raw.pop("profiles")
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    text = clean_exit(invoke("train", config, "--data", rf_data, "--out", out))
    assert "params.features.output" in text and "fa_x" in text and str(config) in text
    assert not out.exists()
    from moakit.data.io import load

    with pytest.raises(ConfigError, match="fa_x"):
        runner.train(load_config(config), load(rf_data), out, show_progress=False)
    assert not out.exists()


def test_out_that_is_a_file_is_a_clean_error(rf_data, tmp_path):
    out = tmp_path / "a_file"
    out.write_text("keep me")
    text = clean_exit(invoke("train", "simple_nn", "--data", rf_data, "--out", out, "--profile", "smoke"))
    assert str(out) in text and "not a folder" in text
    text = clean_exit(invoke("run", "blend_best_lb", "--data", rf_data, "--out", out, "--profile", "smoke"))
    assert str(out) in text and "not a folder" in text
    assert out.read_text() == "keep me"
