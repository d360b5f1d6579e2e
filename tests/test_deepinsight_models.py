"""DeepInsight CNN models: runner training + exact reload, local pretrained weights,
copy-safe swap noise, the feature-map PNG, the head and the ResNeSt fast backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moakit import runner
from moakit.config import load_config
from moakit.data.dataset import MoAData
from moakit.models.base import StageSpec, make_model
from moakit.deepinsight import FeatureMap, LogNormScaler
from moakit.features import blocks_from_dataset
from moakit.models.deepinsight_cnn import (
    DeepInsightCNN, DeepInsightEstimator, DeepInsightFeatures, PretrainedWeightsError, build_cnn, create_backbone,
    raw_matrix,
)
from moakit.runner import build_model


@pytest.fixture(autouse=True)
def _one_thread():
    """Contended 2-core machine: one torch thread is faster and steadier for tiny images."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_data(sim_data) -> MoAData:
    """400 training rows (controls included) and 60 test rows of the simulated data."""
    return MoAData(train=sim_data.train.subset(np.arange(400)), test=sim_data.test.subset(np.arange(60)),
                   source=sim_data.source)


def _quick_features(blocks, image_size: int = 16) -> DeepInsightFeatures:
    """A feature state without the t-SNE (a random 2-D layout): for tests of training only."""
    scaler = LogNormScaler().fit(raw_matrix(blocks))
    layout = np.random.default_rng(0).normal(size=(scaler.n_features_in_, 2))
    groups = ["gene"] * blocks["g"].shape[1] + ["cell"] * blocks["c"].shape[1] + ["cp"] * blocks["cp"].shape[1]
    return DeepInsightFeatures(scaler, FeatureMap.from_embedding(layout), image_size, image_size, groups)


def _smoke(name: str, **params):
    config = load_config(name, profile="smoke")
    config.params.update(params)  # params is a plain dict before the model validates it
    return config


@pytest.mark.parametrize("config_name", ["deepinsight_efficientnet", "deepinsight_resnest_v2"])
def test_train_predict_reload(config_name, small_data, tmp_path):
    config = _smoke(config_name)
    result = runner.train(config, small_data, tmp_path / "run", show_progress=False)
    n_targets = len(small_data.train.scored_names)
    assert result.oof.shape == (400, n_targets) and result.test.shape == (60, n_targets)
    assert np.isfinite(result.metrics["log_loss"])
    # controls are predicted 0 in the outputs; the CNN itself trained on them
    assert np.all(result.test[small_data.test.is_control] == 0)
    again = runner.predict_run(tmp_path / "run", small_data.test)
    np.testing.assert_array_equal(again, result.test)
    # the feature map PNG lands in the feature state folder of the run
    pngs = list((tmp_path / "run").rglob("feature_map*.png"))
    assert pngs and pngs[0].stat().st_size > 1000
    est = DeepInsightEstimator.load(tmp_path / "run" / "stages" / "scored" / f"seed_{config.seeds[0]}" / "fold_0"
                                    / "estimator")
    assert est.kwargs["in_chans"] == 3 and est.kwargs["n_targets"] == n_targets
    assert est.renderer.image_size == 16 and est.info["epochs"] == 1


def test_v2_is_resnest_with_head_dropout_and_another_seed():
    v1, v2 = load_config("deepinsight_resnest"), load_config("deepinsight_resnest_v2")
    assert v1.model == v2.model == "deepinsight_resnest"
    m1, m2 = build_model(v1), build_model(v2)
    assert (m1.params.dropout, m2.params.dropout) == (0.0, 0.2)
    assert v1.seeds != v2.seeds
    assert m1.params.train.batch_size == 128 and m1.params.image_size == 224
    eff = build_model(load_config("deepinsight_efficientnet"))
    assert eff.params.train.batch_size == 48 and eff.params.image_size == 300
    for m in (m1, eff):
        t = m.params.train
        assert (t.optimizer, t.lr, t.scheduler, t.cosine_t_max, t.smoothing, t.patience, t.epochs) == \
            ("radam", 0.000352, "cosine", 5, 0.001, 12, 35)
        assert t.eval_batch_size == 512 and m.stages() == [StageSpec("scored", keep_controls=True)]
    # a partial train mapping keeps the write-up's settings for the rest
    t = make_model("deepinsight_resnest", {"train": {"epochs": 2}}).params.train
    assert (t.epochs, t.optimizer, t.lr, t.batch_size, t.scheduler) == (2, "radam", 0.000352, 128, "cosine")


