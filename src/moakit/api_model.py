"""The API's one-model estimator, :class:`MoAModel` (``moakit train`` as a scikit-learn
estimator); imported as ``moakit.MoAModel`` / ``moakit.api.MoAModel``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moakit.api_run import RunEstimator, global_state_kept, load_predictions
from moakit.artifacts import read_json
from moakit.data.frames import training_data as _training_data
from moakit.runs import layout


# --------------------------------------------------------------------------- one model


class MoAModel(RunEstimator):
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
    feature_cache : a folder of fitted feature states shared across runs (reused when their
        content key matches, new fits stored; :mod:`moakit.feature_cache`); None: the
        MOAKIT_FEATURE_CACHE environment variable's, else no cache. Not saved with the model.
    feature_cache_max_gb : its size bound (least-recently-used entries evicted); None: 5.
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
                 verbose: bool = False, feature_cache: str | Path | None = None,
                 feature_cache_max_gb: float | None = None) -> None:
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
        self.feature_cache = feature_cache
        self.feature_cache_max_gb = feature_cache_max_gb

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
        with global_state_kept(), self._feature_cache():
            result = runner.train(cfg, data, run_dir, executor=self.executor, show_progress=self.verbose,
                                  device=self.device)
        self._write_estimator_file(run_dir)
        _set_fitted(self, run_dir, cfg)
        self.oof_ = pd.DataFrame(np.asarray(result.oof, np.float64)[back[0]], index=train_index,
                                 columns=self.target_names_)
        self.test_predictions_ = (None if test_index is None else
                                  pd.DataFrame(np.asarray(result.test, np.float64)[back[1]], index=test_index,
                                               columns=self.target_names_))
        return self

    @classmethod
    def load(cls, path: str | Path) -> "MoAModel":
        """A fitted MoAModel from a run folder of ``save`` or of ``moakit train`` (used in
        place, not copied)."""
        from moakit.config import RunConfig
        from moakit.runs.predict import check_model_dir

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: run folder not found")
        _not_a_workflow(path)
        check_model_dir(path)
        cfg = RunConfig(**read_json(path / layout.CONFIG))
        params = cls._saved_params(path)
        if params is None:  # a `moakit train` folder: its resolved config says it all
            source = Path(cfg.source) if cfg.source else None
            params = {"config": source.stem if source is not None and is_shipped(source) else (cfg.source or cfg.model),
                      "profile": cfg.profile, "seeds": list(cfg.seeds), "folds": cfg.cv.n_folds, "cv": cfg.cv.scheme}
        est = cls(**params)
        _set_fitted(est, path, cfg)
        est.oof_ = load_predictions(path / layout.OOF_PREDICTIONS)
        test = path / layout.TEST_PREDICTIONS
        est.test_predictions_ = load_predictions(test) if test.exists() else None
        if est.test_predictions_ is not None and est.test_predictions_.empty:
            est.test_predictions_ = None
        return est


def _set_fitted(est: MoAModel, run_dir: Path, cfg) -> None:
    """Set ``est``'s learned attributes but the predictions from its finished run folder
    and resolved config (``fit`` and ``load`` share it; a function, so no private method
    is called on another object)."""
    est.run_dir_ = Path(run_dir)
    est.config_ = cfg
    columns = read_json(run_dir / layout.COLUMNS)
    est.target_names_ = list(columns["scored"])
    est.feature_names_in_ = np.asarray([*columns["genes"], *columns["cells"]], dtype=object)
    est.n_features_in_ = len(est.feature_names_in_)
    est.metrics_ = read_json(run_dir / layout.METRICS)


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


def is_shipped(path: Path) -> bool:
    from moakit.config import packaged_configs

    shipped = packaged_configs()
    return path.stem in shipped and shipped[path.stem].resolve() == path.resolve()
