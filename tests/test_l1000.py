"""LINCS L1000 data: the simulated LINCS folder, `moakit dataset l1000`, and predicting GCTX
input / dataset folders with genes aligned by Entrez id, per signature and per compound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import conftest
from conftest import clean_exit, invoke

from moakit.data import gctx
from moakit.data.column_maps import lish_moa_gene_ids
from moakit.data.simulate_l1000 import N_LANDMARK, simulate_l1000


@pytest.fixture(scope="module")
def lincs(tmp_path_factory) -> Path:
    return simulate_l1000(tmp_path_factory.mktemp("lincs") / "src", n_signatures=2000, seed=5)


@pytest.fixture(scope="module")
def dataset(lincs, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("ds") / "dst"
    res = invoke("dataset", "l1000", lincs, "--out", out)
    assert res.exit_code == 0, res.stdout + res.stderr
    return out, res


def _tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def _matrix(folder: Path) -> Path:
    return next(folder.glob("*.gctx"))


# --------------------------------------------------------------------------- simulate --layout l1000


def test_simulated_folder_is_lincs_like_and_deterministic(lincs, tmp_path):
    genes, sig, comp = (_tsv(lincs / f"{k}_beta.txt") for k in ("geneinfo", "siginfo", "compoundinfo"))
    assert _matrix(lincs).name == f"level5_beta_trt_cp_n2000x{len(genes)}.gctx"
    landmark = genes[genes.feature_space == "landmark"]
    assert len(landmark) == N_LANDMARK and (genes.feature_space == "best inferred").sum() == 200
    assert set(lish_moa_gene_ids().values()) <= set(landmark.gene_id) and genes.gene_id.is_unique
    assert genes.gene_symbol.is_unique
    assert list(sig.columns) == ["sig_id", "pert_id", "cmap_name", "cell_iname", "pert_type", "pert_time",
                                 "pert_time_unit", "pert_dose", "pert_dose_unit"]
    assert set(sig.pert_type) == {"trt_cp", "ctl_vehicle", "trt_sh"}
    assert sig.cell_iname.nunique() >= 6 and sig.pert_dose.replace("", np.nan).dropna().nunique() >= 5
    assert sig.pert_time.nunique() >= 2
    assert comp.moa.str.contains("|", regex=False).any() and (comp.moa == "").any()
    assert comp.pert_id.duplicated().any()  # one row per target for some compounds
    cids, rids = gctx.gctx_ids(_matrix(lincs))
    assert set(cids) < set(sig.sig_id) and sorted(rids) == sorted(genes.gene_id)
    again = simulate_l1000(tmp_path / "again", n_signatures=2000, seed=5)
    for name in ("siginfo_beta.txt", "geneinfo_beta.txt", "compoundinfo_beta.txt"):
        assert (again / name).read_bytes() == (lincs / name).read_bytes()
    np.testing.assert_array_equal(gctx.read_gctx(_matrix(again)).to_numpy(), gctx.read_gctx(_matrix(lincs)).to_numpy())


def test_simulate_cli_layout_l1000(tmp_path):
    res = invoke("simulate", tmp_path / "l", "--layout", "l1000", "--rows", 300, "--seed", 2)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert (tmp_path / "l" / "compoundinfo_beta.txt").exists() and len(list((tmp_path / "l").glob("*.gctx"))) == 1
    res = invoke("simulate", tmp_path / "m", "--layout", "l1000", "--labels-from", tmp_path)
    assert "--labels-from works with --layout lish-moa only" in clean_exit(res, (2,))


# --------------------------------------------------------------------------- dataset l1000


def _expected_moa_counts(lincs: Path) -> pd.Series:
    """Compounds per MoA among the treated signatures in the matrix, from the raw files."""
    sig, comp = _tsv(lincs / "siginfo_beta.txt"), _tsv(lincs / "compoundinfo_beta.txt")
    cids, _ = gctx.gctx_ids(_matrix(lincs))
    treated = set(sig.loc[(sig.pert_type == "trt_cp") & sig.sig_id.isin(set(cids)), "pert_id"])
    moas = comp[comp.pert_id.isin(treated)].assign(moa=lambda f: f.moa.str.split("|")).explode("moa")
    moas = moas[moas.moa != ""].drop_duplicates(["pert_id", "moa"])
    return moas.moa.value_counts()


def test_dataset_l1000_end_to_end(lincs, dataset):
    from moakit.data.io import load

    out, res = dataset
    assert "MoA targets" in res.stdout
    assert "dropped" in res.stderr and "have no column in" in res.stderr and "empty moa" in res.stderr
    info = json.loads((out / "dataset.json").read_text())
    counts = _expected_moa_counts(lincs)
    assert sorted(d["moa"] for d in info["dropped_targets"]) == sorted(counts[counts < 5].index)
    assert sorted(info["targets"].values()) == sorted(counts[counts >= 5].index)
    assert info["siginfo_rows_without_matrix_column"] == 40 and info["planted_truth"]
    data = load(out)
    genes = pd.read_csv(out / "genes.csv", dtype=str)
    assert len(genes) == N_LANDMARK and genes.column.tolist() == data.train.gene_names
    assert (genes.column == "g-" + genes.entrez_id).all()
    train_drugs, test_drugs = set(data.train.drug_id), set(pd.read_parquet(out / "answers/test_drug.parquet").drug_id)
    assert train_drugs.isdisjoint(test_drugs) and len(test_drugs) > 10
    assert (data.train.scored.sum(axis=0) > 0).all()  # every MoA keeps a positive training compound
    for j in range(data.train.scored.shape[1]):  # ... and has >= 5 compounds overall
        assert counts[info["targets"][data.train.scored_names[j]]] >= 5
    # values are the matrix's, gene by gene (by Entrez id), signature by signature
    rows = data.train.sig_id[:25]
    slab = gctx.read_gctx(_matrix(lincs), rid=genes.entrez_id.tolist(), cid=list(rows))
    np.testing.assert_array_equal(data.train.genes[:25], slab.to_numpy())
    assert set(data.train.vocab["cp_time"]) == {6, 24} and "10 uM" in data.train.vocab["cp_dose"]


def test_dataset_l1000_filters(lincs, tmp_path):
    res = invoke("dataset", "l1000", lincs, "--out", tmp_path / "f", "--cell", "A549", "--cell", "MCF7",
                 "--time", 24, "--dose", "10", "--dose", "3.33 uM", "--keep-controls", "--genes", "all",
                 "--min-compounds", 2, "--test-fraction", 0.3, "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    frame = pd.concat([pd.read_parquet(tmp_path / "f" / f"{s}_features.parquet") for s in ("train", "test")])
    sig = _tsv(lincs / "siginfo_beta.txt").set_index("sig_id").loc[frame.sig_id]
    assert set(sig.cell_iname) == {"A549", "MCF7"} and set(frame.cp_time) == {24}
    assert set(frame.loc[frame.cp_type == "trt_cp", "cp_dose"]) == {"10 uM", "3.33 uM"}
    assert (frame.cp_type == "ctl_vehicle").any()
    assert sum(c.startswith("g-") for c in frame.columns) == N_LANDMARK + 200
    assert json.loads(res.stdout)["filters"]["min_compounds"] == 2


def test_a_gct_source_gives_the_same_dataset(dataset, tmp_path):
    src = simulate_l1000(tmp_path / "gct", n_signatures=2000, seed=5, matrix_format="gct")
    assert not list(src.glob("*.gctx"))
    res = invoke("dataset", "l1000", src, "--out", tmp_path / "d")
    assert res.exit_code == 0, res.stdout + res.stderr
    for name in ("train_features.parquet", "train_targets_scored.parquet", "answers/test_drug.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "d" / name), pd.read_parquet(dataset[0] / name))


def _copy(lincs: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(lincs, dst)
    return dst


@pytest.mark.parametrize("case", ["no_moa_column", "duplicate_sig", "not_hdf5", "too_few", "unknown_cell",
                                  "no_moa_at_all", "no_landmark", "unknown_time"])
def test_dataset_l1000_bad_input(lincs, tmp_path, case):
    src = _copy(lincs, tmp_path / "src")
    args = []
    if case == "no_moa_column":
        _tsv(src / "compoundinfo_beta.txt").drop(columns="moa").to_csv(src / "compoundinfo_beta.txt", sep="\t",
                                                                       index=False)
        expect = "compoundinfo_beta.txt: no 'moa' column"
    elif case == "duplicate_sig":
        sig = _tsv(src / "siginfo_beta.txt")
        pd.concat([sig, sig.iloc[[3]]]).to_csv(src / "siginfo_beta.txt", sep="\t", index=False)
        expect = f"siginfo_beta.txt: row {len(sig) + 1}: sig_id {sig.sig_id[3]!r} appears more than once"
    elif case == "not_hdf5":
        _matrix(src).write_text("#1.3\n")
        expect = "not an HDF5 file"
    elif case == "too_few":
        args, expect = ["--min-compounds", 1000], "no MoA has 1000 compounds after the filters"
    elif case == "unknown_cell":
        args, expect = ["--cell", "HELA"], "--cell 'HELA': no signature of that cell line (cell lines: A375"
    elif case == "unknown_time":
        args, expect = ["--time", 96], "--time 96: no signature at that time (hours: 6, 24)"
    elif case == "no_moa_at_all":
        comp = _tsv(src / "compoundinfo_beta.txt").assign(moa="")
        comp.to_csv(src / "compoundinfo_beta.txt", sep="\t", index=False)
        expect = "no compound of the selected signatures has a MoA"
    else:
        genes = _tsv(src / "geneinfo_beta.txt").assign(feature_space="best inferred")
        genes.to_csv(src / "geneinfo_beta.txt", sep="\t", index=False)
        expect = "no gene has feature_space 'landmark'"
    res = invoke("dataset", "l1000", src, "--out", tmp_path / "out", *args)
    assert expect in clean_exit(res, (1,))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp*"))  # nothing half-written


def test_matrix_columns_without_siginfo_rows_are_counted(lincs, tmp_path):
    src = _copy(lincs, tmp_path / "src")
    sig = _tsv(src / "siginfo_beta.txt")
    cids, _ = gctx.gctx_ids(_matrix(src))
    gone = set(cids[:7])
    sig[~sig.sig_id.isin(gone)].to_csv(src / "siginfo_beta.txt", sep="\t", index=False)
    res = invoke("dataset", "l1000", src, "--out", tmp_path / "out", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["matrix_columns_without_siginfo_row"] == 7
    assert "7 of 2000 columns have no row in siginfo_beta.txt (dropped)" in res.stderr
    ids = pd.concat([pd.read_parquet(tmp_path / "out" / f"{s}_features.parquet", columns=["sig_id"])
                     for s in ("train", "test")]).sig_id
    assert gone.isdisjoint(ids)


# --------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def gene_only_run(tmp_path_factory):
    """A lish-moa-layout run without the cell block: simple_nn (smoke) on g-0 .. g-771."""
    return conftest.gene_only_run(tmp_path_factory.mktemp("lm"), n_rows=500)


def _export_gctx(data: Path, path: Path, drop: int = 0, seed: int = 0) -> Path:
    """test_features as a GCTX: Entrez ids as gene ids in a shuffled order, the meta columns
    as column annotations; ``drop`` genes left out."""
    frame = pd.read_parquet(data / "test_features.parquet")
    ids = lish_moa_gene_ids()
    genes = [c for c in frame.columns if c.startswith("g-")]
    order = np.random.default_rng(seed).permutation(len(genes))[drop:]
    matrix = pd.DataFrame(frame[genes].to_numpy()[:, order], index=frame.sig_id,
                          columns=[ids[genes[j]] for j in order])
    meta = frame.set_index("sig_id")[["cp_type", "cp_time", "cp_dose"]]
    return gctx.write_gctx(path, matrix, col_meta=meta)


def test_lish_moa_run_predicts_a_reordered_gctx_identically(gene_only_run, tmp_path):
    data, run = gene_only_run
    res = invoke("predict", "--run", run, "--features", data / "test_features.parquet", "--out", tmp_path / "a.csv")
    assert res.exit_code == 0, res.stdout + res.stderr
    path = _export_gctx(data, tmp_path / "x.gctx")
    res = invoke("predict", "--run", run, "--features", path, "--out", tmp_path / "b.csv")
    assert res.exit_code == 0, res.stdout + res.stderr
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert a.sig_id.tolist() == b.sig_id.tolist()
    np.testing.assert_array_equal(a.drop(columns="sig_id").to_numpy(), b.drop(columns="sig_id").to_numpy())


def test_missing_genes_are_named_and_refused_unless_allowed(gene_only_run, tmp_path):
    data, run = gene_only_run
    path = _export_gctx(data, tmp_path / "x.gctx", drop=5)
    res = invoke("predict", "--run", run, "--features", path, "--out", tmp_path / "b.csv")
    text = clean_exit(res, (1,))
    assert "5 of the run's 772 genes are missing" in text and "(Entrez " in text and "--allow-missing-genes" in text
    assert not (tmp_path / "b.csv").exists()
    res = invoke("predict", "--run", run, "--features", path, "--out", tmp_path / "b.csv", "--allow-missing-genes")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "filled with 0 (the z-score of an unchanged gene)" in res.stderr


def test_gene_ids_that_are_not_entrez_ids_are_refused(gene_only_run, tmp_path):
    data, run = gene_only_run
    frame = pd.read_parquet(data / "test_features.parquet")
    genes = [c for c in frame.columns if c.startswith("g-")]
    path = gctx.write_gctx(tmp_path / "probes.gctx", pd.DataFrame(frame[genes].to_numpy(), index=frame.sig_id,
                                                                   columns=[f"{2000 + j}_at" for j in range(772)]))
    res = invoke("predict", "--run", run, "--features", path, "--out", tmp_path / "b.csv", "--allow-missing-genes")
    text = clean_exit(res, (1,))
    assert "none of the run's 772 genes is among its 772 gene ids (e.g. '2000_at'" in text
    assert "matched by Entrez gene id" in text


def test_a_run_with_cells_refuses_gene_only_input(gene_only_run, tmp_path):
    data, _ = gene_only_run
    run = tmp_path / "cells_run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "columns.json").write_text(json.dumps({"genes": [f"g-{i}" for i in range(772)],
                                                  "cells": [f"c-{i}" for i in range(100)], "scored": ["a"]}))
    res = invoke("predict", "--run", run, "--features", _export_gctx(data, tmp_path / "x.gctx"),
                 "--out", tmp_path / "b.csv")
    assert "trained with 100 cell viability (c-) columns as well and needs them" in clean_exit(res, (1,))


@pytest.fixture(scope="module")
def l1000_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("l1000run") / "run"
    res = invoke("train", "simple_nn", "--data", dataset[0], "--out", out, "--profile", "smoke", "--quiet")
    assert res.exit_code == 0, res.stdout + res.stderr
    return out


def test_predict_gctx_by_compound(lincs, dataset, l1000_run, tmp_path):
    res = invoke("predict", "--run", l1000_run, "--features", _matrix(lincs), "--out", tmp_path / "calls.csv",
                 "--by", "compound", "--top", 3)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "genes the run does not use are ignored" in res.stderr  # the 200 inferred genes
    per_sig = pd.read_csv(tmp_path / "calls.csv")
    calls = pd.read_csv(tmp_path / "calls_by_compound.csv")
    sig = _tsv(lincs / "siginfo_beta.txt").set_index("sig_id").loc[per_sig.sig_id]
    treated = (sig.pert_type == "trt_cp").to_numpy()
    mean = per_sig[treated].drop(columns="sig_id").groupby(sig.pert_id.to_numpy()[treated]).mean()
    assert set(calls.compound) == set(mean.index) and (calls.groupby("compound").size() == 3).all()
    for compound, group in list(calls.groupby("compound"))[:20]:
        best = mean.loc[compound].sort_values(ascending=False, kind="stable")[:3]
        assert group.moa.tolist() == best.index.tolist()
        np.testing.assert_allclose(group.probability.to_numpy(), best.to_numpy(), rtol=1e-5)
    # the dataset folder's test rows predict exactly as the same signatures of the GCTX
    res = invoke("predict", "--run", l1000_run, "--features", dataset[0], "--out", tmp_path / "d.csv",
                 "--by", "compound", "--top", 2)
    assert res.exit_code == 0, res.stdout + res.stderr
    d = pd.read_csv(tmp_path / "d.csv").set_index("sig_id")
    np.testing.assert_array_equal(d.to_numpy(), per_sig.set_index("sig_id").loc[d.index].to_numpy())
    test_drugs = set(pd.read_parquet(dataset[0] / "answers/test_drug.parquet").drug_id)
    assert set(pd.read_csv(tmp_path / "d_by_compound.csv").compound) == test_drugs


def test_by_compound_needs_compound_ids(gene_only_run, tmp_path):
    data, run = gene_only_run
    path = _export_gctx(data, tmp_path / "x.gctx")
    res = invoke("predict", "--run", run, "--features", path, "--out", tmp_path / "b.csv", "--by", "compound")
    assert "give --groups FILE" in clean_exit(res, (2,))
    groups = pd.read_parquet(data / "answers" / "test_drug.parquet")
    groups.to_csv(tmp_path / "groups.csv", index=False)
    res = invoke("predict", "--run", run, "--features", path, "--out", tmp_path / "b.csv", "--by", "compound",
                 "--groups", tmp_path / "groups.csv", "--top", 2)
    assert res.exit_code == 0, res.stdout + res.stderr
    calls = pd.read_csv(tmp_path / "b_by_compound.csv")
    assert set(calls.compound) <= set(groups.drug_id) and calls["rank"].max() == 2


def test_a_lish_moa_run_on_bare_gctx_needs_cp_time_and_dose(gene_only_run, tmp_path):
    """No siginfo, no column annotations: the run's cp_time / cp_dose come from --cp-time /
    --cp-dose, and then equal the features table's predictions for those rows."""
    data, run = gene_only_run
    frame = pd.read_parquet(data / "test_features.parquet")
    rows = frame[(frame.cp_type == "trt_cp") & (frame.cp_time == 48) & (frame.cp_dose == "D2")]
    rows.to_parquet(tmp_path / "rows.parquet")
    ids = lish_moa_gene_ids()
    genes = [c for c in rows.columns if c.startswith("g-")]
    path = gctx.write_gctx(tmp_path / "bare.gctx", pd.DataFrame(rows[genes].to_numpy(), index=rows.sig_id,
                                                                 columns=[ids[g] for g in genes]))
    res = invoke("predict", "--run", run, "--features", path, "--out", tmp_path / "b.csv")
    assert "column 'cp_time' is missing; the run was trained with it" in clean_exit(res, (1,))
    res = invoke("predict", "--run", run, "--features", path, "--out", tmp_path / "b.csv", "--cp-time", 48,
                 "--cp-dose", "D2")
    assert res.exit_code == 0, res.stdout + res.stderr
    res = invoke("predict", "--run", run, "--features", tmp_path / "rows.parquet", "--out", tmp_path / "a.csv")
    assert res.exit_code == 0, res.stdout + res.stderr
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    np.testing.assert_array_equal(a.drop(columns="sig_id").to_numpy(), b.drop(columns="sig_id").to_numpy())
    res = invoke("predict", "--run", run, "--features", tmp_path / "rows.parquet", "--out", tmp_path / "c.csv",
                 "--cp-dose", "D1")
    assert "only with a GCTX / GCT file or a dataset folder" in clean_exit(res, (2,))


