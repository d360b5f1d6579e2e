"""The Ray executor gives the same run as the local one (a local 2-CPU Ray instance)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moakit import runner
from moakit.config import load_config


def test_missing_ray_gives_an_install_hint(monkeypatch):
    from moakit import distributed

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ImportError, match=r"pip install 'moakit\[ray\]'"):
        distributed.RayExecutor().run([object()], None)


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


def test_ray_executor_matches_local(ray_local, ray_data, tmp_path, monkeypatch):
    from moakit.distributed import RayExecutor

    import torch

    config = load_config("simple_nn", profile="smoke")
    # Each Ray task trains with 1 torch thread (num_cpus_per_job=1); the BLAS thread count
    # changes the last float bits, so the local reference uses 1 thread too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = runner.train(config, ray_data, tmp_path / "local", executor="local", show_progress=False)
    finally:
        torch.set_num_threads(threads)

    puts = []
    real_put = ray_local.put
    monkeypatch.setattr(ray_local, "put", lambda value, **kw: puts.append(type(value).__name__) or real_put(value, **kw))
    executor = RayExecutor(num_cpus_per_job=1)
    remote = runner.train(config, ray_data, tmp_path / "ray", executor=executor, show_progress=False)

    # the stage-seed arrays went to the object store once per stage-seed, not once per fold
    assert puts == ["StageArrays"]
    assert len(list((tmp_path / "ray").glob("stages/*/seed_*/fold_*/done.json"))) == config.cv.n_folds
    np.testing.assert_allclose(remote.oof, local.oof, atol=1e-6, rtol=0)
    np.testing.assert_allclose(remote.test, local.test, atol=1e-6, rtol=0)
    a = pd.read_csv(Path(tmp_path / "ray" / "oof_predictions.csv"))
    b = pd.read_csv(Path(tmp_path / "local" / "oof_predictions.csv"))
    np.testing.assert_allclose(a.iloc[:, 1:].to_numpy(), b.iloc[:, 1:].to_numpy(), atol=1e-6, rtol=0)
