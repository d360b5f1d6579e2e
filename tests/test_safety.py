"""Nothing silently wrong: the API matches rows by sig_id, a run folder is written only by a
command of its own kind, and bad configs / data are refused before any work."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import moakit
from moakit.api import _training_data
from moakit.data.io import DataError


@pytest.fixture(scope="module")
def small():
    return moakit.simulate(n_rows=400, seed=5)


def _shuffled(data, seed: int = 0) -> dict:
    """The fit arguments, each shuffled on its own, as pandas users hold them."""
    rng = np.random.default_rng(seed)

    def perm(frame):
        return frame.iloc[rng.permutation(len(frame))]

    return {"X": perm(data.X).set_index("sig_id"),  # read_csv(..., index_col="sig_id")
            "Y": perm(data.Y).set_index("sig_id"),
            "Y_nonscored": perm(data.Y_nonscored),  # a sig_id column
            "drug_id": perm(data.drug_id.to_frame()).iloc[:, 0],  # a Series with a sig_id index
            "X_test": perm(data.X_test)}


def _arrays(data):
    out = {}
    for split in ("train", "test"):
        ds = getattr(data, split)
        for name in ("sig_id", "genes", "cells", "cp_type", "scored", "nonscored", "drug_id"):
            out[f"{split}.{name}"] = getattr(ds, name)
    return out


def test_api_rows_matched_by_sig_id(small):
    """Every argument shuffled on its own gives the training data of the aligned call."""
    aligned, _, _, _ = _training_data(**small.fit_args)
    shuffled_args = _shuffled(small)
    shuffled, train_index, test_index, back = _training_data(**shuffled_args)
    a, b = _arrays(aligned), _arrays(shuffled)
    for key in a:
        if a[key] is None:
            assert b[key] is None, key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the outputs follow the caller's rows
    assert list(train_index) == list(shuffled_args["X"].index)
    assert (shuffled.train.sig_id[back[0]] == shuffled_args["X"].index.to_numpy()).all()
    assert (shuffled.test.sig_id[back[1]] == shuffled_args["X_test"].sig_id.to_numpy()).all()
    assert list(test_index) == list(shuffled_args["X_test"].sig_id)


@pytest.mark.parametrize("form", ["table", "unnamed_index", "pandas_index"])
def test_api_drug_id_forms(small, form):
    aligned, *_ = _training_data(**small.fit_args)
    X = small.X.sample(frac=1, random_state=3)  # sig_id column, a shuffled 0..n-1 index
    drugs = small.drug_id
    if form == "table":  # train_drug as read: sig_id + drug_id columns
        drug_id = drugs.reset_index().sample(frac=1, random_state=4)
    elif form == "unnamed_index":  # the sig_ids as an index without a name
        drug_id = drugs.sample(frac=1, random_state=4).rename_axis(None)
    else:  # no sig_ids: the same 0..n-1 labels as X's index, matched as pandas does
        drug_id = pd.Series(drugs.to_numpy()).sample(frac=1, random_state=4)
    data, *_ = _training_data(X, small.Y, drug_id=drug_id, Y_nonscored=None, X_test=None)
    np.testing.assert_array_equal(data.train.drug_id, aligned.train.drug_id)


def test_api_ids_that_do_not_match_are_refused(small):
    X, Y = small.X, small.Y
    other = Y.copy()
    other.loc[other.index[:4], "sig_id"] = ["id_nope0", "id_nope1", "id_nope2", "id_nope3"]
    with pytest.raises(DataError, match=r"Y: no row for 4 sig_id\(s\) of X \(.*\); 4 sig_id\(s\) that are not in "
                                        r"X \('id_nope0', 'id_nope1', 'id_nope2' and 1 more\)"):
        _training_data(X, other, None, None, None)
    dup = pd.concat([Y.iloc[:1], Y.iloc[1:]]).copy()
    dup.iloc[1, 0] = dup.iloc[0, 0]
    with pytest.raises(DataError, match="Y: sig_id.* more than once"):
        _training_data(X, dup, None, None, None)
    with pytest.raises(DataError, match="Y: carries sig_ids but X has none"):
        _training_data(X.drop(columns="sig_id").to_numpy(), Y, None, None, None)
    strange = pd.Series(small.drug_id.to_numpy(), index=[f"row{i}" for i in range(len(X))])
    with pytest.raises(DataError, match=r"drug_id: its index matches neither X's sig_ids nor X's index \(e.g. 'row0'"):
        _training_data(X, Y, None, strange, None)
    short = small.Y_nonscored.iloc[:-1]
    with pytest.raises(DataError, match=r"Y_nonscored: no row for 1 sig_id\(s\) of X"):
        _training_data(X, Y, short, None, None)


def test_api_fit_shuffled_equals_aligned(small):
    """The silent failure of the issue: Y's rows shuffled trained on other rows' labels."""
    kwargs = {"profile": "smoke", "seeds": 1}
    aligned = moakit.MoAModel("simple_nn_drug_cv", **kwargs).fit(**small.fit_args)
    args = _shuffled(small, seed=1)
    shuffled = moakit.MoAModel("simple_nn_drug_cv", **kwargs).fit(**args)
    assert list(shuffled.oof_.index) == list(args["X"].index)
    np.testing.assert_array_equal(shuffled.oof_.loc[aligned.oof_.index].to_numpy(), aligned.oof_.to_numpy())
    assert list(shuffled.test_predictions_.index) == list(args["X_test"].sig_id)
    np.testing.assert_array_equal(shuffled.test_predictions_.loc[aligned.test_predictions_.index].to_numpy(),
                                  aligned.test_predictions_.to_numpy())
    assert shuffled.metrics_["log_loss"] == aligned.metrics_["log_loss"]
    # predict_proba follows the rows it is given
    proba = shuffled.predict_proba(args["X_test"])
    np.testing.assert_allclose(proba.to_numpy(), shuffled.test_predictions_.to_numpy(), atol=1e-6)


# --------------------------------------------------------------------------- folders of one kind


@pytest.fixture(scope="module")
def runs(small, tmp_path_factory):
    """A finished workflow run (a MoABlend of two smoke models), one of its model runs, and
    the simulated data folder."""
    root = tmp_path_factory.mktemp("runs")
    data_dir = root / "data"
    data = moakit.simulate(n_rows=400, seed=5, out_dir=data_dir)
    workflow = root / "workflow"
    blend = moakit.MoABlend(BLEND_ENTRIES, profile="smoke", optuna_trials=3, methods=["slsqp"], run_dir=workflow)
    blend.fit(**data.fit_args)
    return {"data": data_dir, "workflow": workflow, "model": workflow / "models" / "a", "X": data, "blend": blend}


BLEND_ENTRIES = [("a", "simple_nn"), ("b", "simple_nn_drug_cv")]


def test_blend_fit_shuffled_equals_aligned(runs):
    aligned = runs["blend"]
    args = _shuffled(runs["X"], seed=2)
    shuffled = moakit.MoABlend(BLEND_ENTRIES, profile="smoke", optuna_trials=3, methods=["slsqp"]).fit(**args)
    assert list(shuffled.oof_.index) == list(args["X"].index)
    np.testing.assert_allclose(shuffled.oof_.loc[aligned.oof_.index].to_numpy(), aligned.oof_.to_numpy(), atol=1e-7)
    assert list(shuffled.test_predictions_.index) == list(args["X_test"].sig_id)
    np.testing.assert_allclose(shuffled.test_predictions_.loc[aligned.test_predictions_.index].to_numpy(),
                               aligned.test_predictions_.to_numpy(), atol=1e-7)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_model_run_into_a_workflow_folder_is_refused(runs):
    from conftest import clean_exit, invoke

    from moakit.validate import FolderKindError

    before = _snapshot(runs["workflow"])
    res = invoke("train", "simple_nn", "--data", runs["data"], "--out", runs["workflow"], "--profile", "smoke")
    text = clean_exit(res, codes=(2,))
    assert str(runs["workflow"]) in text and "holds a workflow run" in text and "model run" in text
    data = runs["X"]
    with pytest.raises(FolderKindError, match="holds a workflow run"):
        moakit.MoAModel("simple_nn", profile="smoke", run_dir=runs["workflow"]).fit(data.X, data.Y)
    assert _snapshot(runs["workflow"]) == before  # nothing rewritten
    # the estimator still loads
    assert moakit.MoABlend.load(runs["workflow"]).weights_


@pytest.mark.parametrize("case", ["run_into_model", "blend_into_model", "blend_into_workflow", "report_into_model",
                                  "report_into_data", "train_into_data", "report_into_other"])
def test_writes_into_another_kind_are_refused(runs, tmp_path, case):
    from conftest import clean_exit, invoke

    model, workflow, data = runs["model"], runs["workflow"], runs["data"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    args, target, kind = {
        "run_into_model": (["run", "blend_best_lb", "--data", data, "--profile", "smoke", "--out", model], model,
                           "a model run"),
        "blend_into_model": (["blend", model, workflow / "models" / "b", "--out", model], model, "a model run"),
        "blend_into_workflow": (["blend", model, workflow / "models" / "b", "--out", workflow], workflow,
                                "a workflow run"),
        "report_into_model": (["report", workflow, "--out", model], model, "a model run"),
        "report_into_data": (["report", model, "--out", data], data, "a lish-moa data folder"),
        "train_into_data": (["train", "simple_nn", "--data", data, "--profile", "smoke", "--out", data], data,
                            "a lish-moa data folder"),
        "report_into_other": (["report", model, "--out", other], other, "not an earlier report"),
    }[case]
    before = _snapshot(target)
    text = clean_exit(invoke(*args), codes=(2,))
    assert str(target) in text and kind in text
    assert _snapshot(target) == before


# --------------------------------------------------------------------------- the API names what to pass / call


def test_api_missing_arguments_are_named(small):
    with pytest.raises(ValueError, match=r"MoAModel.fit: config 'simple_nn_drug_cv' uses the drug-aware CV .*: "
                                         r"pass drug_id=\.\.\. to fit"):
        moakit.MoAModel("simple_nn_drug_cv", profile="smoke").fit(small.X, small.Y)
    for config in ("three_stage_nn", "resnet_2heads"):  # a non-scored stage; pre-training on the non-scored
        with pytest.raises(ValueError, match=rf"config '{config}' trains on the non-scored targets: pass "
                                             r"Y_nonscored=\.\.\. to fit"):
            moakit.MoAModel(config, profile="smoke").fit(small.X, small.Y, drug_id=small.drug_id)
    with pytest.raises(ValueError, match=r"MoABlend.fit: model entry 'ns' trains on the non-scored targets: pass "
                                         r"Y_nonscored"):
        moakit.MoABlend([("nn", "simple_nn"), ("ns", "three_stage_nn")], profile="smoke").fit(small.X, small.Y)


def test_model_load_of_a_workflow_folder(runs):
    with pytest.raises(ValueError, match=r"a workflow run .*moakit.MoABlend.load\(path\).*\(models: a, b\)"):
        moakit.MoAModel.load(runs["workflow"])
    with pytest.raises(ValueError, match="a blend folder"):
        moakit.MoAModel.load(runs["workflow"] / "blend")


def test_all_controls_training_data(small, tmp_path, recwarn):
    from conftest import clean_exit, invoke

    X = small.X.copy()
    X["cp_type"] = "ctl_vehicle"
    Y = small.Y.copy()
    Y.iloc[:, 1:] = 0
    with pytest.raises(DataError, match=r"X: all \d+ rows are controls"):
        moakit.MoAModel("simple_nn", profile="smoke").fit(X, Y)
    folder = tmp_path / "data"
    moakit.simulate(n_rows=200, seed=1, out_dir=folder)
    features = pd.read_csv(folder / "train_features.csv")
    features["cp_type"] = "ctl_vehicle"
    features.to_csv(folder / "train_features.csv", index=False)
    targets = pd.read_csv(folder / "train_targets_scored.csv")
    targets.iloc[:, 1:] = 0
    targets.to_csv(folder / "train_targets_scored.csv", index=False)
    out = tmp_path / "run"
    text = clean_exit(invoke("train", "simple_nn", "--data", folder, "--out", out, "--profile", "smoke"), codes=(1,))
    assert f"{folder / 'train_features.csv'}: all" in text and "controls" in text
    assert not out.exists()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# --------------------------------------------------------------------------- whole configs before any work


def _config_file(tmp_path, change: dict, name: str = "bad.yaml"):
    """simple_nn.yaml with ``change`` merged into its smoke profile's params."""
    import yaml

    from moakit.config import deep_merge, packaged_configs, read_yaml

    raw = read_yaml(packaged_configs()["simple_nn"])
    smoke = raw["profiles"]["smoke"]
    if "params" in change and "features" in change["params"]:  # the step list replaces the profile's
        steps = [dict(s) for s in raw["params"]["features"]["steps"]]
        for step in steps:
            step.update(change["params"]["features"].get(step["name"], {}))
        smoke = deep_merge(smoke, {"params": {"features": {**raw["params"]["features"], "steps": steps}}})
        change = {k: v for k, v in change.items() if k != "params"}
    raw["profiles"]["smoke"] = deep_merge(smoke, change)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("change, message", [
    ({"params": {"network": {"dropouts": [0.0, 1.5, 0.25]}}}, r"params.network.dropouts: 1.5 is not a dropout rate"),
    ({"params": {"network": {"activation": "swish"}}}, r"params.network.activation: unknown activation 'swish'"),
    ({"params": {"network": {"hidden": [0, 64]}}}, r"params.network.hidden: a layer of 0 units"),
    ({"params": {"train": {"device": "tpu"}}}, r"train.device: Input should be 'auto', 'cpu' or 'cuda'"),
    ({"params": {"features": {"km_g": {"n_clusters": 700}}}}, r"n_clusters 700 exceeds the \d+ rows"),
    ({"params": {"features": {"fa_g": {"n_components": 900}}}}, r"n_components 900 exceeds the 772 columns"),
])
def test_invalid_configs_exit_2_before_any_work(runs, tmp_path, change, message):
    from conftest import clean_exit, invoke

    config = _config_file(tmp_path, change)
    out = tmp_path / "run"
    text = clean_exit(invoke("train", config, "--data", runs["data"], "--out", out, "--profile", "smoke"), codes=(2,))
    assert str(config) in text and re.search(message, text), text
    assert not out.exists()  # nothing half-made: the corrected rerun starts clean


