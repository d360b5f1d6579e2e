"""Any panel, any target set: a moakit dataset folder of another width (gene-only, no
cp_* columns, 12 targets) is read, every shipped model trains on it at profile smoke and
predicts; config steps that cannot run on a panel fail before any work or are skipped when
optional; cp_time / cp_dose vocabularies come from the data and are kept by the run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import moakit
from moakit.config import ConfigError
from moakit.data import schema
from moakit.data.io import DataError, load, parse_features

N_GENES, N_TARGETS = 300, 12


def write_panel(folder: Path, data, n_genes: int = N_GENES, n_targets: int = N_TARGETS, meta: dict | None = None,
                test: bool = True) -> Path:
    """A moakit dataset folder (Parquet) of a gene-only panel made from simulated lish-moa
    data: the first ``n_genes`` genes named g-<id>, ``n_targets`` scored targets, no cells,
    no cp_* columns unless ``meta`` gives (train values, test values) per column."""
    folder.mkdir(parents=True)
    genes = [f"g-{i}" for i in range(n_genes)]
    names = {g: f"g-{1000 + i}" for i, g in enumerate(genes)}  # Entrez-like ids, as an l1000 folder names them
    train = data.X[["sig_id", *genes]].rename(columns=names)
    test_x = data.X_test[["sig_id", *genes]].rename(columns=names)
    for column, (tr_values, te_values) in (meta or {}).items():
        train[column] = np.resize(np.asarray(tr_values, dtype=object), len(train))
        test_x[column] = np.resize(np.asarray(te_values, dtype=object), len(test_x))
    train.to_parquet(folder / "train_features.parquet", index=False)
    if test:
        test_x.to_parquet(folder / "test_features.parquet", index=False)
        (folder / "answers").mkdir()
        pd.DataFrame({"sig_id": data.test_drug_id.index, "drug_id": data.test_drug_id.to_numpy()}).to_parquet(
            folder / "answers" / "test_drug.parquet", index=False)
    # the most frequent targets, so every fold has positives
    keep = data.Y.drop(columns="sig_id").sum().sort_values(ascending=False).index[:n_targets]
    data.Y[["sig_id", *keep]].to_parquet(folder / "train_targets_scored.parquet", index=False)
    ns = data.Y_nonscored.drop(columns="sig_id").sum().sort_values(ascending=False).index[:8]
    data.Y_nonscored[["sig_id", *ns]].to_parquet(folder / "train_targets_nonscored.parquet", index=False)
    pd.DataFrame({"sig_id": data.X.sig_id, "drug_id": data.drug_id.to_numpy()}).to_parquet(
        folder / "train_drug.parquet", index=False)
    pd.DataFrame({"column": list(names.values()), "entrez_id": [str(1000 + i) for i in range(n_genes)],
                  "symbol": [f"GENE{i}" for i in range(n_genes)]}).to_csv(folder / "genes.csv", index=False)
    (folder / "dataset.json").write_text(json.dumps({"layout": "l1000", "source": "test"}))
    return folder


@pytest.fixture(scope="module")
def sim():
    return moakit.simulate(n_rows=300, seed=3)


@pytest.fixture(scope="module")
def panel_dir(sim, tmp_path_factory) -> Path:
    return write_panel(tmp_path_factory.mktemp("panel") / "gene_only", sim)


@pytest.fixture(scope="module")
def panel(panel_dir):
    return moakit.load_dataset(panel_dir)


# ------------------------------------------------------------------ the data layer


def test_gene_only_folder_loads_as_a_panel(panel_dir, panel):
    data = load(panel_dir)
    tr = data.train
    assert tr.genes.shape[1] == N_GENES and tr.cells.shape == (len(tr), 0)
    assert tr.meta == () and tr.vocab == {"cp_time": (), "cp_dose": ()}
    assert tr.cp_onehot().shape == (len(tr), 0) and tr.cp_codes().shape == (len(tr), 0)
    assert not tr.is_control.any() and len(tr.scored_names) == N_TARGETS
    assert data.genes["entrez_id"].tolist()[:2] == ["1000", "1001"] and data.genes["symbol"][0] == "GENE0"
    assert data.info["layout"] == "l1000"
    assert list(panel.X.columns) == ["sig_id", *tr.gene_names]  # no cp_* columns invented
    assert panel.Y.shape[1] == N_TARGETS + 1 and panel.genes is not None


def test_meta_aliases_vocabularies_and_lish_moa_default():
    frame = pd.DataFrame({"sig_id": ["a", "b", "c", "d"], "pert_type": ["trt_cp", "trt_cp", "ctl_vehicle", "trt_cp"],
                          "pert_time": [24, 6, 24, 6], "pert_dose": ["10 uM", "1 uM", "3.33 uM", "10 uM"],
                          "g-1": [0.1, 0.2, 0.3, 0.4]})
    ds = parse_features("f", frame)
    assert ds.meta == ("cp_type", "cp_time", "cp_dose")
    assert ds.vocab == {"cp_time": (6, 24), "cp_dose": ("1 uM", "3.33 uM", "10 uM")}  # by number, not as text
    assert ds.cp_time.tolist() == [1, 0, 1, 0] and ds.cp_dose.tolist() == [2, 0, 1, 2]
    assert ds.is_control.tolist() == [False, False, True, False]
    np.testing.assert_array_equal(ds.cp_onehot()[0], [0, 1, 0, 0, 1])
    np.testing.assert_allclose(ds.cp_codes()[0], [1.0, 1.0, 1.0])  # treated, dose 2/2, time 1/1
    # lish-moa's values keep lish-moa's order and width, even when only some occur
    lish = parse_features("f", frame.assign(pert_time=[48, 48, 24, 24], pert_dose=["D2"] * 4))
    assert lish.vocab == dict(schema.LISH_MOA_VOCAB) and lish.cp_onehot().shape == (4, 5)
    with pytest.raises(DataError, match="both 'cp_time' and its alias 'pert_time'"):
        parse_features("f", frame.assign(cp_time=1))
    # a lish-moa table (it has cells) stays strict
    with pytest.raises(DataError, match="column 'cp_time', row 2: unknown value 6"):
        parse_features("f", frame.rename(columns=schema.META_ALIASES).assign(**{"c-0": 1.0}))


def test_genes_csv_must_match_the_gene_columns(panel_dir, tmp_path, sim):
    folder = write_panel(tmp_path / "p", sim, n_genes=20, test=False)
    genes = pd.read_csv(folder / "genes.csv")
    genes.iloc[::-1].to_csv(folder / "genes.csv", index=False)
    with pytest.raises(DataError, match=r"genes.csv: .*row 1 differs \('g-1019' vs 'g-1000'\)"):
        load(folder)
    (folder / "genes.csv").unlink()
    data = load(folder)  # no genes.csv, no test_features: fine for a panel
    assert data.genes is None and len(data.test) == 0
    from moakit.data.column_maps import lish_moa_gene_ids

    ids = lish_moa_gene_ids()
    assert load_lish_moa_genes(sim, tmp_path)["entrez_id"].tolist() == [ids[f"g-{i}"] for i in range(772)]


def load_lish_moa_genes(sim, tmp_path):
    """A simulated lish-moa folder's gene ids come from the organisers' mapping."""
    folder = tmp_path / "lish"
    moakit.simulate(n_rows=200, seed=0, out_dir=folder)
    return load(folder).genes


# ------------------------------------------------------------------ every model on a gene-only panel

MODEL_CONFIGS = moakit.list_configs(kind="model")


def test_every_registered_model_has_a_panel_test():
    covered = {m for models in MODEL_CONFIGS["models"] for m in models}
    assert covered == set(moakit.list_models())


@pytest.mark.parametrize("config", MODEL_CONFIGS["name"].tolist())
def test_model_trains_and_predicts_on_gene_only_panel(config, panel, tmp_path):
    folds = None if config.startswith("deepinsight") else 2  # DeepInsight smoke: 2 already
    model = moakit.MoAModel(config, profile="smoke", seeds=1, folds=folds, run_dir=tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(**panel.fit_args)
        proba = model.predict_proba(panel.X_test)
    names = panel.Y.columns[1:].tolist()
    assert proba.shape == (len(panel.X_test), N_TARGETS) and proba.columns.tolist() == names
    assert np.isfinite(proba.to_numpy()).all() and ((proba >= 0) & (proba <= 1)).all().all()
    assert model.oof_.shape == (len(panel.X), N_TARGETS)
    columns = json.loads((tmp_path / "run" / "columns.json").read_text())
    assert columns["cells"] == [] and len(columns["genes"]) == N_GENES
    assert columns["panel"] == {"meta": [], "vocab": {"cp_time": [], "cp_dose": []}}
    again = moakit.MoAModel.load(tmp_path / "run").predict_proba(panel.X_test)
    np.testing.assert_allclose(again.to_numpy(), proba.to_numpy(), atol=1e-6)


# ------------------------------------------------------------------ config checks before any work


def _user_config(tmp_path: Path, edit) -> Path:
    from moakit.config import packaged_configs

    raw = yaml.safe_load(packaged_configs()["simple_nn"].read_text())
    edit(raw["profiles"]["smoke"]["params"]["features"]["steps"])
    path = tmp_path / "my_simple_nn.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _drop_optional(steps):
    for step in steps:
        step.pop("optional", None)


def _too_many_gene_factors(steps):
    next(s for s in steps if s["name"] == "fa_g")["n_components"] = N_GENES + 1


def test_absent_block_fails_before_any_work_naming_config_step_block(panel, tmp_path):
    config = _user_config(tmp_path, _drop_optional)
    model = moakit.MoAModel(str(config), profile="smoke", run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"my_simple_nn.yaml: params.features.steps: feature step 'fa_c' "
                                          r"\(factor_analysis\): its input block 'c' is absent or without columns"):
        model.fit(**panel.fit_args)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing written


def test_component_count_above_block_width_fails_before_any_work(panel, tmp_path):
    config = _user_config(tmp_path, _too_many_gene_factors)
    with pytest.raises(ConfigError, match=rf"feature step 'fa_g' \(factor_analysis\): n_components {N_GENES + 1} "
                                          rf"exceeds the {N_GENES} columns of block\(s\) 'g'"):
        moakit.MoAModel(str(config), profile="smoke", run_dir=tmp_path / "run").fit(**panel.fit_args)


def test_cli_exit_2_for_a_config_step_without_its_block(panel_dir, tmp_path):
    from conftest import invoke

    config = _user_config(tmp_path, _drop_optional)
    res = invoke("train", str(config), "--data", str(panel_dir), "--out", str(tmp_path / "out"), "--profile", "smoke")
    assert res.exit_code == 2, res.output
    assert "my_simple_nn.yaml" in res.stderr and "'fa_c'" in res.stderr and "'c'" in res.stderr
    assert "Traceback" not in res.stderr


def test_optional_steps_are_skipped_and_recorded():
    from moakit.features import Pipeline, PipelineConfig
    from moakit.features.panel import PanelError, plan_pipeline

    cfg = PipelineConfig(steps=[
        {"kind": "quantile", "name": "q", "inputs": ["g", "c"], "n_quantiles": 10},
        {"kind": "pca", "name": "pca_c", "inputs": ["c"], "output": "pca_c", "n_components": 3, "optional": True},
        {"kind": "pca", "name": "pca_g", "inputs": ["g"], "output": "pca_g", "n_components": 20, "optional": True},
        {"kind": "row_stats", "name": "st", "inputs": ["g", "c"], "output": "st", "stats": ["mean"]},
    ], output=["g", "c", "pca_c", "pca_g", "st", "cp"])
    # lish-moa's widths: the same config object back, nothing skipped
    assert plan_pipeline(cfg, {"g": 772, "c": 100, "cp": 5}, 1000) == (cfg, [])
    planned, skipped = plan_pipeline(cfg, {"g": 8, "c": 0, "cp": 0}, 50)
    assert [s["name"] for s in skipped] == ["pca_c", "pca_g"]  # no cells; 20 components > 8 genes
    assert planned.steps[0].inputs == ["g"] and planned.output == ["g", "st"]
    rng = np.random.default_rng(0)
    blocks = {"g": rng.normal(size=(50, 8)), "c": np.zeros((50, 0)), "cp": np.zeros((50, 0))}
    pipe = Pipeline(cfg).fit(blocks)
    assert pipe.transform(blocks).shape == (50, 9) and [s["name"] for s in pipe.skipped_steps_] == ["pca_c", "pca_g"]
    assert "optional" not in json.dumps(cfg.steps[0].model_dump()) and cfg.steps[1].model_dump()["optional"]
    with pytest.raises(PanelError, match=r"step 'pca_c' \(pca\): n_components 3 exceeds the 2 rows"):
        plan_pipeline(cfg.model_copy(update={"steps": [cfg.steps[1].model_copy(update={"optional": False})]}),
                      {"g": 8, "c": 4}, 2)


def test_cp_categories_learns_another_panels_groups_for_tabnet():
    from moakit.features import Pipeline, PipelineConfig
    from moakit.models.two_stage_tabnet import TabNetConfig, panel_categoricals

    ds = parse_features("f", pd.DataFrame({"sig_id": list("abcdef"), "cp_time": [6, 24, 6, 24, 6, 24],
                                           "cp_dose": ["1 uM", "1 uM", "3 uM", "3 uM", "10 uM", "10 uM"],
                                           "g-1": np.arange(6.0)}))
    from moakit.features.pipeline import blocks_from_dataset

    cfg = PipelineConfig(steps=[{"kind": "cp_categories", "name": "cp_cat", "inputs": ["cp"], "output": "cp_cat",
                                 "optional": True}], output=["g", "cp_cat"])
    pipe = Pipeline(cfg).fit(blocks_from_dataset(ds))
    np.testing.assert_array_equal(pipe.transform(blocks_from_dataset(ds))[:, 1:], np.column_stack(
        [ds.cp_time, ds.cp_dose]))
    tab = panel_categoricals(TabNetConfig(), pipe)
    assert (tab.cat_idxs, tab.cat_dims, tab.cat_emb_dim) == ([1, 2], [2, 3], [1, 1])
    gene_only = parse_features("f", pd.DataFrame({"sig_id": list("abc"), "g-1": [1.0, 2.0, 3.0]}))
    skipped = Pipeline(cfg).fit(blocks_from_dataset(gene_only))
    assert panel_categoricals(TabNetConfig(), skipped).cat_idxs == []


# ------------------------------------------------------------------ vocabularies kept by the run; the API


@pytest.fixture(scope="module")
def dosed_run(sim, tmp_path_factory):
    """simple_nn (smoke) on a gene-only panel with LINCS-style times and doses."""
    root = tmp_path_factory.mktemp("dosed")
    folder = write_panel(root / "data", sim, n_genes=60,
                         meta={"pert_time": ([6, 24], [24, 6]), "pert_dose": (["10 uM", "1 uM"], ["1 uM", "10 uM"])})
    data = moakit.load_dataset(folder)
    model = moakit.MoAModel("simple_nn", profile="smoke", folds=2, run_dir=root / "run").fit(**data.fit_args)
    return data, model


def test_run_keeps_the_vocabularies_and_refuses_unseen_values(dosed_run):
    data, model = dosed_run
    assert data.X.columns[1:3].tolist() == ["cp_time", "cp_dose"]  # read as their lish-moa names
    panel = json.loads((model.run_dir_ / "columns.json").read_text())["panel"]
    assert panel == {"meta": ["cp_time", "cp_dose"], "vocab": {"cp_time": [6, 24], "cp_dose": ["1 uM", "10 uM"]}}
    X = data.X_test.copy()
    base = model.predict_proba(X)
    # rows whose doses / times come in another order of first appearance are encoded alike
    flipped = X.iloc[::-1].reset_index(drop=True)
    np.testing.assert_allclose(model.predict_proba(flipped).loc[base.index].to_numpy(), base.to_numpy(), atol=1e-6)
    X.loc[3, "cp_dose"] = "3 uM"
    with pytest.raises(DataError, match=r"column 'cp_dose', row 4: value '3 uM' was not seen in training "
                                        r"\(the run knows: 1 uM, 10 uM\)"):
        model.predict_proba(X)
    with pytest.raises(DataError, match="column 'cp_time' is missing; the run was trained with it"):
        model.predict_proba(data.X_test.drop(columns="cp_time"))


def test_lish_moa_run_stores_no_panel(tmp_path):
    data = moakit.simulate(n_rows=200, seed=1)
    model = moakit.MoAModel("simple_nn", profile="smoke", folds=2, run_dir=tmp_path / "run").fit(**data.fit_args)
    assert "panel" not in json.loads((tmp_path / "run" / "columns.json").read_text())
    assert model.predict_proba(data.X_test).shape == (len(data.X_test), 206)


def test_predict_proba_by_compound(dosed_run):
    data, model = dosed_run
    X = data.X_test
    per_signature = model.predict_proba(X)
    drugs = data.test_drug_id
    assert drugs is not None and drugs.index.tolist() == X.sig_id.tolist()
    by_series = model.predict_proba(X, by="compound", groups=drugs.iloc[::-1])  # matched by sig_id, not position
    expected = per_signature.groupby(drugs.reindex(per_signature.index).to_numpy(), sort=False).mean()
    assert by_series.index.name == "drug_id" and by_series.index.tolist() == list(pd.unique(drugs))
    np.testing.assert_allclose(by_series.to_numpy(), expected.to_numpy())
    with_column = model.predict_proba(X.assign(pert_id=drugs.to_numpy()), by="compound")
    assert with_column.index.name == "pert_id"
    np.testing.assert_allclose(with_column.to_numpy(), by_series.to_numpy())
    with pytest.raises(DataError, match="a drug_id or pert_id column in X, or groups="):
        model.predict_proba(X, by="compound")
    with pytest.raises(DataError, match="groups: no group for 1 row"):
        model.predict_proba(X, by="compound", groups=drugs.iloc[1:])
    with pytest.raises(ValueError, match="by must be"):
        model.predict_proba(X, by="drug")


def test_cli_predict_refuses_an_unseen_dose(dosed_run, tmp_path):
    from conftest import invoke

    data, model = dosed_run
    X = data.X_test.copy()
    X.loc[0, "cp_dose"] = "30 uM"
    X.to_parquet(tmp_path / "new.parquet", index=False)
    res = invoke("predict", "--run", str(model.run_dir_), "--features", str(tmp_path / "new.parquet"),
                 "--out", str(tmp_path / "out.csv"))
    assert res.exit_code == 1, res.output
    assert "column 'cp_dose', row 1: value '30 uM' was not seen in training" in res.stderr
    assert not (tmp_path / "out.csv").exists()
    X.loc[0, "cp_dose"] = "1 uM"
    X.to_parquet(tmp_path / "ok.parquet", index=False)
    res = invoke("predict", "--run", str(model.run_dir_), "--features", str(tmp_path / "ok.parquet"),
                 "--out", str(tmp_path / "ok.csv"))
    assert res.exit_code == 0, res.stderr
    assert pd.read_csv(tmp_path / "ok.csv").shape == (len(X), N_TARGETS + 1)