def test_api_simulate_layout_l1000(tmp_path):
    import moakit

    data = moakit.simulate(n_rows=800, seed=2, layout="l1000", out_dir=tmp_path / "sim")
    genes = [c for c in data.X.columns if c.startswith("g-")]
    assert len(genes) == N_LANDMARK and not any(c.startswith("c-") for c in data.X.columns)
    assert data.Y_test is not None and len(data.Y_test) == len(data.X_test) > 0
    assert set(data.drug_id).isdisjoint(pd.read_parquet(tmp_path / "sim/dataset/answers/test_drug.parquet").drug_id)
    assert (tmp_path / "sim" / "lincs" / "compoundinfo_beta.txt").exists()
    with pytest.raises(ValueError, match="layout must be"):
        moakit.simulate(n_rows=800, layout="gctx")


def test_readme_l1000_block_runs(tmp_path, monkeypatch):
    """Every command of the README's "Your own L1000 data" block, as written (smoke profile)."""
    import re
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    marker = text.index("<!-- l1000-example")
    block = re.search(r"```bash\n(.*?)```", text[marker:], re.S).group(1)
    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line.split("#")[0]) for line in block.strip().splitlines()]
    assert [c[1] for c in commands] == ["simulate", "dataset", "train", "predict"]
    for args in commands:
        assert args[0] == ".venv/bin/moakit"
        args = ["smoke" if a == "cpu" else a for a in args[1:]]
        res = invoke(*args, "--quiet") if args[0] == "train" else invoke(*args)
        assert res.exit_code == 0, (args, res.stdout + res.stderr)
    calls = pd.read_csv(tmp_path / "calls_by_compound.csv")
    assert calls["rank"].max() == 5 and calls.probability.between(0, 1).all()


