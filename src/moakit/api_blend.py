"""The API's blend estimator, :class:`MoABlend` (``moakit run`` as a scikit-learn estimator);
imported as ``moakit.MoABlend`` / ``moakit.api.MoABlend``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from moakit.api_model import MoAModel, is_shipped
from moakit.api_run import RunEstimator, global_state_kept, load_predictions
from moakit.artifacts import read_json
from moakit.data.frames import training_data as _training_data
from moakit.runs import layout


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


class MoABlend(RunEstimator):
    """Several models blended by OOF-optimal weights, as ``moakit run`` does.

    Parameters
    ----------
    models : a blend config name or path (``"blend_best_lb"``, ``"blend_best_cv"``), or a
        list of model configs: names, ``(entry_name, config)`` pairs, or dicts
        ``{name, config, seeds, folds}`` (the entries of a blend config).
    profile : applied to the blend config and to every model config.
    methods : weight searches (``slsqp``, ``optuna``); None: the blend config's (both).
    optuna_trials, preset, seed : None: the blend config's.
    run_dir, executor, device, verbose, feature_cache, feature_cache_max_gb : as for
        :class:`MoAModel`.

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
                 executor: str = "local", device: str | None = None, verbose: bool = False,
                 feature_cache: str | Path | None = None, feature_cache_max_gb: float | None = None) -> None:
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
        self.feature_cache = feature_cache
        self.feature_cache_max_gb = feature_cache_max_gb

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
        with global_state_kept(), self._feature_cache():
            run_workflow(cfg, data, run_dir, profile=cfg.profile, executor=self.executor,
                         show_progress=self.verbose, device=self.device)
        self._write_estimator_file(run_dir)
        _set_fitted(self, run_dir, cfg)
        # the blend's files are keyed by the sig_ids training saw: back to the caller's rows
        self.oof_ = self.oof_.loc[data.train.sig_id[back[0]]].set_axis(train_index)
        if test_index is None:
            self.test_predictions_ = None
        else:
            self.test_predictions_ = self.test_predictions_.loc[data.test.sig_id[back[1]]].set_axis(test_index)
        return self

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
            params = {"models": (source.stem if source is not None and is_shipped(source) else cfg.source)
                      or [e.model_dump() for e in cfg.models], "profile": cfg.profile}
        est = cls(**params)
        _set_fitted(est, path, cfg)
        return est

    def _relocate(self, run_dir: Path) -> None:
        self.run_dir_ = run_dir
        for name, model in getattr(self, "models_", {}).items():
            model.run_dir_ = layout.model_dir(run_dir, name)


def _set_fitted(est: MoABlend, run_dir: Path, cfg) -> None:
    """Set ``est``'s learned attributes from its finished run folder and resolved config
    (``fit`` and ``load`` share it; a function, so no private method is called on another
    object)."""
    from moakit.blend import recorded_weights

    run_dir = Path(run_dir)
    est.run_dir_ = run_dir
    est.config_ = cfg
    summary = read_json(layout.blend_dir(run_dir) / layout.BLEND)
    est.weights_ = recorded_weights(summary)
    est.method_ = summary.get("method")
    est.models_ = {e.name: MoAModel.load(layout.model_dir(run_dir, e.name)) for e in est.config_.models}
    first = next(iter(est.models_.values()))
    est.target_names_ = list(first.target_names_)
    est.feature_names_in_ = first.feature_names_in_
    est.n_features_in_ = first.n_features_in_
    rows = [{"model": name, "oof_log_loss": float(summary["models"][name]["log_loss"]),
             "oof_log_loss_treated": float(summary["models"][name]["log_loss_treated"]),
             "weight": float(est.weights_.get(name, 0.0))} for name in est.models_]
    rows.append({"model": "blend", "oof_log_loss": float(summary["log_loss"]),
                 "oof_log_loss_treated": float(summary["log_loss_treated"]), "weight": 1.0})
    est.scores_ = pd.DataFrame(rows).set_index("model")
    est.oof_ = load_predictions(layout.blend_dir(run_dir) / layout.BLEND_OOF)
    test = load_predictions(layout.blend_dir(run_dir) / layout.BLEND_TEST)
    est.test_predictions_ = None if test.empty else test
