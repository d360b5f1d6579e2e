"""The data layer: loading every supported format, and a clear error for each bad input."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from moakit.data.io import DataError, load, read_submission


def test_load_reads_typed_dataset(tiny_folder):
    moa = load(tiny_folder)
    tr = moa.train
    assert tr.genes.dtype == np.float32 and tr.genes.shape == (40, 6)
    assert tr.cells.shape == (40, 4)
    assert tr.scored.shape == (40, 3) and tr.scored.dtype == np.float32
    assert tr.nonscored.shape == (40, 2)
    assert tr.scored_names == ["target_a", "target_b", "target_c"]
    assert tr.is_control.sum() == 4
    assert set(np.unique(tr.cp_time)) <= {0, 1, 2}
    assert tr.drug_id[0] == "drug000"
    assert moa.test.scored is None and len(moa.test) == 12
    assert tr.cp_onehot().sum(axis=1).tolist() == [2.0] * 40


def test_formats_csv_zip_and_parquet_give_same_data(tiny_folder, tmp_path):
    base = load(tiny_folder)
    zipped = tmp_path / "zipped"
    parquet = tmp_path / "parquet"
    zipped.mkdir()
    parquet.mkdir()
    for csv in tiny_folder.glob("*.csv"):
        with zipfile.ZipFile(zipped / f"{csv.name}.zip", "w") as zf:
            zf.write(csv, csv.name)
        pd.read_csv(csv).to_parquet(parquet / f"{csv.stem}.parquet")
    for folder in (zipped, parquet):
        other = load(folder)
        np.testing.assert_array_equal(other.train.genes, base.train.genes)
        np.testing.assert_array_equal(other.train.scored, base.train.scored)


def test_targets_in_other_order_are_aligned(tiny_folder):
    base = load(tiny_folder)
    path = tiny_folder / "train_targets_scored.csv"
    pd.read_csv(path).iloc[::-1].to_csv(path, index=False)
    path = tiny_folder / "train_drug.csv"
    pd.read_csv(path).sample(frac=1.0, random_state=1).to_csv(path, index=False)
    moa = load(tiny_folder)
    np.testing.assert_array_equal(moa.train.scored, base.train.scored)
    np.testing.assert_array_equal(moa.train.drug_id, base.train.drug_id)


def _edit(folder, name, fn):
    path = folder / name
    frame = pd.read_csv(path)
    frame = fn(frame)
    frame.to_csv(path, index=False)


@pytest.mark.parametrize(
    "name, edit, expected",
    [
        ("train_features.csv", lambda f: f.drop(columns=["cp_dose"]), "missing column(s) 'cp_dose'"),
        ("train_features.csv", lambda f: f.assign(**{"g-2": f["g-2"].astype(object).where(f.index != 3, "abc")}),
         "column 'g-2', row 4: non-numeric value 'abc'"),
        ("train_features.csv", lambda f: f.assign(**{"c-1": f["c-1"].where(f.index != 5, np.nan)}),
         "column 'c-1', row 6: value nan is not finite"),
        ("train_features.csv", lambda f: f.assign(**{"g-0": f["g-0"].where(f.index != 2, np.inf)}),
         "column 'g-0', row 3: value inf is not finite"),
        ("train_features.csv", lambda f: f.assign(cp_type=f.cp_type.where(f.index != 7, "trt_xx")),
         "column 'cp_type', row 8: unknown value 'trt_xx'"),
        ("train_features.csv", lambda f: f.assign(cp_time=f.cp_time.where(f.index != 1, 96)),
         "column 'cp_time', row 2: unknown value 96"),
        ("test_features.csv", lambda f: f.assign(cp_dose=f.cp_dose.where(f.index != 0, "D3")),
         "column 'cp_dose', row 1: unknown value 'D3'"),
        ("train_targets_scored.csv", lambda f: f.assign(target_b=f.target_b.where(f.index != 9, 2)),
         "column 'target_b', row 10: target 2.0 is not 0 or 1"),
        ("train_targets_scored.csv", lambda f: f.iloc[1:], "1 sig_id(s) of train_features.csv have no row here"),
        ("train_targets_scored.csv",
         lambda f: pd.concat([f, f.iloc[[0]].assign(sig_id="id_extra")]), "are not in train_features.csv"),
        ("train_features.csv", lambda f: f.assign(sig_id=f.sig_id.where(f.index != 4, f.sig_id[0])),
         "row 5: sig_id 'id_tr00000' appears more than once"),
        ("test_features.csv", lambda f: f.drop(columns=["g-5"]), "lacks 1 gene column(s) of"),
        ("sample_submission.csv", lambda f: f.drop(columns=["target_c"]), "lacks 1 target column(s) of"),
    ],
)
def test_bad_input_names_file_column_and_row(tiny_folder, name, edit, expected):
    _edit(tiny_folder, name, edit)
    with pytest.raises(DataError) as err:
        load(tiny_folder)
    assert name in str(err.value)
    assert expected in str(err.value)


def test_duplicated_column_is_reported(tiny_folder):
    path = tiny_folder / "train_features.csv"
    lines = path.read_text().splitlines()
    lines = [line + "," + line.split(",")[5] for line in lines]  # repeat column g-1 at the end
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train_features.csv: column 'g-1' appears more than once"):
        load(tiny_folder)


def test_empty_files_are_reported(tiny_folder):
    (tiny_folder / "test_features.csv").write_text("")
    with pytest.raises(DataError, match="test_features.csv: file is empty"):
        load(tiny_folder)
    header = (tiny_folder / "train_features.csv").read_text().splitlines()[0]
    (tiny_folder / "train_features.csv").write_text(header + "\n")
    with pytest.raises(DataError, match="train_features.csv: file has a header but no rows"):
        load(tiny_folder)


def test_missing_required_file(tiny_folder):
    (tiny_folder / "train_targets_scored.csv").unlink()
    with pytest.raises(DataError, match="missing train_targets_scored"):
        load(tiny_folder)


def test_optional_files_may_be_absent(tiny_folder):
    (tiny_folder / "train_drug.csv").unlink()
    (tiny_folder / "train_targets_nonscored.csv").unlink()
    moa = load(tiny_folder)
    assert moa.train.drug_id is None and moa.train.nonscored is None


def test_submission_values_outside_unit_interval(tiny_folder):
    path = tiny_folder / "sample_submission.csv"
    frame = pd.read_csv(path)
    frame.loc[3, "target_b"] = 1.5
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'target_b', row 4: probability 1.5 outside \[0, 1\]"):
        read_submission(path)
