"""The 3-stage NN as the winners' script (final/Best LB/Training/Local/3stage-nn-train.py) did it:
the full profile's numbers, control rows in the unsupervised fits, and seed-mean meta-features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.preprocessing import QuantileTransformer

from moakit import runner
from moakit.config import load_config
from moakit.features import Pipeline, PipelineConfig
from moakit.models.stacked import StackedFeatures


def test_full_profile_is_the_winners_script():
    config = load_config("three_stage_nn")
    p = config.params
    assert (len(config.seeds), config.cv.n_folds, config.cv.scheme) == (5, 5, "old")
    assert p["meta_features"] == "seed_mean"
    # every stage keeps its schedule's last epoch: what the script's choice amounted to
    # (its logs: the last epoch at stage 1, 10-11 of 12 at stages 2-3), without the OOF rows
    assert config.selection.policy == "last"
    s1 = p["stage1"]["features"]
    assert (s1["fit_on"], s1["fit_controls"]) == ("train+test", True)
    kinds = [(s["kind"], s["inputs"], s.get("n_components")) for s in s1["steps"]]
    # FA and UMAP on the RAW g / c, then the quantile transform of g and c only
    assert kinds == [("factor_analysis", ["g"], 90), ("umap", ["g"], 45), ("factor_analysis", ["c"], 50),
                     ("umap", ["c"], 25), ("quantile", ["g", "c"], None)]
    assert s1["steps"][-1]["n_quantiles"] == 100
    # the script's fixed random states, the same for every training seed
    assert [s.get("random_state") for s in s1["steps"]] == [1903, 1903, 1903, 1903, 123]
    assert [s.get("transform_seed") for s in s1["steps"] if s["kind"] == "umap"] == [42, 42]
    assert [p[st]["features"]["steps"][0]["random_state"] for st in ("stage2", "stage3")] == [0, 0]
    assert set(s1["output"]) == {"cp", "g", "c", "fa_g", "umap_g", "fa_c", "umap_c"}
    for stage, hidden, epochs, clip in (("stage1", 2048, 15, [0.0005, 0.9995]), ("stage2", 2048, 25, None),
                                        ("stage3", 1024, 25, [0.0005, 0.9995])):
        net, train = p[stage]["network"], p[stage]["train"]
        assert net == {"hidden": [hidden, hidden], "dropouts": [0.15, 0.3, 0.25],
                       "weight_norm": [True, False, True], "activation": "leaky_relu"}
        assert (train["epochs"], train["batch_size"], train["lr"], train["weight_decay"]) == (epochs, 256, 5e-3, 1e-5)
        assert (train["max_lr"], train["pct_start"], train["div_factor"]) == (1e-2, 0.2, 1e3)
        assert train["smoothing"] == 0.0, stage  # the script has no label smoothing in any stage
        assert train.get("clip_targets") == clip, stage
    for stage in ("stage2", "stage3"):  # meta quantile transform: fitted on the training OOF only
        assert p[stage]["features"]["fit_on"] == "train"
        assert p[stage]["features"].get("fit_controls", False) is False


def test_pipeline_fits_on_control_rows_only_when_asked():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(200, 4)).astype(np.float32)
    ctl = np.zeros((200, 1), np.float32)
    ctl[:50] = 1.0
    g[:50] += 100.0  # controls far away: a fit that saw them has other quantiles
    cfg = {"fit_on": "train", "steps": [{"kind": "quantile", "inputs": ["g"], "n_quantiles": 20}], "output": ["g"]}
    treated_only = Pipeline.from_config(cfg).fit({"g": g, "ctl": ctl})
    with_controls = Pipeline.from_config({**cfg, "fit_controls": True}).fit({"g": g, "ctl": ctl})
    assert treated_only.n_fit_rows_ == 150 and with_controls.n_fit_rows_ == 200
    # transform ignores the ctl block, and the two fits differ
    assert treated_only.transform({"g": g}).shape == (200, 4)
    assert not np.allclose(treated_only.transform({"g": g}), with_controls.transform({"g": g}))
    assert PipelineConfig.model_validate(cfg).fit_controls is False


@pytest.fixture(scope="module")
def two_seed_run(sim_data, tmp_path_factory):
    config = load_config("three_stage_nn", profile="smoke").model_copy(update={"seeds": [0, 1]})
    return runner.train(config, sim_data, tmp_path_factory.mktemp("three2") / "run", show_progress=False)


def test_next_stage_reads_the_seed_mean_of_the_previous_one(two_seed_run, sim_data):
    run = two_seed_run.run_dir
    treated = ~sim_data.train.is_control
    oof1 = np.mean([np.load(run / f"stages/nonscored/seed_{s}/oof.npy") for s in (0, 1)], axis=0)
    oof2 = np.mean([np.load(run / f"stages/scored/seed_{s}/oof.npy") for s in (0, 1)], axis=0)
    for stage, mean in (("scored", oof1), ("stack", oof2)):
        for seed in (0, 1):
            own = StackedFeatures.load(run / f"stages/{stage}/seed_{seed}/features").own
            # the meta quantile transform of EVERY seed was fitted on the seed-mean OOF of the
            # treated training rows (the training OOF only: no test rows, no controls)
            assert own.n_fit_rows_ == int(treated.sum())
            qt = QuantileTransformer(n_quantiles=50, output_distribution="normal", random_state=seed)
            expected = qt.fit(mean[treated]).transform(mean)
            np.testing.assert_allclose(own.transform({"meta": mean.astype(np.float32)}), expected, atol=1e-4)


def test_stage1_transforms_were_fitted_on_every_row_controls_included(two_seed_run, sim_data):
    f1 = StackedFeatures.load(two_seed_run.run_dir / "stages/nonscored/seed_0/features")
    assert f1.own.n_fit_rows_ == len(sim_data.train) + len(sim_data.test)
    assert sim_data.train.is_control.any()


def test_seed_mean_chain_is_replayed_by_predict_run(two_seed_run, sim_data):
    np.testing.assert_allclose(runner.predict_run(two_seed_run.run_dir, sim_data.test), two_seed_run.test,
                               atol=1e-6)
    saved = json.loads((two_seed_run.run_dir / "metrics.json").read_text())
    assert set(saved["seeds"]) == {"0", "1"}
    # per-seed scores are each seed's own last stage, not the mean
    assert saved["seeds"]["0"]["log_loss"] != saved["seeds"]["1"]["log_loss"]