# --------------------------------------------------------------------------- issue 21: measurement + recorded genes


def test_rare_moas_are_the_nonscored_targets(lincs, dataset):
    """MoAs dropped for too few compounds become the auxiliary (non-scored) targets of the
    training rows, so the models with a non-scored stage or pre-training train on L1000."""
    out, _ = dataset
    info = json.loads((out / "dataset.json").read_text())
    rare = info["nonscored_targets"]
    assert rare and set(rare.values()) <= {d["moa"] for d in info["dropped_targets"]}
    frame = pd.read_parquet(out / "train_targets_nonscored.parquet")
    features = pd.read_parquet(out / "train_features.parquet", columns=["sig_id"])
    assert frame.sig_id.tolist() == features.sig_id.tolist() and list(frame.columns[1:]) == list(rare)
    assert set(rare).isdisjoint(info["targets"]) and (frame[list(rare)].sum() > 0).all()
    sig = _tsv(lincs / "siginfo_beta.txt").set_index("sig_id").loc[frame.sig_id]
    comp = _tsv(lincs / "compoundinfo_beta.txt")
    for column, moa in rare.items():
        having = set(comp.loc[comp.moa.str.split("|").apply(lambda ms, m=moa: m in ms), "pert_id"])
        np.testing.assert_array_equal(frame[column].to_numpy(), sig.pert_id.isin(having).to_numpy().astype(int))
    data = __import__("moakit").load_dataset(out)
    assert data.Y_nonscored is not None and list(data.Y_nonscored.columns[1:]) == list(rare)


