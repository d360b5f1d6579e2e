"""moakit.runs: the one rule for the kind of a folder, the run objects, the prediction-CSV
reader / writer, the test-answers reader and the one resume rule (a smoke run, a blend of
two copies of it, a workflow stub; nothing bigger is trained)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import invoke
from moakit.runs import BlendRun, ModelRun, RunFileError, WorkflowRun, check_resume, kind_of, layout, open_run
from moakit.runs import records


@pytest.fixture(scope="module")
def smoke_run(sim_folder, tmp_path_factory):
    """A simple_nn smoke run (1 seed x 2 folds) on the simulated folder."""
    from moakit import runner
    from moakit.config import load_config
    from moakit.data.io import load

    out = tmp_path_factory.mktemp("runs") / "nn"
    runner.train(load_config("simple_nn", "smoke", folds=2), load(sim_folder), out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def blend_folder(smoke_run, sim_data, tmp_path_factory):
    """`moakit blend` of the run and a copy of it."""
    from moakit.blend import blend_runs

    root = tmp_path_factory.mktemp("blend")
    twin = root / "twin"
    shutil.copytree(smoke_run, twin)
    out = root / "blended"
    blend_runs([smoke_run, twin], out, names=["a", "b"], methods=("slsqp",), nested_folds=0, data=sim_data)
    return out


def test_kind_of_is_the_one_rule(smoke_run, blend_folder, tmp_path):
    assert kind_of(smoke_run) == "model" and isinstance(open_run(smoke_run), ModelRun)
    assert kind_of(blend_folder) == "blend" and isinstance(open_run(blend_folder), BlendRun)
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / layout.WORKFLOW).write_text(json.dumps({"blend_config": {"models": [{"name": "x"}]}}))
    assert kind_of(wf) == "workflow" and isinstance(open_run(wf), WorkflowRun)
    assert open_run(wf).names == ["x"] and open_run(wf).blend.path == wf / layout.BLEND_DIR
    (tmp_path / "empty").mkdir()
    assert kind_of(tmp_path / "empty") is None and kind_of(tmp_path / "nowhere") is None
    (tmp_path / "file").write_text("x")
    assert kind_of(tmp_path / "file") is None
    with pytest.raises(RunFileError, match="not a moakit run folder"):
        open_run(tmp_path / "empty")


def test_model_run_object(smoke_run, sim_data):
    run = open_run(smoke_run)
    assert run.is_complete and run.config.model == "simple_nn" and run.manifest.kind == "model"
    assert list(run.oof.index) == list(sim_data.train.sig_id)
    assert list(run.oof.columns) == list(sim_data.train.scored_names) == run.columns.scored
    assert run.test.shape == (len(sim_data.test), len(sim_data.train.scored_names))
    assert run.metrics.log_loss == pytest.approx(json.loads((smoke_run / "metrics.json").read_text())["log_loss"])
    hist = run.histories
    assert set(hist["fold"]) == {0, 1} and {"stage", "seed", "epoch", "train_loss"} <= set(hist.columns)
    assert len(hist) == sum(len(json.loads(p.read_text())["epochs"]) for p in smoke_run.rglob("history.json"))
    from moakit.api import MoAModel

    pd.testing.assert_frame_equal(MoAModel.load(smoke_run).history_, hist)  # the API's view of the same
    # predict replays the saved artifacts: the run's own test predictions again (%.8g)
    pred = run.predict(sim_data.test)
    np.testing.assert_allclose(pred.set_index("sig_id").to_numpy(), run.test.to_numpy(), rtol=1e-6, atol=1e-9)


def test_blend_run_object(blend_folder, smoke_run):
    run = open_run(blend_folder)
    assert run.is_complete and run.names == ["a", "b"] and run.manifest is None
    assert Path(run.model_dirs()["a"]).resolve() == smoke_run.resolve()
    assert run.test.shape[0] == open_run(smoke_run).test.shape[0]
    assert list(run.oof.columns) == list(open_run(smoke_run).oof.columns)


def test_prediction_csv_writer_and_reader(tmp_path):
    ids = np.array(["b", "a", "c"])
    values = np.array([[0.1, 0.2], [0.3, 1 / 3], [0.0, 1.0]])
    path = tmp_path / "p.csv"
    records.write_predictions(path, ids, values, ["t1", "t2"])
    assert path.read_text().splitlines()[:3] == ["sig_id,t1,t2", "b,0.1,0.2", "a,0.3,0.33333333"]
    frame = records.read_predictions(path)
    assert list(frame.index) == ["b", "a", "c"] and frame.index.name == "sig_id"
    np.testing.assert_allclose(records.align(frame, ["a", "b", "c"], ["t2"]).ravel(), [0.33333333, 0.2, 1.0])
    with pytest.raises(RunFileError, match="sig_id 'zz'"):
        records.align(frame, ["a", "zz"])
    with pytest.raises(RunFileError, match="target 't9'"):
        records.align(frame, ["a"], ["t9"])
    with pytest.raises(RunFileError, match="more"):
        records.align(frame, ["a", "b"], exact=True)
    for text, match in (("sig_id,t\na,0.1\na,0.2\n", "'a' more than once"), ("id,t\na,0.1\n", "sig_id"),
                        ("sig_id,t\na,x\n", "not numeric")):
        path.write_text(text)
        with pytest.raises(RunFileError, match=match):
            records.read_predictions(path)
    with pytest.raises(RunFileError, match="missing"):
        records.read_predictions(tmp_path / "none.csv")


def test_sig_ids_that_look_like_numbers_stay_text(tmp_path):
    path = tmp_path / "p.csv"
    records.write_predictions(path, np.array(["001", "010"]), np.array([[0.5], [0.25]]), ["t"])
    assert list(records.read_predictions(path).index) == ["001", "010"]


def test_schema_version_is_checked_once_for_every_record(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"schema_version": 99, "log_loss": 0.1, "log_loss_treated": 0.1}))
    with pytest.raises(RunFileError, match="unsupported format.*retrain"):
        records.Metrics.read(path)
    path.write_text(json.dumps({"log_loss": "x", "log_loss_treated": 0.1}))
    with pytest.raises(RunFileError, match="log_loss"):
        records.Metrics.read(path)


def test_test_answers_in_any_format(tiny_folder, tmp_path):
    from moakit.data.io import load

    data = load(tiny_folder)
    assert records.find_test_answers(tiny_folder) is None
    names = list(data.train.scored_names)
    y = (np.arange(len(data.test) * len(names)).reshape(len(data.test), -1) % 3 == 0).astype(int)
    frame = pd.DataFrame(y, columns=names)
    frame.insert(0, "sig_id", data.test.sig_id)
    (tiny_folder / "answers").mkdir()
    frame.iloc[::-1].to_parquet(tiny_folder / "answers" / "test_targets_scored.parquet", index=False)
    got = records.read_test_answers(tiny_folder, data.test.sig_id, names)
    np.testing.assert_array_equal(got, y)


def test_one_resume_rule_refuses_a_folder_of_another_kind(smoke_run, blend_folder, tmp_path):
    from moakit.workflow import WorkflowError

    fingerprint = open_run(smoke_run).manifest.data_fingerprint
    check_resume(smoke_run, "model", fingerprint)  # the same kind and data: fine
    check_resume(tmp_path / "new", "workflow", fingerprint)
    with pytest.raises(WorkflowError, match="holds a model run, not a workflow run"):
        check_resume(smoke_run, "workflow", fingerprint, error=WorkflowError)
    with pytest.raises(ValueError, match="holds a blend folder"):
        check_resume(blend_folder, "model", fingerprint)
    with pytest.raises(ValueError, match="different data"):
        check_resume(smoke_run, "model", "0" * 16)


def test_report_and_predict_agree_on_a_blend_folder(blend_folder, sim_data, tmp_path):
    from moakit.inference import predict
    from moakit.report import collect_report

    report = collect_report(blend_folder)
    assert report["multi"] and report["blend"] is not None
    assert [r["name"] for r in report["models"]] == ["a", "b"]
    frame = predict(blend_folder, sim_data.test)
    assert frame.shape == (len(sim_data.test), len(sim_data.train.scored_names) + 1)


def test_run_shows_the_test_loss_for_a_parquet_data_folder(tmp_path):
    """`moakit run`'s test-loss column comes from answers/ in any format (here Parquet)."""
    from moakit.data.simulate import simulate

    data = simulate(tmp_path / "pq", n_rows=500, seed=2, file_format="parquet")
    assert (data / "answers" / "test_targets_scored.parquet").exists()
    assert not (data / "answers" / "test_targets_scored.csv").exists()
    cfg = tmp_path / "one.yaml"
    cfg.write_text("models:\n  - {name: nn, config: simple_nn, folds: 2}\nblend: {methods: [slsqp]}\n")
    res = invoke("run", cfg, "--data", data, "--out", tmp_path / "run", "--profile", "smoke", "--json", "--quiet")
    assert res.exit_code == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    assert summary["blend"]["test_log_loss"] > 0 and summary["models"]["nn"]["test_log_loss"] > 0


