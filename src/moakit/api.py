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
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tarfile
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from moakit.artifacts import read_json, write_json
from moakit.runs import layout
from moakit.data import schema
from moakit.data.dataset import Dataset, MoAData
from moakit.data.io import DataError

__all__ = ["MoADataset", "MoAModel", "MoABlend", "list_models", "list_configs", "list_networks",
           "list_feature_steps", "list_backbones", "list_executors", "load_dataset", "simulate"]

ESTIMATOR_FILE = layout.ESTIMATOR  # the estimator's constructor arguments, beside the CLI's files
_FEATURE_COLUMNS_HINT = "cp_type, cp_time, cp_dose, then the g-* and c-* columns"


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
    from moakit.runner import EXECUTORS

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


@dataclass
class MoADataset:
    """A lish-moa dataset as DataFrames, in the files' layout (``sig_id`` first).

    ``X`` / ``X_test``: train / test features; ``Y`` / ``Y_nonscored``: scored / non-scored
    training targets; ``drug_id``: a Series of drug ids aligned with ``X`` (None if the
    folder has no train_drug); ``Y_test``: the test answers where known (a simulated
    folder's ``answers/``), else None. Any panel (a moakit dataset folder): ``X`` holds the
    columns the data has (genes, cells if any, cp_* if any; ``X_test`` has 0 rows when the
    folder has no test_features); ``test_drug_id``: the test rows' compounds where known
    (``answers/test_drug``, for ``predict_proba(..., by="compound", groups=...)``);
    ``genes``: column, entrez_id, symbol of each gene column where known; ``info``: the
    folder's dataset.json."""

    X: pd.DataFrame
    Y: pd.DataFrame
    X_test: pd.DataFrame
    Y_nonscored: pd.DataFrame | None = None
    drug_id: pd.Series | None = None
    Y_test: pd.DataFrame | None = None
    source: str = ""
    test_drug_id: pd.Series | None = None
    genes: pd.DataFrame | None = None
    info: dict = field(default_factory=dict)

    @property
    def fit_args(self) -> dict[str, Any]:
        """Keyword arguments for ``estimator.fit(**data.fit_args)``."""
        return {"X": self.X, "Y": self.Y, "Y_nonscored": self.Y_nonscored, "drug_id": self.drug_id,
                "X_test": self.X_test if len(self.X_test) else None}

    def __repr__(self) -> str:
        parts = [f"X={self.X.shape}", f"Y={self.Y.shape}", f"X_test={self.X_test.shape}"]
        if self.Y_nonscored is not None:
            parts.append(f"Y_nonscored={self.Y_nonscored.shape}")
        if self.drug_id is not None:
            parts.append(f"drugs={self.drug_id.nunique()}")
        if self.Y_test is not None:
            parts.append(f"Y_test={self.Y_test.shape}")
        return f"MoADataset({', '.join(parts)})"


def _features_frame(ds: Dataset) -> pd.DataFrame:
    columns: dict[str, Any] = {
        schema.ID_COLUMN: ds.sig_id,
        "cp_type": np.asarray(schema.CP_TYPES, dtype=object)[ds.cp_type.astype(np.int64)],
        "cp_time": np.asarray(ds.vocab.get("cp_time") or (0,))[ds.cp_time.astype(np.int64)],
        "cp_dose": np.asarray(ds.vocab.get("cp_dose") or ("",), dtype=object)[ds.cp_dose.astype(np.int64)],
    }
    frame = pd.DataFrame({k: v for k, v in columns.items() if k == schema.ID_COLUMN or k in ds.meta})
    numbers = pd.DataFrame(np.concatenate([ds.genes, ds.cells], axis=1).astype(np.float64),
                           columns=[*ds.gene_names, *ds.cell_names])
    return pd.concat([frame, numbers], axis=1)


