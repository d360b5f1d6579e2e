"""The Ray executor gives the same run as the local one (a local 2-CPU Ray instance)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moakit.distributed import RayExecutor
from moakit.graph import Observer, TaskGraph


def test_missing_ray_gives_an_install_hint(monkeypatch):
    from moakit import distributed

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ImportError, match=r"pip install 'moakit\[ray\]'"):
        distributed.RayExecutor().run_graph(TaskGraph(), Observer())


def test_address_needs_the_ray_executor(tmp_path):
    from typer.testing import CliRunner

    from moakit.cli import app

    res = CliRunner().invoke(app, ["train", "simple_nn", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                                   "--address", "auto"])
    assert res.exit_code == 2 and "only used with --executor ray" in res.output


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'moakit[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_data(tmp_path_factory):
    from moakit.data.io import load
    from moakit.data.simulate import simulate

    return load(simulate(tmp_path_factory.mktemp("ray") / "data", n_rows=600, seed=21))


def _blend_config(folder: Path) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "blend.yaml"
    path.write_text(yaml.safe_dump({
        "models": [{"name": "simple_nn", "config": "simple_nn", "folds": 2},
                   {"name": "three_stage_nn", "config": "three_stage_nn", "seeds": 2, "folds": 2}],
        "blend": {"methods": ["slsqp"], "optuna_trials": 2}}))
    return path


def test_ray_graph_run_matches_local(ray_local, ray_data, tmp_path, monkeypatch):
    """A workflow of a Simple NN and a 2-seed 3-stage NN (seed-mean meta-features): the whole
    graph on Ray gives the local run's predictions, with the data put in the object store
    once, and more fold tasks in flight than one stage-seed has."""
    import torch
    from threadpoolctl import threadpool_limits

    from moakit.workflow import run_workflow

    config = _blend_config(tmp_path / "cfg")
    # Each Ray task runs with 1 torch and BLAS thread (num_cpus_per_job=1); the thread count
    # changes the last float bits, which UMAP / factor analysis / training can grow, so the
    # local reference uses 1 thread too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            local = run_workflow(config, ray_data, tmp_path / "local", profile="smoke", show_progress=False)
    finally:
        torch.set_num_threads(threads)

    puts = []
    real_put = ray_local.put
    monkeypatch.setattr(ray_local, "put", lambda value, **kw: puts.append(type(value).__name__) or real_put(value, **kw))
    remote = run_workflow(config, ray_data, tmp_path / "ray", profile="smoke", executor=RayExecutor(num_cpus_per_job=1),
                          show_progress=False)

    assert puts.count("MoAData") == 1 and "StageArrays" not in puts  # stage matrices are task results
    for name in ("simple_nn", "three_stage_nn"):
        np.testing.assert_allclose(remote.models[name].oof, local.models[name].oof, atol=1e-6, rtol=0)
        np.testing.assert_allclose(remote.models[name].test, local.models[name].test, atol=1e-6, rtol=0)
    a = pd.read_csv(tmp_path / "ray" / "submission.csv")
    b = pd.read_csv(tmp_path / "local" / "submission.csv")
    np.testing.assert_allclose(a.iloc[:, 1:].to_numpy(), b.iloc[:, 1:].to_numpy(), atol=1e-6, rtol=0)
    trace = json.loads((tmp_path / "ray" / "graph.json").read_text())
    assert trace["executor"] == "RayExecutor"
    assert trace["peak_in_flight"] > 2  # more than the 2 folds of one stage-seed at once
    assert trace["peak_running"] >= 2
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["executor"] == "RayExecutor"


def test_ray_failed_node_is_reported_and_the_rest_finishes(ray_local):
    """On Ray as locally: the failed node named, its dependents skipped, the rest done."""
    from moakit.graph import GraphFailed, Node

    def ok(*values):
        return len(values)

    def boom(*values):
        raise ValueError("bad fold")

    g = TaskGraph()
    g.add(Node("m/features", "features", ok, model="m", stage="s", seed=0))
    g.add(Node("m/fold_0", "fold", boom, deps=["m/features"], model="m", stage="s", seed=0, fold=0))
    g.add(Node("m/fold_1", "fold", ok, deps=["m/features"], model="m", stage="s", seed=0, fold=1))
    g.add(Node("m/gather", "gather", ok, deps=["m/fold_0", "m/fold_1"], model="m", stage="s", seed=0, cpu_share=0))
    g.add(Node("m/model", "model", ok, deps=["m/gather"], model="m", on_driver=True))
    g.add(Node("n/fold_0", "fold", ok, model="n", stage="s", seed=1, fold=0))
    seen = {}

    class Record(Observer):
        def on_done(self, node, value):
            seen[node.id] = "done"

        def on_skipped(self, node):
            seen[node.id] = "skipped"

    with pytest.raises(GraphFailed) as info:
        RayExecutor(num_cpus_per_job=1).run_graph(g, Record())
    assert [f.node.id for f in info.value.failures] == ["m/fold_0"]
    assert "model 'm' stage 's' seed 0 fold 0 (fold): ValueError: bad fold" in str(info.value)
    assert seen == {"m/features": "done", "m/fold_1": "done", "n/fold_0": "done", "m/gather": "skipped",
                    "m/model": "skipped"}
