"""DeepInsight CNN models: runner training + exact reload, local pretrained weights,
copy-safe swap noise on the g/c columns only, the feature-map PNG, the head and the ResNeSt
fast backbone, and the full profiles checked against the winners' scripts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moakit import runner
from moakit.config import load_config
from moakit.data.dataset import MoAData
from moakit.models.base import FitContext, StageSpec, make_model
from moakit.deepinsight import FeatureMap, LogNormScaler
from moakit.features import blocks_from_dataset
from moakit.models.deepinsight_cnn import (
    INPUT_BLOCKS, DeepInsightCNN, DeepInsightEstimator, DeepInsightFeatures, PretrainedWeightsError,
    build_cnn, create_backbone, feature_groups, raw_matrix,
)
from moakit.runner import build_model


@pytest.fixture(scope="module")
def small_data(sim_data) -> MoAData:
    """400 training rows (controls included) and 60 test rows of the simulated data."""
    return MoAData(train=sim_data.train.subset(np.arange(400)), test=sim_data.test.subset(np.arange(60)),
                   source=sim_data.source)


def _quick_features(blocks, image_size: int = 16) -> DeepInsightFeatures:
    """A feature state without the t-SNE (a random 2-D layout): for tests of training only."""
    scaler = LogNormScaler().fit(raw_matrix(blocks))
    layout = np.random.default_rng(0).normal(size=(scaler.n_features_in_, 2))
    return DeepInsightFeatures(scaler, FeatureMap.from_embedding(layout), image_size, image_size,
                               feature_groups(blocks))


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


# The winners' scripts (guitarmind/kaggle_moa_winner_hungry_for_gold): final/Best LB/Training/
# Local/deepinsight-efficientnet-lightning-v7-b3-train.py, .../deepinsight-resnest-lightning-v2-
# train.py and final/Best CV/Training/deepinsight-resnest-lightning-v1-train.ipynb. Their numbers:
SCRIPT_COMMON = {"optimizer": "radam", "lr": 0.000352, "weight_decay": 1e-6, "grad_clip": 10.0,
                 "scheduler": "cosine", "cosine_t_max": 5, "smoothing": 0.001, "epochs": 200, "min_delta": 1e-6}
SCRIPTS = {
    # config: (backbone, image = resolution, batch, drop_rate / final_drop, drop_connect, patience)
    "deepinsight_efficientnet": ("tf_efficientnet_b3", 300, 48, 0.3, 0.2, 12),
    "deepinsight_resnest": ("resnest50d_fast_2s2x40d", 224, 128, 0.0, 0.0, 16),
    "deepinsight_resnest_v2": ("resnest50d_fast_2s2x40d", 224, 128, 0.2, 0.0, 16),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_full_profile_equals_the_script(name):
    backbone, image, batch, dropout, drop_path, patience = SCRIPTS[name]
    config = load_config(name)
    model = build_model(config)
    p = model.params
    assert (p.backbone, p.image_size, p.grid, p.hidden) == (backbone, image, image, 512)
    assert (p.dropout, p.drop_path) == (dropout, drop_path)
    assert (p.swap_noise.p, p.swap_noise.fraction) == (0.1, 0.15)
    fm = p.feature_map
    assert (fm.perplexity, fm.n_iter, fm.metric, fm.method) == (5, 1000, "cosine", "exact")
    t = p.train
    assert {k: getattr(t, k) for k in SCRIPT_COMMON} == SCRIPT_COMMON
    assert (t.batch_size, t.patience, t.restore_best) == (batch, patience, True)
    assert p.amp == "auto" and config.cv.n_folds == 10 and config.cv.scheme == "old" and len(config.seeds) == 1
    assert model.stages() == [StageSpec("scored", keep_controls=True)]  # trained on the control rows too
    # topology: the dropout acts on the pooled features, before Linear(features, 512) -> ELU -> Linear(512, 206)
    net = DeepInsightCNN(**build_cnn(p, 206)[1])
    assert isinstance(net.drop, torch.nn.Dropout if dropout else torch.nn.Identity)
    assert getattr(net.drop, "p", 0.0) == dropout
    assert [type(m).__name__ for m in net.head] == ["Linear", "ELU", "Linear"]
    assert (net.head.fc1.in_features, net.head.fc1.out_features, net.head.fc2.out_features) == \
        (net.backbone.num_features, 512, 206)
    rates = [m.drop_prob for m in net.backbone.modules() if type(m).__name__ == "DropPath"]
    assert (max(rates) if rates else 0.0) == pytest.approx(drop_path, abs=0.01)
    # the scripts' head init: weights uniform in +-1/sqrt(fan_out), zero bias
    for layer in (net.head.fc1, net.head.fc2):
        bound = 1 / layer.out_features ** 0.5
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
        assert not layer.bias.any()


def test_v2_differs_from_v1_by_the_dropout_only():
    v1, v2 = load_config("deepinsight_resnest"), load_config("deepinsight_resnest_v2")
    assert v1.model == v2.model == "deepinsight_resnest"
    p1, p2 = v1.params, v2.params
    assert p1.pop("dropout") == 0.0 and p2.pop("dropout") == 0.2
    assert p1 == p2 and v1.seeds == v2.seeds and v1.cv == v2.cv  # both scripts seed with 1120
    # a partial train mapping keeps the scripts' settings for the rest
    t = make_model("deepinsight_resnest", {"train": {"epochs": 2}}).params.train
    assert (t.epochs, t.optimizer, t.lr, t.batch_size, t.patience, t.grad_clip) == (2, "radam", 0.000352, 128, 16, 10)
    t = make_model("deepinsight_efficientnet", {}).params.train
    assert (t.epochs, t.batch_size, t.patience, t.weight_decay) == (200, 48, 12, 1e-6)


def test_inputs_are_the_scripts_columns(small_data):
    """cp_type, cp_dose, cp_time (as the scripts encoded them) first, then g, c; cp_type
    tells the control rows (which the CNNs train on) apart; swap noise spares the cp columns."""
    blocks = blocks_from_dataset(small_data.train)
    assert INPUT_BLOCKS == ("cp_codes", "g", "c")
    X = raw_matrix(blocks)
    ds = small_data.train
    assert X.shape[1] == 3 + ds.genes.shape[1] + ds.cells.shape[1]
    np.testing.assert_array_equal(X[:, 0], (~ds.is_control).astype(np.float32))
    np.testing.assert_array_equal(X[:, 1], ds.cp_dose.astype(np.float32))
    np.testing.assert_array_equal(np.unique(X[:, 2]), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(X[:, 3:3 + ds.genes.shape[1]], ds.genes)
    features = _quick_features(blocks)
    assert list(features.noise_columns()) == list(range(3, X.shape[1]))


def test_head_and_resnest_fast_backbone():
    net = DeepInsightCNN("resnest50d_fast_2s2x40d", n_targets=7, dropout=0.2)
    assert net.backbone.num_features == 2048
    block = net.backbone.layer2[0]
    assert block.conv2.radix == 2 and block.avd_first is not None and block.avd_last is None
    assert block.conv1.out_channels == 2 * int(128 * 40 / 64)  # cardinality 2, base width 40
    assert net.backbone.conv1[0].out_channels == 32  # deep stem of width 32
    head = net.head
    assert (head.fc1.in_features, head.fc1.out_features, head.fc2.out_features) == (2048, 512, 7)
    assert isinstance(head.act, torch.nn.ELU) and isinstance(net.drop, torch.nn.Dropout) and net.drop.p == 0.2
    assert isinstance(DeepInsightCNN("resnest50d_fast_2s2x40d", 7).drop, torch.nn.Identity)
    assert net.eval()(torch.rand(2, 3, 16, 16)).shape == (2, 7)
    # the dropout zeroes pooled features (training mode), before fc1
    seen = {}
    net.backbone.register_forward_hook(lambda m, args, out: seen.update(pooled=out))
    net.head.fc1.register_forward_pre_hook(lambda m, args: seen.update(fc1_in=args[0]))
    net.train()(torch.rand(4, 3, 16, 16))
    pooled, fc1_in = seen["pooled"], seen["fc1_in"]
    assert pooled.shape == fc1_in.shape == (4, 2048)
    live = pooled != 0
    dropped = (fc1_in[live] == 0).float().mean()
    assert 0.15 < dropped < 0.25
    kept = fc1_in[live] != 0
    torch.testing.assert_close(fc1_in[live][kept], pooled[live][kept] / 0.8)


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
        model.fit_fold(model.stages()[0], X[:50], Y[:50], X[50:60], Y[50:60], FitContext(seed=0, features=features))
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
    assert X.dtype == np.float32 and X.shape == (200, 3 + 772 + 100)
    X_train, X_valid = X[:150], X[150:]
    X_train[:, :3] = (np.arange(150, dtype=np.float32) / 150)[:, None]  # a row id in each cp column
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
    est = model.fit_fold(stage, X_train, Y[:150], X_valid, Y[150:], FitContext(seed=0, features=features))
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
    # never on the cp columns (cp_type, cp_dose, cp_time): a swap drawing from them would
    # mix two rows' ids in some of the 300 noised rows (half the columns swap each time)
    np.testing.assert_array_equal(train_rows[:, 0], train_rows[:, 1])
    np.testing.assert_array_equal(train_rows[:, 0], train_rows[:, 2])
    valid = [b for b in seen if len(b) == 50]
    assert len(valid) == 2 and all(np.array_equal(b, X_valid) for b in valid)


def test_feature_state_records_its_input_blocks(small_data, tmp_path):
    """The feature state saves its input blocks; a state saved before cp_codes (no "blocks"
    entry) is refused: unsupported format, retrain."""
    import json

    blocks = blocks_from_dataset(small_data.train)
    features = _quick_features(blocks)
    features.save(tmp_path / "new")
    again = DeepInsightFeatures.load(tmp_path / "new")
    assert again.blocks == INPUT_BLOCKS
    np.testing.assert_array_equal(again.transform(blocks), features.transform(blocks))

    spec = json.loads((tmp_path / "new" / "deepinsight.json").read_text())
    del spec["blocks"]
    (tmp_path / "new" / "deepinsight.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="unsupported format.*retrain"):
        DeepInsightFeatures.load(tmp_path / "new")
