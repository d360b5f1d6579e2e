"""Steps that draw nothing carry no seed in a feature fit's content key (issue 29): every
feature step kind declares whether it uses a random state, the Simple NN's seeds share one
fit, a step that draws still gets a key per seed, and an older run folder (keys with the
seed in every step) resumes."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from moakit import feature_reuse, runner
from moakit.config import load_config
from moakit.features import STEP_KINDS, Step, StepConfig
from moakit.runs import layout
from moakit.stages import StageChain


# kind -> (kind parameters for a small test, whether a step with them draws from its random state)
EXPECTED = {
    "quantile": ({"n_quantiles": 20}, False),
    "standard_scaler": ({}, False),
    "pca": ({"n_components": 3}, True),
    "factor_analysis": ({"n_components": 3}, True),
    "umap": ({"n_components": 2, "n_neighbors": 5, "n_epochs": 20}, True),
    "kmeans_onehot": ({"n_clusters": 3}, True),
    "variance_threshold": ({"threshold": 0.0}, False),
    "row_stats": ({}, False),
    "row_mean": ({}, False),
    "cp_categories": ({}, False),
    "row_quantile_norm": ({}, False),
}
IN_PLACE = {"quantile", "standard_scaler", "row_quantile_norm"}


def test_every_step_kind_declares_whether_it_uses_a_random_state():
    undeclared = [k for k in STEP_KINDS.names() if STEP_KINDS.get(k).random_draws is None]
    assert not undeclared, f"feature step kinds without `random_draws` (True, False or a rule): {undeclared}"
    unlisted = sorted(set(STEP_KINDS.names()) - set(EXPECTED))
    assert not unlisted, f"new step kinds {unlisted}: add them to EXPECTED (and check them below)"
    for kind, (params, draws) in EXPECTED.items():
        assert STEP_KINDS.get(kind).draws_random(params) is draws, kind
    # the parameter-dependent kinds: a quantile subsample draws (sklearn subsamples rows); a
    # PCA draws unless its solver is exact
    assert STEP_KINDS.get("quantile").draws_random({"subsample": 500}) is True
    for solver, draws in (("auto", True), ("randomized", True), ("arpack", True), ("full", False),
                          ("covariance_eigh", False)):
        assert STEP_KINDS.get("pca").draws_random({"n_components": 3, "svd_solver": solver}) is draws, solver

    class Undeclared(Step):
        kind = "undeclared_test_kind"

    assert Undeclared.random_draws is None and Undeclared.draws_random({}) is True  # safe default


def _blocks(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cp = np.zeros((n, 5), np.float32)
    cp[np.arange(n), rng.integers(0, 3, n)] = 1
    cp[np.arange(n), 3 + rng.integers(0, 2, n)] = 1
    return {"g": rng.normal(size=(n, 12)).astype(np.float32), "c": rng.normal(size=(n, 6)).astype(np.float32),
            "cp": cp}


@pytest.mark.parametrize("kind", [k for k, (_, draws) in EXPECTED.items() if not draws])
def test_steps_declared_seedless_give_the_same_result_for_every_seed(kind):
    """What the declaration promises: fitted with two random states, the same output."""
    params, _ = EXPECTED[kind]
    inputs = ["cp"] if kind == "cp_categories" else ["g", "c"]
    output = None if kind in IN_PLACE else "out"
    fit, new = _blocks(seed=0), _blocks(n=50, seed=1)
    outs = []
    for seed in (0, 12345):
        conf = StepConfig(kind=kind, inputs=inputs, output=output, random_state=seed, **params)
        assert not conf.model_copy(update={"random_state": None}).takes_run_seed
        step = conf.build(seed).fit(fit)
        outs.append(step.transform(new))
    for block in outs[0]:
        np.testing.assert_array_equal(outs[0][block], outs[1][block])


def test_exact_pca_solvers_give_the_same_components_for_every_seed():
    """A PCA declared seedless (an exact solver) fits equal states for two random states, on
    a shape where "auto" (counted as drawing) takes the randomized solver and differs."""
    rng = np.random.default_rng(3)
    fit, new = rng.normal(size=(510, 60)).astype(np.float32), rng.normal(size=(40, 60)).astype(np.float32)

    def outputs(solver: str) -> list[np.ndarray]:
        confs = [StepConfig(kind="pca", inputs=["g"], output="p", random_state=seed, n_components=3,
                            svd_solver=solver) for seed in (0, 12345)]
        return [conf.build(0).fit({"g": fit}).transform({"g": new})["p"] for conf in confs]

    for solver in ("full", "covariance_eigh"):
        assert not StepConfig(kind="pca", inputs=["g"], output="p", n_components=3, svd_solver=solver).takes_run_seed
        a, b = outputs(solver)
        np.testing.assert_array_equal(a, b)
    a, b = outputs("auto")
    assert np.abs(a - b).max() > 1e-3  # randomized here: the seed matters, so "auto" keeps it in the key


def _keys(config, data) -> dict[int, str]:
    model = runner.build_model(config)
    chain = StageChain(model, list(config.seeds))
    return {s: feature_reuse.stage_key(model, chain, 0, s, data) for s in config.seeds}


def _with_steps(config, edit):
    import copy

    params = copy.deepcopy(config.params)
    for step in params["features"]["steps"]:
        edit(step)
    return config.model_copy(update={"params": params})


def test_seedless_steps_leave_the_seed_out_and_drawing_steps_keep_it(sim_data, monkeypatch):
    config = load_config("simple_nn", profile="smoke").model_copy(update={"seeds": [0, 1]})
    keys = _keys(config, sim_data)
    assert keys[0] == keys[1]  # fixed random states + row_stats (draws nothing): one fit
    # a k-means without its own random state takes the run seed: a key per seed
    unfixed = _with_steps(config, lambda s: s.pop("random_state") if s["kind"] == "kmeans_onehot" else None)
    keys_unfixed = _keys(unfixed, sim_data)
    assert keys_unfixed[0] != keys_unfixed[1]
    # a kind that declares nothing counts as drawing: row_stats then takes the seed again
    monkeypatch.setattr(STEP_KINDS.get("row_stats"), "random_draws", None)
    old = _keys(config, sim_data)
    assert old[0] != old[1] and keys[0] not in old.values()
    # keys without a seedless step of no random state are what they were (old run folders stay valid)
    three = load_config("three_stage_nn", profile="smoke").model_copy(update={"seeds": [0, 1]})
    model = runner.build_model(three)
    chain = StageChain(model, [0, 1])
    new = [feature_reuse.stage_key(model, chain, i, 1, sim_data) for i in range(len(chain.stages))]
    # the k-means taking the seed and row_stats a fixed random state: every step draws or is fixed
    drawing = _with_steps(unfixed, lambda s: s.update(random_state=5) if s["kind"] == "row_stats" else None)
    keys_drawing = _keys(drawing, sim_data)
    monkeypatch.setattr(Step, "draws_random", classmethod(lambda cls, params: True))  # the old rule
    assert new == [feature_reuse.stage_key(model, chain, i, 1, sim_data) for i in range(len(chain.stages))]
    assert _keys(drawing, sim_data) == keys_drawing


def _source(run, stage: str, seed: int) -> dict:
    return json.loads((layout.stage_dir(run, stage, seed) / layout.FEATURES_KEY).read_text())


@pytest.fixture(scope="module")
def two_runs(sim_data, tmp_path_factory):
    """The 2-seed smoke Simple NN with reuse and with MOAKIT_FEATURE_REUSE=0."""
    config = load_config("simple_nn", profile="smoke").model_copy(update={"seeds": [0, 1]})
    reuse = runner.train(config, sim_data, tmp_path_factory.mktemp("seedless") / "run", show_progress=False)
    os.environ["MOAKIT_FEATURE_REUSE"] = "0"
    try:
        plain = runner.train(config, sim_data, tmp_path_factory.mktemp("seedless_plain") / "run",
                             show_progress=False)
    finally:
        del os.environ["MOAKIT_FEATURE_REUSE"]
    stage = StageChain(runner.build_model(config), [0, 1]).stages[0].name
    return config, stage, reuse, plain


def test_simple_nn_seeds_fit_features_once(two_runs, sim_data):
    config, stage, reuse, plain = two_runs
    first, second = _source(reuse.run_dir, stage, 0), _source(reuse.run_dir, stage, 1)
    assert first["source"] == "fit" and second["source"] == "link"
    assert second["from"] == f"../{layout.SEED_PREFIX}0/{layout.FEATURES_DIR}" and second["key"] == first["key"]
    assert [_source(plain.run_dir, stage, s)["source"] for s in (0, 1)] == ["fit", "fit"]
    np.testing.assert_allclose(reuse.oof, plain.oof, atol=1e-6)
    np.testing.assert_allclose(reuse.test, plain.test, atol=1e-6)
    np.testing.assert_allclose(runner.predict_run(reuse.run_dir, sim_data.test),
                               runner.predict_run(plain.run_dir, sim_data.test), atol=1e-6)


def test_an_older_run_folder_resumes(two_runs, sim_data, tmp_path, monkeypatch):
    """A run written under the old rule (the seed in every step's key), seed 1 not yet done:
    the resume does not link seed 0's fit under a key it does not match, fits seed 1 under
    today's key, and gives the results of a run without reuse."""
    config, stage, _, plain = two_runs
    run = tmp_path / "old"
    shutil.copytree(plain.run_dir, run)
    model = runner.build_model(config)
    chain = StageChain(model, [0, 1])
    with monkeypatch.context() as m:
        m.setattr(Step, "draws_random", classmethod(lambda cls, params: True))
        old_key = feature_reuse.stage_key(model, chain, 0, 0, sim_data)
    feature_reuse.record_key(layout.stage_dir(run, stage, 0), old_key)
    shutil.rmtree(layout.stage_dir(run, stage, 1))
    resumed = runner.train(config, sim_data, run, show_progress=False)
    assert _source(run, stage, 0) == {"key": old_key, "source": "fit"}  # the finished seed, as it was
    assert _source(run, stage, 1)["source"] == "fit"
    assert _source(run, stage, 1)["key"] == feature_reuse.stage_key(model, chain, 0, 1, sim_data) != old_key
    # Seed 1 is trained again here: equal because both runs train under the same thread
    # count (conftest pins it for tests and module fixtures alike; unpinned, the count left by
    # earlier tests changed the reduction order: 6e-6 on 50 of 197k values).
    np.testing.assert_allclose(resumed.oof, plain.oof, atol=1e-6)
    np.testing.assert_allclose(resumed.test, plain.test, atol=1e-6)