def test_invalid_values_in_the_api_and_blends(runs, tmp_path):
    from conftest import clean_exit, invoke

    from moakit.config import ConfigError

    data = runs["X"]
    out = tmp_path / "api"
    with pytest.raises(ConfigError, match=r"params.network.dropouts: 1.5 is not a dropout rate"):
        moakit.MoAModel("simple_nn", profile="smoke", params={"network": {"dropouts": [1.5, 0.2, 0.2]}},
                        run_dir=out).fit(data.X, data.Y)
    with pytest.raises(ConfigError, match=r"device 'tpu' is not one of auto, cpu, cuda"):
        moakit.MoAModel("simple_nn", profile="smoke", device="tpu", run_dir=out).fit(data.X, data.Y)
    assert not out.exists()
    # a blend config whose model entry is invalid: exit 2 before the first model trains
    config = _config_file(tmp_path, {"params": {"network": {"activation": "swish"}}}, "model.yaml")
    blend = tmp_path / "blend.yaml"
    blend.write_text(f"models:\n  - {{name: nn, config: {config}}}\nblend: {{methods: [slsqp]}}\n")
    text = clean_exit(invoke("run", blend, "--data", runs["data"], "--profile", "smoke", "--out", tmp_path / "wf"),
                      codes=(2,))
    assert "model entry 'nn'" in text and "unknown activation 'swish'" in text
    assert not (tmp_path / "wf").exists()