def _targets_frame(sig_id: np.ndarray, values: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(np.asarray(values).astype(np.int64), columns=list(names))
    frame.insert(0, schema.ID_COLUMN, sig_id)
    return frame


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


# --------------------------------------------------------------------------- inputs -> Dataset


def _as_frame(X, what: str) -> pd.DataFrame:
    """A features table: a DataFrame as read from a features file, or an array with the
    same columns (without sig_id)."""
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, (str, Path)):
        raise TypeError(f"{what}: expected a DataFrame or an array, not a path; read the folder with "
                        f"moakit.load_dataset(path)")
    arr = np.asarray(X, dtype=object)
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a 2-D table, got an array of shape {arr.shape}")
    width = 3 + schema.N_GENES + schema.N_CELLS
    if arr.shape[1] != width:
        raise DataError(f"{what}: an array must have {width} columns ({_FEATURE_COLUMNS_HINT}), "
                        f"this one has {arr.shape[1]}; pass a DataFrame for other column sets")
    return pd.DataFrame(arr, columns=[*schema.META_COLUMNS, *schema.GENE_COLUMNS, *schema.CELL_COLUMNS])


def _features(X, what: str, prefix: str) -> tuple[Dataset, pd.Index]:
    """(Dataset, output index). Rows keep their order; the output index is the sig_id
    column (or an index named sig_id) when there is one, else the DataFrame's own index
    (or 0..n-1 for an array)."""
    from moakit.data.io import parse_features
    from moakit.validate import sig_ids_of

    frame = _as_frame(X, what)
    ids = sig_ids_of(X)
    if ids is not None:  # a sig_id column, or an index named sig_id
        index = pd.Index(ids, name=schema.ID_COLUMN)
        if schema.ID_COLUMN not in frame.columns:
            frame = frame.copy()
            frame.insert(0, schema.ID_COLUMN, ids)
    else:
        index = frame.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(frame))
        frame = frame.copy()
        frame.insert(0, schema.ID_COLUMN, [f"{prefix}_{i}" for i in range(len(frame))])
    if len(frame) == 0:
        raise DataError(f"{what}: no rows")
    return parse_features(what, frame.reset_index(drop=True)), index


