"""The simulator's profile generators (moakit.data.generators): the ``factor`` generator,
``effect_scale``, and the default ``pathway`` generator left unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import clean_exit, invoke
from scipy.stats import kurtosis

from moakit.data import schema
from moakit.data.simulate import simulate

# sha256 over (path, sha256 of the bytes) of every file of simulate(n_rows=300, seed=0),
# answers/signatures.npz excepted, computed with the simulator as it was before the
# generators existed (git HEAD 6f979cc): the default data must not change by a byte.
DEFAULT_DIGEST = "acfa275e90746e4fc96e5305c8541afd9467005db34f53646e77be24e06d8bb6"
# Files that do not depend on the profiles (labels, drugs, split, sample submission).
LABEL_FILES = ["train_targets_scored.csv", "train_targets_nonscored.csv", "train_drug.csv", "sample_submission.csv",
               "answers/test_targets_scored.csv", "answers/test_targets_nonscored.csv", "answers/test_drug.csv"]
META = ["sig_id", "cp_type", "cp_time", "cp_dose"]


def digest(folder: Path, skip=("signatures.npz",)) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in skip:
            h.update(str(p.relative_to(folder)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    """The same seed with both generators (2,000 rows)."""
    root = tmp_path_factory.mktemp("generators")
    out = {}
    for gen in ("pathway", "factor"):
        folder = simulate(root / gen, n_rows=2000, seed=4, generator=gen)
        features = pd.concat([pd.read_csv(folder / "train_features.csv"), pd.read_csv(folder / "test_features.csv")])
        out[gen] = {"folder": folder, "features": features}
    return out


def test_default_generator_unchanged_byte_for_byte(tmp_path):
    assert digest(simulate(tmp_path / "a", n_rows=300, seed=0)) == DEFAULT_DIGEST
    assert digest(simulate(tmp_path / "b", n_rows=300, seed=0, generator="pathway", effect_scale=1.0)) == DEFAULT_DIGEST


def test_factor_deterministic_by_seed(tmp_path):
    a = simulate(tmp_path / "a", n_rows=400, seed=7, generator="factor")
    b = simulate(tmp_path / "b", n_rows=400, seed=7, generator="factor")
    c = simulate(tmp_path / "c", n_rows=400, seed=8, generator="factor")
    assert digest(a, skip=()) != "" and files(a) == files(b)
    for name in files(a):
        if name.endswith(".csv"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "train_features.csv").read_bytes() != (c / "train_features.csv").read_bytes()


def test_layout_labels_and_split_identical_between_generators(pair):
    p, f = pair["pathway"]["folder"], pair["factor"]["folder"]
    assert files(p) == files(f)  # answers/signatures.npz included
    for name in LABEL_FILES:  # labels, drugs and split: the same bytes
        assert (p / name).read_bytes() == (f / name).read_bytes(), name
    fp, ff = pair["pathway"]["features"], pair["factor"]["features"]
    assert list(fp.columns) == list(ff.columns)
    assert fp[META].equals(ff[META])
    assert not np.allclose(fp[schema.GENE_COLUMNS].to_numpy(), ff[schema.GENE_COLUMNS].to_numpy())
    with np.load(f / "answers" / "signatures.npz") as sig:
        assert sig["total"].shape == (206, schema.N_GENES) and sig["strength"].shape == (206,)


def test_factor_values_in_lish_moa_ranges(pair):
    x = pair["factor"]["features"]
    genes, cells = x[schema.GENE_COLUMNS].to_numpy(), x[schema.CELL_COLUMNS].to_numpy()
    assert genes.min() >= -10 and genes.max() <= 10 and cells.min() >= -10 and cells.max() <= 6.5
    assert np.allclose(genes, np.round(genes, 4)) and np.allclose(cells, np.round(cells, 4))
    assert 0.6 < genes.std() < 2.5 and cells.min() < -8  # cytotoxic rows reach the floor
    assert cells.mean() < 0  # viability skewed negative, as in lish-moa


def _control_pair_share(features: pd.DataFrame, r: float = 0.3) -> float:
    """Share of control-row pairs whose centred gene profiles correlate with |r| > 0.3: a
    batch (plate) effect makes rows on one plate alike."""
    g = features.loc[features.cp_type == "ctl_vehicle", schema.GENE_COLUMNS].to_numpy()
    corr = np.corrcoef(g - g.mean(axis=0))
    upper = corr[np.triu_indices_from(corr, 1)]
    return float((np.abs(upper) > r).mean())


def test_generators_differ_in_documented_statistics(pair):
    fp, ff = pair["pathway"]["features"], pair["factor"]["features"]
    # plate effect: factor only (module docstring: 4 % of pairs against none)
    assert _control_pair_share(ff) > 0.01 > 0.002 > _control_pair_share(fp)
    # median excess kurtosis of the gene columns over treated rows: lower in factor
    kurt = {g: float(np.median(kurtosis(x.loc[x.cp_type == "trt_cp", schema.GENE_COLUMNS].to_numpy(), axis=0)))
            for g, x in (("pathway", fp), ("factor", ff))}
    assert kurt["factor"] < 0.7 * kurt["pathway"], kurt


def _logreg_vs_prior(folder: Path, n_targets: int = 8) -> tuple[float, float, float]:
    """On the most frequent targets with a positive test row: the test log loss (treated
    rows) of a logistic regression, that of the training prior, and the regression's mean
    ROC-AUC."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = pd.read_csv(folder / "train_features.csv"), pd.read_csv(folder / "test_features.csv")
    y_tr = pd.read_csv(folder / "train_targets_scored.csv").drop(columns="sig_id")
    y_te = pd.read_csv(folder / "answers" / "test_targets_scored.csv").drop(columns="sig_id")
    tr, te = (train.cp_type == "trt_cp").to_numpy(), (test.cp_type == "trt_cp").to_numpy()
    cols = [*schema.GENE_COLUMNS, *schema.CELL_COLUMNS]
    targets = [t for t in y_tr[tr].sum().sort_values(ascending=False).index if y_te[te][t].sum() > 0][:n_targets]
    model = make_pipeline(StandardScaler(), PCA(20, random_state=0), LogisticRegression(C=0.01, max_iter=500))
    ours, prior, auc = [], [], []
    for t in targets:
        y = y_tr.loc[tr, t].to_numpy()
        p = model.fit(train.loc[tr, cols].to_numpy(), y).predict_proba(test.loc[te, cols].to_numpy())[:, 1]
        ours.append(log_loss(y_te.loc[te, t], p, labels=[0, 1]))
        prior.append(log_loss(y_te.loc[te, t], np.full(te.sum(), y.mean()), labels=[0, 1]))
        auc.append(roc_auc_score(y_te.loc[te, t], p))
    return float(np.mean(ours)), float(np.mean(prior)), float(np.mean(auc))