def test_device_cuda_without_gpu_exits_2(runs, tmp_path):
    import torch

    from conftest import clean_exit, invoke

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    for command in (["train", "simple_nn"], ["run", "blend_best_lb"]):
        text = clean_exit(invoke(*command, "--data", runs["data"], "--out", out, "--profile", "smoke",
                                 "--device", "cuda"), codes=(2,))
        assert "--device" in text and "no CUDA GPU" in text
        assert not out.exists()


# --------------------------------------------------------------------------- column sets name the columns and the file


def _folder(tmp_path, name="data"):
    from conftest import write_tiny_folder

    return write_tiny_folder(tmp_path / name)


def test_feature_columns_name_the_file_that_lacks_them(tmp_path):
    from moakit.data.io import load

    folder = _folder(tmp_path)
    train = pd.read_csv(folder / "train_features.csv")
    train.drop(columns="g-5").to_csv(folder / "train_features.csv", index=False)
    with pytest.raises(DataError, match=rf"{re.escape(str(folder / 'train_features.csv'))}: lacks 1 gene column\(s\) "
                                        r"of .*test_features.csv: 'g-5'"):
        load(folder)
    train.to_csv(folder / "train_features.csv", index=False)
    test = pd.read_csv(folder / "test_features.csv")
    test.assign(**{"g-99": 0.0}).to_csv(folder / "test_features.csv", index=False)
    with pytest.raises(DataError, match=r"train_features.csv: lacks 1 gene column\(s\) of .*test_features.csv: 'g-99'"):
        load(folder)
    # the same columns in another order are matched by name
    columns = list(test.columns)
    columns[4], columns[5] = columns[5], columns[4]
    test[columns].to_csv(folder / "test_features.csv", index=False)
    data = load(folder)
    assert data.test.gene_names == data.train.gene_names
    np.testing.assert_allclose(data.test.genes[:, 0], test["g-0"].to_numpy(), atol=1e-6)