def _targets(Y, ds: Dataset, has_ids: bool, what: str, default_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """A 0/1 target matrix aligned with ``ds`` and its column names."""
    from moakit.data.io import _align, _numeric_block

    if isinstance(Y, pd.DataFrame):
        names = [str(c) for c in Y.columns if c != schema.ID_COLUMN]
        if not names:
            raise DataError(f"{what}: no target columns besides sig_id")
        frame = Y.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        values = _numeric_block(what, frame, names)
        if schema.ID_COLUMN in frame.columns:
            if not has_ids:
                raise DataError(f"{what}: has a sig_id column but X has none, so its rows cannot be matched; "
                                "drop the column to match rows by position")
            values = _align(what, frame[schema.ID_COLUMN].astype(str).to_numpy(), values, ds.sig_id, Path("X"))
    else:
        values = np.asarray(Y, dtype=np.float64)
        if values.ndim != 2:
            raise DataError(f"{what}: expected a 2-D (rows, targets) table, got shape {values.shape}")
        names = (default_names if values.shape[1] == len(default_names)
                 else [f"target_{j}" for j in range(values.shape[1])])
        if not np.isfinite(values).all():
            row, j = (int(v[0]) for v in np.nonzero(~np.isfinite(values)))
            raise DataError(f"{what}: row {row + 1}, column {j + 1}: value {values[row, j]} is not finite")
        values = values.astype(np.float32)
    if len(values) != len(ds):
        raise DataError(f"{what}: {len(values)} rows, X has {len(ds)}")
    bad = (values != 0) & (values != 1)
    if bad.any():
        row, j = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(f"{what}: column {names[j]!r}, row {row + 1}: target {values[row, j]} is not 0 or 1")
    return values.astype(np.float32), names


def _drug_ids(drug_id, ds: Dataset) -> np.ndarray:
    """Drug ids in X's row order (``drug_id`` was matched to X's rows by sig_id before)."""
    if isinstance(drug_id, pd.DataFrame):  # a train_drug table: sig_id (column or index) + drug_id
        if schema.DRUG_COLUMN not in drug_id.columns:
            raise DataError("drug_id: a table needs a drug_id column (and its sig_ids as a sig_id column or index)")
        drug_id = drug_id[schema.DRUG_COLUMN]
    values = np.asarray(drug_id, dtype=object).astype(str)
    if values.ndim != 1 or len(values) != len(ds):
        raise DataError(f"drug_id: expected one drug id per row of X ({len(ds)}), got shape {values.shape}")
    return values


def _training_data(X, Y, Y_nonscored, drug_id, X_test) -> tuple[MoAData, pd.Index, pd.Index | None, tuple]:
    """(data, X's output index, X_test's, (train_back, test_back)). Every argument's rows
    are matched to X's by sig_id (moakit.validate.align_rows); rows carrying sig_ids are
    then put in sig_id order (``train_back[i]``: where input row i is in ``data.train``), so
    the fit does not depend on the order the rows come in."""
    from moakit.validate import align_rows, canonical_order, same_columns, sig_ids_of

    train, train_index = _features(X, "X", "train")
    has_ids = sig_ids_of(X) is not None
    Y, Y_nonscored, drug_id = (align_rows(what, arg, X) for what, arg in
                               (("Y", Y), ("Y_nonscored", Y_nonscored), ("drug_id", drug_id)))
    train.scored, train.scored_names = _targets(Y, train, has_ids, "Y", schema.scored_target_names())
    if Y_nonscored is not None:
        train.nonscored, train.nonscored_names = _targets(Y_nonscored, train, has_ids, "Y_nonscored",
                                                          schema.nonscored_target_names())
    if drug_id is not None:
        train.drug_id = _drug_ids(drug_id, train)
    test_index = None
    if X_test is not None:
        test, test_index = _features(X_test, "X_test", "test")
        test = same_columns(test, train, "X_test", "X")  # matched by name; names the columns one lacks
        from moakit.data.io import unify_panels

        train, test = unify_panels(train, test, "X_test")
    else:  # no test rows: the transforms are fitted on the training rows only
        test = train.subset(np.zeros(len(train), bool))
        test.scored = test.nonscored = test.drug_id = None
    test.scored_names = list(train.scored_names)
    test.nonscored_names = list(train.nonscored_names)
    orders = [canonical_order(ds.sig_id) if ids else np.arange(len(ds))
              for ds, ids in ((train, has_ids), (test, X_test is not None and sig_ids_of(X_test) is not None))]
    data = MoAData(train=train.subset(orders[0]), test=test.subset(orders[1]))
    back = tuple(np.argsort(order) for order in orders)  # input row -> its position in data
    return data, train_index, test_index, back


# --------------------------------------------------------------------------- shared machinery


@contextlib.contextmanager
def _global_state_kept():
    """Numpy's and torch's global generators, torch's thread count and the warning
    filters as they were, whatever training does to them."""
    import torch

    np_state = np.random.get_state()
    threads = torch.get_num_threads()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            yield
    finally:
        np.random.set_state(np_state)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _read_predictions(path: Path) -> pd.DataFrame:
    from moakit.runs.records import read_predictions

    return read_predictions(path)


def _json_params(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class _RunEstimator(BaseEstimator):
    """What MoAModel and MoABlend share: a run folder (given or temporary), predict,
    save / load, pickling."""

    _kind: str = ""

    # ---- run folder
    def _release(self) -> None:
        cleanup = self.__dict__.pop("_cleanup", None)
        if cleanup is not None:
            cleanup()

    def _new_run_dir(self) -> Path:
        self._release()
        if self.run_dir is not None:
            return Path(self.run_dir)
        path = tempfile.mkdtemp(prefix=f"moakit-{self._kind}-")
        self._cleanup = weakref.finalize(self, _remove_tree, path)
        return Path(path)

    def _check_fitted(self) -> None:
        if not hasattr(self, "run_dir_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(...) or "
                                 f"{type(self).__name__}.load(path) first")
        if not Path(self.run_dir_).is_dir():
            raise NotFittedError(f"{self.run_dir_}: the run folder of this {type(self).__name__} is gone")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "run_dir_")

    @property
    def _output_columns(self) -> list[str]:
        return list(self.target_names_)

    # ---- prediction
    def predict_proba(self, X, batch_size: int | None = None, by: str = "signature", groups=None) -> pd.DataFrame:
        """Probabilities of the scored targets for the rows of ``X`` (controls get 0), from
        the saved artifacts: a DataFrame with one column per target, indexed by ``sig_id``
        (or by X's own index when X has no sig_id column).

        ``by="compound"``: one row per compound, the mean of its signatures' probabilities,
        indexed by the compound id: ``groups`` (a Series matched to the rows by sig_id, or a
        list in X's row order), else X's ``drug_id`` / ``pert_id`` column."""
        from moakit.inference import predict_arrays

        if by not in ("signature", "compound"):
            raise ValueError(f"by must be 'signature' or 'compound', not {by!r}")
        self._check_fitted()
        ds, index = _features(X, "X", "row")
        _, pred, names = predict_arrays(self.run_dir_, ds, batch_size=batch_size)
        proba = pd.DataFrame(np.asarray(pred, np.float64), index=index, columns=names)
        if by == "signature":
            return proba
        from moakit.data.groups import group_ids, mean_by_group

        ids, name = group_ids(X, groups, proba.index)
        return mean_by_group(proba, ids, name)

    def predict(self, X, threshold: float = 0.5) -> pd.DataFrame:
        """0/1 labels: ``predict_proba(X) >= threshold``."""
        return (self.predict_proba(X) >= threshold).astype(np.int8)

    def explain(self, X, target: str, y=None, method: str = "ig", X_reference=None, top: int = 50,
                **options) -> dict:
        """Which raw columns of ``X`` (genes, cell lines, cp_time / cp_dose) drive the call of
        ``target``: ``method="ig"`` (Integrated Gradients, networks) or ``"permutation"``
        (any model; needs ``y``, the 0/1 labels of the target or of all targets for rows the
        model never saw). Baseline: the control rows of ``X_reference`` (default ``X``), else
        its mean. ``options``: max_rows, n_steps, n_repeats, negatives, seed, deletion. A
        JSON-ready dict (``top``: ranked columns with Entrez ids / cell line names; stability;
        deletion curve); :mod:`moakit.explain` documents it."""
        from moakit import explain as ex

        self._check_fitted()
        ds, _ = _features(X, "X", "row")
        ref = _features(X_reference, "X_reference", "ref")[0] if X_reference is not None else ds
        labels = None if y is None else np.asarray(y.drop(columns=schema.ID_COLUMN, errors="ignore")
                                                   if isinstance(y, pd.DataFrame) else y, np.float64)
        return ex.explain(ex.open_run(self.run_dir_), target, ds, labels, ref, method=method, top=top, **options)

    # ---- persistence
    def save(self, path: str | Path) -> Path:
        """Copy the run folder to ``path`` (which must not exist or be empty): the same
        files as the CLI's, usable by ``moakit predict --run PATH`` and ``load(PATH)``."""
        self._check_fitted()
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path}: already exists and is not empty; choose a new folder or remove it")
        if path.exists():
            path.rmdir()
        shutil.copytree(self.run_dir_, path)
        return path

    def _write_estimator_file(self, run_dir: Path) -> None:
        params = _json_params({k: v for k, v in self.get_params(deep=False).items() if k != "run_dir"})
        write_json(run_dir / ESTIMATOR_FILE, {"class": type(self).__name__, "params": params})

    @classmethod
    def _saved_params(cls, path: Path) -> dict | None:
        file = path / ESTIMATOR_FILE
        if not file.exists():
            return None
        saved = read_json(file)
        if saved.get("class") != cls.__name__:
            raise ValueError(f"{path}: holds a saved {saved.get('class')}, not a {cls.__name__}")
        return dict(saved.get("params", {}))

    # ---- pickling: a temporary run folder travels inside the pickle
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "_cleanup"}
        if "_cleanup" in self.__dict__ and hasattr(self, "run_dir_") and Path(self.run_dir_).is_dir():
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(self.run_dir_, arcname="run")
            state["_run_archive"] = buf.getvalue()
        return state

    def __setstate__(self, state: dict) -> None:
        archive = state.pop("_run_archive", None)
        self.__dict__.update(state)
        if archive is not None:
            root = tempfile.mkdtemp(prefix=f"moakit-{self._kind}-")
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
                tar.extractall(root, filter="data")
            self._cleanup = weakref.finalize(self, _remove_tree, root)
            self._relocate(Path(root) / "run")

    def _relocate(self, run_dir: Path) -> None:
        self.run_dir_ = run_dir


