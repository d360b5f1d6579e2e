"""Saved fold estimators: every spec.json names its kind, load_estimator loads any, a
composite estimator stores its info once (its own spec.json), DeepInsight uses the shared
TorchEstimator save / load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moakit.models.base import TorchEstimator
from moakit.models.estimators import SPEC, WEIGHTS, load_estimator
from moakit.models.label_powerset import PowersetEstimator, PowersetMap
from moakit.runs.records import RunFileError


def _mlp(info=None) -> TorchEstimator:
    import torch

    torch.manual_seed(0)
    kwargs = {"n_in": 5, "n_out": 4, "hidden": [8], "dropouts": [0.0, 0.0], "weight_norm_layers": [False, False],
              "activation_name": "relu"}
    return TorchEstimator("mlp", kwargs, info=info)


def _powerset() -> PowersetEstimator:
    Y = (np.random.default_rng(0).random((40, 3)) < 0.3).astype(np.float32)
    mapping = PowersetMap.fit(Y, min_count=2)
    net = TorchEstimator("mlp", {"n_in": 5, "n_out": mapping.n_classes, "hidden": [8], "dropouts": [0.0, 0.0],
                                 "weight_norm_layers": [False, False], "activation_name": "relu"},
                         info={"best_epoch": 3, "n_classes": mapping.n_classes})
    return PowersetEstimator(net, mapping)


def test_a_torch_estimator_round_trips_and_names_its_kind(tmp_path):
    est = _mlp({"best_epoch": 2})
    est.save(tmp_path / "e")
    spec = json.loads((tmp_path / "e" / SPEC).read_text())
    assert spec["kind"] == "torch" and spec["info"] == {"best_epoch": 2} and (tmp_path / "e" / WEIGHTS).is_file()
    again = load_estimator(tmp_path / "e")
    assert type(again) is TorchEstimator and again.info == {"best_epoch": 2}
    X = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))


def test_label_powerset_stores_its_info_once_in_its_spec(tmp_path):
    est = _powerset()
    est.save(tmp_path / "e")
    folder = tmp_path / "e"
    spec = json.loads((folder / SPEC).read_text())
    assert spec == {"kind": "label_powerset", "info": {"best_epoch": 3, "n_classes": est.mapping.n_classes}}
    assert json.loads((folder / "network" / SPEC).read_text())["info"] == {}  # not a second copy
    assert not (folder / "info.json").exists()
    again = load_estimator(folder)
    assert isinstance(again, PowersetEstimator) and again.info == spec["info"] and again.network.info is again.info
    X = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32)
    np.testing.assert_allclose(again.predict_proba(X), est.predict_proba(X), rtol=1e-6)


def test_a_deepinsight_estimator_saves_through_the_shared_hooks(tmp_path):
    from moakit.config import load_config
    from moakit.models import deepinsight_cnn as dc

    assert "save" not in vars(dc.DeepInsightEstimator) and "load" not in vars(dc.DeepInsightEstimator)
    params = dc.DeepInsightParams(**load_config("deepinsight_efficientnet", profile="smoke").params)
    render = {"pixel_rows": np.arange(10) % 4, "pixel_cols": np.arange(10) % 3, "resolution": 4, "image_size": 16}
    est = dc.DeepInsightEstimator(dc.NETWORK_NAME, dc.network_kwargs(params, 3), render, info={"epochs": 1})
    est.save(tmp_path / "e")
    spec = json.loads((tmp_path / "e" / SPEC).read_text())
    assert list(spec) == ["kind", "network", "kwargs", "eval_batch_size", "device", "amp", "info"]
    again = load_estimator(tmp_path / "e")
    assert isinstance(again, dc.DeepInsightEstimator) and again.info == {"epochs": 1}
    np.testing.assert_array_equal(again.render["pixel_rows"], est.render["pixel_rows"])
    X = np.random.default_rng(3).normal(size=(2, 10)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))


def test_weights_of_another_shape_are_an_error_naming_the_file(tmp_path):
    from moakit.validate import ArtifactError

    _mlp().save(tmp_path / "e")
    spec = json.loads((tmp_path / "e" / SPEC).read_text())
    spec["kwargs"]["hidden"] = [9]
    (tmp_path / "e" / SPEC).write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match=WEIGHTS):
        load_estimator(tmp_path / "e")


def test_a_folder_without_a_kind_is_of_an_unsupported_format(tmp_path):
    _mlp().save(tmp_path / "e")
    spec = json.loads((tmp_path / "e" / SPEC).read_text())
    del spec["kind"]
    (tmp_path / "e" / SPEC).write_text(json.dumps(spec))
    with pytest.raises(RunFileError, match="unsupported format"):
        load_estimator(tmp_path / "e")
