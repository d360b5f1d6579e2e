"""UMAP features that do not depend on the other rows of a call (moakit.features.umap_rows):
each row is embedded as umap-learn embeds it given alone, in any block; a saved step without
the `transform` parameter keeps umap-learn's own transform; a run's prediction of a row is
the same whatever rows it is predicted with."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from moakit.features import Pipeline, steps_of_kind
from moakit.features.umap_rows import nearest_fit_rows, transform_epochs, transform_rows
from moakit.runs import layout


def _umap(X, **kw):
    import umap

    args = dict(n_components=2, n_neighbors=10, n_epochs=30, random_state=1, transform_seed=2, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return umap.UMAP(**{**args, **kw}).fit(X)


def _clusters(n, dims=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4, size=(5, dims))
    labels = rng.integers(0, 5, n)
    return (centres[labels] + rng.normal(size=(n, dims))).astype(np.float32), labels


def _in_blocks(model, X, size):
    return np.concatenate([transform_rows(model, X[s:s + size]) for s in range(0, len(X), size)])


@pytest.fixture(scope="module")
def small():
    X, labels = _clusters(360)
    return _umap(X[:300]), X[300:], labels


def test_each_row_is_embedded_on_its_own(small):
    model, new, _ = small
    whole = transform_rows(model, new)
    for size in (1, 7, 25):
        np.testing.assert_array_equal(_in_blocks(model, new, size), whole)
    order = np.random.default_rng(1).permutation(len(new))
    np.testing.assert_array_equal(transform_rows(model, new[order]), whole[order])
    # umap-learn's own transform is not: a row alone and in the block differ
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not np.array_equal(model.transform(new[:1]), model.transform(new)[:1])


@pytest.mark.parametrize("n_epochs", [30, None])
def test_a_row_is_embedded_as_umap_embeds_it_alone(n_epochs):
    X, _ = _clusters(230, seed=4)
    model = _umap(X[:200], n_epochs=n_epochs)
    assert transform_epochs(model) == (10 if n_epochs == 30 else 100)
    ours = transform_rows(model, X[200:])
    alone = np.concatenate([model.transform(X[i:i + 1]) for i in range(200, 230)])
    np.testing.assert_array_equal(ours, alone)


def test_close_to_umaps_transform_of_a_block(small):
    """The same neighbours as umap-learn's exact search, and an embedding near its transform
    of the whole block (a refinement of the same objective, scaled row by row)."""
    model, new, labels = small
    ours = transform_rows(model, new)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = model.transform(new)
        model.transform_mode = "graph"
        graph = model.transform(new).tocsr()
        model.transform_mode = "embedding"
    indices, _ = nearest_fit_rows(model, new)
    assert all(set(indices[i]) == set(graph[i].indices) for i in range(len(new)))
    spread = np.linalg.norm(model.embedding_ - model.embedding_.mean(axis=0), axis=1).mean()
    assert np.median(np.linalg.norm(ours - theirs, axis=1)) < 0.1 * spread
    # each new row lands with the fit rows of its own cluster, as umap-learn's does
    centres = np.array([model.embedding_[labels[:300] == c].mean(axis=0) for c in range(5)])
    nearest = lambda E: np.argmin(np.linalg.norm(E[:, None] - centres[None], axis=2), axis=1)  # noqa: E731
    assert (nearest(ours) == labels[300:]).mean() >= 0.95
    assert (nearest(ours) == nearest(theirs)).mean() >= 0.95


def test_exact_neighbours_with_duplicates_and_ties():
    """Duplicated fit rows (equal distances at the k-th neighbour: the candidate search cannot
    decide, the row is scanned whole): the nearest rows by distance, ties by row number."""
    rng = np.random.default_rng(2)
    base = rng.normal(size=(40, 6)).astype(np.float32)
    fit = np.concatenate([base, np.repeat(base[:3], 29, axis=0)])  # 3 rows, 30 copies each
    model = _umap(fit, n_neighbors=8)
    # near copies, exact copies (all neighbours at distance 0: umap floors their kernel width
    # by the mean distance of the call) and other rows
    new = np.concatenate([base[:3] + 1e-3, base[:3], rng.normal(size=(10, 6)).astype(np.float32)])
    indices, dists = nearest_fit_rows(model, new)
    exact = np.linalg.norm(new[:, None, :].astype(np.float64) - fit[None].astype(np.float64), axis=2)
    reference = np.argsort(exact, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(indices, reference)
    np.testing.assert_allclose(dists, np.take_along_axis(exact, reference, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(_in_blocks(model, new, 1), transform_rows(model, new))


def test_another_metric_scans_every_fit_row():
    X, _ = _clusters(150, seed=5)
    model = _umap(X[:120], metric="manhattan")
    ours = transform_rows(model, X[120:])
    np.testing.assert_array_equal(_in_blocks(model, X[120:], 4), ours)
    alone = np.concatenate([model.transform(X[i:i + 1]) for i in range(120, 150)])
    np.testing.assert_array_equal(ours, alone)


def test_a_umap_fitted_on_more_than_4096_rows():
    """Above 4,096 fit rows umap-learn searches new rows' neighbours with pynndescent, which
    draws candidates from a random stream across the query rows; the rows transform searches
    exactly, whatever the fit size. (The fit is given its neighbours, which skips building
    pynndescent's index: a minute of compiling, and not used here.)"""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(3)
    fit = rng.normal(size=(4200, 8)).astype(np.float32)
    new = rng.normal(size=(120, 8)).astype(np.float32)
    dists, indices = NearestNeighbors(n_neighbors=8).fit(fit).kneighbors(fit)
    model = _umap(fit, n_neighbors=8, n_epochs=6, init="random",
                  precomputed_knn=(indices, dists.astype(np.float32), None))
    assert not model._small_data
    whole = transform_rows(model, new)
    np.testing.assert_array_equal(_in_blocks(model, new, 13), whole)
    np.testing.assert_array_equal(_in_blocks(model, new[:20], 1), whole[:20])
    indices, _ = nearest_fit_rows(model, new)
    exact = np.linalg.norm(new[:, None, :].astype(np.float64) - fit[None].astype(np.float64), axis=2)
    np.testing.assert_array_equal(indices, np.argsort(exact, axis=1, kind="stable")[:, :8])


# ------------------------------------------------------------------ the step and saved runs


def _pipeline(transform=None, seed=0):
    step = {"kind": "umap", "name": "um", "inputs": ["g"], "output": "um", "n_components": 2,
            "n_neighbors": 10, "n_epochs": 30}
    if transform is not None:
        step["transform"] = transform
    return Pipeline.from_config({"steps": [step], "output": ["um"]}, seed=seed)


def test_new_steps_say_rows_and_saved_steps_without_it_keep_umaps_transform(small, tmp_path):
    X, _ = _clusters(330, seed=6)
    fit, new = {"g": X[:300]}, {"g": X[300:]}
    pipe = _pipeline().fit(fit)
    assert pipe.steps[0].params.transform == "rows"
    state = pipe.steps[0].state_["um"]
    np.testing.assert_array_equal(pipe.transform(new), transform_rows(state, new["g"]))
    pipe.save(tmp_path / "new")
    manifest = json.loads((tmp_path / "new" / layout.FEATURES_MANIFEST).read_text())
    assert manifest["config"]["steps"][0]["transform"] == "rows"  # written out, not left to a default
    np.testing.assert_array_equal(Pipeline.load(tmp_path / "new").transform(new), pipe.transform(new))

    # a folder saved before the parameter existed: its manifest lacks it
    del manifest["config"]["steps"][0]["transform"]
    (tmp_path / "new" / layout.FEATURES_MANIFEST).write_text(json.dumps(manifest))
    old = Pipeline.load(tmp_path / "new")
    assert old.steps[0].params.transform == "umap"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(old.transform(new), state.transform(new["g"]))
    assert not np.array_equal(old.transform(new), pipe.transform(new))

    chosen = _pipeline("umap").fit(fit)  # chosen explicitly
    assert chosen.config.model_dump()["steps"][0]["transform"] == "umap"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(chosen.transform(new), chosen.steps[0].state_["um"].transform(new["g"]))


def test_the_choice_is_part_of_the_fit_identity():
    from moakit.feature_reuse import pipeline_identity

    rows, umap_ = (pipeline_identity(_pipeline(t).config, 0) for t in (None, "umap"))
    assert rows["steps"][0]["transform"] == "rows" and umap_["steps"][0]["transform"] == "umap"
    assert rows == pipeline_identity(_pipeline("rows").config, 0)


def test_steps_of_kind_walks_a_dumped_config_tree():
    """The steps of one kind at any depth of a dumped config, in order, as the tree's own dicts."""
    from moakit.config import load_config

    tree = {"a": [{"kind": "umap", "name": "u1"}, {"kind": "pca", "name": "p"}],
            "b": {"features": {"steps": [{"kind": "umap", "name": "u2"}]}}, "kind": "model", "n": 3}
    found = list(steps_of_kind(tree, "umap"))
    assert [s["name"] for s in found] == ["u1", "u2"] and found[1] is tree["b"]["features"]["steps"][0]
    assert list(steps_of_kind(tree, "quantile")) == [] and list(steps_of_kind([], "umap")) == []
    dumped = load_config("three_stage_nn").model_dump()
    assert [s["name"] for s in steps_of_kind(dumped, "umap")] == ["umap_g", "umap_c"]
    assert list(steps_of_kind(load_config("simple_nn").model_dump(), "umap")) == []


def test_the_winners_umap_models_umap_transform():
    """The 3-stage NN embeds rows one by one (the step's default; chosen on the parity grid), the
    2-stage NN + TabNet keeps umap-learn's transform (as its script) until `rows` is measured
    beside its script (their configs' comments), at every profile."""
    from moakit.config import load_config
    from moakit.features import StepConfig

    for name, want in (("three_stage_nn", "rows"), ("two_stage_nn_tabnet", "umap")):
        for profile in ("full", "cpu", "smoke", "demo"):
            dumped = load_config(name, profile=profile).model_dump()
            # each step as its run validates it (an unset transform: the step's default)
            found = [StepConfig(**step).params["transform"] for step in steps_of_kind(dumped, "umap")]
            assert found and set(found) == {want}, (name, profile, found)


@pytest.fixture(scope="module")
def three_stage(sim_data, tmp_path_factory):
    from moakit import runner
    from moakit.config import load_config

    config = load_config("three_stage_nn", profile="smoke").model_copy(update={"seeds": [0]})
    raw = config.model_dump()
    for step in steps_of_kind(raw, "umap"):  # the shipped config's default, said here all the same
        step["transform"] = "rows"
    config = type(config).model_validate(raw)
    return runner.train(config, sim_data, tmp_path_factory.mktemp("umap_rows") / "run", show_progress=False).run_dir


def test_a_runs_prediction_of_a_row_does_not_depend_on_the_other_rows(three_stage, sim_data):
    from moakit.stages import stage_blocks
    from moakit.streaming import RunPredictor

    test = sim_data.test
    predictor = RunPredictor(three_stage)
    features = predictor.parts[0][2].own  # stage 1's own pipeline, as the run reloads it
    umap_steps = [s for s in features.steps if s.kind == "umap"]
    assert umap_steps and all(s.params.transform == "rows" for s in umap_steps)
    # new rows: none of the UMAPs was fitted on them (the test rows were in the fit: train+test)
    blocks = stage_blocks(test, None)
    new = np.ones(len(test), bool)
    for step in umap_steps:
        (block,) = step.inputs
        new &= nearest_fit_rows(step.state_[step.output], blocks[block])[1][:, 0] > 0
    picked = np.flatnonzero(new)[[0, 5, 11]]
    few = test.subset(picked)
    np.testing.assert_allclose(predictor.predict(few), predictor.predict(test)[picked], rtol=0, atol=1e-6)

    # the UMAP features themselves: bit for bit (the networks' matrix products may round by row count)
    columns = [i for i, n in enumerate(features.feature_names_) if n.startswith("umap_")]
    alone = features.transform(stage_blocks(few, None))[:, columns]
    np.testing.assert_array_equal(alone, features.transform(stage_blocks(test, None))[picked][:, columns])
    # with umap-learn's transform (what older runs keep) they depend on the other rows
    for step in umap_steps:
        step.params = step.params.model_copy(update={"transform": "umap"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy_alone = features.transform(stage_blocks(few, None))[:, columns]
        legacy_all = features.transform(stage_blocks(test, None))[picked][:, columns]
    assert not np.array_equal(legacy_alone, legacy_all)