def test_a_model_with_non_scored_pretraining_trains_on_an_l1000_dataset(dataset, tmp_path):
    from moakit.config import load_config
    from moakit.validate import needs_of

    assert "Y_nonscored" in needs_of(load_config("three_stage_nn", profile="smoke"))
    res = invoke("train", "cnn1d", "--data", dataset[0], "--out", tmp_path / "run", "--profile", "smoke", "--quiet")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert (tmp_path / "run" / "test_predictions.csv").exists()


def test_evaluate_on_held_out_compounds_beside_a_shuffled_baseline(dataset, l1000_run, tmp_path):
    """`moakit evaluate` of an l1000 run: the test set is the held-out compounds (drugs
    unseen in training), scored against answers/, with the shuffled baseline's log loss,
    PR-AUC and ROC-AUC on the same rows."""
    import shutil

    from sklearn.metrics import roc_auc_score

    from moakit.evaluate import evaluate
    from moakit.metrics import mean_log_loss
    from moakit.runs import layout

    out, _ = dataset
    run = shutil.copytree(l1000_run, tmp_path / "run")
    result = evaluate(run, shuffled_baseline=1)
    test = result.summary["sets"]["test"]
    answers = pd.read_parquet(out / "answers/test_targets_scored.parquet")
    drugs = pd.read_parquet(out / "answers/test_drug.parquet")
    train_drugs = pd.read_parquet(out / "train_drug.parquet").drug_id
    assert test["rows"] == len(answers) and set(drugs.drug_id).isdisjoint(train_drugs)
    shuffled = pd.read_csv(layout.shuffled_dir(run, 0, "simple_nn") / layout.TEST_PREDICTIONS)
    shuffled = shuffled.set_index("sig_id").loc[answers.sig_id, list(answers.columns[1:])].to_numpy()
    y = answers.drop(columns="sig_id").to_numpy()
    has = (y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y))
    assert test["shuffled_log_loss"] == pytest.approx(mean_log_loss(y, shuffled), rel=1e-5)
    roc = [roc_auc_score(y[:, j], shuffled[:, j]) for j in np.flatnonzero(has)]
    assert test["mean_shuffled_roc_auc"] == pytest.approx(np.mean(roc), rel=1e-6)
    table = result.tables["test"]
    assert {"shuffled_roc_auc_mean", "shuffled_pr_auc_mean", "shuffled_log_loss_mean"} <= set(table.columns)
    assert test["beats_shuffled"] + test["no_better_than_shuffled"] == test["targets_with_positives"]
    res = invoke("evaluate", run)  # the baseline seed already trained is reused
    assert res.exit_code == 0, res.stdout + res.stderr
    assert f"mean ROC-AUC {test['mean_roc_auc']:.4f} (shuffled {test['mean_shuffled_roc_auc']:.4f})" in res.stdout


