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
                             model with several stages on the scored targets, per stage too;
                             the per-target prior in sample (prior) and out of fold (prior_oof)
      graph.json             the task graph's nodes and what each run took (start, seconds, host)

The work is a task graph (:mod:`moakit.graph`): per stage and seed a ``features`` node,
its ``fold`` nodes and a ``gather`` node; a stacked model's next stage depends on the
gathers it reads; a ``model`` node writes the predictions and metrics. A fold whose
``done.json`` (and artifacts) exist is not trained again and a stage-seed whose oof.npy /
test.npy exist is only read, so an interrupted run resumes node by node; ``graph.json``
records which nodes ran, where and for how long.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from moakit import metrics
from moakit.artifacts import read_json, read_npy, recorded_path, run_lock, write_json, write_npy
from moakit.config import ConfigError, RunConfig, validate_params
from moakit.cv import assign_folds, holdout_mask
from moakit.data.dataset import Dataset, MoAData
from moakit.features import blocks_from_dataset
from moakit.features.pipeline import CONTROL_BLOCK
from moakit.graph import Node, Observer, Observers, TaskGraph, run_local
from moakit.manifest import Manifest, new_manifest, read_manifest
from moakit.models.base import Blocks, FitContext, Model, StageSpec, get_model_class
from moakit.models.estimators import load_estimator
from moakit.progress import GraphProgress, RunProgress
from moakit.registry import Registry
from moakit.runs import layout, records
from moakit.runs.run import check_resume


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
    from moakit.validate import check_param_values

    check_param_values(model.params, where)  # dropout, layer sizes, activation, device: not in a fold job
    if config.selection.policy == "holdout_refit" and not model.supports_refit:
        raise ConfigError(f"{where}: selection.policy: holdout_refit is not available for model {config.model!r} "
                          "(use holdout, last or oof)")
    if data is not None:
        from moakit.features import Pipeline, PipelineConfig

        from moakit.features.panel import PanelError, plan_pipeline

        base = blocks_from_dataset(data.train)
        widths: dict[str, int | None] = {b: int(a.shape[1]) for b, a in base.items()}
        available = set(base) | {"meta", CONTROL_BLOCK}
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
            try:
                plan_pipeline(pipeline_config, {**widths, "meta": None}, len(data.train))
            except PanelError as exc:
                raise ConfigError(f"{where}: {field_path}.steps: {exc}") from None
        model.check_panel(data, where)
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


# --------------------------------------------------------------------------- fold jobs


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
    write_npy(out / layout.VALID_PRED, est.predict_proba(job.X_oof).astype(np.float32))
    write_npy(out / layout.TEST_PRED, est.predict_proba(job.X_test).astype(np.float32))
    records.write_done(out, fit_seconds, job.seed, job.fold, getattr(est, "info", {}))
    return str(out)


# --------------------------------------------------------------------------- executors


class Executor(Protocol):
    """Runs a :class:`moakit.graph.TaskGraph`, telling ``observer`` what happens."""

    def run_graph(self, graph: TaskGraph, observer: Observer, progress: RunProgress) -> None: ...


class LocalExecutor:
    """Runs the graph in this process, node after node in the order they were added (the
    order of the sequential runner: results are the same), with a bar over each fold's epochs."""

    def run_graph(self, graph: TaskGraph, observer: Observer, progress: RunProgress) -> None:
        def call(node: Node, values: list):
            if node.kind != "fold":
                return node.call(values)
            with progress.epochs(f"{node.model}: {node.stage} seed {node.seed} fold {node.fold}", None) as on_epoch:
                return node.call(values, on_epoch=on_epoch)

        run_local(graph, observer, call)


def _ray_executor(**kwargs) -> Executor:
    from moakit.distributed import RayExecutor  # optional extra, imported when asked for

    return RayExecutor(**kwargs)


EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")
EXECUTORS.add("local", LocalExecutor)
EXECUTORS.add("ray", _ray_executor)


def make_executor(name: str, **kwargs) -> Executor:
    return EXECUTORS.get(name)(**kwargs)


def as_executor(executor: str | Executor) -> Executor:
    if isinstance(executor, str):
        return make_executor(executor)
    if not hasattr(executor, "run_graph"):
        raise TypeError(f"{type(executor).__name__}: not an executor (it needs run_graph(graph, observer, progress))")
    return executor


def execute(graph: TaskGraph, executor: Executor, show_progress: bool, observer: Observer | None = None,
            trace_path: Path | None = None) -> None:
    """Run ``graph`` with progress bars (one per model and an overall one); write what ran,
    where and when to ``trace_path`` (graph.json) even when nodes failed."""
    try:
        with RunProgress(show_progress) as progress:
            as_executor(executor).run_graph(graph, Observers(GraphProgress(progress, graph), observer), progress)
    finally:
        if trace_path is not None:
            write_trace(graph, trace_path, executor)


