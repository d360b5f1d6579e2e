"""The parity grid harness (bench/parity/): scores, variants, the float64-block ablation and,
when a copy of the winners' repository is named by MOAKIT_WINNERS_REPO (a checkout or a bare
git directory), that every patch still matches the scripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

PARITY = Path(__file__).resolve().parents[1] / "bench" / "parity"
sys.path.insert(0, str(PARITY))

import grid  # noqa: E402
import moakit_side  # noqa: E402
import winners  # noqa: E402


def test_ranking_scores_skip_targets_without_positives():
    y = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]])
    p = np.array([[0.9, 0.1, 0.2], [0.2, 0.1, 0.1], [0.1, 0.1, 0.3], [0.8, 0.1, 0.4]])
    ap, auc, n = grid.ranking_scores(y, p)
    assert n == 2  # the middle target has no positive row
    # target 0 ranked perfectly (AP 1, AUC 1); target 2: its positive is ranked last of 4 (AP 1/4, AUC 0)
    assert ap == pytest.approx((1.0 + 0.25) / 2)
    assert auc == pytest.approx((1.0 + 0.0) / 2)


def test_variants_change_one_setting_each():
    assert grid.variant_args("simple_nn", "shipped") == ["--selection", "last"]
    assert grid.variant_args("simple_nn", "no_smoothing")[-2:] == ["--set", "train.smoothing=0"]
    assert grid.variant_args("simple_nn", "float64")[-2:] == ["--block-dtype", "float64"]
    assert grid.variant_args("resnet_2heads", "holdout_refit") == ["--selection", "holdout_refit"]
    assert [key for _, key in grid.outputs("three_stage_nn")] == ["three_stage_nn.stage2", "three_stage_nn"]
    assert grid.outputs("two_stage_nn_tabnet") == [("scored", "two_stage_nn_tabnet")]


def test_the_umap_rows_variant_sets_every_umap_steps_transform():
    from moakit.config import load_config
    from moakit.features import steps_of_kind

    shipped = grid.variant_args("three_stage_nn", "shipped")
    assert grid.variant_args("three_stage_nn", "umap_rows") == shipped + ["--umap-transform", "rows"]
    params = load_config("three_stage_nn").model_dump(mode="json")["params"]
    assert moakit_side.use_umap_transform(params, "rows") == 2
    assert [s["transform"] for s in steps_of_kind(params, "umap")] == ["rows", "rows"]
    assert grid.variant_args("three_stage_nn", "umap_rows_fit1000")[-4:] == ["--umap-transform", "rows",
                                                                           "--umap-fit-rows", "1000"]
    assert moakit_side.use_umap_transform(params, fit_rows=1000) == 2
    assert [(s["transform"], s["max_fit_rows"]) for s in steps_of_kind(params, "umap")] == [("rows", 1000)] * 2
    with pytest.raises(SystemExit, match="no umap step"):
        moakit_side.use_umap_transform(load_config("simple_nn").model_dump(mode="json")["params"], "rows")


def test_the_keras_script_runs_with_the_named_interpreter(tmp_path, monkeypatch):
    assert "resnet_2heads" in grid.SCRIPTED and "resnet_2heads" in grid.KERAS
    with pytest.raises(SystemExit, match="--python"):
        grid.main(["run", "--winners", str(tmp_path), "--out", str(tmp_path), "--models", "resnet_2heads"])
    calls = []
    monkeypatch.setattr(grid, "_run", lambda cmd, log: calls.append(cmd) or False)
    args = grid.argparse.Namespace(models=["resnet_2heads", "simple_nn"], winners=tmp_path,
                                   python=Path("/venv/bin/python"), variants=["shipped"])
    grid.run_dataset(tmp_path / "data", tmp_path, args)
    keras, torch = calls  # the scripts only: neither wrote its folds, so no moakit side ran
    assert keras[keras.index("--python") + 1] == "/venv/bin/python" and "--python" not in torch


def test_real_label_datasets_are_named_apart_and_reported_apart():
    assert grid.dataset_name("factor", 0, 1.0) == "factor-seed0-x1"
    assert grid.dataset_name("factor", 0, 1.0, real_labels=True) == "real-factor-seed0-x1"
    sc = {"log_loss_treated": 0.02, "pr_auc": 0.2, "roc_auc": 0.7, "n_targets": 3}
    result = {name: {"simple_nn/script": sc, "simple_nn/shipped": sc}
              for name in ("pathway-seed0-x1", "real-pathway-seed0-x1")}
    lines = grid.report_lines(result)
    assert any(line.startswith("| simple_nn/shipped, real labels, effect scale 1 | 1.000") for line in lines)
    assert any(line.startswith("| simple_nn/shipped, effect scale 1 | 1.000") for line in lines)


def test_float64_blocks_apply_and_keep_the_network_input_float32(monkeypatch):
    from moakit.features import pipeline, steps

    # (restored by monkeypatch after the test)
    monkeypatch.setattr(steps, "as_block", steps.as_block)
    monkeypatch.setattr(pipeline, "as_block", pipeline.as_block)
    monkeypatch.setattr(steps.Step, "_as_output", steps.Step._as_output)
    made = moakit_side.use_block_dtype("float64")
    rng = np.random.default_rng(0)
    blocks = {"g": rng.normal(size=(40, 6)).astype(np.float32), "c": rng.normal(size=(40, 3)).astype(np.float32)}
    pipe = pipeline.Pipeline.from_config({"steps": [
        {"kind": "quantile", "name": "q", "inputs": ["g", "c"], "n_quantiles": 10, "random_state": 0},
        {"kind": "pca", "name": "p", "inputs": ["g"], "output": "p", "n_components": 2, "random_state": 0}],
        "output": ["g", "c", "p"]})
    seen = []
    original = steps.Step._gather
    monkeypatch.setattr(steps.Step, "_gather",
                        lambda self, b, check_widths: seen.extend(x.dtype for x in original(self, b, check_widths))
                        or original(self, b, check_widths))
    X = pipe.fit_transform(blocks)
    assert made[0] > 0 and seen and all(d == np.float64 for d in seen)  # every step read float64 blocks
    assert X.dtype == np.float32 and X.shape == (40, 11)  # the network's input stays float32


@pytest.mark.skipif(not os.environ.get("MOAKIT_WINNERS_REPO"),
                    reason="MOAKIT_WINNERS_REPO (a copy of guitarmind/kaggle_moa_winner_hungry_for_gold) not set")
@pytest.mark.parametrize("model", ["simple_nn", "three_stage_nn", "two_stage_nn_tabnet", "resnet_2heads"])
def test_patches_match_the_scripts(model):
    import argparse

    from moakit.config import load_config

    spec = winners.SPECS[model]
    args = argparse.Namespace(size="cpu", seeds=1, epochs=None, params=None)
    if spec.config is not None:
        args.cfg = load_config(spec.config, profile="cpu").model_dump(mode="json")
        args.params = args.cfg["params"]
    text = winners.apply_patches(winners.read_script(Path(os.environ["MOAKIT_WINNERS_REPO"]), spec.script),
                                 spec.patches(args), spec.script)  # stops (SystemExit) on a patch that no longer matches
    assert "parity_folds" in text
    compile(text, spec.script, "exec")
    if model == "two_stage_nn_tabnet":  # winners.py --seed-index 1: the script's seed 1 alone
        args.seed_index = 1
        text = winners.apply_patches(winners.read_script(Path(os.environ["MOAKIT_WINNERS_REPO"]), spec.script),
                                     spec.patches(args), spec.script)
        assert text.count("seed_list = [1]") == 2 and "np.random.seed(0)" in text
        compile(text, spec.script, "exec")


def test_report_ratios_to_the_script_and_to_the_shipped_config():
    sc = lambda ll, ap: {"log_loss_treated": ll, "pr_auc": ap, "roc_auc": 0.5, "n_targets": 3}  # noqa: E731
    result = {"pathway-seed0-x1": {"simple_nn/script": sc(0.02, 0.1), "simple_nn/shipped": sc(0.018, 0.2),
                                   "simple_nn/float64": sc(0.009, 0.4), "cnn1d/shipped": sc(0.01, 0.1),
                                   "prior": sc(0.03, 0.01)}}
    lines = grid.report_lines(result)
    text = "\n".join(lines)
    assert "| simple_nn/shipped, effect scale 1 | 0.900 / 0.900 / 0.900 (n=1) | 2.000 / 2.000 / 2.000 (n=1) |" in text
    assert "| cnn1d/shipped (vs the simple_nn script), effect scale 1 | 0.500 / 0.500 / 0.500 (n=1) |" in text
    paired = text.split("Each variant over moakit's shipped config")[1]
    assert "| simple_nn/float64, effect scale 1 | 0.500 / 0.500 / 0.500 (n=1) | 2.000 / 2.000 / 2.000 (n=1) |" in paired
    assert "shipped, effect" not in paired and "prior" not in paired


def test_a_script_runs_scores_outlive_its_predictions(tmp_path, monkeypatch):
    """report writes a script run's scores beside its predictions; without the predictions (a disk
    cleanup) the run is still reported from them and not run again."""
    theirs = tmp_path / "winners-three_stage_nn"
    theirs.mkdir()
    (theirs / "run.json").write_text('{"cpu_seconds": 12.5}')
    np.savez(theirs / "predictions.npz", scored_test=np.full((4, 2), 0.1), stack_test=np.full((4, 2), 0.2))
    monkeypatch.setattr(grid, "test_scores", lambda data, pred, cache: {"log_loss_treated": float(pred[0, 0])})
    scores = grid.script_scores(theirs, tmp_path / "data", {})
    assert scores == {"three_stage_nn.stage2/script": {"log_loss_treated": 0.1, "cpu_s": 12.5},
                      "three_stage_nn/script": {"log_loss_treated": 0.2, "cpu_s": 12.5}}
    (theirs / "predictions.npz").unlink()
    assert grid.script_scores(theirs, tmp_path / "data", {}) == scores
    (theirs / "parity_folds.csv").touch()
    calls = []
    monkeypatch.setattr(grid, "_run", lambda cmd, log: calls.append(cmd) or True)
    args = grid.argparse.Namespace(models=["three_stage_nn"], winners=tmp_path, python=None, variants=["umap_rows"])
    grid.run_dataset(tmp_path / "data", tmp_path, args)
    (cmd,) = calls  # moakit's side only: the script counts as done
    assert cmd[1].endswith("moakit_side.py") and cmd[-2:] == ["--umap-transform", "rows"]
    assert grid.script_scores(tmp_path / "winners-simple_nn", tmp_path / "data", {}) == {}


def test_a_script_seed_run_is_reported_beside_the_script_run_not_for_it(tmp_path, monkeypatch):
    assert grid.parse_script_name("winners-two_stage_nn_tabnet") == ("two_stage_nn_tabnet", "script")
    assert grid.parse_script_name("winners-two_stage_nn_tabnet-s2") == ("two_stage_nn_tabnet", "script-s2")
    for name, value in (("winners-two_stage_nn_tabnet", 0.02), ("winners-two_stage_nn_tabnet-s1", 0.01)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text('{"cpu_seconds": 1.0}')
        np.savez(tmp_path / name / "predictions.npz", scored_test=np.full((4, 2), value))
    monkeypatch.setattr(grid, "test_scores", lambda data, pred, cache: {
        "log_loss_treated": float(pred[0, 0]), "pr_auc": 0.2, "roc_auc": 0.5, "n_targets": 3})
    entry = {}
    for theirs in sorted(tmp_path.glob("winners-*")):
        entry.update(grid.script_scores(theirs, tmp_path / "data", {}))
    assert entry["two_stage_nn_tabnet/script"]["log_loss_treated"] == 0.02  # the grid's script run, unchanged
    assert entry["two_stage_nn_tabnet/script-s1"]["log_loss_treated"] == 0.01
    entry["two_stage_nn_tabnet/oof"] = {"log_loss_treated": 0.03, "pr_auc": 0.2, "roc_auc": 0.5, "n_targets": 3}
    text = "\n".join(grid.report_lines({"pathway-seed0-x2": entry}))
    assert "| two_stage_nn_tabnet/oof, effect scale 2 | 1.500 / 1.500 / 1.500 (n=1) |" in text  # over seed 0's run
    assert "| two_stage_nn_tabnet/script-s1, effect scale 2 | 0.500 / 0.500 / 0.500 (n=1) |" in text
    # winners.py --seed-index: one seed in both stages, TabNet's folds kept at seed 0's
    assert [r for _, r, _ in winners.two_stage_seed_patches(0)] == [
        "    seed_list = [0]  # (parity harness) --seed-index",
        "MultilabelStratifiedKFold(n_splits=NFOLDS, shuffle=True, random_state = 0)"]
    assert "np.random.seed(1)" in winners.two_stage_seed_patches(2)[-1][1]  # stage-1 folds as after seed 1
    with pytest.raises(SystemExit, match="seeds 0-2"):
        winners.two_stage_seed_patches(3)


def test_a_second_moakit_seed_is_its_own_run_and_variant(tmp_path, monkeypatch):
    assert grid.run_name("resnet_2heads", "holdout_refit") == "moakit-resnet_2heads-holdout_refit"
    assert grid.run_name("resnet_2heads", "holdout_refit", 1) == "moakit-resnet_2heads-holdout_refit-s1"
    assert grid.parse_run_name("moakit-resnet_2heads-holdout_refit-s1") == ("resnet_2heads", "holdout_refit-s1")
    assert grid.parse_run_name("moakit-simple_nn-shipped") == ("simple_nn", "shipped")
    calls = []
    monkeypatch.setattr(grid, "_run", lambda cmd, log: calls.append(cmd) or False)
    theirs = tmp_path / "winners-simple_nn"
    theirs.mkdir()
    (theirs / "predictions.npz").touch()
    (theirs / "parity_folds.csv").touch()
    args = grid.argparse.Namespace(models=["simple_nn"], winners=tmp_path, python=None, variants=["oof"],
                                   moakit_seed=1)
    grid.run_dataset(tmp_path / "data", tmp_path, args)
    (cmd,) = calls
    assert cmd[cmd.index("--out") + 1].endswith("moakit-simple_nn-oof-s1") and cmd[cmd.index("--seed") + 1] == "1"
    # each seed's variant is paired with the shipped config of the same seed
    sc = lambda ll: {"log_loss_treated": ll, "pr_auc": 0.2, "roc_auc": 0.5, "n_targets": 3}  # noqa: E731
    result = {"pathway-seed0-x1": {"simple_nn/script": sc(0.02), "simple_nn/shipped": sc(0.01),
                                   "simple_nn/oof": sc(0.01), "simple_nn/shipped-s1": sc(0.02),
                                   "simple_nn/oof-s1": sc(0.01)}}
    text = "\n".join(grid.report_lines(result))
    assert "| simple_nn/oof-s1, effect scale 1 | 0.500 / 0.500 / 0.500 (n=1) |" in text  # over the script
    paired = text.split("Each variant over moakit's shipped config")[1]
    assert "| simple_nn/oof-s1, effect scale 1 | 0.500 / 0.500 / 0.500 (n=1) |" in paired  # over shipped-s1
    assert "| simple_nn/oof, effect scale 1 | 1.000 / 1.000 / 1.000 (n=1) |" in paired
    assert "shipped-s1, effect" not in paired


def test_a_set_override_reaches_both_codes_and_the_tabnet_batch_patch(tmp_path, monkeypatch):
    from moakit.config import load_config

    calls = []
    monkeypatch.setattr(grid, "_run", lambda cmd, log: calls.append(cmd) or True)
    theirs = tmp_path / "winners-two_stage_nn_tabnet"
    theirs.mkdir()
    (theirs / "parity_folds.csv").touch()
    args = grid.argparse.Namespace(models=["two_stage_nn_tabnet"], winners=tmp_path, python=None,
                                   variants=["shipped"], set=["stage2.tabnet.batch_size=128"])
    grid.run_dataset(tmp_path / "data", tmp_path, args)
    script, mine = calls  # the script's side (no predictions yet), then moakit's
    for cmd in (script, mine):
        assert cmd[cmd.index("--set") + 1] == "stage2.tabnet.batch_size=128"
    # winners.py reads the override into the profile, and the patch carries it into TabNet's fit
    cfg = load_config("two_stage_nn_tabnet", profile="cpu").model_dump(mode="json")
    patch_args = grid.argparse.Namespace(size="cpu", seeds=1, epochs=None, cfg=cfg, params=cfg["params"])
    fit = [repl for pattern, repl, _ in winners.two_stage_patches(patch_args) if "virtual_batch_size" in pattern]
    assert fit == ["max_epochs=24, patience=8, batch_size=1024, virtual_batch_size=128,"]  # the profile: the script's
    winners.set_param(cfg["params"], "stage2.tabnet.batch_size", 128)
    fit = [repl for pattern, repl, _ in winners.two_stage_patches(patch_args) if "virtual_batch_size" in pattern]
    assert fit == ["max_epochs=24, patience=8, batch_size=128, virtual_batch_size=128,"]
    with pytest.raises(SystemExit, match="tabnett"):
        winners.set_param(cfg["params"], "stage2.tabnett.batch_size", 128)
