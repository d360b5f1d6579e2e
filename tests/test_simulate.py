"""The lish-moa simulator: files, determinism, realism facts, the real-label mode."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moakit.data import schema
from moakit.data.simulate import CONTROL_DRUG, simulate

REAL_LABELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lish-moa-labels"
FILES = [
    "train_features.csv", "train_targets_scored.csv", "train_targets_nonscored.csv", "train_drug.csv",
    "test_features.csv", "sample_submission.csv", "answers/test_targets_scored.csv",
    "answers/test_targets_nonscored.csv", "answers/test_drug.csv",
]


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict:
    folder = simulate(tmp_path_factory.mktemp("simulate") / "data", n_rows=1500, seed=5)
    read = lambda name: pd.read_csv(folder / name)  # noqa: E731
    return {
        "folder": folder,
        "train": read("train_features.csv"), "test": read("test_features.csv"),
        "scored": read("train_targets_scored.csv"), "nonscored": read("train_targets_nonscored.csv"),
        "drug": read("train_drug.csv"), "sub": read("sample_submission.csv"),
        "test_scored": read("answers/test_targets_scored.csv"),
        "test_nonscored": read("answers/test_targets_nonscored.csv"),
        "test_drug": read("answers/test_drug.csv"),
    }


def test_files_shapes_and_columns(sim):
    folder = sim["folder"]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.csv")) == sorted(FILES)
    feature_cols = ["sig_id", "cp_type", "cp_time", "cp_dose", *schema.GENE_COLUMNS, *schema.CELL_COLUMNS]
    train, test = sim["train"], sim["test"]
    assert list(train.columns) == feature_cols and list(test.columns) == feature_cols
    assert len(train) + len(test) == 1500
    assert 0.12 < len(test) / 1500 < 0.28
    scored, nonscored = schema.scored_target_names(), schema.nonscored_target_names()
    for name, cols, ids in (("scored", scored, train.sig_id), ("nonscored", nonscored, train.sig_id),
                            ("test_scored", scored, test.sig_id), ("test_nonscored", nonscored, test.sig_id)):
        frame = sim[name]
        assert list(frame.columns) == ["sig_id", *cols]
        assert (frame.sig_id.to_numpy() == ids.to_numpy()).all()
        assert set(np.unique(frame[cols].to_numpy())) <= {0, 1}
    assert list(sim["sub"].columns) == ["sig_id", *scored]
    assert (sim["sub"][scored].to_numpy() == 0.5).all() and (sim["sub"].sig_id == test.sig_id).all()
    assert list(sim["drug"].columns) == ["sig_id", "drug_id"] and (sim["drug"].sig_id == train.sig_id).all()
    assert (sim["test_drug"].sig_id == test.sig_id).all()
    ids = pd.concat([train.sig_id, test.sig_id])
    assert ids.is_unique and ids.str.fullmatch(r"id_[0-9a-f]{9}").all()
    assert pd.concat([sim["drug"].drug_id, sim["test_drug"].drug_id]).astype(str).str.fullmatch(r"[0-9a-f]{9}").all()
    assert set(train.cp_type) == set(schema.CP_TYPES) and set(train.cp_time) == set(schema.CP_TIMES)
    assert set(train.cp_dose) == set(schema.CP_DOSES)


def test_loads_with_moakit_reader(sim):
    from moakit.data.io import load, read_answers

    data = load(sim["folder"])
    assert data.train.genes.shape == (len(sim["train"]), 772) and data.test.cells.shape == (len(sim["test"]), 100)
    answers = read_answers(sim["folder"] / "answers" / "test_targets_scored.csv", data.test.sig_id,
                           data.train.scored_names)
    assert answers.shape == (len(sim["test"]), 206)


def test_deterministic(tmp_path):
    a = simulate(tmp_path / "a", n_rows=600, seed=7)
    b = simulate(tmp_path / "b", n_rows=600, seed=7)
    c = simulate(tmp_path / "c", n_rows=600, seed=8)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "train_features.csv").read_bytes() != (c / "train_features.csv").read_bytes()


def test_controls(sim):
    train, test = sim["train"], sim["test"]
    both = pd.concat([train, test])
    share = (both.cp_type == "ctl_vehicle").mean()
    assert 0.06 < share < 0.10
    ctl = (train.cp_type == "ctl_vehicle").to_numpy()
    assert sim["scored"].iloc[:, 1:].to_numpy()[ctl].sum() == 0
    assert sim["nonscored"].iloc[:, 1:].to_numpy()[ctl].sum() == 0
    assert (sim["drug"].drug_id[ctl] == CONTROL_DRUG).all() and (sim["drug"].drug_id[~ctl] != CONTROL_DRUG).all()
    test_ctl = (test.cp_type == "ctl_vehicle").to_numpy()
    assert test_ctl.sum() > 0 and sim["test_scored"].iloc[:, 1:].to_numpy()[test_ctl].sum() == 0


def test_value_ranges_and_shapes_of_distributions(sim):
    from scipy.stats import kurtosis, skew

    frame = pd.concat([sim["train"], sim["test"]])
    genes = frame[schema.GENE_COLUMNS].to_numpy()
    cells = frame[schema.CELL_COLUMNS].to_numpy()
    assert genes.min() >= -10 and genes.max() <= 10
    assert cells.min() >= -10 and cells.max() <= 6.5
    assert abs(genes.mean()) < 0.2 and 0.6 < genes.std() < 2.0
    assert kurtosis(genes.ravel()) > 1.0  # heavier tails than a normal
    assert cells.mean() < -0.1 and skew(cells.ravel()) < -1.0 and (cells <= -9.99).any()
    assert np.allclose(genes, np.round(genes, 4))
    # genes are correlated through shared pathways (independent columns would give |r| ~ 0.03)
    r = np.abs(np.corrcoef(genes[:1000].T)[np.triu_indices(genes.shape[1], 1)])
    assert (r > 0.3).mean() > 0.003
    # cell lines share the toxicity factor
    assert np.corrcoef(cells.T)[np.triu_indices(cells.shape[1], 1)].mean() > 0.3


def test_test_drugs_unseen_in_training(sim):
    train_drugs = set(sim["drug"].drug_id) - {CONTROL_DRUG}
    test_drugs = set(sim["test_drug"].drug_id) - {CONTROL_DRUG}
    assert test_drugs and not train_drugs & test_drugs
    # every scored target positive in test has positives in training
    positive_test = sim["test_scored"].iloc[:, 1:].sum() > 0
    assert (sim["scored"].iloc[:, 1:].sum()[positive_test] > 0).all()


def test_label_facts(sim):
    scored = pd.concat([sim["scored"], sim["test_scored"]]).iloc[:, 1:].to_numpy()
    nonscored = pd.concat([sim["nonscored"], sim["test_nonscored"]]).iloc[:, 1:].to_numpy()
    drugs = pd.concat([sim["drug"], sim["test_drug"]]).drug_id.to_numpy()
    per_row = scored.sum(axis=1)
    assert 0.25 < (per_row == 0).mean() < 0.55
    assert 0.005 < (per_row >= 2).mean() < 0.15 and per_row.max() <= 7
    rate = scored.mean(axis=0)
    assert rate.max() < 0.10 and np.median(rate) < 0.01
    assert nonscored.mean() < scored.mean() and (nonscored.sum(axis=0) == 0).sum() >= 71
    # labels are per drug: all replicates of a drug share them
    frame = pd.DataFrame(np.hstack([scored, nonscored])).assign(drug=drugs)
    assert (frame.groupby("drug").nunique().max(axis=None) == 1)
    sizes = pd.Series(drugs[drugs != CONTROL_DRUG]).value_counts()
    assert (sizes == 6).mean() > 0.6 and sizes.max() >= 20


def test_profiles_depend_on_labels(sim):
    """Cytotoxic MoAs lower cell viability; a drug's replicates look alike."""
    train, scored = sim["train"], sim["scored"]
    toxic = scored[[c for c in scored.columns if re.search(r"proteasome|tubulin|hdac|topoisomerase|cdk_", c)]]
    toxic_rows = toxic.sum(axis=1).to_numpy() > 0
    none_rows = (scored.iloc[:, 1:].sum(axis=1).to_numpy() == 0) & (train.cp_type == "trt_cp").to_numpy()
    cells = train[schema.CELL_COLUMNS].to_numpy()
    assert toxic_rows.sum() > 0
    assert cells[toxic_rows].mean() < cells[none_rows].mean() - 0.3