def write_trace(graph: TaskGraph, path: Path, executor) -> None:
    t0 = min((t["start"] for t in graph.trace.values()), default=0.0)
    nodes = []
    for node in graph:
        row = {"id": node.id, "kind": node.kind, "model": node.model, "stage": node.stage, "seed": node.seed,
               "fold": node.fold, "deps": node.deps, "cpu_share": node.cpu_share, "gpu_share": node.gpu_share}
        t = graph.trace.get(node.id)
        if t is not None:
            row.update(start=round(t["start"] - t0, 3), host=t.get("host"), pid=t.get("pid"))
            if "end" in t:
                row.update(seconds=round(t["end"] - t["start"], 3))
        nodes.append(row)
    write_json(path, {"executor": type(executor).__name__, **graph.summary(), "node_list": nodes})


# --------------------------------------------------------------------------- the stage chain


class StageChain:
    """A model's stages over its seeds, and which stage outputs feed which stage-seed.

    Stage i of seed s reads a ``meta`` block made of stage i-1's predictions: seed s's
    own, or the mean over ALL seeds when the model's ``meta_from_seed_mean`` is set. Training
    (the task graph's dependencies and inputs) and :func:`predict_run` both follow it."""

    def __init__(self, model: Model, seeds: list[int]) -> None:
        self.model = model
        self.stages = model.stages()
        self.seeds = list(seeds)
        self.seed_mean = bool(model.meta_from_seed_mean)

    def upstream(self, index: int, seed: int) -> list[tuple[int, int]]:
        """The (stage index, seed) outputs that stage ``index`` of ``seed`` reads."""
        if index == 0:
            return []
        return [(index - 1, s) for s in self.seeds] if self.seed_mean else [(index - 1, seed)]

    def meta(self, index: int, seed: int, outputs: dict[tuple[int, int], np.ndarray]) -> np.ndarray | None:
        """Stage ``index``'s meta block for ``seed`` from the upstream outputs (None: none)."""
        keys = self.upstream(index, seed)
        if not keys:
            return None
        if self.seed_mean:
            return np.mean([outputs[k] for k in keys], axis=0).astype(np.float32)
        return outputs[keys[0]]

    def final(self, outputs: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
        """The model's predictions: its last stage's, averaged over seeds."""
        last = len(self.stages) - 1
        return np.mean([outputs[(last, s)] for s in self.seeds], axis=0)


def stage_dir(run_dir: str | Path, stage: StageSpec, seed: int) -> Path:
    return layout.stage_dir(run_dir, stage.name, seed)


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
        else:  # holdout, holdout_refit (whose refit pass then trains on these rows too)
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
    if sel.policy in ("holdout", "holdout_refit"):
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
    device: str | None = None,
) -> TrainResult:
    """Train ``config`` on ``data``: every stage x seed x fold as one task graph, resuming
    finished folds and stage outputs. ``label`` names the progress bar (default: the model);
    ``device`` (cpu / cuda) overrides where the networks train (None: as the config says).

    The run folder is locked meanwhile: a second run into it fails fast (RunLockedError).
    A failed fold (or feature fit) raises :class:`moakit.graph.GraphFailed` naming its
    stage / seed / fold, after every node that did not depend on it has finished."""
    out = check_out_dir(out)
    from moakit.validate import check_device, check_folder_kind

    check_folder_kind(out, "model", "this model run")  # never into a workflow / blend / data folder
    check_device(device)
    model = check_config(config, data)
    executor = as_executor(executor)
    fingerprint = data_fingerprint(data)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        from moakit.validate import clean_leftovers

        clean_leftovers(out)  # temporary files of a killed run (kill -9 during a write)
        graph = TaskGraph()
        model_node = add_model(graph, label or config.model, config, model, data, out, fingerprint, device=device)
        results: dict[str, TrainResult] = {}
        observers = Observers(_Collect(results), FailureRecorder({label or config.model: out}))
        execute(graph, executor, show_progress, observers, out / layout.GRAPH)
        return results[model_node]


def node_error(node: Node, error: str) -> str:
    """A failed node's error as the manifests record it: which node, then what went wrong."""
    return f"{node.describe()} ({node.kind}): {error}"


