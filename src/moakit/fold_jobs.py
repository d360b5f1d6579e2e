"""The bodies of a training graph's nodes, runnable in any process (locally or as Ray
tasks): a stage-seed's ``features`` node (:func:`fit_stage_seed`, returning its
:class:`StageArrays`), its ``fold`` nodes (:class:`FoldJob`, :func:`run_fold_job`) and its
``gather`` node (:func:`gather_stage_seed`). Each writes only its own part of the run
folder, and a finished part is read back instead of redone (resume)."""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from moakit.artifacts import read_npy, write_json, write_npy
from moakit.data.dataset import MoAData
from moakit.fold_transforms import share_saved
from moakit.models.base import Blocks, FitContext, Model, StageSpec, get_model_class
from moakit.runs import layout, records
from moakit.stages import StageChain, fit_blocks, stage_blocks, stage_dir, stage_targets, training_rows


def fold_seed(seed: int, fold: int) -> int:
    """Torch/numpy seed of one fold's training: distinct per (seed, fold), stable."""
    return seed * 1000 + fold


@dataclass
class StageArrays:
    """The matrices of one (stage, seed): every training row, its targets, the test rows.

    Built once per stage-seed by its ``features`` node and shared by its fold jobs (on Ray
    it is that node's result in the object store; each fold task gets only row indices)."""

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
    device: str | None = None  # FitContext.device: None = as the params say
    refit: bool = False  # selection holdout_refit (FitContext.refit)
    control_rows: np.ndarray | None = None  # control rows outside the fold (control augmentation)
    control_groups: np.ndarray | None = None  # their cp_time x cp_dose group

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


FOLD_FILES = layout.FOLD_FILES


def fold_done(fold_dir: str | Path) -> bool:
    """A fold is done when its done.json and every artifact it vouches for exist."""
    return all((Path(fold_dir) / name).exists() for name in FOLD_FILES)


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
    if fold_done(out):
        return str(out)
    # Without done.json nothing in the fold folder is trusted: a killed run may have left
    # an estimator or temporary files there; start the fold afresh.
    if out.exists():
        shutil.rmtree(out)
    model = get_model_class(job.model_name)(job.params)
    start = time.perf_counter()
    history: list[dict] = []  # every epoch record the model reports: the fold's learning curve

    def record_epoch(record: dict) -> None:
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)

    ctx = FitContext(seed=fold_seed(job.seed, job.fold), on_epoch=record_epoch, device=job.device,
                     Y_aux_train=job.Y_aux_train, Y_aux_valid=job.Y_aux_valid, refit=job.refit,
                     X_controls=None if job.control_rows is None else job.arrays.X[job.control_rows],
                     control_groups=job.control_groups,
                     # saved before the fold jobs start, readable from any worker; loaded only if asked
                     load_features=lambda: load_saved_features(model, job.stage, out.parent / layout.FEATURES_DIR))
    est = model.fit_fold(job.stage, job.X_train, job.Y_train, job.X_valid, job.Y_valid, ctx)
    fit_seconds = time.perf_counter() - start
    records.write_history(out, epoch_records(history))
    est.save(out / layout.ESTIMATOR_DIR)
    share_saved(est, out.parent, job.fold)  # a fold transform equal to another seed's: stored once
    write_npy(out / layout.VALID_PRED, est.predict_proba(job.X_oof).astype(np.float32))
    write_npy(out / layout.TEST_PRED, est.predict_proba(job.X_test).astype(np.float32))
    records.write_done(out, fit_seconds, job.seed, job.fold, getattr(est, "info", {}))
    return str(out)