def test_misnamed_column_is_refused_at_fit(tmp_path, small):
    from moakit.data.io import load

    folder = _folder(tmp_path)
    train = pd.read_csv(folder / "train_features.csv")
    train.rename(columns={"g-5": "G-5"}).to_csv(folder / "train_features.csv", index=False)
    with pytest.raises(DataError, match=r"train_features.csv: column 'G-5' looks like 'g-5'"):
        load(folder)
    X = small.X.rename(columns={"g-5": "G-5"})
    with pytest.raises(DataError, match=r"X: column 'G-5' looks like 'g-5'"):
        moakit.MoAModel("simple_nn", profile="smoke").fit(X, small.Y)


def test_x_test_columns_in_the_api(small):
    with pytest.raises(DataError, match=r"X_test: lacks 1 gene column\(s\) of X: 'g-7'"):
        _training_data(small.X, small.Y, None, None, small.X_test.drop(columns="g-7"))
    shuffled_columns = small.X_test[list(small.X_test.columns[::-1])]
    a, *_ = _training_data(small.X, small.Y, None, None, small.X_test)
    b, *_ = _training_data(small.X, small.Y, None, None, shuffled_columns)
    np.testing.assert_array_equal(a.test.genes, b.test.genes)
    np.testing.assert_array_equal(a.test.cells, b.test.cells)


