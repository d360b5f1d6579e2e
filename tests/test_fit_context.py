"""The fit context: what a fold's training receives besides its rows (issue: one way to do
each thing). Models take the seed, epoch callback, auxiliary targets, fitted features and
device from one FitContext; the runner builds it; a model that never asks for the fitted
features loads none."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moakit import runner
from moakit.config import load_config
from moakit.manifest import read_manifest
from moakit.models.base import FitContext, on_device
from moakit.nn.train import TrainParams


def _devices(params) -> list[str]:
    """Every ``device`` value in a params tree."""
    found = []
    for name in type(params).model_fields:
        value = getattr(params, name)
        if name == "device":
            found.append(value)
        elif hasattr(type(value), "model_fields"):
            found.extend(_devices(value))
    return found


@pytest.mark.parametrize("name", ["simple_nn", "two_stage_nn_tabnet", "resnet_2heads", "cnn1d",
                                  "deepinsight_efficientnet"])
def test_context_device_overrides_every_device_setting(name):
    model = runner.build_model(load_config(name, profile="smoke"))
    before = _devices(model.params)
    assert before and set(before) == {"auto"}
    on_cpu = model.fit_params(FitContext(seed=0, device="cpu"))
    assert _devices(on_cpu) == ["cpu"] * len(before)
    assert _devices(model.params) == before  # the model's own params are unchanged
    assert model.fit_params(FitContext(seed=0)) is model.params  # no device: as configured


def test_on_device_of_a_nested_train_params():
    params = TrainParams()
    assert on_device(params, None) is params
    assert on_device(params, "cpu").device == "cpu" and params.device == "auto"


def test_features_are_loaded_once_and_only_when_asked():
    calls = []
    ctx = FitContext(seed=0, load_features=lambda: calls.append(1) or "fitted")
    assert calls == []
    assert ctx.stage_features("m") == "fitted" and ctx.stage_features("m") == "fitted"
    assert calls == [1]
    with pytest.raises(ValueError, match="cnn1d: fit_fold needs the stage's fitted features"):
        FitContext(seed=0).stage_features("cnn1d")
    with pytest.raises(ValueError, match="resnet_2heads: fit_fold needs the auxiliary"):
        FitContext(seed=0).aux_targets("resnet_2heads")


def test_a_model_that_does_not_ask_loads_no_features(sim_data):
    model = runner.build_model(load_config("simple_nn", profile="smoke"))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype(np.float32)
    Y = (rng.random((60, 3)) < 0.2).astype(np.float32)

    def boom():
        raise AssertionError("features loaded by a model that does not need them")

    est = model.fit_fold(model.stages()[0], X[:48], Y[:48], X[48:], Y[48:], FitContext(seed=1, load_features=boom))
    assert est.predict_proba(X).shape == (60, 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_device_reaches_the_fold_jobs(sim_data, tmp_path):
    config = load_config("simple_nn", profile="smoke", seeds=1)
    with pytest.raises(Exception, match="torch sees no CUDA GPU"):
        runner.train(config, sim_data, tmp_path / "cuda", show_progress=False, device="cuda")
    # checked with the whole config before any work (issue 24): no run folder is left behind
    assert not (tmp_path / "cuda").exists() or not any((tmp_path / "cuda").iterdir())
    result = runner.train(config, sim_data, tmp_path / "cpu", show_progress=False, device="cpu")
    auto = runner.train(config, sim_data, tmp_path / "auto", show_progress=False)
    np.testing.assert_array_equal(result.oof, auto.oof)  # cpu is what auto picks here
