"""The run as one task graph: its shape (which node waits for which), the local executor's
order, failures reported by model / stage / seed / fold with the rest finished and kept, and
a rerun that finishes the rest with the same result as an uninterrupted run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from moakit import graph as G
from moakit import runner
from moakit.config import load_config
from moakit.models.base import get_model_class


# --------------------------------------------------------------------------- the graph itself


def _node(nid, deps=(), fn=None, **kw):
    return G.Node(nid, kw.pop("kind", "fold"), fn or (lambda *values: (nid, values)), deps=list(deps), **kw)


def test_nodes_need_known_dependencies_and_unique_ids():
    g = G.TaskGraph()
    g.add(_node("a"))
    with pytest.raises(ValueError, match="'a' added twice"):
        g.add(_node("a"))
    with pytest.raises(ValueError, match=r"'b' depends on unknown node\(s\) \['z'\]"):
        g.add(_node("b", ["z"]))


def test_local_run_keeps_the_order_passes_values_and_frees_them():
    g, ran = G.TaskGraph(), []

    def fn(name):
        return lambda *values: ran.append(name) or (name, values)

    for nid, deps in (("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]), ("e", [])):
        g.add(_node(nid, deps, fn(nid)))
    sinks = G.run_local(g)
    assert ran == ["a", "b", "c", "d", "e"]
    assert set(sinks) == {"d", "e"}  # the others were dropped once read
    assert sinks["d"] == ("d", (("b", (("a", ()),)), ("c", (("a", ()),))))
    assert set(g.trace) == set("abcde") and all(t["end"] >= t["start"] for t in g.trace.values())


def test_a_failed_node_skips_its_dependents_and_the_rest_finishes():
    g, ran = G.TaskGraph(), []

    def ok(name):
        return lambda *values: ran.append(name)

    def boom(*values):
        raise RuntimeError("CUDA out of memory")

    g.add(_node("m/features", [], ok("m/features"), kind="features", model="m", stage="s1", seed=0))
    g.add(_node("m/fold_0", ["m/features"], ok("m/fold_0"), model="m", stage="s1", seed=0, fold=0))
    g.add(_node("m/fold_1", ["m/features"], boom, model="m", stage="s1", seed=0, fold=1))
    g.add(_node("m/gather", ["m/fold_0", "m/fold_1"], ok("m/gather"), kind="gather", model="m", stage="s1", seed=0))
    g.add(_node("other/fold_0", [], ok("other/fold_0"), model="other", stage="scored", seed=3, fold=0))
    with pytest.raises(G.GraphFailed) as info:
        G.run_local(g)
    exc = info.value
    assert ran == ["m/features", "m/fold_0", "other/fold_0"]
    assert [f.node.id for f in exc.failures] == ["m/fold_1"] and [n.id for n in exc.skipped] == ["m/gather"]
    assert "model 'm' stage 's1' seed 0 fold 1 (fold): RuntimeError: CUDA out of memory" in str(exc)
    assert "1 task(s) failed, 1 skipped" in str(exc) and "3 of 5 finished" in str(exc)
    assert exc.failed_models() == {"m"}
    assert isinstance(exc, ValueError)  # the CLI's "the work failed" errors: one line, exit code 1


def test_peak_overlap():
    assert G.peak_overlap([]) == 0
    assert G.peak_overlap([(0, 2), (1, 3), (2, 4), (5, 6)]) == 2
    assert G.peak_overlap([(0, 10), (1, 2), (1, 3), (2.5, 4)]) == 3


# --------------------------------------------------------------------------- a model's nodes


def _model_graph(name, data, out, **update):
    config = load_config(name, profile="smoke").model_copy(update=update)
    g = G.TaskGraph()
    model = runner.build_model(config)
    node = runner.add_model(g, name, config, model, data, out, runner.data_fingerprint(data))
    return g, node, config


@pytest.mark.parametrize("meta, expected", [("seed_mean", {0: [0, 1, 2], 1: [0, 1, 2]}), ("per_seed", {0: [0], 1: [1]})])
def test_next_stage_waits_for_the_gathers_it_reads(sim_data, tmp_path, meta, expected):
    config = load_config("three_stage_nn", profile="smoke")
    params = {**config.params, "meta_features": meta}
    g, model_node, _ = _model_graph("three_stage_nn", sim_data, tmp_path / "run", seeds=[0, 1, 2], params=params)
    for seed in (0, 1):
        feat = g.nodes[f"three_stage_nn/scored/seed_{seed}/features"]
        assert feat.deps == [f"three_stage_nn/nonscored/seed_{s}/gather" for s in expected[seed]]
        gather = g.nodes[f"three_stage_nn/scored/seed_{seed}/gather"]
        assert gather.deps == [f"three_stage_nn/scored/seed_{seed}/fold_{k}" for k in range(3)]
    first = g.nodes["three_stage_nn/nonscored/seed_0/features"]
    assert first.deps == [] and (first.cpu_share, first.gpu_share) == (1.0, 0.0)
    assert g.nodes[model_node].on_driver and len(g.nodes[model_node].deps) == 3 * 3  # stages x seeds
    kinds = {k: sum(n.kind == k for n in g) for k in ("features", "fold", "gather", "model")}
    assert kinds == {"features": 9, "fold": 27, "gather": 9, "model": 1}
    assert g.models["three_stage_nn"] == ("three_stage_nn (smoke)", 27, 0)


def test_fold_resources_by_model_family(sim_data, tmp_path):
    assert get_model_class("deepinsight_efficientnet").fold_gpu_share == 1.0
    assert get_model_class("simple_nn").fold_gpu_share < 1.0
    g, _, _ = _model_graph("deepinsight_efficientnet", sim_data, tmp_path / "cnn")
    folds = [n for n in g if n.kind == "fold"]
    assert folds and all(n.gpu_share == 1.0 for n in folds)
    assert all(n.gpu_share == 0.0 for n in g if n.kind != "fold")
    assert all(n.cpu_share == 0.0 for n in g if n.kind in ("gather", "model"))
    from moakit.distributed import RayExecutor

    ex = RayExecutor(num_cpus_per_job=2, num_gpus_per_job=1)
    assert ex.resources(folds[0]) == {"num_cpus": 2, "num_gpus": 1.0}
    mlp = runner.Node("x", "fold", print, gpu_share=get_model_class("simple_nn").fold_gpu_share)
    assert ex.resources(mlp) == {"num_cpus": 2, "num_gpus": 0.25}


# --------------------------------------------------------------------------- failure and resume


def _blend_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "blend.yaml"
    path.write_text(yaml.safe_dump({
        "models": [{"name": "simple_nn", "config": "simple_nn"},
                   {"name": "simple_nn_drug_cv", "config": "simple_nn_drug_cv"}],
        "blend": {"methods": ["slsqp"], "optuna_trials": 2}}))
    return path


@pytest.fixture(scope="module")
def graph_data(tmp_path_factory) -> Path:
    from moakit.data.simulate import simulate

    return Path(simulate(tmp_path_factory.mktemp("graph") / "data", n_rows=500, seed=13))


def test_failed_fold_is_reported_the_rest_kept_and_a_rerun_finishes(graph_data, tmp_path, monkeypatch):
    from moakit.models.simple_nn import SimpleNN
    from moakit.workflow import WorkflowError, run_workflow

    config = _blend_config(tmp_path / "cfg")
    reference = run_workflow(config, graph_data, tmp_path / "reference", profile="smoke", show_progress=False)

    real_fit = SimpleNN.fit_fold
    calls = []

    def failing_fit(self, stage, X_train, Y_train, X_valid, Y_valid, ctx):
        calls.append(ctx.seed)
        if len(calls) == 5:  # the second model's fold 1 (the local executor's order)
            assert ctx.seed == runner.fold_seed(0, 1)
            raise RuntimeError("the GPU fell off the bus")
        return real_fit(self, stage, X_train, Y_train, X_valid, Y_valid, ctx)

    monkeypatch.setattr(SimpleNN, "fit_fold", failing_fit)
    out = tmp_path / "run"
    with pytest.raises(WorkflowError) as info:
        run_workflow(config, graph_data, out, profile="smoke", show_progress=False)
    message = str(info.value)
    assert "model 'simple_nn_drug_cv' stage 'scored' seed 0 fold 1 (fold): RuntimeError: the GPU fell off the bus" \
        in message
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["models"]["simple_nn"]["status"] == "complete"
    drug = manifest["models"]["simple_nn_drug_cv"]
    assert drug["status"] == "failed" and "fold 1" in drug["error"]
    own = json.loads((out / "models" / "simple_nn_drug_cv" / "manifest.json").read_text())
    assert own["kind"] == "model" and own["status"] == "failed" and "the GPU fell off the bus" in own["error"]
    done = sorted(str(p.relative_to(out)) for p in out.glob("models/*/stages/*/seed_*/fold_*/done.json"))
    assert len(done) == 5 and "models/simple_nn_drug_cv/stages/scored/seed_0/fold_1/done.json" not in done
    trace = json.loads((out / "graph.json").read_text())
    assert trace["by_kind"]["fold"] == 6 and trace["executed"] == 10  # skipped: its gather, its model, the blend

    monkeypatch.setattr(SimpleNN, "fit_fold", real_fit)
    before = {p: p.stat().st_mtime_ns for p in out.glob("models/*/stages/*/seed_*/fold_*/estimator")}
    result = run_workflow(config, graph_data, out, profile="smoke", show_progress=False)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # finished folds kept, not retrained
    rerun = json.loads((out / "graph.json").read_text())
    assert rerun["by_kind"]["fold"] == 1  # only the failed fold was left to do
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    own = json.loads((out / "models" / "simple_nn_drug_cv" / "manifest.json").read_text())
    assert own["status"] == "complete" and "error" not in own
    for name in ("simple_nn", "simple_nn_drug_cv"):
        np.testing.assert_allclose(result.models[name].oof, reference.models[name].oof, atol=1e-6, rtol=0)
        np.testing.assert_allclose(result.models[name].test, reference.models[name].test, atol=1e-6, rtol=0)
    assert (out / "submission.csv").read_bytes() == (tmp_path / "reference" / "submission.csv").read_bytes()


def test_a_finished_stage_seed_is_only_read(graph_data, tmp_path):
    from moakit.data.io import load

    data = load(graph_data)
    out = tmp_path / "run"
    config = load_config("simple_nn", profile="smoke")
    first = runner.train(config, data, out, show_progress=False)
    shutil.rmtree(out / "stages" / "scored" / "seed_0" / "fold_2")  # oof.npy / test.npy still there
    g, _, _ = _model_graph("simple_nn", data, out)
    assert [n.kind for n in g] == ["gather", "model"] and g.models["simple_nn"][1:] == (3, 3)
    again = runner.train(config, data, out, show_progress=False)
    np.testing.assert_array_equal(again.test, first.test)