def test_sample_submission_missing_a_target(tmp_path):
    from moakit.data.io import load

    folder = _folder(tmp_path)
    sub = pd.read_csv(folder / "sample_submission.csv")
    sub.drop(columns="target_b").to_csv(folder / "sample_submission.csv", index=False)
    with pytest.raises(DataError, match=r"sample_submission.csv: lacks 1 target column\(s\) of "
                                        r".*train_targets_scored.csv: 'target_b'"):
        load(folder)


def test_score_blames_the_submission(tmp_path):
    from conftest import clean_exit, invoke

    answers = tmp_path / "answers.csv"
    ids = [f"id_{i}" for i in range(6)]
    truth = pd.DataFrame({"sig_id": ids, "t_a": [0, 1, 0, 0, 1, 0], "t_b": [1, 0, 0, 0, 0, 0]})
    truth.to_csv(answers, index=False)
    sub = truth.assign(t_a=0.3, t_b=0.2)
    path = tmp_path / "sub.csv"
    sub.drop(columns="t_b").to_csv(path, index=False)
    text = clean_exit(invoke("score", path, answers), codes=(1,))
    assert f"{path}: lacks 1 target column(s) of {answers}: 't_b'" in text
    sub.iloc[1:].to_csv(path, index=False)
    text = clean_exit(invoke("score", path, answers), codes=(1,))
    assert f"{path}: no row for 1 sig_id(s) of {answers} ('id_0')" in text
    sub.assign(sig_id=[*ids[:5], "id_new"]).to_csv(path, index=False)
    text = clean_exit(invoke("score", path, answers), codes=(1,))
    assert f"{path}: no row for 1 sig_id(s) of {answers} ('id_5'); 1 sig_id(s) that are not in {answers} ('id_new')" \
        in text
    sub.iloc[::-1][["sig_id", "t_b", "t_a"]].to_csv(path, index=False)  # rows and columns in another order
    res = invoke("score", path, answers, "--json")
    assert res.exit_code == 0, res.stdout + res.stderr