# --------------------------------------------------------------------------- one model


class MoAModel(_RunEstimator):
    """One model config trained over seeds x folds, as ``moakit train`` does.

    Parameters
    ----------
    config : a shipped model config name (see :func:`list_configs`) or a YAML path.
    profile : ``full`` (the write-up's numbers), ``cpu``, ``demo``, ``smoke`` or any profile
        the config defines.
    seeds : keep the first N seeds of the profile (or pass a list of seeds); None: the profile's.
    folds, cv : override the number of folds / the CV scheme (``old`` or ``drug``).
    params : a mapping merged into the config's model params (dictionaries key by key),
        e.g. ``{"train": {"epochs": 5}}``.
    run_dir : folder to train into (kept; a rerun there resumes finished folds); None: a
        temporary folder deleted with the estimator (``save`` keeps a copy).
    executor : ``local`` or ``ray``.
    device : where the networks train, ``cpu`` or ``cuda``; None: as the config says (a
        CUDA GPU when one is available).
    verbose : show progress bars (on stderr).

    Attributes after ``fit`` (or ``load``)
    --------------------------------------
    run_dir_ : the run folder; config_ : the resolved :class:`moakit.config.RunConfig`;
    target_names_ : the scored targets; feature_names_in_, n_features_in_ : gene and cell
    columns; oof_ : out-of-fold probabilities of the training rows (DataFrame); metrics_ :
    OOF log loss overall, treated rows, per seed (and per stage), the prior's (``prior``:
    in sample, for test numbers; ``prior_oof``: out of fold on the model's folds, for OOF);
    test_predictions_ : probabilities for ``X_test`` (None when fit without it); history_ :
    every fold's epoch records, one row per epoch (stage, seed, fold, epoch, train_loss,
    valid_loss, ...), read from the run folder.
    """

    _kind = "model"

    @property
    def history_(self) -> pd.DataFrame:
        """The learning curves of every fold (a DataFrame view of the fold histories)."""
        from moakit.runs import ModelRun

        if not hasattr(self, "run_dir_"):
            raise AttributeError("history_: the model is not fitted")
        return ModelRun(self.run_dir_).histories

    def __init__(self, config: str = "simple_nn", profile: str = "full", seeds: int | list[int] | None = None,
                 folds: int | None = None, cv: str | None = None, params: dict | None = None,
                 run_dir: str | Path | None = None, executor: str = "local", device: str | None = None,
                 verbose: bool = False) -> None:
        self.config = config
        self.profile = profile
        self.seeds = seeds
        self.folds = folds
        self.cv = cv
        self.params = params
        self.run_dir = run_dir
        self.executor = executor
        self.device = device
        self.verbose = verbose

    def resolved_config(self):
        """The :class:`moakit.config.RunConfig` that ``fit`` trains (config + profile + overrides)."""
        from moakit.config import RunConfig, deep_merge, load_config

        cfg = load_config(self.config, profile=self.profile, seeds=self.seeds, folds=self.folds, cv=self.cv)
        if self.params:
            cfg = RunConfig(**{**cfg.model_dump(), "params": deep_merge(cfg.params, dict(self.params))})
        return cfg

    def fit(self, X, Y, Y_nonscored=None, drug_id=None, X_test=None) -> "MoAModel":
        """Train on the rows of ``X`` with scored targets ``Y``.

        ``Y_nonscored`` is needed by the models with a non-scored stage or phase (3-stage NN,
        2-stage NN + TabNet, 2-heads ResNet, 1D-CNN), ``drug_id`` by the drug-aware CV. ``X_test`` (optional)
        joins the fit of the unsupervised transforms, as the winners fitted them on train +
        test, and gets predictions in ``test_predictions_``."""
        from moakit import runner
        from moakit.validate import check_fit_arguments
        from moakit.workflow import check_models

        cfg = self.resolved_config()
        data, train_index, test_index, back = _training_data(X, Y, Y_nonscored, drug_id, X_test)
        check_fit_arguments({f"config {self.config!r}": cfg}, data, "MoAModel.fit")
        check_models({self.config if isinstance(self.config, str) else str(self.config): cfg}, data)
        run_dir = self._new_run_dir()
        with _global_state_kept():
            result = runner.train(cfg, data, run_dir, executor=self.executor, show_progress=self.verbose,
                                  device=self.device)
        self._write_estimator_file(run_dir)
        self._set_fitted(run_dir, cfg)
        self.oof_ = pd.DataFrame(np.asarray(result.oof, np.float64)[back[0]], index=train_index,
                                 columns=self.target_names_)
        self.test_predictions_ = (None if test_index is None else
                                  pd.DataFrame(np.asarray(result.test, np.float64)[back[1]], index=test_index,
                                               columns=self.target_names_))
        return self

    def _set_fitted(self, run_dir: Path, cfg=None) -> None:
        from moakit.config import RunConfig

        self.run_dir_ = Path(run_dir)
        self.config_ = cfg if cfg is not None else RunConfig(**read_json(run_dir / layout.CONFIG))
        columns = read_json(run_dir / layout.COLUMNS)
        self.target_names_ = list(columns["scored"])
        self.feature_names_in_ = np.asarray([*columns["genes"], *columns["cells"]], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.metrics_ = read_json(run_dir / layout.METRICS)

    @classmethod
    def load(cls, path: str | Path) -> "MoAModel":
        """A fitted MoAModel from a run folder of ``save`` or of ``moakit train`` (used in
        place, not copied)."""
        from moakit.config import RunConfig
        from moakit.inference import _check_model_dir

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: run folder not found")
        _not_a_workflow(path)
        _check_model_dir(path)
        cfg = RunConfig(**read_json(path / layout.CONFIG))
        params = cls._saved_params(path)
        if params is None:  # a `moakit train` folder: its resolved config says it all
            source = Path(cfg.source) if cfg.source else None
            params = {"config": source.stem if source is not None and _is_shipped(source) else (cfg.source or cfg.model),
                      "profile": cfg.profile, "seeds": list(cfg.seeds), "folds": cfg.cv.n_folds, "cv": cfg.cv.scheme}
        est = cls(**params)
        est._set_fitted(path, cfg)
        est.oof_ = _read_predictions(path / layout.OOF_PREDICTIONS)
        test = path / layout.TEST_PREDICTIONS
        est.test_predictions_ = _read_predictions(test) if test.exists() else None
        if est.test_predictions_ is not None and est.test_predictions_.empty:
            est.test_predictions_ = None
        return est


def _not_a_workflow(path: Path) -> None:
    """MoAModel.load of a workflow or blend folder says what to call instead."""
    from moakit.validate import folder_kind

    kind = folder_kind(path)
    if kind == "workflow":
        models_dir = path / layout.MODELS_DIR
        models = sorted(p.name for p in models_dir.iterdir() if p.is_dir()) if models_dir.is_dir() else []
        raise ValueError(f"{path}: a workflow run (moakit run / MoABlend), not one model's: load it with "
                         f"moakit.MoABlend.load(path), or one of its models with MoAModel.load(path / 'models' / NAME)"
                         f"{' (models: ' + ', '.join(models) + ')' if models else ''}")
    if kind == "blend":
        raise ValueError(f"{path}: a blend folder (moakit blend), not a model run: predict with it through "
                         "`moakit predict --run`, or load the workflow run it belongs to with moakit.MoABlend.load")


def _is_shipped(path: Path) -> bool:
    from moakit.config import packaged_configs

    shipped = packaged_configs()
    return path.stem in shipped and shipped[path.stem].resolve() == path.resolve()


# --------------------------------------------------------------------------- a blend


def _entries(models) -> list[dict]:
    """ModelEntry dicts from config names, (name, config) pairs or ModelEntry-like dicts."""
    if isinstance(models, (str, Path)):
        raise TypeError("models: expected a list of model configs; for a blend config use its name alone, "
                        "e.g. MoABlend('blend_best_lb')")
    entries = []
    for item in models:
        if isinstance(item, (str, Path)):
            entries.append({"name": Path(str(item)).stem, "config": str(item)})
        elif isinstance(item, (tuple, list)) and len(item) == 2:  # a list once saved as JSON
            entries.append({"name": str(item[0]), "config": str(item[1])})
        elif isinstance(item, dict):
            entries.append(dict(item))
        else:
            raise TypeError(f"models: {item!r} is neither a config name, a (name, config) pair nor a dict "
                            "with name, config[, seeds, folds]")
    return entries


class MoABlend(_RunEstimator):
    """Several models blended by OOF-optimal weights, as ``moakit run`` does.

    Parameters
    ----------
    models : a blend config name or path (``"blend_best_lb"``, ``"blend_best_cv"``), or a
        list of model configs: names, ``(entry_name, config)`` pairs, or dicts
        ``{name, config, seeds, folds}`` (the entries of a blend config).
    profile : applied to the blend config and to every model config.
    methods : weight searches (``slsqp``, ``optuna``); None: the blend config's (both).
    optuna_trials, preset, seed : None: the blend config's.
    run_dir, executor, device, verbose : as for :class:`MoAModel`.

    Attributes after ``fit`` (or ``load``)
    --------------------------------------
    run_dir_, config_ (the resolved blend config), weights_ (entry name -> weight),
    method_, oof_ (blended out-of-fold probabilities), scores_ (OOF log loss per model and
    of the blend, with the weights), models_ (entry name -> fitted :class:`MoAModel`),
    target_names_, test_predictions_ (None when fit without ``X_test``).
    """

    _kind = "blend"

    def __init__(self, models: str | Sequence = "blend_best_lb", profile: str = "full",
                 methods: Sequence[str] | None = None, optuna_trials: int | None = None,
                 preset: str | None = None, seed: int | None = None, run_dir: str | Path | None = None,
                 executor: str = "local", device: str | None = None, verbose: bool = False) -> None:
        self.models = models
        self.profile = profile
        self.methods = methods
        self.optuna_trials = optuna_trials
        self.preset = preset
        self.seed = seed
        self.run_dir = run_dir
        self.executor = executor
        self.device = device
        self.verbose = verbose

    def resolved_config(self):
        """The :class:`moakit.workflow.BlendConfig` that ``fit`` runs."""
        from pydantic import ValidationError

        from moakit.config import ConfigError
        from moakit.workflow import BlendConfig, load_blend_config

        if isinstance(self.models, (str, Path)):
            cfg = load_blend_config(self.models, self.profile)
            raw = cfg.model_dump()
        else:
            raw = {"models": _entries(self.models), "profile": self.profile, "blend": {}}
        blend = dict(raw.get("blend") or {})
        for key, value in (("methods", self.methods), ("optuna_trials", self.optuna_trials),
                           ("preset", self.preset), ("seed", self.seed)):
            if value is not None:
                blend[key] = list(value) if key == "methods" else value
        raw["blend"] = blend
        try:
            return BlendConfig(**raw)
        except ValidationError as exc:
            from moakit.config import format_errors

            raise ConfigError(f"MoABlend: {format_errors(exc)}") from None

    def fit(self, X, Y, Y_nonscored=None, drug_id=None, X_test=None) -> "MoABlend":
        """Train every model, search the blend weights on their OOF predictions; the
        arguments are those of :meth:`MoAModel.fit`."""
        from moakit.validate import check_fit_arguments
        from moakit.workflow import resolve_models, run_workflow

        cfg = self.resolved_config()
        data, train_index, test_index, back = _training_data(X, Y, Y_nonscored, drug_id, X_test)
        check_fit_arguments({f"model entry {name!r}": c for name, c in resolve_models(cfg).items()}, data,
                            "MoABlend.fit")
        run_dir = self._new_run_dir()
        with _global_state_kept():
            run_workflow(cfg, data, run_dir, profile=cfg.profile, executor=self.executor,
                         show_progress=self.verbose, device=self.device)
        self._write_estimator_file(run_dir)
        self._set_fitted(run_dir, cfg)
        # the blend's files are keyed by the sig_ids training saw: back to the caller's rows
        self.oof_ = self.oof_.loc[data.train.sig_id[back[0]]].set_axis(train_index)
        if test_index is None:
            self.test_predictions_ = None
        else:
            self.test_predictions_ = self.test_predictions_.loc[data.test.sig_id[back[1]]].set_axis(test_index)
        return self

    def _set_fitted(self, run_dir: Path, cfg=None) -> None:
        from moakit.blend import recorded_weights
        from moakit.workflow import BlendConfig

        run_dir = Path(run_dir)
        self.run_dir_ = run_dir
        self.config_ = cfg if cfg is not None else BlendConfig(**read_json(run_dir / layout.WORKFLOW)["blend_config"])
        summary = read_json(layout.blend_dir(run_dir) / layout.BLEND)
        self.weights_ = recorded_weights(summary)
        self.method_ = summary.get("method")
        self.models_ = {e.name: MoAModel.load(layout.model_dir(run_dir, e.name)) for e in self.config_.models}
        first = next(iter(self.models_.values()))
        self.target_names_ = list(first.target_names_)
        self.feature_names_in_ = first.feature_names_in_
        self.n_features_in_ = first.n_features_in_
        rows = [{"model": name, "oof_log_loss": float(summary["models"][name]["log_loss"]),
                 "oof_log_loss_treated": float(summary["models"][name]["log_loss_treated"]),
                 "weight": float(self.weights_.get(name, 0.0))} for name in self.models_]
        rows.append({"model": "blend", "oof_log_loss": float(summary["log_loss"]),
                     "oof_log_loss_treated": float(summary["log_loss_treated"]), "weight": 1.0})
        self.scores_ = pd.DataFrame(rows).set_index("model")
        self.oof_ = _read_predictions(layout.blend_dir(run_dir) / layout.BLEND_OOF)
        test = _read_predictions(layout.blend_dir(run_dir) / layout.BLEND_TEST)
        self.test_predictions_ = None if test.empty else test

    @classmethod
    def load(cls, path: str | Path) -> "MoABlend":
        """A fitted MoABlend from a folder of ``save`` or of ``moakit run`` (used in place)."""
        from moakit.workflow import BlendConfig, is_workflow_run

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: run folder not found")
        if not is_workflow_run(path):
            raise ValueError(f"{path}: not a `moakit run` / MoABlend folder (no {layout.WORKFLOW})")
        if not (layout.blend_dir(path) / layout.BLEND).exists():
            raise ValueError(f"{path}: the run has no {layout.BLEND_DIR}/{layout.BLEND}; finish it first")
        cfg = BlendConfig(**read_json(path / layout.WORKFLOW)["blend_config"])
        params = cls._saved_params(path)
        if params is None:
            source = Path(cfg.source) if cfg.source else None
            params = {"models": (source.stem if source is not None and _is_shipped(source) else cfg.source)
                      or [e.model_dump() for e in cfg.models], "profile": cfg.profile}
        est = cls(**params)
        est._set_fitted(path, cfg)
        return est

    def _relocate(self, run_dir: Path) -> None:
        self.run_dir_ = run_dir
        for name, model in getattr(self, "models_", {}).items():
            model.run_dir_ = layout.model_dir(run_dir, name)