def test_evaluate_and_explain_paths_come_from_the_layout(tmp_path):
    assert layout.shuffled_dir(tmp_path, 3, "nn") == tmp_path / "shuffled" / "seed_3" / "nn"
    assert layout.evaluation_dir(tmp_path) == tmp_path / "evaluation"
    assert layout.explain_dir(tmp_path) == tmp_path / "explain"
    for name in ("seed_2", "seed_0", "seed_x", "seed_", "other"):
        (tmp_path / "shuffled" / name).mkdir(parents=True)
    assert layout.shuffled_seeds(tmp_path) == [0, 2] and layout.shuffled_seeds(tmp_path / "none") == []
    assert layout.seed_of("seed_12") == 12 and layout.fold_of("fold_0") == 0
    for bad in ("fold_1", "seed_", "seed_-1", "seed_1a"):
        with pytest.raises(ValueError, match="not a seed_<n>"):
            layout.seed_of(bad)
    stage = layout.stage_dir(tmp_path, "s1", 4)
    assert [p.relative_to(tmp_path / layout.STAGES_DIR) for p in [layout.fold_dir(stage, 1) / layout.HISTORY]] \
        == [Path("s1/seed_4/fold_1/history.json")]
    (layout.fold_dir(stage, 1)).mkdir(parents=True)
    (layout.fold_dir(stage, 1) / layout.HISTORY).write_text("{}")
    assert len(list((tmp_path / layout.STAGES_DIR).glob(layout.FOLD_HISTORY_GLOB))) == 1