# --------------------------------------------------------------------------- predict on a changed run folder


def test_predict_detects_an_edited_config(runs, tmp_path):
    import json
    import shutil

    from conftest import clean_exit, invoke

    run = tmp_path / "run"
    shutil.copytree(runs["model"], run)
    features = runs["data"] / "test_features.csv"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config, indent=4, sort_keys=True))  # reformatted only: fine
    res = invoke("predict", "--run", run, "--features", features, "--out", tmp_path / "a.csv")
    assert res.exit_code == 0, res.stdout + res.stderr
    config["params"]["train"]["epochs"] = 99  # loads and predicts as before, silently: refused
    (run / "config.json").write_text(json.dumps(config, indent=2))
    text = clean_exit(invoke("predict", "--run", run, "--features", features, "--out", tmp_path / "b.csv"), codes=(1,))
    assert f"{run / 'config.json'}: edited after training" in text
    assert not (tmp_path / "b.csv").exists()


def test_predict_names_a_wrong_shape_weights_file(runs, tmp_path):
    import shutil

    import torch

    from conftest import clean_exit, invoke

    run = tmp_path / "run"
    shutil.copytree(runs["model"], run)
    weights = sorted(run.rglob("weights.pt"))[0]
    state = torch.load(weights, weights_only=True)
    key = next(k for k, v in state.items() if v.ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    torch.save(state, weights)
    text = clean_exit(invoke("predict", "--run", run, "--features", runs["data"] / "test_features.csv",
                             "--out", tmp_path / "sub.csv"), codes=(1,))
    assert text.count(f"{weights}: does not fit the network its spec.json describes") == 1
    assert "config.json" not in text


# --------------------------------------------------------------------------- the run lock


def _lock(folder, pid, started):
    import json
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".moakit.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": started}))


def test_lock_of_a_reused_pid(tmp_path):
    import subprocess
    import sys
    import time

    from moakit.artifacts import RunLockedError, run_lock

    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    # the lock's process is gone and its pid now belongs to a process started after it: stale
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _lock(tmp_path / "a", other.pid, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 3600)))
        messages = []
        with run_lock(tmp_path / "a", log=messages.append):
            pass
        assert messages and "stale lock" in messages[0]
    finally:
        other.kill()
        other.wait()
    # a live process older than the lock: it may be the run; the message says how to clear it
    _lock(tmp_path / "b", 1, time.strftime("%Y-%m-%dT%H:%M:%S"))
    with pytest.raises(RunLockedError, match=rf"wait for it or use another --out; if no moakit run works here any "
                                             rf"more \(process 1 is .*\), delete {re.escape(str(tmp_path / 'b'))}"):
        with run_lock(tmp_path / "b"):
            pass


# --------------------------------------------------------------------------- leftovers of kill -9