class FailureRecorder(Observer):
    """Marks a model's run folder failed (its manifest's status, and the node's error) as
    soon as one of its nodes fails; a rerun resumes it (training and ``moakit run`` alike)."""

    def __init__(self, run_dirs: dict[str, Path]) -> None:
        self.run_dirs = run_dirs  # model (node) name -> its run folder

    def on_failed(self, node: Node, error: str) -> None:
        run_dir = self.run_dirs.get(node.model)
        if run_dir is not None and (run_dir / layout.MANIFEST).exists():
            manifest = read_manifest(run_dir)
            manifest.model_copy(update={"status": "failed", "error": node_error(node, error)}).write(run_dir)


class _Collect(Observer):
    """Keeps the values of the ``model`` nodes (TrainResult) by node id."""

    def __init__(self, into: dict) -> None:
        self.into = into

    def on_done(self, node: Node, value) -> None:
        if node.kind == "model":
            self.into[node.id] = value


def prepare_run(config: RunConfig, data: MoAData, out: Path, fingerprint: str) -> tuple[Manifest, np.ndarray]:
    """Before any node runs: refuse a run folder of another config / data / version, write
    config.json, columns.json, the manifest (running) and the folds; returns (manifest, folds)."""
    # the identity is the config's content, never a path: a run folder copied or moved
    # elsewhere, or the same config read from another checkout, resumes
    check_resume(out, "model", fingerprint, identity=config)
    train_ds = data.train
    records.write_config(out, config.model_dump(mode="json"))
    # What inference checks new data against: the input columns and the output targets.
    columns = {"genes": list(train_ds.gene_names), "cells": list(train_ds.cell_names),
               "scored": list(train_ds.scored_names)}
    if not train_ds.is_lish_moa_panel:  # how prediction encodes new rows' meta columns
        columns["panel"] = train_ds.panel
    records.write_columns(out, columns)
    manifest = _manifest(config, fingerprint, data, out)
    manifest.write(out)
    if (out / layout.FOLDS).exists():
        folds = read_npy(out / layout.FOLDS)
    else:
        folds = assign_folds(train_ds, config.cv.scheme, config.cv.n_folds, config.cv.seed, config.cv.max_replicates)
        write_npy(out / layout.FOLDS, folds)
    return manifest, folds


def add_model(graph: TaskGraph, name: str, config: RunConfig, model: Model, data: MoAData, out: Path,
              fingerprint: str, label: str | None = None, device: str | None = None) -> str:
    """Add the nodes of one model (run folder ``out``) to ``graph``; returns its ``model``
    node's id. What is already done in ``out`` becomes no node (finished folds) or a node
    that only reads it (a finished stage-seed's gather)."""
    manifest, folds = prepare_run(config, data, out, fingerprint)
    judge = judge_masks(config, data.train, folds)
    if config.selection.policy in ("holdout", "holdout_refit") and not (out / layout.HOLDOUT).exists():
        write_npy(out / layout.HOLDOUT, np.stack([judge[k] for k in range(config.cv.n_folds)]).astype(np.int8))
    chain = StageChain(model, config.seeds)
    gathers: dict[tuple[int, int], str] = {}
    n_jobs = n_pending = 0
    for index, stage in enumerate(chain.stages):
        for seed in config.seeds:
            upstream = [gathers[key] for key in chain.upstream(index, seed)]
            gathers[(index, seed)], pending = _add_stage_seed(
                graph, name, config, model, data, out, folds, judge, index, seed, upstream, device)
            n_jobs += config.cv.n_folds
            n_pending += pending
    finish = ModelFinish(name, config, chain, data, out, manifest, graph)
    keys = [(i, s) for i in range(len(chain.stages)) for s in config.seeds]
    graph.models[name] = (f"{label or name} ({config.profile})", n_jobs, n_jobs - n_pending)
    return graph.add(Node(f"{name}/model", "model", finish, deps=[gathers[k] for k in keys],
                          kwargs={"keys": keys}, model=name, on_driver=True, cpu_share=0))