def test_no_run_folder_file_name_outside_runs():
    """Every run-folder file name (and the seed_ / fold_ folder prefixes) is spelled in
    moakit.runs only: no other module holds one as a string literal."""
    import re

    import moakit

    strings = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    files = {v for v in strings if "." in v} | {*layout.CORRELATION_CSV.values(), *layout.CORRELATION_PNG.values()}
    prefixes = {v for v in strings if v.endswith("_")}
    assert {"manifest.json", "folds.npy", "submission.csv", "pr_auc.png"} <= files and prefixes == {"seed_", "fold_"}
    literal = re.compile(r"""["'](%s)["'](?!\w)|["'](%s)[{*]""" % ("|".join(map(re.escape, files)),
                                                                 "|".join(map(re.escape, prefixes))))
    src = Path(moakit.__file__).parent
    found = [f"{p.relative_to(src)}:{i}: {line.strip()}" for p in sorted(src.rglob("*.py")) if "runs" not in p.parts
             for i, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert not found, "\n".join(found)


def test_every_estimator_names_its_kind_and_one_loader_reads_any(smoke_run, sim_data, tmp_path):
    from moakit.models.estimators import ESTIMATORS, load_estimator

    assert set(ESTIMATORS.names()) == {"torch", "deepinsight", "tabnet_regressor", "cnn1d", "label_powerset"}
    est_dir = layout.estimator_dir(layout.stage_dir(smoke_run, "scored", 0), 1)
    spec = json.loads((est_dir / "spec.json").read_text())
    assert next(iter(spec)) == "kind" and spec["kind"] == "torch"
    est = load_estimator(est_dir)
    assert type(est) is ESTIMATORS["torch"] and est.network == spec["network"]
    # an unsupported format: no kind (written before estimators named it), no spec.json, an unknown kind
    old = tmp_path / "old"
    shutil.copytree(est_dir, old)
    (old / "spec.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "kind"}))
    with pytest.raises(RunFileError, match=r"spec.json: unsupported format \(no 'kind' field.*retrain"):
        load_estimator(old)
    (old / "spec.json").write_text(json.dumps({**spec, "kind": "xgboost"}))
    with pytest.raises(RunFileError, match="unknown estimator kind 'xgboost'; known: cnn1d, deepinsight"):
        load_estimator(old)
    (old / "spec.json").unlink()
    with pytest.raises(RunFileError, match="spec.json: missing.*unsupported format: retrain"):
        load_estimator(old)


def test_profile_a_user_yaml_defines(sim_folder, tmp_path):
    """--profile takes a profile the user's own YAML defines; one it lacks exits 2 listing them."""
    import yaml

    from moakit.config import resolve_config_path

    raw = yaml.safe_load(resolve_config_path("simple_nn").read_text())
    raw["profiles"] = {"myprofile": raw["profiles"]["smoke"]}
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(raw))
    res = invoke("train", mine, "--data", sim_folder, "--out", tmp_path / "r", "--profile", "myprofile",
                 "--folds", "2", "--json", "--quiet")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["profile"] == "myprofile"
    assert json.loads((tmp_path / "r" / layout.CONFIG).read_text())["profile"] == "myprofile"
    res = invoke("train", mine, "--data", sim_folder, "--out", tmp_path / "r2", "--profile", "smoke")
    assert res.exit_code == 2 and "no profile 'smoke' (available: full, myprofile)" in res.stderr, res.stderr
    assert not (tmp_path / "r2").exists()
    blend = tmp_path / "blend.yaml"  # a blend config: each model config must have the profile too
    blend.write_text(f"models:\n  - {{name: a, config: {mine}}}\nprofiles:\n  myprofile: {{}}\n")
    res = invoke("run", blend, "--data", sim_folder, "--out", tmp_path / "w", "--profile", "nope")
    assert res.exit_code == 2 and "no profile 'nope' (available: full, myprofile)" in res.stderr, res.stderr
    assert not (tmp_path / "w").exists()


def test_resnet_params_holdout_fraction_is_a_clear_config_error(sim_folder, tmp_path):
    """params.holdout_fraction of the 2-heads ResNet was parsed and never used: setting it is a
    config error pointing at selection.holdout_fraction, the one that is."""
    import yaml

    from moakit.config import ConfigError, load_config
    from moakit.models.resnet_2heads import ResNet2HeadsParams
    from moakit.runner import check_config

    assert "holdout_fraction" not in ResNet2HeadsParams.model_fields
    check_config(load_config("resnet_2heads", "smoke"))  # the shipped configs never set it
    raw = yaml.safe_load((Path(load_config("resnet_2heads").source)).read_text())
    raw.setdefault("params", {})["holdout_fraction"] = 0.2
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="holdout_fraction.*set selection.holdout_fraction instead"):
        check_config(load_config(mine, "smoke"))
    res = invoke("train", mine, "--data", sim_folder, "--out", tmp_path / "r", "--profile", "smoke")
    assert res.exit_code == 2 and "selection.holdout_fraction" in res.stderr, res.stderr
    assert not (tmp_path / "r").exists()