def test_logistic_regression_learns_above_the_prior_on_factor_data(pair):
    # ranking, which the prior cannot do (its ROC-AUC is 0.5); on 400 test rows the log loss
    # of a few targets is too noisy to compare (0.90-1.09x the prior's on seeds 4-5, both
    # generators), the ROC-AUC is not (0.73-0.78 here, pathway 0.65-0.73)
    ours, prior, auc = _logreg_vs_prior(pair["factor"]["folder"])
    assert auc > 0.68, (ours, prior, auc)


def test_effect_scale_changes_only_profiles_and_zero_removes_the_signal(tmp_path, pair):
    for gen in ("pathway", "factor"):
        strong = simulate(tmp_path / f"{gen}-2", n_rows=2000, seed=4, generator=gen, effect_scale=2.0)
        base = pair[gen]["folder"]
        for name in LABEL_FILES:
            assert (base / name).read_bytes() == (strong / name).read_bytes(), name
        assert (base / "train_features.csv").read_bytes() != (strong / "train_features.csv").read_bytes()
    flat = simulate(tmp_path / "factor-0", n_rows=2000, seed=4, generator="factor", effect_scale=0.0)
    ours, prior, auc = _logreg_vs_prior(flat)
    assert auc < 0.6, (ours, prior, auc)  # nothing to learn


def test_real_label_mode_with_factor(tmp_path, pair):
    """--labels-from: the label files of a folder (here a simulated one) carry over."""
    src = pair["pathway"]["folder"]
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("train_targets_scored", "train_targets_nonscored", "train_drug"):
        pd.read_csv(src / f"{name}.csv").to_csv(labels / f"{name}.csv.zip", index=False)
    a = simulate(tmp_path / "p", seed=1, labels_from=labels, generator="pathway")
    b = simulate(tmp_path / "f", seed=1, labels_from=labels, generator="factor")
    for name in LABEL_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    scored = pd.concat([pd.read_csv(b / "train_targets_scored.csv"), pd.read_csv(b / "answers/test_targets_scored.csv")])
    original = pd.read_csv(src / "train_targets_scored.csv")
    assert len(scored) == len(original)
    merged = original.set_index("sig_id").loc[scored.sig_id]
    assert (merged.to_numpy() == scored.drop(columns="sig_id").to_numpy()).all()


def test_bad_generator_or_scale(tmp_path):
    with pytest.raises(ValueError, match="generator must be one of pathway, factor"):
        simulate(tmp_path / "x", n_rows=200, generator="nope")
    with pytest.raises(ValueError, match="effect_scale"):
        simulate(tmp_path / "y", n_rows=200, generator="factor", effect_scale=-1)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_and_api(tmp_path):
    import moakit

    res = invoke("simulate", tmp_path / "cli", "--rows", 300, "--seed", 2, "--generator", "factor",
                 "--effect-scale", 0.5)
    assert res.exit_code == 0, res.stdout + res.stderr
    data = moakit.simulate(n_rows=300, seed=2, generator="factor", effect_scale=0.5)
    cli_train = pd.read_csv(tmp_path / "cli" / "train_features.csv")
    assert np.allclose(cli_train[schema.GENE_COLUMNS].to_numpy(), data.X[schema.GENE_COLUMNS].to_numpy())
    assert "factor" in clean_exit(invoke("simulate", tmp_path / "bad", "--generator", "nope"), codes=(2,))
    clean_exit(invoke("simulate", tmp_path / "bad2", "--effect-scale", -1), codes=(2,))
