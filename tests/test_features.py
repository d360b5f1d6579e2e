"""moakit.features: steps over blocks, the config-declared Pipeline, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from moakit.features import STEP_KINDS, Pipeline, PipelineConfig, StepConfig, blocks_from_dataset

N_G, N_C = 40, 10


def make_blocks(n: int = 300, seed: int = 0, shift: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, N_G)) + shift
    g[:, :5] *= 3.0  # a few wide columns so variance thresholds have something to drop
    return {
        "g": g.astype(np.float32),
        "c": (rng.standard_t(4, size=(n, N_C)) + shift).astype(np.float32),
        "cp": np.eye(5, dtype=np.float32)[rng.integers(0, 5, n)],
    }


def pipe(steps: list[dict], output: list[str], fit_on: str = "train", seed: int = 0) -> Pipeline:
    return Pipeline.from_config({"fit_on": fit_on, "steps": steps, "output": output}, seed=seed)


SIMPLE_NN = {
    "fit_on": "train+test",
    "steps": [
        {"kind": "quantile", "inputs": ["g", "c"]},
        {"kind": "factor_analysis", "name": "fa_g", "inputs": ["g"], "output": "fa_g", "n_components": 6},
        {"kind": "factor_analysis", "name": "fa_c", "inputs": ["c"], "output": "fa_c", "n_components": 3},
        {"kind": "kmeans_onehot", "name": "km_g", "inputs": ["g"], "output": "km_g", "n_clusters": 5, "n_init": 2},
        {"kind": "kmeans_onehot", "name": "km_c", "inputs": ["c"], "output": "km_c", "n_clusters": 3, "n_init": 2},
        {"kind": "row_stats", "name": "stats", "inputs": ["g", "c"], "output": "stats"},
        {"kind": "quantile", "name": "quantile_all", "inputs": ["fa_g", "fa_c", "stats"]},
    ],
    "output": ["cp", "g", "c", "fa_g", "fa_c", "km_g", "km_c", "stats"],
}
SIMPLE_NN_WIDTH = 5 + N_G + N_C + 6 + 3 + 5 + 3 + 15


@pytest.fixture(scope="module")
def data():
    return make_blocks(300, seed=0), make_blocks(120, seed=1, shift=0.7)


@pytest.fixture(scope="module")
def simple_nn(data):
    train, test = data
    return Pipeline.from_config(SIMPLE_NN, seed=3).fit(train, test)


# ---------------------------------------------------------------------------- kinds


@pytest.mark.parametrize("kind, params, width, first_name", [
    ("quantile", {}, N_G + N_C, "new-0"),
    ("standard_scaler", {}, N_G + N_C, "new-0"),
    ("pca", {"n_components": 4}, 4, "new-0"),
    ("factor_analysis", {"n_components": 3}, 3, "new-0"),
    ("kmeans_onehot", {"n_clusters": 6, "n_init": 1}, 6, "new-0"),
    ("row_stats", {}, 15, "new-g_sum"),
    ("row_mean", {}, 2, "new-g_mean"),
    ("variance_threshold", {"threshold": 5.0}, 5, "g-0"),
])
def test_each_kind_writes_a_new_block(data, kind, params, width, first_name):
    train, _ = data
    p = pipe([{"kind": kind, "name": "s", "inputs": ["g", "c"], "output": "new", **params}], ["new"]).fit(train)
    X = p.transform(train)
    assert X.dtype == np.float32 and X.shape == (300, width)
    assert np.isfinite(X).all()
    assert len(p.feature_names_) == width and p.feature_names_[0] == first_name
    if kind == "kmeans_onehot":
        assert np.array_equal(X.sum(axis=1), np.ones(300, np.float32))
    if kind == "variance_threshold":  # the 5 widened gene columns survive, named as in the input
        assert p.feature_names_ == [f"g-{i}" for i in range(5)]
    if kind == "row_mean":
        np.testing.assert_allclose(X[:, 0], train["g"].mean(axis=1), rtol=1e-5, atol=1e-6)


def test_all_kinds_are_registered():
    assert {"quantile", "pca", "factor_analysis", "umap", "kmeans_onehot", "row_stats", "variance_threshold",
            "standard_scaler", "row_mean", "cp_categories"} <= set(STEP_KINDS)


def test_row_stats_match_pandas(data):
    train, _ = data
    p = pipe([{"kind": "row_stats", "name": "st", "inputs": ["g", "c"], "output": "st"}], ["st"]).fit(train)
    X = p.transform(train)
    names = [f"st-{b}_{s}" for b in ("g", "c", "g+c") for s in ("sum", "mean", "std", "skew", "kurt")]
    assert p.feature_names_ == names
    frames = {"g": pd.DataFrame(train["g"], dtype=np.float64), "c": pd.DataFrame(train["c"], dtype=np.float64)}
    frames["g+c"] = pd.concat([frames["g"], frames["c"]], axis=1)
    expected = np.column_stack([getattr(frames[b], s)(axis=1).to_numpy()
                                for b in ("g", "c", "g+c") for s in ("sum", "mean", "std", "skew", "kurt")])
    np.testing.assert_allclose(X, expected, rtol=1e-4, atol=1e-4)


def test_row_stats_single_input_and_constant_rows():
    blocks = {"g": np.ones((4, 6), np.float32)}
    p = pipe([{"kind": "row_stats", "name": "st", "inputs": ["g"], "output": "st"}], ["st"]).fit(blocks)
    X = p.transform(blocks)
    assert X.shape == (4, 5)  # one input: its stats once, no duplicate "g" concatenation
    np.testing.assert_array_equal(X, np.tile([6, 1, 0, 0, 0], (4, 1)).astype(np.float32))


def test_umap_subsample_fit(data):
    train, _ = data
    steps = [{"kind": "umap", "name": "um", "inputs": ["c"], "output": "um", "n_components": 2,
              "n_neighbors": 10, "n_epochs": 30, "max_fit_rows": 120}]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # numba's thread pool (started by UMAP) must not change torch's thread count
        p = pipe(steps, ["um"], seed=1).fit(train)
        X = p.transform(train)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert p.steps[0].state_["um"].embedding_.shape == (120, 2)  # fitted on the subsample only
    assert p.steps[0].state_["um"].transform_seed == 1  # the step's seed unless given
    assert X.shape == (300, 2) and np.isfinite(X).all() and p.feature_names_ == ["um-0", "um-1"]
    np.testing.assert_array_equal(X, pipe(steps, ["um"], seed=1).fit(train).transform(train))


# ---------------------------------------------------------------------------- semantics


def test_in_place_fits_each_block_separately(data):
    train, _ = data
    p = pipe([{"kind": "quantile", "inputs": ["g", "c"]}], ["g", "c", "cp"]).fit(train)
    step = p.steps[0]
    assert step.name == "quantile_g_c" and step.in_place
    assert set(step.state_) == {"g", "c"}
    assert step.state_["g"].n_features_in_ == N_G and step.state_["c"].n_features_in_ == N_C
    X = p.transform(train)
    assert X.shape == (300, N_G + N_C + 5)
    assert p.feature_names_[:2] == ["g-0", "g-1"] and p.feature_names_[N_G] == "c-0"
    np.testing.assert_array_equal(X[:, -5:], train["cp"])  # untouched block passes through
    assert abs(float(np.median(X[:, 0]))) < 0.1  # normal output


def test_new_block_leaves_inputs_unchanged(data):
    train, _ = data
    p = pipe([{"kind": "quantile", "name": "q", "inputs": ["g", "c"], "output": "q"}], ["g", "q"]).fit(train)
    X = p.transform(train)
    np.testing.assert_array_equal(X[:, :N_G], train["g"])
    assert p.feature_names_[N_G:N_G + 2] == ["q-0", "q-1"]


def test_steps_see_earlier_steps_output(data):
    train, _ = data
    steps = [{"kind": "standard_scaler", "inputs": ["g"]},
             {"kind": "row_mean", "name": "m", "inputs": ["g"], "output": "m"}]
    X = pipe(steps, ["m"]).fit(train).transform(train)
    scaled = (train["g"] - train["g"].mean(0)) / train["g"].std(0)
    np.testing.assert_allclose(X[:, 0], scaled.mean(axis=1), atol=1e-5)


def test_fit_on_train_vs_train_plus_test(data):
    train, test = data
    steps = [{"kind": "quantile", "inputs": ["g", "c"]}]
    only_train = pipe(steps, ["g", "c"], fit_on="train").fit(train, test)
    both = pipe(steps, ["g", "c"], fit_on="train+test").fit(train, test)
    assert only_train.n_fit_rows_ == 300 and both.n_fit_rows_ == 420
    a, b = only_train.transform(test), both.transform(test)
    assert not np.allclose(a, b)
    # quantiles learnt on train+test are those of the concatenated rows
    q = both.steps[0].state_["g"].quantiles_
    all_g = np.concatenate([train["g"], test["g"]])
    np.testing.assert_allclose(q[[0, -1], 0], [all_g[:, 0].min(), all_g[:, 0].max()], rtol=1e-6)
    with pytest.raises(ValueError, match="no test blocks"):
        pipe(steps, ["g"], fit_on="train+test").fit(train)



def test_step_overrides_fit_on_controls_and_random_state(data):
    """One pipeline, each step fitted on its own rows: the winners' scripts fitted the first
    quantile transform on the train rows and the factor analysis on train + test, controls
    included, each with its own fixed random state; the meta quantile on treated rows only."""
    train, test = data
    ctl_tr = (np.arange(300) % 10 == 0).astype(np.float32)[:, None]  # 30 control rows
    ctl_te = (np.arange(120) % 12 == 0).astype(np.float32)[:, None]  # 10
    config = {"fit_on": "train+test", "fit_controls": True, "steps": [
        {"kind": "quantile", "name": "q", "inputs": ["g"], "fit_on": "train", "random_state": 0},
        {"kind": "factor_analysis", "name": "fa", "inputs": ["g"], "output": "fa", "n_components": 2,
         "random_state": 1903},
        {"kind": "quantile", "name": "qc", "inputs": ["c"], "fit_on": "train", "fit_controls": False},
    ], "output": ["g", "fa", "c"]}
    p = Pipeline.from_config(config, seed=7).fit({**train, "ctl": ctl_tr}, {**test, "ctl": ctl_te})
    assert p.step_fit_rows_ == {"q": 300, "fa": 420, "qc": 270}
    assert p.n_fit_rows_ == 420
    assert [s.seed for s in p.steps] == [0, 1903, 7]
    # the step saw exactly its rows: the train-only quantile knows the train extremes
    q = p.steps[0].state_["g"].quantiles_
    np.testing.assert_allclose(q[[0, -1], 0], [train["g"][:, 0].min(), train["g"][:, 0].max()], rtol=1e-6)
    qc = p.steps[2].state_["c"].quantiles_
    treated_c = train["c"][ctl_tr[:, 0] == 0]
    np.testing.assert_allclose(qc[[0, -1], 0], [treated_c[:, 0].min(), treated_c[:, 0].max()], rtol=1e-6)
    # the factor analysis ran on the quantiled g of train + test: same as fitting it by hand
    from sklearn.decomposition import FactorAnalysis

    qg = np.concatenate([p.steps[0].state_["g"].transform(train["g"]), p.steps[0].state_["g"].transform(test["g"])])
    fa = FactorAnalysis(n_components=2, random_state=1903).fit(qg)
    np.testing.assert_allclose(np.abs(p.transform(test)[:, N_G:N_G + 2]),
                               np.abs(fa.transform(qg[300:])), rtol=1e-3, atol=1e-3)
    # without a control marker every given row is used; test rows only where asked for
    q_only = Pipeline.from_config({"steps": [{"kind": "quantile", "inputs": ["g"], "fit_on": "train+test"}],
                                   "output": ["g"]}).fit(train, test)
    assert q_only.step_fit_rows_ == {"quantile_g": 420}
    with pytest.raises(ValueError, match="no test blocks"):
        Pipeline.from_config({"steps": [{"kind": "quantile", "inputs": ["g"], "fit_on": "train+test"}],
                              "output": ["g"]}).fit(train)


def test_step_overrides_survive_save_and_load(data, tmp_path):
    train, test = data
    config = {"steps": [{"kind": "kmeans_onehot", "name": "km", "inputs": ["g"], "output": "km", "n_clusters": 3,
                         "n_init": 1, "random_state": 123, "fit_on": "train+test"}], "output": ["km"]}
    p = Pipeline.from_config(config, seed=5).fit(train, test)
    again = Pipeline.load(p.save(tmp_path / "p"))
    assert again.steps[0].seed == 123 and again.step_fit_rows_ == {"km": 420}
    np.testing.assert_array_equal(again.transform(test), p.transform(test))


def test_cp_categories_and_chosen_row_stats(data):
    train, _ = data
    cp = np.zeros((6, 5), np.float32)
    cp[np.arange(6), [0, 1, 2, 0, 1, 2]] = 1.0  # cp_time 24 / 48 / 72
    cp[np.arange(6), [3, 3, 3, 4, 4, 4]] = 1.0  # cp_dose D1 / D2
    p = pipe([{"kind": "cp_categories", "name": "cat", "inputs": ["cp"], "output": "cat"}], ["cat"]).fit({"cp": cp})
    assert p.feature_names_ == ["cat-cp_time", "cat-cp_dose"]
    np.testing.assert_array_equal(p.transform({"cp": cp}), [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]])
    with pytest.raises(ValueError, match="5-column one-hot"):
        pipe([{"kind": "cp_categories", "name": "cat", "inputs": ["g"], "output": "cat"}],
             ["cat"]).fit(train).transform(train)
    # the TabNet's statistics: mean, std, kurtosis, skew (no sum), in that order, per group
    stats = ["mean", "std", "kurt", "skew"]
    st = pipe([{"kind": "row_stats", "name": "st", "inputs": ["g", "c"], "output": "st", "stats": stats}],
              ["st"]).fit(train)
    assert st.feature_names_ == [f"st-{b}_{s}" for b in ("g", "c", "g+c") for s in stats]
    frame = pd.DataFrame(train["g"], dtype=np.float64)
    np.testing.assert_allclose(st.transform(train)[:, :4], np.column_stack(
        [frame.mean(axis=1), frame.std(axis=1), frame.kurtosis(axis=1), frame.skew(axis=1)]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="stats"):
        StepConfig(kind="row_stats", inputs=["g"], output="st", stats=["median"])

def test_simple_nn_layout(simple_nn, data):
    _, test = data
    X = simple_nn.transform(test)
    assert X.shape == (120, SIMPLE_NN_WIDTH) and X.dtype == np.float32 and np.isfinite(X).all()
    names = simple_nn.feature_names_
    assert len(names) == SIMPLE_NN_WIDTH and len(set(names)) == len(names)
    for expected in ("cp-0", "g-0", "c-9", "fa_g-5", "fa_c-0", "km_g-4", "km_c-2", "stats-g+c_kurt"):
        assert expected in names
    assert list(simple_nn.input_widths_) == ["g", "c", "cp"]


def test_caller_arrays_not_mutated(data):
    train, test = data
    before = {k: v.copy() for k, v in train.items()}
    before_test = {k: v.copy() for k, v in test.items()}
    blocks = dict(train)
    p = Pipeline.from_config(SIMPLE_NN, seed=0).fit(blocks, test)
    p.transform(blocks)
    assert blocks.keys() == train.keys()
    for k in train:
        np.testing.assert_array_equal(train[k], before[k])
        np.testing.assert_array_equal(test[k], before_test[k])


def test_deterministic_per_seed(simple_nn, data):
    train, test = data
    again = Pipeline.from_config(SIMPLE_NN, seed=3).fit(train, test)
    np.testing.assert_array_equal(again.transform(test), simple_nn.transform(test))
    other = Pipeline.from_config(SIMPLE_NN, seed=4).fit(train, test)
    assert not np.array_equal(other.transform(test), simple_nn.transform(test))


def test_save_load_identical(simple_nn, data, tmp_path):
    train, test = data
    target = tmp_path / "features"
    simple_nn.save(target)
    simple_nn.save(target)  # overwriting an existing save is atomic too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]  # no temp dirs left
    loaded = Pipeline.load(target)
    assert loaded.feature_names_ == simple_nn.feature_names_
    assert loaded.config == simple_nn.config and loaded.seed == 3
    for blocks in (train, test):
        np.testing.assert_array_equal(loaded.transform(blocks), simple_nn.transform(blocks))


def test_extra_blocks(data, tmp_path):
    train, test = data
    rng = np.random.default_rng(5)
    with_meta = {**train, "meta": rng.random((300, 7)).astype(np.float32)}
    # unused extra blocks are ignored
    p = pipe([{"kind": "quantile", "inputs": ["g"]}], ["g"]).fit(with_meta)
    assert p.transform(with_meta).shape == (300, N_G) and p.transform(train).shape == (300, N_G)
    # a config that reads "meta" needs it
    p = pipe([{"kind": "quantile", "inputs": ["meta"]}], ["g", "meta"]).fit(with_meta)
    assert p.transform(with_meta).shape == (300, N_G + 7) and p.feature_names_[-1] == "meta-6"
    with pytest.raises(KeyError, match="meta"):
        p.transform(train)
    p.save(tmp_path / "f")
    np.testing.assert_array_equal(Pipeline.load(tmp_path / "f").transform(with_meta), p.transform(with_meta))


def test_tiny_and_empty_transforms(simple_nn, data):
    train, _ = data
    assert simple_nn.transform({k: v[:2] for k, v in train.items()}).shape == (2, SIMPLE_NN_WIDTH)
    assert simple_nn.transform({k: v[:0] for k, v in train.items()}).shape == (0, SIMPLE_NN_WIDTH)


def test_blocks_from_dataset():
    from moakit.data.dataset import Dataset

    rng = np.random.default_rng(0)
    n = 8
    ds = Dataset(sig_id=np.array([f"id{i}" for i in range(n)]), genes=rng.normal(size=(n, 3)).astype(np.float32),
                 cells=rng.normal(size=(n, 2)).astype(np.float32), cp_type=np.zeros(n, np.int8),
                 cp_time=(np.arange(n) % 3).astype(np.int8), cp_dose=(np.arange(n) % 2).astype(np.int8),
                 gene_names=["g-0", "g-1", "g-2"], cell_names=["c-0", "c-1"])
    ds.cp_type[0] = 1  # one control row
    blocks = blocks_from_dataset(ds)
    assert list(blocks) == ["g", "c", "cp", "cp_codes"]
    assert blocks["g"].shape == (n, 3) and blocks["c"].shape == (n, 2) and blocks["cp"].shape == (n, 5)
    assert all(b.dtype == np.float32 for b in blocks.values())
    # cp_type (treated 1, control 0), cp_dose (D1 0, D2 1), cp_time (24/48/72 h: 0/0.5/1)
    np.testing.assert_array_equal(blocks["cp_codes"][:3], [[0, 0, 0], [1, 1, 0.5], [1, 0, 1]])


# ---------------------------------------------------------------------------- errors


def test_missing_block_error(simple_nn, data):
    train, _ = data
    with pytest.raises(KeyError, match=r"\['c'\]"):
        simple_nn.transform({"g": train["g"], "cp": train["cp"]})
    p = pipe([{"kind": "pca", "name": "p", "inputs": ["gg"], "output": "p", "n_components": 2}], ["p"])
    with pytest.raises(KeyError, match="gg"):
        p.fit(train)


def test_wrong_column_count_error(simple_nn, data):
    train, _ = data
    with pytest.raises(ValueError, match=r"'g'.*39 columns.*40"):
        simple_nn.transform({**train, "g": train["g"][:, :39]})
    p = pipe([{"kind": "quantile", "inputs": ["g"]}], ["g"], fit_on="train+test")
    with pytest.raises(ValueError, match="columns"):
        p.fit(train, {**train, "g": train["g"][:, :30]})


def test_unknown_kind_error():
    with pytest.raises(ValidationError, match=r"feature step 'x'.*unknown feature step kind 'pcaa'"):
        PipelineConfig.model_validate({"steps": [{"kind": "pcaa", "name": "x", "inputs": ["g"], "output": "x"}],
                                       "output": ["x"]})


@pytest.mark.parametrize("step, message", [
    ({"kind": "pca", "name": "p1", "inputs": ["g"], "output": "p1", "n_component": 3}, r"'p1'.*n_component"),
    ({"kind": "pca", "name": "p2", "inputs": ["g"], "output": "p2", "n_components": "many"}, r"'p2'.*n_components"),
    ({"kind": "pca", "name": "p3", "inputs": ["g"], "output": "p3"}, r"'p3'.*n_components.*required"),
    ({"kind": "kmeans_onehot", "name": "k", "inputs": ["g"], "output": "k", "n_clusters": 1}, r"'k'.*n_clusters"),
    ({"kind": "row_stats", "name": "st", "inputs": ["g"], "bins": 3}, r"'st'"),
    ({"kind": "variance_threshold", "name": "vt", "inputs": ["g"], "threshold": 0.5}, r"'vt'.*output"),
    ({"kind": "pca", "name": "p4", "inputs": ["g"], "output": "g", "n_components": 2}, r"'p4'.*in place"),
])
def test_bad_step_config_errors(step, message):
    with pytest.raises(ValidationError, match=message):
        StepConfig.model_validate(step)


def test_pipeline_config_errors():
    dup = [{"kind": "quantile", "inputs": ["g"]}, {"kind": "quantile", "inputs": ["g"]}]
    with pytest.raises(ValidationError, match="unique"):
        PipelineConfig.model_validate({"steps": dup, "output": ["g"]})
    with pytest.raises(ValidationError, match="fit_on"):
        PipelineConfig.model_validate({"fit_on": "test", "steps": [], "output": ["g"]})
    with pytest.raises(ValidationError, match="output"):
        PipelineConfig.model_validate({"steps": []})


def test_unfitted_errors(tmp_path):
    p = pipe([{"kind": "quantile", "inputs": ["g"]}], ["g"])
    with pytest.raises(RuntimeError, match="not fitted"):
        p.transform(make_blocks(5))
    with pytest.raises(RuntimeError, match="not fitted"):
        p.save(tmp_path / "x")
