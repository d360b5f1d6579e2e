"""Loading TabNet estimators builds each network architecture once per process (issue 29):
pytorch-tabnet's embedding group matrix is a Python loop over input_dim x input_dim entries,
so a run's many TabNets are copies of one built network, with predictions unchanged."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytorch_tabnet")


def _data(n_cols: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(160, n_cols)).astype(np.float32)
    X[:, 0], X[:, 1] = rng.integers(0, 3, 160), rng.integers(0, 2, 160)
    return X, (X[:, 2:4] > 0.8).astype(np.float32)


def _slow_load(path):
    """What the loader did before: a network built afresh for this estimator."""
    import torch
    from pytorch_tabnet.tab_model import TabNetRegressor

    from moakit.artifacts import read_json
    from moakit.models.estimators import SPEC
    from moakit.runs import layout

    spec = read_json(path / SPEC)
    reg = TabNetRegressor(**{**spec["init_params"], "device_name": "cpu", "verbose": 0})
    reg._set_network()
    reg.network.load_state_dict(torch.load(path / layout.ESTIMATOR_WEIGHTS, weights_only=True))
    reg.network.eval()
    reg.batch_size = spec["batch_size"]
    return reg


def test_loaded_tabnets_are_copies_of_one_build_and_predict_as_before(tmp_path, monkeypatch):
    import pytorch_tabnet.tab_network as tab_network

    from moakit.metrics import sigmoid
    from moakit.models.two_stage_tabnet import TabNetConfig, TabNetEstimator, fit_tabnet

    X, Y = _data(14)
    cfg = TabNetConfig(n_d=4, n_a=4, max_epochs=2, patience=2, batch_size=64, virtual_batch_size=32, device="cpu")
    fitted = [fit_tabnet(cfg, X[:120], Y[:120], X[120:], Y[120:], seed=s) for s in (1, 2)]
    for s, est in enumerate(fitted):
        est.save(tmp_path / f"est{s}")

    builds = []
    original = tab_network.EmbeddingGenerator.__init__

    def counting(self, *args, **kwargs):
        builds.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(tab_network.EmbeddingGenerator, "__init__", counting)
    # a 15-column network: an architecture no other test has built in this process
    X15, Y15 = _data(15, seed=1)
    other = fit_tabnet(cfg, X15[:120], Y15[:120], X15[120:], Y15[120:], seed=4)
    other.save(tmp_path / "other")
    builds.clear()
    loaded = [TabNetEstimator.load(tmp_path / f"est{s}") for s in range(2)]
    first = loaded[0].predict_proba(X)
    again = TabNetEstimator.load(tmp_path / "other")
    assert len(builds) == 2  # each architecture once (no other test loads a 14- or 15-column TabNet)
    assert len({id(e.regressor.network) for e in loaded}) == 2
    for s, (est, fit) in enumerate(zip(loaded, fitted)):
        assert est.regressor.seed == fit.regressor.seed
        np.testing.assert_array_equal(est.predict_proba(X), fit.predict_proba(X))
        np.testing.assert_array_equal(est.predict_proba(X), sigmoid(_slow_load(tmp_path / f"est{s}").predict(X)))
    np.testing.assert_array_equal(loaded[0].predict_proba(X), first)  # later loads left it alone
    np.testing.assert_array_equal(again.predict_proba(X15), other.predict_proba(X15))
