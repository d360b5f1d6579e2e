"""CLI conventions: results on stdout, progress/logs on stderr, --json, validated choices,
exit 1 for runtime failures and 2 for usage errors, no tracebacks, --version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import moakit
from conftest import invoke


def both(res) -> str:
    """stdout and stderr (click < 8.2's result.output holds stdout only)."""
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def trained(sim_folder, tmp_path_factory):
    """`moakit train simple_nn --profile smoke --json` into a run folder with a long path."""
    out = tmp_path_factory.mktemp("cli") / ("a_rather_long_folder_name_" * 4) / "simple_nn_run"
    res = invoke("train", "simple_nn", "--data", sim_folder, "--out", out, "--profile", "smoke", "--json")
    return out, res


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"moakit {moakit.__version__}"
    proc = subprocess.run([sys.executable, "-m", "moakit", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"moakit {moakit.__version__}"


def test_help_lists_choices():
    out = invoke("train", "--help", ).stdout
    for choice in ("old|drug", "local|ray"):
        assert choice in out, choice
    assert "PROFILE" in out and "full, cpu, demo, smoke" in out  # or any profile a config defines
    assert "csv|parquet" in invoke("simulate", "--help").stdout
    assert "slsqp|optuna|per_tar" in invoke("blend", "--help").stdout  # (the column wraps "per_target")


def test_usage_errors_exit_2_without_traceback(sim_folder, tmp_path):
    cases = [
        ("demo", "--rows", "10", "--out", tmp_path / "demo"),  # printed a traceback before
        ("train", "simple_nn", "--data", sim_folder, "--out", tmp_path / "r", "--profile", "bogus"),
        ("train", "simple_nn", "--data", sim_folder, "--out", tmp_path / "r", "--cv", "new"),
        ("train", "simple_nn", "--data", sim_folder, "--out", tmp_path / "r", "--executor", "dask"),
        ("train", "simple_nn", "--data", sim_folder, "--out", tmp_path / "r", "--device", "tpu"),
        ("train", "no_such_config", "--data", sim_folder, "--out", tmp_path / "r"),
        ("train", "simple_nn", "--data", tmp_path / "missing", "--out", tmp_path / "r"),
        ("run", "simple_nn", "--data", sim_folder, "--out", tmp_path / "r"),  # a model config, not a blend
        ("score", tmp_path / "missing.csv", tmp_path / "answers.csv"),
    ]
    for args in cases:
        res = invoke(*args)
        assert res.exit_code == 2, (args, both(res))
        assert "Traceback" not in both(res), (args, both(res))
    res = invoke("train", "simple_nn", "--data", sim_folder, "--out", tmp_path / "r", "--profile", "bogus")
    assert "bogus" in both(res) and "smoke" in both(res)
    assert not (tmp_path / "r").exists() and not (tmp_path / "demo").exists()


def test_runtime_errors_exit_1_with_one_line(tiny_folder, tmp_path):
    bad = tiny_folder / "train_features.csv"
    frame = pd.read_csv(bad)
    frame.loc[1, "cp_time"] = 96
    frame.to_csv(bad, index=False)
    res = invoke("train", "simple_nn", "--data", tiny_folder, "--out", tmp_path / "r", "--profile", "smoke")
    assert res.exit_code == 1, both(res)
    assert "Traceback" not in both(res)
    assert res.stdout == ""
    assert "train_features.csv: column 'cp_time', row 2: unknown value 96" in res.stderr
    # an existing, non-empty output folder for `simulate`
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    res = invoke("simulate", tmp_path / "full", "--rows", "200")
    assert res.exit_code == 1 and "already exists" in res.stderr and "Traceback" not in both(res)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_device_cuda_without_a_gpu_is_a_clean_error(tiny_folder, tmp_path):
    res = invoke("train", "simple_nn", "--data", tiny_folder, "--out", tmp_path / "r", "--profile", "smoke",
                 "--device", "cuda", "--quiet")
    assert res.exit_code == 2 and "Traceback" not in both(res), both(res)  # a usage error, before any work
    assert "torch sees no CUDA GPU" in res.stderr and not (tmp_path / "r").exists()


def test_train_json_and_streams(trained):
    out, res = trained
    assert res.exit_code == 0, both(res)
    result = json.loads(res.stdout)  # stdout holds the JSON object only
    assert result["run_dir"] == str(out) and result["model"] == "simple_nn" and result["profile"] == "smoke"
    assert 0 < result["log_loss"] and Path(result["test_predictions"]).exists()
    assert "simple_nn (smoke)" in res.stderr  # the progress bar, on stderr


def test_train_plain_output_keeps_long_paths_whole(sim_folder, trained):
    out, _ = trained
    # a rerun resumes (every fold is done), prints the result lines on stdout
    res = invoke("train", "simple_nn", "--data", sim_folder, "--out", out, "--profile", "smoke", "--quiet")
    assert res.exit_code == 0, both(res)
    assert len(str(out)) > 100
    assert f"-> {out / 'metrics.json'}" in res.stdout  # not wrapped at 80 columns
    assert f"test predictions: {out / 'test_predictions.csv'}" in res.stdout
    assert res.stderr == ""


def test_score_and_predict(sim_folder, trained, tmp_path):
    out, _ = trained
    answers = sim_folder / "answers" / "test_targets_scored.csv"
    sub = out / "test_predictions.csv"
    res = invoke("score", sub, answers)
    assert res.exit_code == 0 and res.stdout.startswith("log loss ") and res.stderr == ""
    res = invoke("score", sub, answers, "--features", sim_folder / "test_features.csv", "--json")
    assert res.exit_code == 0, both(res)
    scored = json.loads(res.stdout)
    assert set(scored) >= {"log_loss", "log_loss_treated", "rows", "targets"} and scored["targets"] == 206

    res = invoke("predict", "--run", out, "--features", sim_folder / "test_features.csv",
                 "--out", tmp_path / "sub.csv", "--json")
    assert res.exit_code == 0, both(res)
    pred = json.loads(res.stdout)
    assert pred["submission"] == str(tmp_path / "sub.csv") and pred["targets"] == 206
    assert pred["rows"] == len(pd.read_csv(sim_folder / "test_features.csv"))

    # answers that do not match the submission: a runtime failure, one line on stderr
    wrong = tmp_path / "wrong.csv"
    pd.read_csv(answers).iloc[1:].to_csv(wrong, index=False)
    res = invoke("score", sub, wrong)
    assert res.exit_code == 1 and "error:" in res.stderr and "Traceback" not in both(res)


def test_run_json(sim_folder, tmp_path):
    blend_cfg = tmp_path / "two_nns.yaml"
    blend_cfg.write_text("models:\n  - {name: nn_one, config: simple_nn}\n  - {name: nn_two, config: simple_nn, folds: 2}\n"
                         "blend: {methods: [slsqp]}\n")
    res = invoke("run", blend_cfg, "--data", sim_folder, "--out", tmp_path / "run", "--profile", "smoke", "--json")
    assert res.exit_code == 0, both(res)
    summary = json.loads(res.stdout)
    assert set(summary["models"]) == {"nn_one", "nn_two"}
    assert summary["blend"]["oof_log_loss"] > 0 and "test_log_loss" in summary["blend"]  # the answers/ exist
    assert Path(summary["submission"]).exists()
    # two entries of the same model: two progress bars, each named by its entry
    assert "nn_one (smoke)" in res.stderr and "nn_two (smoke)" in res.stderr