def test_leftovers_of_a_killed_run_are_cleaned(runs, tmp_path):
    import shutil

    from moakit.validate import clean_leftovers

    run = tmp_path / "wf"
    shutil.copytree(runs["workflow"], run)
    leftovers = [run / ".submission.csv.k2j4x9_a", run / "models" / "a" / ".test_predictions.csv.abcd1234",
                 run / ".blend.q1w2e3r4", run / ".report.zz99yy88", run / "blend" / ".blend.json.old"]
    for path in leftovers:
        if path.name.startswith((".blend.q", ".report.")):
            path.mkdir()
            (path / "index.html").write_text("half")
        else:
            path.write_text("half")
    keep = [run / ".moakit.lock.abcd1234", run / "models" / "a" / "config.json"]
    keep[0].write_text("{}")
    removed = clean_leftovers(run)
    assert sorted(removed) == sorted(leftovers)
    assert all(not p.exists() for p in leftovers) and all(p.exists() for p in keep)
    # a rerun of the finished workflow cleans them on start (nothing is retrained)
    for path in leftovers[:2]:
        path.write_text("half")
    data = runs["X"]
    moakit.MoABlend(BLEND_ENTRIES, profile="smoke", optuna_trials=3, methods=["slsqp"], run_dir=run).fit(**data.fit_args)
    assert not any(p.exists() for p in leftovers)
    # and a report run cleans the temporary report folders beside its own
    (run / ".report.aa11bb22").mkdir()
    from moakit.report import write_report

    write_report(run)
    assert not (run / ".report.aa11bb22").exists() and (run / "report" / "index.html").exists()


# --------------------------------------------------------------------------- report / blend need a finished run


@pytest.mark.parametrize("state", ["running", "interrupted", "failed"])
def test_report_and_blend_say_the_run_is_not_finished(runs, tmp_path, state):
    import json
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time

    from conftest import clean_exit, invoke

    run = tmp_path / "wf"
    shutil.copytree(runs["workflow"], run)
    model = run / "models" / "a"
    for folder in (run, model):
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["status"] = "failed" if state == "failed" else "running"
        if state == "failed":
            manifest["error"] = "a/scored/seed_0/fold_1 (fold): RuntimeError: boom"
        (folder / "manifest.json").write_text(json.dumps(manifest))
    (model / "oof_predictions.csv").unlink()
    holder = None
    if state == "running":  # a live process holds the workflow's lock
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(0.2)
        (run / ".moakit.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    try:
        words = {"running": f"is still running (pid {holder.pid if holder else ''})",
                 "interrupted": "was interrupted before it finished", "failed": "failed (a/scored/seed_0/fold_1"}[state]
        text = clean_exit(invoke("report", run), codes=(1,))
        assert f"{run}: the workflow run {words}" in text and "moakit report" in text
        text = clean_exit(invoke("blend", model, run / "models" / "b", "--out", tmp_path / "blend"), codes=(1,))
        assert f"{model}: the model run {words}" in text and "moakit blend" in text
        assert not (tmp_path / "blend").exists()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    assert os.path.exists(run / "workflow.json")


# --------------------------------------------------------------------------- progress into a log file


def test_progress_is_logged_line_by_line_into_a_file(monkeypatch, runs, tmp_path):
    import io

    from rich.console import Console

    from moakit import progress

    buffer = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buffer, width=200))
    with progress.RunProgress(True) as rp:
        advance = rp.jobs("simple_nn (smoke)", 2)
        with rp.epochs("simple_nn: scored seed 0 fold 0", None) as on_epoch:
            assert "simple_nn: scored seed 0 fold 0: started" in buffer.getvalue()  # written as it happens
            on_epoch({"train_loss": 0.5})
            on_epoch({"valid_loss": 0.02})
        assert "fold 0: 2 epoch(s), valid 0.02000" in buffer.getvalue()
        advance()
        assert "simple_nn (smoke): 1/2 done" in buffer.getvalue()
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 3 and all(re.match(r"\d\d:\d\d:\d\d \[", line) for line in lines)
    # a whole `moakit train` with stderr not a terminal: a line per fold as the run goes
    from conftest import invoke

    monkeypatch.undo()

    res = invoke("train", "simple_nn", "--data", runs["data"], "--out", tmp_path / "run", "--profile", "smoke",
                 "--folds", "2", "--seeds", "1")
    assert res.exit_code == 0, res.stderr
    assert re.search(r"fold 1: \d+ epoch\(s\)", res.stderr) and "2/2 done" in res.stderr