def test_head_and_resnest_fast_backbone():
    net = DeepInsightCNN("resnest50d_fast_2s2x40d", n_targets=7, dropout=0.2)
    assert net.backbone.num_features == 2048
    block = net.backbone.layer2[0]
    assert block.conv2.radix == 2 and block.avd_first is not None and block.avd_last is None
    assert block.conv1.out_channels == 2 * int(128 * 40 / 64)  # cardinality 2, base width 40
    assert net.backbone.conv1[0].out_channels == 32  # deep stem of width 32
    head = net.head
    assert (head.fc1.in_features, head.fc1.out_features, head.fc2.out_features) == (2048, 512, 7)
    assert isinstance(head.act, torch.nn.ELU) and isinstance(head.drop, torch.nn.Dropout) and head.drop.p == 0.2
    assert isinstance(DeepInsightCNN("resnest50d_fast_2s2x40d", 7).head.drop, torch.nn.Identity)
    assert net.eval()(torch.rand(2, 3, 16, 16)).shape == (2, 7)


def test_pretrained_weights_from_a_local_file(small_data, tmp_path):
    torch.manual_seed(123)
    donor = create_backbone("tf_efficientnet_b3")
    state = donor.state_dict()
    # a wrapped checkpoint with DataParallel prefixes and a classifier to be ignored
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    wrapped["state_dict"]["module.classifier.weight"] = torch.zeros(1000, 1536)
    path = tmp_path / "b3.pth"
    torch.save(wrapped, path)

    model = build_model(_smoke("deepinsight_efficientnet", pretrained_weights=str(path)))
    torch.manual_seed(0)
    net, kwargs, loaded = build_cnn(model.params, n_targets=5)
    assert "pretrained_weights" not in kwargs and loaded["loaded"] == len(state)
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, state[k]), k

    # a mismatched checkpoint: the error names the missing / unexpected keys
    bad = {k: v for k, v in state.items() if not k.startswith("conv_stem")}
    bad["extra.weight"] = torch.zeros(3)
    torch.save(bad, tmp_path / "bad.pth")
    model = build_model(_smoke("deepinsight_efficientnet", pretrained_weights=str(tmp_path / "bad.pth")))
    with pytest.raises(PretrainedWeightsError, match=r"1 missing keys \(conv_stem.weight\).*1 unexpected keys "
                                                     r"\(extra.weight\)"):
        build_cnn(model.params, n_targets=5)
    # ... and when a fold trains, before any epoch runs
    blocks = blocks_from_dataset(small_data.train)
    features = _quick_features(blocks)
    X, Y = features.transform(blocks), small_data.train.scored.astype(np.float32)
    with pytest.raises(PretrainedWeightsError, match="conv_stem.weight"):
        model.fit_fold(model.stages()[0], X[:50], Y[:50], X[50:60], Y[50:60], seed=0, features=features)
    # a ResNeSt checkpoint does not fit EfficientNet; the shape check catches same-name keys
    torch.save(create_backbone("resnest50d_fast_2s2x40d").state_dict(), tmp_path / "resnest.pth")
    with pytest.raises(PretrainedWeightsError, match="missing keys"):
        build_cnn(build_model(_smoke("deepinsight_efficientnet", pretrained_weights=str(tmp_path / "resnest.pth")))
                  .params, 5)


def test_swap_noise_training_leaves_x_train_untouched(small_data):
    model = make_model("deepinsight_resnest", load_config("deepinsight_resnest", profile="smoke").params
                       | {"train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 128},
                          "swap_noise": {"p": 1.0, "fraction": 0.5}})
    stage = model.stages()[0]
    ds = small_data.train
    blocks = {k: v[:200] for k, v in blocks_from_dataset(ds).items()}
    features = _quick_features(blocks)
    X = features.transform(blocks)
    assert X.dtype == np.float32 and X.shape == (200, 772 + 100 + 5)
    X_train, X_valid = X[:150], X[150:]
    before = X_train.copy()
    Y = ds.scored[:200].astype(np.float32)
    seen = []
    real = features.renderer

    def spy_renderer():
        r = real()
        render = r.render_torch

        def spying(xb, backend="auto"):
            seen.append(xb.numpy().copy())
            return render(xb, backend=backend)

        r.render_torch = spying
        return r

    features.renderer = spy_renderer
    est = model.fit_fold(stage, X_train, Y[:150], X_valid, Y[150:], seed=0, features=features)
    assert X_train.tobytes() == before.tobytes()
    assert est.info["epochs"] == 2
    # training batches (32 and 22 rows) were noised (p = 1: every row; a donor may be the
    # row itself, 1 in 150), the validation batches (50 rows) were rendered as they are
    train_rows = np.concatenate([b for b in seen if len(b) in (32, 22)])
    assert len(train_rows) == 2 * 150
    unchanged = (train_rows[:, None, :] == X_train[None, :, :]).all(axis=2).any(axis=1)
    assert unchanged.mean() < 0.05
    changed = (train_rows[:, None, :] != X_train[None, :, :]).sum(axis=2).min(axis=1)
    assert np.median(changed) > 0.2 * X.shape[1]
    valid = [b for b in seen if len(b) == 50]
    assert len(valid) == 2 and all(np.array_equal(b, X_valid) for b in valid)
