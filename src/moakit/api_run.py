"""What the API's estimators share (:class:`moakit.api.MoAModel`, :class:`moakit.api.MoABlend`):
a run folder (given, or temporary and deleted with the estimator), prediction from its saved
artifacts, save / load, pickling with a temporary run folder inside, and fitting that leaves
numpy's and torch's global state as it was."""

from __future__ import annotations

import contextlib
import io
import shutil
import tarfile
import tempfile
import warnings
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from moakit.artifacts import read_json, write_json
from moakit.data import schema
from moakit.data.frames import features_dataset as _features
from moakit.runs import layout

ESTIMATOR_FILE = layout.ESTIMATOR  # the estimator's constructor arguments, beside the CLI's files


# --------------------------------------------------------------------------- shared machinery


@contextlib.contextmanager
def global_state_kept():
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


def load_predictions(path: Path) -> pd.DataFrame:
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


class RunEstimator(BaseEstimator):
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
        from moakit.inference import open_run_for_predict

        if by not in ("signature", "compound"):
            raise ValueError(f"by must be 'signature' or 'compound', not {by!r}")
        self._check_fitted()
        ds, index = _features(X, "X", "row")
        pred, _, names = open_run_for_predict(self.run_dir_).predict_arrays(ds, batch_size=batch_size)
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
        local = ("run_dir", "feature_cache", "feature_cache_max_gb")  # this machine's folders, not the model's
        params = _json_params({k: v for k, v in self.get_params(deep=False).items() if k not in local})
        write_json(run_dir / ESTIMATOR_FILE, {"class": type(self).__name__, "params": params})

    def _feature_cache(self):
        from moakit.feature_cache import using

        return using(getattr(self, "feature_cache", None), getattr(self, "feature_cache_max_gb", None))

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