def test_refuses_to_overwrite(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=re.escape(str(target))):
        simulate(target, n_rows=200)
    assert (target / "keep.txt").read_text() == "mine" and len(list(target.iterdir())) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (simulate(empty, n_rows=200) / "train_features.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="file_format"):
        simulate(tmp_path / "x", n_rows=200, file_format="xlsx")
    with pytest.raises(ValueError, match="test_fraction"):
        simulate(tmp_path / "x", n_rows=200, test_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="train_targets_scored.csv.zip"):
        (tmp_path / "labels").mkdir()
        simulate(tmp_path / "x", labels_from=tmp_path / "labels")
    assert not (tmp_path / "x").exists()


def test_parquet(tmp_path):
    from moakit.data.io import load

    folder = simulate(tmp_path / "pq", n_rows=600, seed=2, file_format="parquet")
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert names == sorted([*(f.replace(".csv", ".parquet") for f in FILES), "answers/signatures.npz"])
    data = load(folder)
    csv = simulate(tmp_path / "csv", n_rows=600, seed=2)
    train = pd.read_csv(csv / "train_features.csv")
    assert (data.train.sig_id == train.sig_id.to_numpy()).all()
    assert np.allclose(data.train.genes, train[schema.GENE_COLUMNS].to_numpy(), atol=1e-6)
    assert pd.read_parquet(folder / "answers" / "test_targets_scored.parquet").shape[1] == 207


def test_real_labels(tmp_path):
    if not (REAL_LABELS / "train_targets_scored.csv.zip").exists():
        pytest.skip("real lish-moa labels not found at ../shared/data/lish-moa-labels; realistic-benchmark test skipped")
    folder = simulate(tmp_path / "real", seed=0, labels_from=REAL_LABELS, n_rows=123, file_format="parquet")
    read = lambda name, **kw: pd.read_parquet(folder / f"{name}.parquet", **kw)  # noqa: E731
    real_scored = pd.read_csv(REAL_LABELS / "train_targets_scored.csv.zip").set_index("sig_id")
    real_drug = pd.read_csv(REAL_LABELS / "train_drug.csv.zip").set_index("sig_id").drug_id
    train = read("train_features", columns=["sig_id", "cp_type", "cp_time", "cp_dose"])
    test = read("test_features", columns=["sig_id", "cp_type"])
    assert len(train) + len(test) == len(real_scored) == 23814
    assert set(train.sig_id) | set(test.sig_id) == set(real_scored.index)
    scored = read("train_targets_scored").set_index("sig_id")
    answers = read("answers/test_targets_scored").set_index("sig_id")
    assert (scored.to_numpy() == real_scored.loc[scored.index].to_numpy()).all()
    assert (answers.to_numpy() == real_scored.loc[answers.index].to_numpy()).all()
    drug = read("train_drug").set_index("sig_id").drug_id
    test_drug = read("answers/test_drug").set_index("sig_id").drug_id
    assert (drug == real_drug.loc[drug.index]).all() and (test_drug == real_drug.loc[test_drug.index]).all()
    is_ctl = pd.concat([train, test]).set_index("sig_id").cp_type == "ctl_vehicle"
    assert (is_ctl == (real_drug.loc[is_ctl.index] == CONTROL_DRUG)).all()
    assert not (set(drug) - {CONTROL_DRUG}) & (set(test_drug) - {CONTROL_DRUG})
    assert 0.15 < len(test) / 23814 < 0.25
    # a 6-replicate drug covers the 3 times x 2 doses once each
    six = drug.value_counts()
    six = six[six == 6].index[0]
    combos = train.set_index("sig_id").loc[drug.index[drug == six], ["cp_time", "cp_dose"]]
    assert len(combos.drop_duplicates()) == 6