def _add_stage_seed(graph, name, config, model, data, out, folds, judge, index, seed, upstream,
                    device=None) -> tuple[str, int]:
    """The nodes of one stage-seed: features -> folds -> gather (only the gather, reading
    oof.npy / test.npy, when it finished before). Returns (gather id, fold jobs added)."""
    stage = model.stages()[index]
    sdir = stage_dir(out, stage, seed)
    prefix = f"{name}/{stage.name}/seed_{seed}"
    where = {"model": name, "stage": stage.name, "seed": seed}
    shared_folds = {"folds": folds}
    gather = Node(f"{prefix}/gather", "gather", gather_stage_seed, shared=shared_folds,
                  kwargs={"stage_dir": str(sdir), "n_folds": config.cv.n_folds}, cpu_share=0, **where)
    if (sdir / layout.STAGE_OOF).exists() and (sdir / layout.STAGE_TEST).exists():
        return graph.add(gather), 0
    pending = [k for k in range(config.cv.n_folds) if not fold_done(layout.fold_dir(sdir, k))]
    if pending:
        feat = graph.add(Node(f"{prefix}/features", "features", fit_stage_seed, deps=upstream, shared={"data": data},
                              kwargs={"model": model, "index": index, "seed": seed, "seeds": list(config.seeds),
                                      "run_dir": str(out)}, **where))
        rows = training_rows(stage, data.train)
        tr = data.train
        for k in pending:
            controls = np.flatnonzero(tr.is_control & (folds != k))
            job = FoldJob(model_name=config.model, params=config.params, stage=stage, seed=seed, fold=k,
                          out_dir=str(layout.fold_dir(sdir, k)), arrays=None,
                          fit_rows=np.flatnonzero(rows & (folds != k) & ~judge[k]),
                          judge_rows=np.flatnonzero(rows & judge[k]), oof_rows=np.flatnonzero(folds == k),
                          device=device, refit=config.selection.policy == "holdout_refit", control_rows=controls,
                          control_groups=tr.cp_time[controls].astype(np.int64) * 64 + tr.cp_dose[controls])
            gather.deps.append(graph.add(Node(f"{prefix}/fold_{k}", "fold", train_fold, deps=[feat],
                                              kwargs={"job": job}, fold=k, gpu_share=model.fold_gpu_share, **where)))
    return graph.add(gather), len(pending)


def fit_stage_seed(data: MoAData, *upstream: tuple[np.ndarray, np.ndarray], model: Model, index: int, seed: int,
                   seeds: list[int], run_dir: str) -> StageArrays:
    """A ``features`` node: fit (or reload) the stage-seed's feature transform on the
    stage's inputs (the upstream stage outputs become its ``meta`` block) and return its
    matrices. Runs anywhere: it reads the data it is given and writes to ``run_dir``."""
    chain = StageChain(model, seeds)
    stage = chain.stages[index]
    keys = chain.upstream(index, seed)
    meta_train = chain.meta(index, seed, {k: v[0] for k, v in zip(keys, upstream)})
    meta_test = chain.meta(index, seed, {k: v[1] for k, v in zip(keys, upstream)})
    train_ds, test_ds = data.train, data.test
    train_blocks, test_blocks = _stage_blocks(train_ds, meta_train), _stage_blocks(test_ds, meta_test)
    sdir = stage_dir(run_dir, stage, seed)
    feat_dir = sdir / layout.FEATURES_DIR
    from moakit import feature_reuse

    if feat_dir.exists():
        features = load_saved_features(model, stage, feat_dir)
    elif (fitted := feature_reuse.reusable(run_dir, model, chain, index, seed, data)) is not None:
        feature_reuse.link_features(fitted[0], feat_dir)  # an equal fit of another seed: linked, not refitted
        feature_reuse.record_key(sdir, fitted[1], fitted[0])
        features = load_saved_features(model, stage, feat_dir)
    else:
        fit_train, fit_test = _fit_blocks(stage, train_ds, train_blocks), _fit_blocks(stage, test_ds, test_blocks)
        _adopt_reused_features(model, chain, stage, seed, run_dir, fit_train, fit_test)
        features = model.fit_features(stage, fit_train, fit_test, seed)
        features.save(feat_dir)
        feature_reuse.record_key(sdir, feature_reuse.stage_key(model, chain, index, seed, data))
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