def test_run_records_gene_ids_and_predict_aligns_by_them(lincs, dataset, l1000_run, tmp_path):
    """columns.json records the Entrez id and symbol of every gene column; prediction aligns
    by those, not by the column names or the training folder (here both unusable)."""
    import shutil

    from moakit.runs import layout

    out, _ = dataset
    saved = json.loads((l1000_run / layout.COLUMNS).read_text())
    genes = pd.read_csv(out / "genes.csv", dtype=str)
    assert saved["gene_ids"] == genes.entrez_id.tolist() and saved["gene_symbols"] == genes.symbol.tolist()
    res = invoke("predict", "--run", l1000_run, "--features", _matrix(lincs), "--out", tmp_path / "a.csv")
    assert res.exit_code == 0, res.stdout + res.stderr
    run = shutil.copytree(l1000_run, tmp_path / "run")
    saved["genes"] = [f"g-{s}" for s in saved["gene_symbols"]]  # names that are no Entrez id, unknown to genes.csv
    (run / layout.COLUMNS).write_text(json.dumps(saved))
    res = invoke("predict", "--run", run, "--features", _matrix(lincs), "--out", tmp_path / "b.csv")
    assert res.exit_code == 0, res.stdout + res.stderr
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    pd.testing.assert_frame_equal(a, b)
    del saved["gene_ids"]  # without the record: the names are the only clue, and they say nothing
    (run / layout.COLUMNS).write_text(json.dumps(saved))
    res = invoke("predict", "--run", run, "--features", _matrix(lincs), "--out", tmp_path / "c.csv")
    assert "has no known Entrez id" in clean_exit(res, (1,))
