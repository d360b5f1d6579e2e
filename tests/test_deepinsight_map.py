"""DeepInsight feature map, renderer, scaler and swap noise (no CNN): small and fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moakit.deepinsight import FeatureMap, LogNormScaler, Renderer, bbox_area, feature_groups, swap_noise
from moakit.deepinsight.featuremap import min_area_rect_angle


def _random_renderer(seed: int, n_features: int, resolution: int, image_size: int | None = None) -> Renderer:
    rng = np.random.default_rng(seed)
    return Renderer(rng.integers(0, resolution, n_features), rng.integers(0, resolution, n_features),
                    resolution, image_size)


# ---------------------------------------------------------------- renderer
@pytest.mark.parametrize("seed,n_features,resolution", [(0, 60, 32), (1, 60, 16), (2, 60, 4), (3, 200, 8),
                                                         (4, 60, 1), (5, 30, 64)])
def test_render_equals_reference_exactly(seed, n_features, resolution):
    r = _random_renderer(seed, n_features, resolution)
    rng = np.random.default_rng(100 + seed)
    X = rng.normal(size=(37, n_features)).astype(np.float32)
    img = r.render(X)
    assert img.shape == (37, 3, resolution, resolution) and img.dtype == np.float32
    ref = np.stack([r.render_reference(x) for x in X])
    np.testing.assert_array_equal(img, ref)  # mean, min and max, bit for bit
    # empty pixels are 0 in every channel, occupied ones carry mean/min/max of their features
    occupied = np.zeros((resolution, resolution), bool)
    occupied[r.pixel_rows, r.pixel_cols] = True
    assert not img[:, :, ~occupied].any()
    j = 0
    same = (r.pixel_rows == r.pixel_rows[j]) & (r.pixel_cols == r.pixel_cols[j])
    px = img[:, :, r.pixel_rows[j], r.pixel_cols[j]]
    np.testing.assert_allclose(px[:, 0], X[:, same].mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(px[:, 1], X[:, same].min(axis=1))
    np.testing.assert_array_equal(px[:, 2], X[:, same].max(axis=1))


def test_render_many_collisions_and_single_row():
    r = _random_renderer(7, 60, 3)  # 60 features on 9 pixels: up to a dozen per pixel
    assert len(r.layer_groups) > 5
    x = np.random.default_rng(0).random(60).astype(np.float32)
    np.testing.assert_array_equal(r.render(x)[0], r.render_reference(x))
    np.testing.assert_array_equal(r.render(x.astype(np.float64)[None])[0], r.render_reference(x))


def test_render_from_feature_map_and_torch_paths():
    rng = np.random.default_rng(3)
    fmap = FeatureMap.from_embedding(rng.normal(size=(60, 2)))
    r = Renderer.from_feature_map(fmap, 16)
    X = rng.random((9, 60), dtype=np.float32)
    img = r.render(X)
    t = r.render(torch.from_numpy(X))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), img)
    k = r.render_torch(torch.from_numpy(X), backend="torch")  # the accelerator kernels, run on CPU
    np.testing.assert_allclose(k.numpy(), img, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(k.numpy()[:, 1:], img[:, 1:])


def test_render_out_buffer_reuse():
    r = _random_renderer(11, 60, 16)
    rng = np.random.default_rng(0)
    buf = np.zeros((5, 3, 16, 16), np.float32)
    for _ in range(3):
        X = rng.normal(size=(5, 60)).astype(np.float32)
        assert r.render(X, out=buf) is buf
        np.testing.assert_array_equal(buf, r.render(X))
    with pytest.raises(ValueError):
        r.render(X, out=np.zeros((4, 3, 16, 16), np.float32))


def test_resize_and_skip_resize():
    rng = np.random.default_rng(5)
    rows, cols = rng.integers(0, 16, 60), rng.integers(0, 16, 60)
    X = rng.random((4, 60), dtype=np.float32)
    same = Renderer(rows, cols, 16)
    big = Renderer(rows, cols, 16, image_size=24)
    native = same.render(X)
    np.testing.assert_array_equal(native, same.render_native(X))  # equal sizes: no resize at all
    out = big.render(X)
    assert out.shape == (4, 3, 24, 24) and out.dtype == np.float32
    expect = torch.nn.functional.interpolate(torch.from_numpy(native), size=(24, 24), mode="bicubic",
                                             align_corners=False).numpy()
    np.testing.assert_allclose(out, expect, rtol=0, atol=1e-6)
    assert big.render(torch.from_numpy(X)).shape == (4, 3, 24, 24)
    np.testing.assert_allclose(big.render_reference(X[0]), out[0], atol=1e-6)


def test_renderer_rejects_bad_input():
    with pytest.raises(ValueError):
        Renderer([0, 16], [0, 0], 16)
    r = _random_renderer(0, 10, 8)
    with pytest.raises(ValueError):
        r.render(np.zeros((2, 11), np.float32))


# ---------------------------------------------------------------- scaler
def test_log_norm_scaler_known_values_and_range():
    X = np.array([[-2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], np.float32)
    s = LogNormScaler().fit(X)
    np.testing.assert_array_equal(s.shift_, [2.0, 0.0])
    z = np.log(np.array([[1.0, 1.0], [3.0, 4.0], [4.0, 2.0]]))
    np.testing.assert_allclose(s.max_, np.log(4.0), rtol=1e-6)
    out = s.transform(X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, z / np.log(4.0), rtol=1e-6)
    assert out.min() >= 0 and out.max() == pytest.approx(1.0)


def test_log_norm_scaler_fit_on_train_only():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 60)).astype(np.float32) * 3
    test = rng.normal(size=(50, 60)).astype(np.float32) * 10  # wider than train
    test[0, :5] = -1e6  # far below -shift - 1: log guard
    s = LogNormScaler().fit(train)
    shift, top = s.shift_.copy(), s.max_
    a = s.transform(train)
    assert a.min() >= 0.0 and a.max() == pytest.approx(1.0)
    b = s.transform(test)
    assert np.isfinite(b).all() and b.min() >= 0.0 and b.max() <= 1.0
    assert (b[0, :5] == 0).all()
    np.testing.assert_array_equal(s.shift_, shift)  # transform never refits
    assert s.max_ == top
    np.testing.assert_array_equal(LogNormScaler.from_state_dict(s.state_dict()).transform(test), b)
    np.testing.assert_array_equal(LogNormScaler().fit_transform(train), a)


# ---------------------------------------------------------------- feature map
@pytest.fixture(scope="module")
def fitted_map():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(200, 4))
    X = latent @ rng.normal(size=(4, 60)) + 0.3 * rng.normal(size=(200, 60))
    Xs = LogNormScaler().fit_transform(X)
    return FeatureMap(n_iter=300, random_state=0).fit(Xs), Xs


def test_feature_map_pixels_in_bounds(fitted_map):
    fmap, _ = fitted_map
    assert fmap.coords_.shape == (60, 2) and np.isfinite(fmap.coords_).all()
    span = np.ptp(fmap.coords_, axis=0)
    assert span[0] >= span[1]  # longer side horizontal
    for res in (1, 16, 32, 300):
        rows, cols = fmap.pixels(res)
        assert rows.dtype.kind == "i" and rows.shape == cols.shape == (60,)
        assert rows.min() >= 0 and cols.min() >= 0 and rows.max() <= res - 1 and cols.max() <= res - 1
        if res > 1:  # the extreme features touch the border of the image
            assert rows.min() == 0 and cols.min() == 0 and rows.max() == res - 1 and cols.max() == res - 1


def test_rectangle_rotation_is_minimal(fitted_map):
    fmap, _ = fitted_map
    best = bbox_area(fmap.coords_, 0.0)
    for angle in np.linspace(0, np.pi, 721):
        assert best <= bbox_area(fmap.coords_, angle) * (1 + 1e-9) + 1e-12
    # a rotated, filled 4 x 1 rectangle: recovered exactly and laid horizontally
    rng = np.random.default_rng(1)
    pts = np.column_stack([rng.uniform(0, 4, 300), rng.uniform(0, 1, 300)])
    pts = np.vstack([pts, [[0, 0], [4, 0], [4, 1], [0, 1]]])
    th = np.deg2rad(33.0)
    rot = pts @ np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
    angle, _ = min_area_rect_angle(rot)
    assert bbox_area(rot, angle) == pytest.approx(4.0, rel=1e-9)
    fm = FeatureMap.from_embedding(rot)
    assert np.ptp(fm.coords_, axis=0) == pytest.approx([4.0, 1.0], rel=1e-9)


def test_feature_map_degenerate_and_deterministic(fitted_map):
    line = np.column_stack([np.arange(10.0), 2 * np.arange(10.0)])  # collinear: no hull
    fm = FeatureMap.from_embedding(line)
    rows, cols = fm.pixels(8)
    assert rows.min() >= 0 and cols.max() == 7
    fmap, Xs = fitted_map
    again = FeatureMap(n_iter=300, random_state=0).fit(Xs)
    np.testing.assert_array_equal(again.pixels(32)[0], fmap.pixels(32)[0])
    sub = FeatureMap(n_iter=250, random_state=0, max_samples=50).fit(Xs)
    assert sub.coords_.shape == (60, 2)


def test_feature_map_save_load_roundtrip(fitted_map, tmp_path):
    fmap, _ = fitted_map
    path = fmap.save(tmp_path / "map.npz")
    loaded = FeatureMap.load(path)
    for res in (16, 224):
        for a, b in zip(fmap.pixels(res), loaded.pixels(res)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.coords_, fmap.coords_)
    assert loaded.perplexity == fmap.perplexity and loaded.n_iter == 300
    with pytest.raises(RuntimeError):
        FeatureMap().pixels(8)


def test_feature_map_plot_writes_png(fitted_map, tmp_path):
    fmap, _ = fitted_map
    names = [f"g-{i}" for i in range(40)] + [f"c-{i}" for i in range(15)] + ["cp_time_24", "cp_time_48",
                                                                          "cp_time_72", "cp_dose_D1", "cp_dose_D2"]
    groups = feature_groups(names)
    assert groups[0] == "gene" and groups[45] == "cell" and groups[-1] == "cp"
    path = fmap.plot(tmp_path / "plots" / "map.png", groups=groups, resolution=16)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- swap noise
def test_swap_noise_never_touches_training_matrix():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 60)).astype(np.float32)
    stored = train.copy()
    r = _random_renderer(0, 60, 16)
    aug_rng = np.random.default_rng(1)
    n_changed = 0
    for _epoch in range(5):
        order = aug_rng.permutation(200)
        for start in range(0, 200, 32):
            idx = order[start:start + 32]
            view = train[start:start + 32]  # a view, the public script's trap
            for batch, bidx in ((train[idx], idx), (view, np.arange(start, start + len(view)))):
                noisy = swap_noise(batch, train, aug_rng, p=0.5, fraction=0.15, batch_indices=bidx)
                assert not np.shares_memory(noisy, train)
                n_changed += int((noisy != batch).any(axis=1).sum())
                r.render(noisy)
    np.testing.assert_array_equal(train, stored)
    assert n_changed > 0


def test_swap_noise_rates_and_determinism():
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(4000, 60)).astype(np.float32)
    batch = pool.copy()
    before = batch.copy()
    noisy = swap_noise(batch, pool, np.random.default_rng(7), p=0.1, fraction=0.15, batch_indices=np.arange(4000))
    np.testing.assert_array_equal(batch, before)
    diff = noisy != batch
    changed = diff.any(axis=1)
    assert 0.08 < changed.mean() < 0.12  # p = 0.1 of 4000 rows: sd ~0.005
    assert (diff[changed].sum(axis=1) == 9).all()  # round(0.15 * 60) features, donor never the row itself
    # replaced values come from the same feature column of some pool row
    r, c = np.nonzero(diff)
    assert all(np.any(pool[:, cc] == v) for cc, v in zip(c[:50], noisy[r[:50], c[:50]]))
    again = swap_noise(batch, pool, np.random.default_rng(7), p=0.1, fraction=0.15, batch_indices=np.arange(4000))
    np.testing.assert_array_equal(noisy, again)
    other = swap_noise(batch, pool, np.random.default_rng(8), p=0.1, fraction=0.15, batch_indices=np.arange(4000))
    assert not np.array_equal(noisy, other)
    untouched = swap_noise(batch, pool, np.random.default_rng(0), p=0.0)
    assert untouched is not batch and np.array_equal(untouched, batch)


def test_swap_noise_only_on_the_given_columns():
    """The scripts swap g/c columns only (never the cp columns), as many as the fraction of
    ALL features."""
    rng = np.random.default_rng(3)
    pool = rng.normal(size=(500, 63)).astype(np.float32)
    noisy = swap_noise(pool, pool, np.random.default_rng(1), p=1.0, fraction=0.15, columns=np.arange(3, 63),
                       batch_indices=np.arange(500))
    diff = noisy != pool
    assert not diff[:, :3].any()
    assert (diff.sum(axis=1) == round(0.15 * 63)).all()
    assert diff[:, 3:].any(axis=0).all()  # every eligible column gets swapped somewhere
    # at most all the eligible columns; none eligible: nothing changes
    full = swap_noise(pool, pool, np.random.default_rng(1), p=1.0, fraction=1.0, columns=[5, 6],
                      batch_indices=np.arange(500))
    assert ((full != pool).sum(axis=1) <= 2).all() and not (full != pool)[:, 7:].any()
    assert np.array_equal(swap_noise(pool, pool, np.random.default_rng(1), p=1.0, columns=[]), pool)
    with pytest.raises(ValueError, match="columns"):
        swap_noise(pool, pool, np.random.default_rng(1), p=1.0, columns=[63])
