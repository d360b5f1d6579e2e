"""Names and allowed values of the lish-moa files.

The competition folder holds train_features, train_targets_scored, train_targets_nonscored,
train_drug (optional), test_features and sample_submission, each as .csv, .csv.zip or
.parquet. Everything here is a fact about that format, nothing about a model.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

N_GENES = 772
N_CELLS = 100
GENE_PREFIX = "g-"
CELL_PREFIX = "c-"
GENE_COLUMNS = [f"{GENE_PREFIX}{i}" for i in range(N_GENES)]
CELL_COLUMNS = [f"{CELL_PREFIX}{i}" for i in range(N_CELLS)]

ID_COLUMN = "sig_id"
DRUG_COLUMN = "drug_id"
META_COLUMNS = ["cp_type", "cp_time", "cp_dose"]

# Encodings: the integer code is the position in the tuple.
CP_TYPES = ("trt_cp", "ctl_vehicle")
CP_TIMES = (24, 48, 72)
CP_DOSES = ("D1", "D2")
CONTROL_TYPE = "ctl_vehicle"

# The layouts a features table is read under. "lish-moa": the competition's columns, all
# required, with the competition's vocabularies (a value outside them is an error).
# "panel": any panel (the moakit dataset folder): gene columns required, cell columns and
# cp_type / cp_time / cp_dose optional, cp_time / cp_dose vocabularies built from the data.
LISH_MOA_LAYOUT = "lish-moa"
PANEL_LAYOUT = "panel"
LISH_MOA_VOCAB = {"cp_time": CP_TIMES, "cp_dose": CP_DOSES}
# LINCS names of the meta columns, read as their lish-moa names.
META_ALIASES = {"pert_type": "cp_type", "pert_time": "cp_time", "pert_dose": "cp_dose"}
DATASET_INFO = "dataset.json"  # optional description of a dataset folder ({"layout": ..., ...})
GENE_INFO = "genes.csv"  # optional: column, entrez_id, symbol of each gene column, in column order

FILE_STEMS = {
    "train_features": True,
    "train_targets_scored": True,
    "train_targets_nonscored": False,
    "train_drug": False,
    "test_features": True,  # optional in a panel-layout folder
    "sample_submission": False,
}
EXTENSIONS = (".parquet", ".csv", ".csv.zip")

# Clipping to keep log loss finite, as the competition metric does.
EPS = 1e-15


@lru_cache(maxsize=1)
def target_names() -> dict[str, list[str]]:
    """The 206 scored and 402 non-scored target names of lish-moa, in competition order."""
    text = resources.files("moakit.data").joinpath("target_names.json").read_text()
    names = json.loads(text)
    return {"scored": list(names["scored"]), "nonscored": list(names["nonscored"])}


def scored_target_names() -> list[str]:
    return target_names()["scored"]


def nonscored_target_names() -> list[str]:
    return target_names()["nonscored"]
