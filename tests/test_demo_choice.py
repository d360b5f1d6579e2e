"""CPU profiles of the blend configs: the DeepInsight CNNs left out with a reason, the nested
score choosing between the best-LB preset and the searched weights (blend.json "choice"),
and the sentences the CLI table and the report lead with (moakit.headline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moakit import blend
from moakit.config import ConfigError
from moakit.headline import DRUG_CV_NOTE, headline
from moakit.workflow import BlendConfig, load_blend_config, skip_message

from test_blend import tiny_runs  # noqa: F401 - the fixture

CNNS_LB = {"deepinsight_efficientnet", "deepinsight_resnest_v2"}


def test_cpu_profiles_leave_out_the_cnns_with_a_reason_and_full_is_unchanged():
    full = load_blend_config("blend_best_lb", "full")
    assert [e.name for e in full.models] == list(blend.PRESETS["best_lb"])  # the winning 7
    assert full.blend.preset == "best_lb" and full.blend.choose == "preset" and full.skip_models is None
    assert skip_message(full) is None
    for profile in ("cpu", "demo"):
        cfg = load_blend_config("blend_best_lb", profile)
        names = {e.name for e in cfg.models}
        assert not names & CNNS_LB and len(names) == 5
        assert cfg.blend.choose == "nested" and "GPU" in cfg.blend.note
        message = skip_message(cfg)
        assert "deepinsight_efficientnet" in message and "GPU" in message and "prior" in message
        again = BlendConfig(**cfg.model_dump(mode="json"))  # workflow.json validates again: same entries
        assert [e.name for e in again.models] == [e.name for e in cfg.models]
        cv = load_blend_config("blend_best_cv", profile)
        assert [e.name for e in cv.models] == ["three_stage_nn", "resnet_2heads_v2"]
    smoke = load_blend_config("blend_best_lb", "smoke")  # the tests keep the CNNs; the nested score chooses
    assert CNNS_LB <= {e.name for e in smoke.models} and smoke.blend.choose == "nested"


def test_skip_models_naming_no_entry_is_refused(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("models:\n  - {name: simple_nn, config: simple_nn}\n  - {name: cnn, config: cnn1d}\n"
                    "profiles:\n  cpu:\n    skip_models: {models: [cnnn], reason: slow}\n")
    with pytest.raises(ConfigError, match="skip_models names entry 'cnnn'"):
        load_blend_config(path, "cpu")
    path.write_text("models:\n  - {name: simple_nn, config: simple_nn}\n"
                    "skip_models: {models: [simple_nn], reason: slow}\n")
    with pytest.raises(ConfigError, match="leaves no model entry"):
        load_blend_config(path, "full")


def _preset_names_over(runs, bad):
    """best_lb's 7 entry names over the fake runs: ``bad`` (the noise run) where the preset
    weighs most (three_stage_nn 0.333), the good run elsewhere."""
    names = list(blend.PRESETS["best_lb"])
    return names, [bad if n == "three_stage_nn" else runs[0] for n in names]


def test_nested_choice_between_preset_and_search_is_recorded(tiny_runs, tmp_path):  # noqa: F811
    runs, data, _ = tiny_runs
    names, dirs = _preset_names_over(runs, runs[2])
    res = blend.blend_runs(dirs, tmp_path / "nested", names=names, methods=["slsqp"], n_trials=5, preset="best_lb",
                           data=data, choose="nested", note="CPU profile: the preset assumes GPU-trained CNNs")
    summary = json.loads((tmp_path / "nested" / "blend.json").read_text())
    choice = summary["choice"]
    assert choice["by"] == "nested" and choice["search_method"] == "slsqp"
    scores = choice["nested_log_loss"]
    assert scores["preset"] == pytest.approx(summary["nested"]["methods"]["preset"]["log_loss"])
    assert scores["search"] == pytest.approx(summary["nested"]["methods"]["slsqp"]["log_loss"])
    assert scores["search"] < scores["preset"]  # 0.333 on pure noise: the search wins
    assert choice["chosen"] == "slsqp" == res.method == summary["method"] and summary["chosen_by"] == "nested"
    assert summary["preset"]["name"] == "best_lb"  # still reported beside the chosen search
    assert summary["note"].startswith("CPU profile") and summary["settings"]["choose"] == "nested"
    # the default keeps the preset whatever the scores (the full profile's behaviour)
    kept = blend.blend_runs(dirs, tmp_path / "preset", names=names, methods=["slsqp"], n_trials=5, preset="best_lb",
                            data=data)
    assert kept.method == "preset:best_lb" and kept.summary["choice"]["chosen"] == "preset"


def test_a_preset_over_entries_a_profile_left_out_is_renormalised(tiny_runs, tmp_path):  # noqa: F811
    runs, data, _ = tiny_runs
    names = [n for n in blend.PRESETS["best_lb"] if n not in CNNS_LB]
    skipped = {"models": sorted(CNNS_LB), "reason": "need a GPU"}
    res = blend.blend_runs([runs[k % 2] for k in range(len(names))], tmp_path / "five", names=names,
                           methods=["slsqp"], n_trials=5, preset="best_lb", data=data, skipped=skipped)
    total = sum(blend.PRESETS["best_lb"][n] for n in names)
    expected = {n: blend.PRESETS["best_lb"][n] / total for n in names}
    assert res.summary["preset"]["weights"] == pytest.approx(expected)
    assert res.summary["skipped"] == skipped
    with pytest.raises(blend.BlendError, match="deepinsight"):  # without the profile's word: refused as before
        blend.apply_preset(names, "best_lb")


def test_headline_sentences():
    models = {"simple_nn": {"cv": "old", "test_log_loss": 0.0150},
              "simple_nn_drug_cv": {"cv": "drug", "test_log_loss": 0.0149}}
    blend_info = {"skipped": {"models": ["deepinsight_efficientnet"], "reason": "needs a GPU"},
                  "note": "CPU profile note.", "test_log_loss": 0.0145,
                  "choice": {"chosen": "per_target", "by": "nested", "search_method": "per_target",
                             "nested_log_loss": {"preset": 0.0131, "search": 0.0120}},
                  "nested_log_loss": 0.0120, "best_single_nested_log_loss": 0.0125}
    lines = headline(models, blend_info, prior_test=0.0165)
    text = "\n".join(lines)
    assert "Left out at this profile: deepinsight_efficientnet: needs a GPU" in text
    assert "CPU profile note." in text and "chosen by the nested score: per_target" in text
    assert "every model beats the per-target prior" in text
    assert "0.012000 vs the best single model's 0.012500: beats it" in text
    assert "its best member simple_nn_drug_cv's 0.014900: beats it" in text
    assert DRUG_CV_NOTE in lines
    worse = headline({"a": {"cv": "old", "test_log_loss": 0.017}}, {"test_log_loss": 0.018}, prior_test=0.0165)
    assert "a do(es) NOT beat the per-target prior" in worse[0] and "does NOT beat it" in worse[1]
    assert DRUG_CV_NOTE not in worse  # one CV scheme: nothing to explain


def test_workflow_table_names_the_cv_of_each_oof_number(capsys):
    from moakit.cli import print_workflow

    models = {n: {"profile": "demo", "seeds": 1, "folds": 3, "cv": cv, "oof_log_loss": oof, "weight": w,
                  "prior_oof_log_loss": 0.02, "test_log_loss": t}
              for n, cv, oof, w, t in (("simple_nn", "old", 0.015, 0.6, 0.0150),
                                       ("simple_nn_drug_cv", "drug", 0.019, 0.4, 0.0149))}
    print_workflow({"run_dir": "RUN", "submission": "RUN/submission.csv", "report": None, "models": models,
                     "blend": {"oof_log_loss": 0.0145, "method": "slsqp", "test_log_loss": 0.0146,
                               "prior_test_log_loss": 0.0165, "note": "CPU profile note."},
                     "prior_oof_log_loss": 0.02})
    out = capsys.readouterr().out
    drug_line = next(line for line in out.splitlines() if "simple_nn_drug_cv" in line)
    assert " drug " in drug_line.replace("│", " ")
    assert "CPU profile note." in out and "Drug-aware CV OOF losses are higher" in " ".join(out.split())


def test_report_leads_with_the_choice(tiny_runs, tmp_path):  # noqa: F811
    from moakit.report import collect_report

    runs, data, _ = tiny_runs
    names, dirs = _preset_names_over(runs, runs[2])
    blend.blend_runs(dirs, tmp_path / "b", names=names, methods=["slsqp"], n_trials=5, preset="best_lb", data=data,
                     choose="nested", note="CPU profile: the preset assumes GPU-trained CNNs")
    report = collect_report(tmp_path / "b")
    text = " ".join(report["headline"])
    assert "CPU profile: the preset assumes GPU-trained CNNs" in text
    assert "Weights chosen by the nested score: slsqp" in text and "best single model" in text
    assert np.isfinite(report["blend"]["nested_log_loss"])
