"""Training a model config over seeds x folds, with resumable, atomic artifacts.

Run layout (one model)::

    RUN/
      config.json            resolved config (model, profile, cv, seeds, params)
      manifest.json          versions, data fingerprint, timings, status
      folds.npy              fold id per training row
      stages/<stage>/seed_<s>/features/          fitted feature transform
      stages/<stage>/seed_<s>/targets.json       target columns this stage predicts
      stages/<stage>/seed_<s>/fold_<k>/          estimator/, valid_pred.npy, test_pred.npy, done.json
      stages/<stage>/seed_<s>/oof.npy, test.npy  out-of-fold / fold-averaged test predictions
      oof_predictions.csv    sig_id + scored targets (controls 0), averaged over seeds
      test_predictions.csv   the same for the test rows: a submission
      metrics.json           OOF log loss per seed and overall (all rows / treated rows); for a
                             model with several stages on the scored targets, per stage too

A fold whose ``done.json`` exists is not trained again, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import math
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import pandas as pd

import moakit
from moakit import metrics
from moakit.artifacts import atomic_file, read_json, read_npy, recorded_path, run_lock, write_json, write_npy
from moakit.config import ConfigError, RunConfig, validate_params
from moakit.cv import assign_folds, holdout_mask
from moakit.data import schema
from moakit.data.dataset import Dataset, MoAData
from moakit.features import blocks_from_dataset
from moakit.features.pipeline import CONTROL_BLOCK
from moakit.models.base import Blocks, Model, StageSpec, get_model_class
from moakit.progress import RunProgress
from moakit.registry import Registry


def fold_seed(seed: int, fold: int) -> int:
    """Torch/numpy seed of one fold's training: distinct per (seed, fold), stable."""
    return seed * 1000 + fold


def data_fingerprint(data: MoAData) -> str:
    h = hashlib.sha256()
    for ds in (data.train, data.test):
        h.update("\n".join(ds.sig_id.tolist()).encode())
        h.update(np.ascontiguousarray(ds.genes).tobytes())
        h.update(np.ascontiguousarray(ds.cells).tobytes())
        for arr in (ds.cp_type, ds.cp_time, ds.cp_dose, ds.scored):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def data_source(data: MoAData, run_dir: str | Path | None = None) -> str:
    """The data folder as a manifest records it ("" when the data has none): relative to
    ``run_dir`` when it lies inside it (a movable run folder), else absolute."""
    if not data.source:
        return ""
    return recorded_path(data.source, run_dir) if run_dir is not None else str(Path(data.source).resolve())


def build_model(config: RunConfig) -> Model:
    cls = get_model_class(config.model)
    return cls(validate_params(cls.Params, config.params, config.source or config.model))


def resume_identity(config: RunConfig | dict) -> dict:
    """What a run folder must match to be resumed: the resolved config's content, never
    the path it was read from (``source``), so a copied or moved run resumes."""
    dumped = config.model_dump(mode="json") if isinstance(config, RunConfig) else dict(config)
    dumped.pop("source", None)
    return dumped


def check_config(config: RunConfig, data: MoAData | None = None) -> Model:
    """Validate the whole resolved config before any work: the model and its params, the
    seeds, and (given the data) that every feature pipeline reads only blocks that exist.
    Raises ConfigError naming the config file and the field."""
    where = config.source or config.model
    model = build_model(config)
    if data is not None:
        from moakit.features import Pipeline, PipelineConfig

        available = set(blocks_from_dataset(data.train)) | {"meta", CONTROL_BLOCK}
        for field_path, pipeline_config in _find_instances(model.params, PipelineConfig, "params"):
            try:
                needed = Pipeline(pipeline_config)._external_inputs()
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{where}: {field_path}: {exc}") from None
            unknown = [b for b in needed if b not in available]
            if unknown:
                outputs = [b for b in unknown if b in pipeline_config.output]
                what = f"{field_path}.output" if outputs else f"{field_path}.steps"
                raise ConfigError(f"{where}: {what}: block(s) {unknown} are written by no feature step and "
                                  f"are not given by the data (given: {', '.join(sorted(available))})")
    return model