def fit_stage_seed(data: MoAData, *upstream: tuple[np.ndarray, np.ndarray], model: Model, index: int, seed: int,
                   seeds: list[int], run_dir: str, feature_cache: dict | None = None) -> StageArrays:
    """A ``features`` node: fit (or reload) the stage-seed's feature transform on the
    stage's inputs (the upstream stage outputs become its ``meta`` block) and return its
    matrices. Runs anywhere: it reads the data it is given and writes to ``run_dir``.
    ``feature_cache``: the cache across runs (:func:`moakit.feature_cache.settings`)."""
    chain = StageChain(model, seeds)
    stage = chain.stages[index]
    keys = chain.upstream(index, seed)
    meta_train = chain.meta(index, seed, {k: v[0] for k, v in zip(keys, upstream)})
    meta_test = chain.meta(index, seed, {k: v[1] for k, v in zip(keys, upstream)})
    train_ds, test_ds = data.train, data.test
    train_blocks, test_blocks = stage_blocks(train_ds, meta_train), stage_blocks(test_ds, meta_test)
    sdir = stage_dir(run_dir, stage, seed)
    feat_dir = sdir / layout.FEATURES_DIR
    from moakit import feature_reuse
    from moakit.feature_cache import for_stage

    cached = None
    if feat_dir.exists():
        features = load_saved_features(model, stage, feat_dir)
    elif (fitted := feature_reuse.reusable(run_dir, model, chain, index, seed, data)) is not None:
        feature_reuse.link_features(fitted[0], feat_dir)  # an equal fit of another seed: linked, not refitted
        feature_reuse.record_key(sdir, fitted[1], fitted[0])
        features = load_saved_features(model, stage, feat_dir)
    else:  # the cache across runs (an equal fit of an earlier run), else a fit
        cached = for_stage(feature_cache, model, chain, index, seed, data, (meta_train, meta_test))
        features = cached.restore(sdir, lambda p: load_saved_features(model, stage, p)) if cached else None
    if features is None:
        fit_train, fit_test = fit_blocks(stage, train_ds, train_blocks), fit_blocks(stage, test_ds, test_blocks)
        _adopt_reused_features(model, chain, stage, seed, run_dir, fit_train, fit_test)
        features = model.fit_features(stage, fit_train, fit_test, seed)
        features.save(feat_dir)
        feature_reuse.record_key(sdir, feature_reuse.stage_key(model, chain, index, seed, data))
        if cached is not None:
            cached.store(sdir)
    X_all = features.transform(train_blocks)
    X_test = features.transform(test_blocks)

    Y_all, names = stage_targets(stage, train_ds)
    rows = training_rows(stage, train_ds)
    columns = np.arange(Y_all.shape[1])
    if stage.drop_empty_targets:
        columns = np.flatnonzero(Y_all[rows].sum(axis=0) > 0)
    write_json(sdir / layout.TARGETS, {"names": [names[j] for j in columns], "columns": columns.tolist()})
    Y_aux = None
    if stage.aux_targets:  # e.g. the non-scored labels a scored stage pre-trains on
        Y_aux, _ = stage_targets(StageSpec(stage.name, targets=stage.aux_targets), train_ds)
    return StageArrays(X=X_all, Y=Y_all[:, columns], X_test=X_test, Y_aux=Y_aux)


def load_saved_features(model: Model, stage: StageSpec, path: Path):
    """A stage-seed's saved features (when resuming); a damaged or tampered folder gives a
    ValueError naming it (a run folder is data: its loaders never run code from it)."""
    from moakit.artifacts import PickleFormatError
    from moakit.features.safe_state import StateError

    try:
        return model.load_features(stage, path)
    except (PickleFormatError, StateError):
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: the saved features cannot be read ({type(exc).__name__}: {exc}); the run folder "
                         f"is damaged: use another --out, or delete {path.parent} to redo that stage and seed") from None


def _adopt_reused_features(model: Model, chain: StageChain, stage: StageSpec, seed: int, run_dir: str,
                           fit_train: Blocks, fit_test: Blocks) -> None:
    """A stage that reuses an earlier stage's fitted features (a stacked model's stage 2
    reads stage 1's UMAP) gets them from that stage's saved folder, so a feature fit in
    another process (Ray) does not fit them again."""
    earlier = model.reuses_features_of(stage)
    if earlier is None:
        return
    spec = next((s for s in chain.stages if s.name == earlier), None)
    saved = stage_dir(run_dir, spec, seed) / layout.FEATURES_DIR if spec is not None else None
    if saved is not None and saved.exists():
        model.adopt_features(spec, seed, load_saved_features(model, spec, saved), fit_train, fit_test)


def train_fold(arrays: StageArrays, job: FoldJob, on_epoch: Callable[[dict], None] | None = None) -> str:
    """A ``fold`` node: train one fold on its stage-seed's matrices."""
    return run_fold_job(dataclasses.replace(job, arrays=arrays), on_epoch)


def gather_stage_seed(folds: np.ndarray, *fold_dirs: str, stage_dir: str, n_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``gather`` node: the stage-seed's out-of-fold predictions (each row from the fold
    that held it out) and its test predictions (mean over folds), saved as oof.npy /
    test.npy; read back when they exist."""
    sdir = Path(stage_dir)
    if (sdir / layout.STAGE_OOF).exists() and (sdir / layout.STAGE_TEST).exists():
        return read_npy(sdir / layout.STAGE_OOF), read_npy(sdir / layout.STAGE_TEST)
    valid = [read_npy(layout.fold_dir(sdir, k) / layout.VALID_PRED) for k in range(n_folds)]
    oof = np.zeros((len(folds), valid[0].shape[1]), np.float32)
    for k in range(n_folds):
        oof[folds == k] = valid[k]
    test = np.mean([read_npy(layout.fold_dir(sdir, k) / layout.TEST_PRED) for k in range(n_folds)],
                   axis=0).astype(np.float32)
    write_npy(sdir / layout.STAGE_OOF, oof)
    write_npy(sdir / layout.STAGE_TEST, test)
    return oof, test
