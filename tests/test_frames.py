"""moakit.data.frames: the API's arguments turned into a MoAData with moakit.data.io's checks,
so an argument and a file with the same problem get the same message (the argument's name
in place of the file's path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moakit.data.frames import MoADataset, features_frame, targets_frame, training_data
from moakit.data.io import DataError, load, read_answers

from conftest import write_tiny_folder


@pytest.fixture
def tiny(tmp_path):
    folder = write_tiny_folder(tmp_path / "tiny", n_train=30, n_test=8)
    X = pd.read_csv(folder / "train_features.csv")
    Y = pd.read_csv(folder / "train_targets_scored.csv")
    return folder, X, Y


def test_a_dataset_round_trips_through_the_frames(tiny):
    folder, X, Y = tiny
    data = load(folder)
    X2, Y2 = features_frame(data.train), targets_frame(data.train.sig_id, data.train.scored, data.train.scored_names)
    pd.testing.assert_frame_equal(X2, X, check_dtype=False)
    pd.testing.assert_frame_equal(Y2, Y, check_dtype=False)
    again, *_ = training_data(X2, Y2, None, None, None)
    np.testing.assert_array_equal(again.train.scored, data.train.scored[np.argsort(data.train.sig_id)])
    assert isinstance(MoADataset(X=X2, Y=Y2, X_test=X2.iloc[:0]).fit_args["X_test"], type(None))


def test_a_target_that_is_not_0_or_1_reads_as_in_a_file(tiny, tmp_path):
    folder, X, Y = tiny
    bad = Y.copy()
    bad.loc[3, "target_b"] = 2
    bad.to_csv(tmp_path / "answers.csv", index=False)
    with pytest.raises(DataError) as from_file:
        read_answers(tmp_path / "answers.csv", X["sig_id"].to_numpy())
    with pytest.raises(DataError) as from_frame:
        training_data(X, bad, None, None, None)
    assert str(from_file.value) == f"{tmp_path / 'answers.csv'}: column 'target_b', row 4: target 2.0 is not 0 or 1"
    assert str(from_frame.value) == "Y: column 'target_b', row 4: target 2.0 is not 0 or 1"


def test_array_targets_get_the_files_value_checks(tiny):
    _, X, Y = tiny
    values = Y.drop(columns="sig_id").to_numpy().astype(float)
    values[5, 1] = np.nan
    with pytest.raises(DataError, match=r"^Y: column 'target_1', row 6: value nan is not finite \(NaN or inf\)$"):
        training_data(X, values, None, None, None)
    words = Y.drop(columns="sig_id").to_numpy().astype(object)
    words[2, 0] = "yes"
    with pytest.raises(DataError, match=r"^Y: column 'target_0', row 3: non-numeric value 'yes'$"):
        training_data(X, words, None, None, None)
    with pytest.raises(DataError, match=r"^Y: expected a 2-D \(rows, targets\) table"):
        training_data(X, values[:, 0], None, None, None)


def test_a_targets_frame_without_targets_and_a_drug_table_without_drug_ids(tiny):
    _, X, Y = tiny
    with pytest.raises(DataError, match=r"^Y_nonscored: no target columns besides sig_id$"):
        training_data(X, Y, Y[["sig_id"]], None, None)
    drugs = pd.DataFrame({"sig_id": X["sig_id"], "compound": "x"})
    with pytest.raises(DataError, match=r"^drug_id: missing column\(s\) 'drug_id'$"):
        training_data(X, Y, None, drugs, None)