@dataclass
class ModelFinish:
    """A model's ``model`` node (in the driver): its predictions (last stage, mean over
    seeds, controls 0), metrics.json with per-seed and per-stage scores, the manifest."""

    name: str
    config: RunConfig
    chain: StageChain
    data: MoAData
    out: Path
    manifest: Manifest
    graph: TaskGraph

    def __call__(self, *outputs: tuple[np.ndarray, np.ndarray], keys: list[tuple[int, int]]) -> TrainResult:
        train_ds, test_ds = self.data.train, self.data.test
        oofs = {k: v[0] for k, v in zip(keys, outputs)}
        tests = {k: v[1] for k, v in zip(keys, outputs)}
        oof = metrics.zero_controls(self.chain.final(oofs), train_ds.is_control)
        test = metrics.zero_controls(self.chain.final(tests), test_ds.is_control)
        result = {"model": self.config.model, "profile": self.config.profile, "cv": self.config.cv.model_dump(),
                  "selection": selection_summary(self.config), "seeds": {},
                  **metrics.score(train_ds.scored, oof, train_ds.is_control)}
        last = len(self.chain.stages) - 1
        for s in self.config.seeds:  # the last stage of each seed alone
            result["seeds"][str(s)] = metrics.score(train_ds.scored, oofs[(last, s)], train_ds.is_control)
        stage_scores = {}
        for i, stage in enumerate(self.chain.stages):
            stage_oof = np.mean([oofs[(i, s)] for s in self.config.seeds], axis=0)
            if stage.targets == "scored" and stage_oof.shape[1] == train_ds.scored.shape[1]:
                # every stage on the scored targets, so a stacked model shows what each stage adds
                stage_scores[stage.name] = metrics.score(
                    train_ds.scored, metrics.zero_controls(stage_oof, train_ds.is_control), train_ds.is_control)
        if len(stage_scores) > 1:
            result["stages"] = stage_scores
        # the per-target prior in sample ("prior": the training means, what TEST predictions are
        # compared with) and out of fold on this model's folds ("prior_oof": what its OOF
        # predictions are compared with; an in-sample prior has seen the rows it is scored on)
        priors = metrics.prior_scores(train_ds.scored, train_ds.is_control, read_npy(self.out / layout.FOLDS))
        result["prior"], result["prior_oof"] = priors["in_sample"], priors["oof"]
        records.write_predictions(self.out / layout.OOF_PREDICTIONS, train_ds.sig_id, oof, train_ds.scored_names)
        records.write_predictions(self.out / layout.TEST_PREDICTIONS, test_ds.sig_id, test, train_ds.scored_names)
        records.write_metrics(self.out, result)
        timings = self.timings()
        self.manifest.model_copy(update={"status": "complete", "timings": timings}).write(self.out)
        return TrainResult(self.out, oof, test, result, timings)

    def timings(self) -> dict[str, float]:
        """Wall seconds (first start to last end) of each stage's nodes run now, and of all."""
        out: dict[str, float] = {}
        spans = []
        for stage in self.chain.stages:
            trace = [self.graph.trace[n.id] for n in self.graph.of_model(self.name)
                     if n.stage == stage.name and "end" in self.graph.trace.get(n.id, {})]
            if trace:
                spans += trace
                out[f"stage_{stage.name}_seconds"] = round(max(t["end"] for t in trace) - min(t["start"] for t in trace), 3)
        out["total_seconds"] = round(max(t["end"] for t in spans) - min(t["start"] for t in spans), 3) if spans else 0.0
        out["node_seconds"] = round(sum(t["end"] - t["start"] for t in spans), 3)
        return out


def _manifest(config: RunConfig, fingerprint: str, data: MoAData, out: Path) -> Manifest:
    created = None
    if (out / layout.MANIFEST).exists():  # a resumed run keeps when it was created
        created = read_manifest(out).created
    from moakit.validate import config_digest

    return new_manifest("model", model=config.model, profile=config.profile, config_source=config.source,
                        data_fingerprint=fingerprint, data_source=data_source(data, out), n_train=len(data.train),
                        n_test=len(data.test), created=created, config_digest=config_digest(out))


# --------------------------------------------------------------------------- inference


def predict_run(run_dir: str | Path, ds: Dataset, batch_size: int | None = None) -> np.ndarray:
    """Scored-target probabilities for ``ds`` from a trained run's saved artifacts only.

    Replays the stage chain (:class:`StageChain`, as training) on ``ds``: each stage's saved
    transform, then the mean over folds of its saved estimators, per seed; the model's
    predictions are the last stage's averaged over seeds, with control rows set to 0.
    Nothing is refitted. ``batch_size`` overrides the estimators' saved inference batch
    size (throughput only).
    """
    run_dir = Path(run_dir)
    config = RunConfig(**read_json(run_dir / layout.CONFIG))
    model = build_model(config)
    chain = StageChain(model, config.seeds)
    outputs: dict[tuple[int, int], np.ndarray] = {}
    for index, stage in enumerate(chain.stages):
        for seed in config.seeds:
            sdir = stage_dir(run_dir, stage, seed)
            features = model.load_features(stage, sdir / layout.FEATURES_DIR)
            X = features.transform(_stage_blocks(ds, chain.meta(index, seed, outputs)))
            preds = []
            for k in range(config.cv.n_folds):
                est = load_estimator(layout.estimator_dir(sdir, k))
                if batch_size is not None and hasattr(est, "eval_batch_size"):
                    est.eval_batch_size = int(batch_size)
                preds.append(est.predict_proba(X))
            outputs[(index, seed)] = np.mean(preds, axis=0).astype(np.float32)
    return metrics.zero_controls(chain.final(outputs), ds.is_control)
