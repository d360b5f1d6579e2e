"""The Python API: scikit-learn-style estimators over the same run folders as the CLI.

::

    import moakit

    data = moakit.simulate(n_rows=2000, seed=0)          # or moakit.load_dataset("lish-moa/")
    model = moakit.MoAModel("simple_nn", profile="cpu")
    model.fit(data.X, data.Y, Y_nonscored=data.Y_nonscored, drug_id=data.drug_id)
    model.oof_                                            # out-of-fold predictions (DataFrame)
    proba = model.predict_proba(data.X_test)              # DataFrame: sig_id x 206 targets
    model.save("runs/simple")                             # a `moakit train` run folder
    same = moakit.MoAModel.load("runs/simple")

Inputs are the lish-moa tables as pandas reads them (``train_features``: ``sig_id``,
``cp_type``, ``cp_time``, ``cp_dose``, ``g-*``, ``c-*``; targets: ``sig_id`` + one 0/1
column per target) or arrays in the same column order (without ``sig_id``). Rows are
matched by ``sig_id``, carried as a column or as an index named ``sig_id`` (as
``read_csv(..., index_col="sig_id")`` gives): ids that do not match are refused; pandas
objects without sig_ids are matched by their index as pandas does, arrays by position
(:mod:`moakit.validate`). Training sees the rows in sig_id order, whatever their order.

Training writes exactly what ``moakit train`` / ``moakit run`` write, into ``run_dir`` when
given (a rerun there resumes) or into a temporary folder that is deleted with the
estimator. Fitting changes no global state: numpy's and torch's global random generators,
torch's thread count and the warning filters are as before afterwards.

Here: discovery (``list_*``) and the data as DataFrames (:func:`load_dataset`,
:func:`simulate`); the estimators live in :mod:`moakit.api_model` (MoAModel),
:mod:`moakit.api_blend` (MoABlend) and :mod:`moakit.api_run` (what they share), the
arguments -> data adapters in :mod:`moakit.data.frames`; all are importable from here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from moakit.api_blend import MoABlend
from moakit.api_model import MoAModel
from moakit.data import schema
from moakit.data.dataset import Dataset
from moakit.data.frames import MoADataset
from moakit.data.frames import features_frame as _features_frame
from moakit.data.frames import targets_frame as _targets_frame
from moakit.data.frames import training_data as _training_data  # noqa: F401 (the fit arguments -> MoAData)
from moakit.runs import layout

__all__ = ["MoADataset", "MoAModel", "MoABlend", "list_models", "list_configs", "list_networks",
           "list_feature_steps", "list_backbones", "list_executors", "load_dataset", "simulate"]


# --------------------------------------------------------------------------- discovery


def list_models() -> list[str]:
    """Names of the registered models (what a config's ``model:`` may name)."""
    from moakit.models import MODELS

    return MODELS.names()


def list_networks() -> list[str]:
    """Names of the registered torch networks (what a saved estimator's ``spec.json`` names)."""
    from moakit.nn.blocks import NETWORKS

    return NETWORKS.names()


def list_feature_steps() -> list[str]:
    """Kinds of feature steps (what a config's ``features.steps[].kind`` may name)."""
    from moakit.features import STEP_KINDS

    return STEP_KINDS.names()


def list_backbones() -> list[str]:
    """CNN backbones moakit builds itself; ``backbone:`` may also name any timm model."""
    from moakit.models.deepinsight_cnn import CUSTOM_BACKBONES

    return CUSTOM_BACKBONES.names()


def list_executors() -> list[str]:
    """Where fold jobs can run (``--executor``; ``ray`` needs the ``moakit[ray]`` extra)."""
    from moakit.executors import EXECUTORS

    return EXECUTORS.names()


def list_configs(kind: str | None = None) -> pd.DataFrame:
    """The shipped configs: one row per config with its kind (``model`` or ``blend``), the
    model it trains (or the entries of a blend), its profiles and its description.

    ``kind`` keeps only ``"model"`` or ``"blend"`` configs."""
    from moakit.config import packaged_configs, read_yaml

    if kind not in (None, "model", "blend"):
        raise ValueError(f"kind must be 'model', 'blend' or None, not {kind!r}")
    rows = []
    for name, path in sorted(packaged_configs().items()):
        raw = read_yaml(path)
        is_blend = "models" in raw
        if kind is not None and kind != ("blend" if is_blend else "model"):
            continue
        models = ([str(e.get("name", e.get("config"))) for e in raw["models"] if isinstance(e, dict)]
                  if is_blend else [str(raw.get("model", ""))])
        rows.append({"name": name, "kind": "blend" if is_blend else "model", "models": models,
                     "profiles": ["full", *list((raw.get("profiles") or {}).keys())],
                     "description": str(raw.get("description", "")).strip()})
    return pd.DataFrame(rows, columns=["name", "kind", "models", "profiles", "description"])


# --------------------------------------------------------------------------- data as DataFrames


def _dataset_from_folder(folder: Path) -> MoADataset:
    from moakit.data.io import load, read_answers
    from moakit.runs import records

    data = load(folder)
    tr, te = data.train, data.test
    y_test = None
    path = records.find_test_answers(folder)
    if path is not None:
        y_test = _targets_frame(te.sig_id, read_answers(path, te.sig_id, tr.scored_names), tr.scored_names)
    test_drugs = _answer_drugs(layout.answers_dir(folder), te)
    return MoADataset(
        X=_features_frame(tr),
        Y=_targets_frame(tr.sig_id, tr.scored, tr.scored_names),
        X_test=_features_frame(te),
        Y_nonscored=None if tr.nonscored is None else _targets_frame(tr.sig_id, tr.nonscored, tr.nonscored_names),
        drug_id=None if tr.drug_id is None else pd.Series(tr.drug_id, name=schema.DRUG_COLUMN,
                                                          index=pd.Index(tr.sig_id, name=schema.ID_COLUMN)),
        Y_test=y_test,
        source=str(folder),
        test_drug_id=test_drugs,
        genes=data.genes,
        info=dict(data.info),
    )


def _answer_drugs(answers: Path, te: Dataset) -> pd.Series | None:
    """The test rows' drug ids (answers/test_drug), a Series indexed by sig_id, or None."""
    from moakit.data.io import find_file, read_drugs

    path = find_file(answers, layout.TEST_DRUG_STEM, required=False) if answers.is_dir() else None
    if path is None or len(te) == 0:
        return None
    return pd.Series(read_drugs(path, te.sig_id, "test_features"), name=schema.DRUG_COLUMN,
                     index=pd.Index(te.sig_id, name=schema.ID_COLUMN))


def load_dataset(folder: str | Path) -> MoADataset:
    """Read and validate a lish-moa folder (the competition files, as ``.csv``,
    ``.csv.zip`` or ``.parquet``) into DataFrames."""
    return _dataset_from_folder(Path(folder))


def simulate(n_rows: int = 2000, seed: int = 0, test_fraction: float = 0.2,
             labels_from: str | Path | None = None, out_dir: str | Path | None = None,
             generator: str = "pathway", effect_scale: float = 1.0, layout: str = "lish-moa") -> MoADataset:
    """Simulated MoA-like lish-moa data as DataFrames (see :mod:`moakit.data.simulate`);
    ``Y_test`` holds the test answers. The files are written to ``out_dir`` when given
    (it must not exist or be empty), otherwise to a temporary folder that is removed.
    ``generator`` (``"pathway"`` or ``"factor"``, :mod:`moakit.data.generators`) chooses how
    the profiles are made and ``effect_scale`` how strong the MoA effects are; the labels,
    drugs and split are the same for every generator. ``layout="l1000"``: a simulated LINCS
    folder (:mod:`moakit.data.simulate_l1000`, ``n_rows`` signatures) through ``moakit dataset
    l1000``'s defaults (978 landmark genes, its own MoAs, compounds held out); ``out_dir``
    then receives ``lincs/`` and ``dataset/``."""
    from moakit.data.simulate import simulate as write_simulation

    if layout == "l1000":
        from moakit.data.l1000 import simulate_l1000_dataset

        if out_dir is not None:
            return _dataset_from_folder(simulate_l1000_dataset(out_dir, n_rows, seed, test_fraction))
        with tempfile.TemporaryDirectory(prefix="moakit-sim-") as tmp:
            data = _dataset_from_folder(simulate_l1000_dataset(Path(tmp) / "sim", n_rows, seed, test_fraction))
        data.source = ""
        return data
    if layout != "lish-moa":
        raise ValueError(f"layout must be 'lish-moa' or 'l1000', not {layout!r}")

    options = dict(n_rows=n_rows, seed=seed, labels_from=labels_from, test_fraction=test_fraction,
                   generator=generator, effect_scale=effect_scale)
    if out_dir is not None:
        path = write_simulation(out_dir, **options)
        return _dataset_from_folder(Path(path))
    with tempfile.TemporaryDirectory(prefix="moakit-sim-") as tmp:
        path = write_simulation(Path(tmp) / "data", **options)
        data = _dataset_from_folder(Path(path))
    data.source = ""
    return data