def _find_instances(obj, cls, where: str):
    """(field path, value) of every ``cls`` instance inside a pydantic model / list / dict."""
    from pydantic import BaseModel

    if isinstance(obj, cls):
        yield where, obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from _find_instances(getattr(obj, name), cls, f"{where}.{name}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _find_instances(item, cls, f"{where}.{i}")
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from _find_instances(item, cls, f"{where}.{key}")


def check_out_dir(out: str | Path) -> Path:
    """A usable run folder path: a folder or nothing yet (not a file)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; a run folder must be a folder (use another --out)")
    return out


def stage_targets(stage: StageSpec, ds: Dataset) -> tuple[np.ndarray, list[str]]:
    if stage.targets == "scored":
        return ds.scored, list(ds.scored_names)
    if ds.nonscored is None:
        raise ValueError(f"stage {stage.name!r} needs train_targets_nonscored in the data folder")
    return ds.nonscored, list(ds.nonscored_names)


def training_rows(stage: StageSpec, ds: Dataset) -> np.ndarray:
    """Rows a stage may train and be judged on: treated rows unless it keeps controls."""
    return np.ones(len(ds), bool) if stage.keep_controls else ~ds.is_control


# --------------------------------------------------------------------------- executors


@dataclass
class StageArrays:
    """The matrices of one (stage, seed): every training row, its targets, the test rows.

    Built once per stage-seed and shared by its fold jobs (the Ray executor puts it in the
    object store once and sends each task only its row indices)."""

    X: np.ndarray  # (n_train, n_features) float32, all training rows (controls included)
    Y: np.ndarray  # (n_train, n_targets) the stage's target columns
    X_test: np.ndarray  # (n_test, n_features)
    Y_aux: np.ndarray | None = None  # (n_train, n_aux) only for a stage with aux_targets


@dataclass
class FoldJob:
    """One (stage, seed, fold) training: self-contained, so an executor can run it in
    another process (Ray) and write to the same run layout.

    The arrays are not copied per job: ``arrays`` is shared by the jobs of a stage-seed and
    the fold is a set of row indices into it."""

    model_name: str
    params: dict
    stage: StageSpec
    seed: int
    fold: int
    out_dir: str
    arrays: StageArrays | None
    fit_rows: np.ndarray  # row indices the network trains on
    judge_rows: np.ndarray  # held-out rows it is judged on (early stopping)
    oof_rows: np.ndarray  # every row of the fold (controls included): its OOF predictions

    @property
    def X_train(self) -> np.ndarray:
        return self.arrays.X[self.fit_rows]

    @property
    def Y_train(self) -> np.ndarray:
        return self.arrays.Y[self.fit_rows]

    @property
    def X_valid(self) -> np.ndarray:
        return self.arrays.X[self.judge_rows]

    @property
    def Y_valid(self) -> np.ndarray:
        return self.arrays.Y[self.judge_rows]

    @property
    def X_oof(self) -> np.ndarray:
        return self.arrays.X[self.oof_rows]

    @property
    def X_test(self) -> np.ndarray:
        return self.arrays.X_test

    @property
    def Y_aux_train(self) -> np.ndarray | None:
        return None if self.arrays.Y_aux is None else self.arrays.Y_aux[self.fit_rows]

    @property
    def Y_aux_valid(self) -> np.ndarray | None:
        return None if self.arrays.Y_aux is None else self.arrays.Y_aux[self.judge_rows]


def epoch_records(history: list[dict]) -> list[dict]:
    """Epoch records as plain JSON: numbers as floats, NaN/inf (nothing judged) as null."""
    def clean(v):
        if isinstance(v, (bool, str)) or v is None:
            return v
        if isinstance(v, (int, np.integer)):
            return int(v)
        v = float(v)
        return v if math.isfinite(v) else None
    return [{k: clean(v) for k, v in r.items() if v is None or isinstance(v, (bool, str, int, float, np.number))}
            for r in history]


def run_fold_job(job: FoldJob, on_epoch: Callable[[dict], None] | None = None) -> str:
    """Train one fold, save estimator and predictions, mark it done. Idempotent."""
    out = Path(job.out_dir)
    if (out / "done.json").exists():
        return str(out)
    # Without done.json nothing in the fold folder is trusted: a killed run may have left
    # an estimator or temporary files there; start the fold afresh.
    if out.exists():
        shutil.rmtree(out)
    model = get_model_class(job.model_name)(job.params)
    start = time.perf_counter()
    extra = {"Y_aux_train": job.Y_aux_train, "Y_aux_valid": job.Y_aux_valid} if job.stage.aux_targets else {}
    if model.needs_features_in_fit:  # saved before the fold jobs start; readable from any worker
        extra["features"] = model.load_features(job.stage, out.parent / "features")
    history: list[dict] = []  # every epoch record the model reports: the fold's learning curve

    def record_epoch(record: dict) -> None:
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)

    est = model.fit_fold(job.stage, job.X_train, job.Y_train, job.X_valid, job.Y_valid,
                         fold_seed(job.seed, job.fold), record_epoch, **extra)
    fit_seconds = time.perf_counter() - start
    write_json(out / "history.json", {"epochs": epoch_records(history)})
    est.save(out / "estimator")
    write_npy(out / "valid_pred.npy", est.predict_proba(job.X_oof).astype(np.float32))
    write_npy(out / "test_pred.npy", est.predict_proba(job.X_test).astype(np.float32))
    write_json(out / "done.json", {"fit_seconds": fit_seconds, "seed": job.seed, "fold": job.fold,
                                   "info": getattr(est, "info", {})})
    return str(out)


class Executor(Protocol):
    def run(self, jobs: list[FoldJob], progress: RunProgress) -> None: ...


class LocalExecutor:
    """Runs fold jobs one after another in this process (the default)."""

    def run(self, jobs: list[FoldJob], progress: RunProgress) -> None:
        for job in jobs:
            desc = f"{job.stage.name} seed {job.seed} fold {job.fold}"
            with progress.epochs(desc, None) as on_epoch:
                run_fold_job(job, on_epoch)


def _ray_executor(**kwargs) -> Executor:
    from moakit.distributed import RayExecutor  # optional extra, imported when asked for

    return RayExecutor(**kwargs)


EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")
EXECUTORS.add("local", LocalExecutor)
EXECUTORS.add("ray", _ray_executor)


def make_executor(name: str, **kwargs) -> Executor:
    return EXECUTORS.get(name)(**kwargs)


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    run_dir: Path
    oof: np.ndarray
    test: np.ndarray
    metrics: dict
    timings: dict = field(default_factory=dict)


def judge_masks(config: RunConfig, ds: Dataset, folds: np.ndarray) -> dict[int, np.ndarray]:
    """Per fold k, the training rows that judge its epochs (the selection policy):
    ``oof``: the fold's own rows; ``last``: none; ``holdout``: a part of the OTHER folds'
    rows, split like the CV and seeded by the CV seed and k (the same for every seed and
    stage). Fold k's network trains on the rows of the other folds minus its judge rows."""
    sel, cv = config.selection, config.cv
    out = {}
    for k in range(cv.n_folds):
        if sel.policy == "oof":
            out[k] = folds == k
        elif sel.policy == "last":
            out[k] = np.zeros(len(folds), bool)
        else:
            others = np.flatnonzero(folds != k)
            mask = np.zeros(len(folds), bool)
            mask[others[holdout_mask(ds, others, cv.scheme, sel.holdout_fraction, cv.seed + 1000 + k,
                                     cv.max_replicates)]] = True
            out[k] = mask
    return out


def selection_summary(config: RunConfig) -> dict:
    """What metrics.json says of the selection policy; ``oof`` is flagged as optimistic."""
    sel = config.selection
    out = {"policy": sel.policy}
    if sel.policy == "holdout":
        out["holdout_fraction"] = sel.holdout_fraction
    if sel.policy == "oof":
        out["optimistic"] = True
        out["note"] = ("epochs were chosen on the same rows that give the out-of-fold predictions "
                       "(as the winners did): the OOF log loss is optimistic")
    return out


def _stage_blocks(ds: Dataset, meta: np.ndarray | None) -> Blocks:
    blocks = blocks_from_dataset(ds)
    if meta is not None:
        blocks["meta"] = meta.astype(np.float32)
    return blocks


def _fit_blocks(stage: StageSpec, ds: Dataset, blocks: Blocks) -> Blocks:
    """The rows a stage's feature transform may be fitted on.

    A stage that trains on control rows gets every row. Otherwise every row comes with a
    ``ctl`` block marking the controls: a feature Pipeline fits on the treated rows only
    unless its config says ``fit_controls: true`` (the winners' scripts fitted their
    unsupervised transforms before dropping the controls)."""
    if stage.keep_controls:
        return dict(blocks)
    return {**blocks, CONTROL_BLOCK: ds.is_control.astype(np.float32)[:, None]}


def train(
    config: RunConfig,
    data: MoAData,
    out: str | Path,
    executor: str | Executor = "local",
    show_progress: bool = True,
    label: str | None = None,
) -> TrainResult:
    """Train ``config`` on ``data``: every stage x seed x fold, resuming finished folds.
    ``label`` names the progress bar (a blend entry's name; default: the model's).

    The run folder is locked meanwhile: a second run into it fails fast (RunLockedError)."""
    out = check_out_dir(out)
    model = check_config(config, data)
    executor = make_executor(executor) if isinstance(executor, str) else executor
    fingerprint = data_fingerprint(data)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        _check_resume(out, config, fingerprint)
        return _train(config, model, data, out, executor, fingerprint, show_progress, label)


def _train(config, model, data, out, executor, fingerprint, show_progress, label) -> TrainResult:
    train_ds, test_ds = data.train, data.test
    write_json(out / "config.json", config.model_dump(mode="json"))
    # What inference checks new data against: the input columns and the output targets.
    write_json(out / "columns.json", {"genes": list(train_ds.gene_names), "cells": list(train_ds.cell_names),
                                      "scored": list(train_ds.scored_names)})
    manifest = _manifest(config, fingerprint, data, out)
    write_json(out / "manifest.json", {**manifest, "status": "running"})

    if (out / "folds.npy").exists():
        folds = read_npy(out / "folds.npy")
    else:
        folds = assign_folds(train_ds, config.cv.scheme, config.cv.n_folds, config.cv.seed, config.cv.max_replicates)
        write_npy(out / "folds.npy", folds)
    judge = judge_masks(config, train_ds, folds)
    if config.selection.policy == "holdout" and not (out / "holdout.npy").exists():
        write_npy(out / "holdout.npy", np.stack([judge[k] for k in range(config.cv.n_folds)]).astype(np.int8))

    timings: dict[str, float] = {}
    stage_metrics: dict[str, dict] = {}
    upstream: dict[int, tuple[np.ndarray, np.ndarray] | None] = {s: None for s in config.seeds}
    stages = model.stages()
    total_jobs = len(stages) * len(config.seeds) * config.cv.n_folds
    with RunProgress(show_progress) as progress:
        advance = progress.jobs(f"{label or config.model} ({config.profile})", total_jobs)
        for stage in stages:
            t0 = time.perf_counter()
            per_seed = {seed: _train_stage_seed(
                model, config, stage, seed, train_ds, test_ds, folds, judge, upstream[seed],
                out / "stages" / stage.name / f"seed_{seed}", executor, progress, advance,
            ) for seed in config.seeds}
            upstream = dict(per_seed)
            timings[f"stage_{stage.name}_seconds"] = round(time.perf_counter() - t0, 3)
            oof = np.mean([upstream[s][0] for s in config.seeds], axis=0)  # this stage's, over seeds
            if model.meta_from_seed_mean:
                # the next stage of every seed reads this stage's predictions averaged over seeds
                test_mean = np.mean([upstream[s][1] for s in config.seeds], axis=0).astype(np.float32)
                upstream = {s: (oof.astype(np.float32), test_mean) for s in config.seeds}
            if stage.targets == "scored" and oof.shape[1] == train_ds.scored.shape[1]:
                # every stage on the scored targets, so a stacked model shows what each stage adds
                stage_metrics[stage.name] = metrics.score(
                    train_ds.scored, metrics.zero_controls(oof, train_ds.is_control), train_ds.is_control)

    # the model's predictions are its last stage's
    test = np.mean([upstream[s][1] for s in config.seeds], axis=0)
    oof = metrics.zero_controls(oof, train_ds.is_control)
    test = metrics.zero_controls(test, test_ds.is_control)
    result_metrics = {"model": config.model, "profile": config.profile, "cv": config.cv.model_dump(),
                      "selection": selection_summary(config),
                      "seeds": {}, **metrics.score(train_ds.scored, oof, train_ds.is_control)}
    for s in config.seeds:  # the last stage of each seed alone
        result_metrics["seeds"][str(s)] = metrics.score(train_ds.scored, per_seed[s][0], train_ds.is_control)
    if len(stage_metrics) > 1:
        result_metrics["stages"] = stage_metrics
    prior = metrics.prior_predictions(train_ds.scored, train_ds.is_control, len(train_ds))
    result_metrics["prior"] = metrics.score(train_ds.scored, prior, train_ds.is_control)
    write_predictions(out / "oof_predictions.csv", train_ds.sig_id, oof, train_ds.scored_names)
    write_predictions(out / "test_predictions.csv", test_ds.sig_id, test, train_ds.scored_names)
    write_json(out / "metrics.json", result_metrics)
    timings["total_seconds"] = round(sum(timings.values()), 3)
    write_json(out / "manifest.json", {**manifest, "status": "complete", "timings": timings})
    return TrainResult(out, oof, test, result_metrics, timings)


def _train_stage_seed(model, config, stage, seed, train_ds, test_ds, folds, judge, upstream, stage_dir,
                      executor, progress, advance) -> tuple[np.ndarray, np.ndarray]:
    if (stage_dir / "oof.npy").exists() and (stage_dir / "test.npy").exists():
        for _ in range(config.cv.n_folds):
            advance()
        return read_npy(stage_dir / "oof.npy"), read_npy(stage_dir / "test.npy")
    meta_train, meta_test = upstream if upstream is not None else (None, None)
    train_blocks = _stage_blocks(train_ds, meta_train)
    test_blocks = _stage_blocks(test_ds, meta_test)
    feat_dir = stage_dir / "features"
    if feat_dir.exists():
        features = model.load_features(stage, feat_dir)
    else:
        features = model.fit_features(stage, _fit_blocks(stage, train_ds, train_blocks),
                                      _fit_blocks(stage, test_ds, test_blocks), seed)
        features.save(feat_dir)
    X_all = features.transform(train_blocks)
    X_test = features.transform(test_blocks)

    Y_all, names = stage_targets(stage, train_ds)
    rows = training_rows(stage, train_ds)
    columns = np.arange(Y_all.shape[1])
    if stage.drop_empty_targets:
        columns = np.flatnonzero(Y_all[rows].sum(axis=0) > 0)
    write_json(stage_dir / "targets.json", {"names": [names[j] for j in columns], "columns": columns.tolist()})
    Y = Y_all[:, columns]

    Y_aux = None
    if stage.aux_targets:  # e.g. the non-scored labels a scored stage pre-trains on
        Y_aux, _ = stage_targets(StageSpec(stage.name, targets=stage.aux_targets), train_ds)
    arrays = StageArrays(X=X_all, Y=Y, X_test=X_test, Y_aux=Y_aux)
    jobs = []
    for k in range(config.cv.n_folds):
        jobs.append(FoldJob(
            model_name=config.model, params=config.params, stage=stage, seed=seed, fold=k,
            out_dir=str(stage_dir / f"fold_{k}"), arrays=arrays,
            fit_rows=np.flatnonzero(rows & (folds != k) & ~judge[k]), judge_rows=np.flatnonzero(rows & judge[k]),
            oof_rows=np.flatnonzero(folds == k),
        ))
    pending = [j for j in jobs if not (Path(j.out_dir) / "done.json").exists()]
    for _ in range(len(jobs) - len(pending)):
        advance()
    if pending:
        executor.run(pending, progress)
        for _ in pending:
            advance()

    oof = np.zeros((len(train_ds), len(columns)), np.float32)
    tests = []
    for k in range(config.cv.n_folds):
        fold_dir = stage_dir / f"fold_{k}"
        oof[folds == k] = read_npy(fold_dir / "valid_pred.npy")
        tests.append(read_npy(fold_dir / "test_pred.npy"))
    test = np.mean(tests, axis=0).astype(np.float32)
    write_npy(stage_dir / "oof.npy", oof)
    write_npy(stage_dir / "test.npy", test)
    return oof, test


def write_predictions(path: Path, sig_id: np.ndarray, pred: np.ndarray, names: list[str]) -> None:
    frame = pd.DataFrame(pred.astype(np.float64), columns=names)
    frame.insert(0, schema.ID_COLUMN, sig_id)
    with atomic_file(path, "w") as fh:
        frame.to_csv(fh, index=False, float_format="%.8g")


def _manifest(config: RunConfig, fingerprint: str, data: MoAData, out: Path) -> dict:
    import sklearn
    import torch

    return {
        "moakit_version": moakit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "model": config.model,
        "profile": config.profile,
        "data_fingerprint": fingerprint,
        "data_source": data_source(data, out),
        "n_train": len(data.train),
        "n_test": len(data.test),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _check_resume(out: Path, config: RunConfig, fingerprint: str) -> None:
    """Refuse to resume into a run made with another config, other data or another moakit
    version. The identity is the config's content, never a path: a run folder copied or
    moved elsewhere, or the same config read from another checkout, resumes."""
    cfg_path, man_path = out / "config.json", out / "manifest.json"
    if not cfg_path.exists():
        return
    try:
        previous = read_json(cfg_path)
        manifest = read_json(man_path) if man_path.exists() else {}
    except ValueError as exc:
        raise ValueError(f"{out}: its config.json or manifest.json is not valid JSON ({exc}); "
                         "use another --out or delete it") from None
    if not isinstance(previous, dict) or resume_identity(previous) != resume_identity(config):
        raise ValueError(f"{out}: holds a run of a different config; use another --out or delete it")
    if manifest.get("data_fingerprint") not in (None, fingerprint):
        raise ValueError(f"{out}: holds a run on different data; use another --out or delete it")
    version = manifest.get("moakit_version")
    if version is not None and version != moakit.__version__:
        raise ValueError(f"{out}: holds a run of moakit {version} (this is {moakit.__version__}); its "
                         "artifacts may not match: use another --out, delete it, or resume it with moakit "
                         f"{version}")


# --------------------------------------------------------------------------- inference


def predict_run(run_dir: str | Path, ds: Dataset, batch_size: int | None = None) -> np.ndarray:
    """Scored-target probabilities for ``ds`` from a trained run's saved artifacts only.

    Replays the stage chain exactly as training produced its test predictions: each
    stage's saved transform, then the mean over folds of its saved estimators, per seed;
    then the mean over seeds, with control rows set to 0. Nothing is refitted.
    ``batch_size`` overrides the estimators' saved inference batch size (throughput only).
    """
    run_dir = Path(run_dir)
    config = RunConfig(**read_json(run_dir / "config.json"))
    model = build_model(config)
    meta: dict[int, np.ndarray | None] = {seed: None for seed in config.seeds}
    for stage in model.stages():
        for seed in config.seeds:
            stage_dir = run_dir / "stages" / stage.name / f"seed_{seed}"
            features = model.load_features(stage, stage_dir / "features")
            X = features.transform(_stage_blocks(ds, meta[seed]))
            preds = []
            for k in range(config.cv.n_folds):
                est = model.load_estimator(stage, stage_dir / f"fold_{k}" / "estimator")
                if batch_size is not None and hasattr(est, "eval_batch_size"):
                    est.eval_batch_size = int(batch_size)
                preds.append(est.predict_proba(X))
            meta[seed] = np.mean(preds, axis=0).astype(np.float32)
        if model.meta_from_seed_mean:  # as in training: every seed's next stage reads the seed mean
            mean = np.mean([meta[s] for s in config.seeds], axis=0).astype(np.float32)
            meta = {seed: mean for seed in config.seeds}
    return metrics.zero_controls(np.mean([meta[s] for s in config.seeds], axis=0), ds.is_control)

