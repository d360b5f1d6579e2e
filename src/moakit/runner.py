"""Training a model config over seeds x folds, with resumable, atomic artifacts.

Run layout (one model; every name in :mod:`moakit.runs.layout`)::

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

This module plans a model's part of the graph (:func:`add_model`, :class:`ModelPlan`) and
finishes it (:class:`ModelFinish`); the node bodies are in :mod:`moakit.fold_jobs`, the
stage chain shared with prediction in :mod:`moakit.stages`, the executors in
:mod:`moakit.executors`, the config checks in :mod:`moakit.models.checks` and the data
fingerprint in :mod:`moakit.data.identity`. The names they had here are re-exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moakit import feature_cache, metrics
from moakit.artifacts import read_json, read_npy, run_lock, write_npy  # noqa: F401 (read_json: re-exported)
from moakit.config import RunConfig
from moakit.cv import assign_folds, holdout_mask, holdout_parts
from moakit.data.dataset import Dataset, MoAData
from moakit.data.identity import data_fingerprint, data_source
from moakit.executors import (  # noqa: F401 (re-exported: the runner's names before the split)
    EXECUTORS, Executor, FailureRecorder, LocalExecutor, ModelResults, as_executor, execute, make_executor,
    node_error, write_trace)
from moakit.fold_jobs import (  # noqa: F401 (re-exported)
    FOLD_FILES, FoldJob, StageArrays, epoch_records, fit_stage_seed, fold_done, fold_seed, gather_stage_seed,
    load_saved_features, run_fold_job, train_fold)
from moakit.graph import Node, Observers, TaskGraph
from moakit.manifest import Manifest, new_manifest, read_manifest
from moakit.models.base import Model, StageSpec
from moakit.models.checks import build_model, check_config  # noqa: F401 (re-exported)
from moakit.runs import layout, records
from moakit.runs.run import check_resume, resume_identity  # noqa: F401 (resume_identity: re-exported)
from moakit.stages import (  # noqa: F401 (re-exported)
    StageChain, fit_blocks, predict_run, stage_blocks, stage_dir, stage_targets, training_rows)

__all__ = [
    # training (this module)
    "ModelFinish", "ModelPlan", "TrainResult", "add_model", "check_out_dir", "judge_masks", "prepare_run",
    "selection_summary", "train",
    # re-exported from where they live now
    "EXECUTORS", "Executor", "FailureRecorder", "LocalExecutor", "ModelResults", "as_executor", "execute",
    "make_executor", "node_error", "write_trace",  # moakit.executors
    "FOLD_FILES", "FoldJob", "StageArrays", "epoch_records", "fit_stage_seed", "fold_done", "fold_seed",
    "gather_stage_seed", "load_saved_features", "run_fold_job", "train_fold",  # moakit.fold_jobs
    "StageChain", "fit_blocks", "predict_run", "stage_blocks", "stage_dir", "stage_targets",
    "training_rows",  # moakit.stages
    "build_model", "check_config",  # moakit.models.checks
    "data_fingerprint", "data_source",  # moakit.data.identity
    "check_resume", "resume_identity",  # moakit.runs
    "assign_folds", "read_json", "Node",
]


def check_out_dir(out: str | Path) -> Path:
    """A usable run folder path: a folder or nothing yet (not a file)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; a run folder must be a folder (use another --out)")
    return out


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
        taken, n_parts = holdout_parts(sel.holdout_fraction)
        if taken / n_parts != sel.holdout_fraction:  # not exact: say what it was rounded to
            out["holdout_parts"] = [taken, n_parts]
    if sel.policy == "oof":
        out["optimistic"] = True
        out["note"] = ("epochs were chosen on the same rows that give the out-of-fold predictions "
                       "(as the winners did): the OOF log loss is optimistic")
    return out


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
        observers = Observers(ModelResults(results), FailureRecorder({label or config.model: out}))
        execute(graph, executor, show_progress, observers, out / layout.GRAPH)
        return results[model_node]


def prepare_run(config: RunConfig, data: MoAData, out: Path, fingerprint: str) -> tuple[Manifest, np.ndarray]:
    """Before any node runs: refuse a run folder of another config / data / version, write
    config.json, columns.json, the manifest (running) and the folds; returns (manifest, folds)."""
    # the identity is the config's content, never a path: a run folder copied or moved
    # elsewhere, or the same config read from another checkout, resumes
    check_resume(out, "model", fingerprint, identity=config)
    train_ds = data.train
    records.write_config(out, config.model_dump(mode="json"))
    # What inference checks new data against: the input columns (with their genes' Entrez ids
    # where the data knows them), the output targets and a panel's meta encoding.
    records.write_columns(out, records.columns_record(data))
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
    plan = ModelPlan(name, config, model, data, out, folds, judge, device)
    chain = StageChain(model, config.seeds)
    gathers: dict[tuple[int, int], str] = {}
    n_jobs = n_pending = 0
    for index in range(len(chain.stages)):
        for seed in config.seeds:
            upstream = [gathers[key] for key in chain.upstream(index, seed)]
            gathers[(index, seed)], pending = plan.add_stage_seed(graph, index, seed, upstream)
            n_jobs += config.cv.n_folds
            n_pending += pending
    finish = ModelFinish(name, config, chain, data, out, manifest, graph)
    keys = [(i, s) for i in range(len(chain.stages)) for s in config.seeds]
    graph.models[name] = (f"{label or name} ({config.profile})", n_jobs, n_jobs - n_pending)
    return graph.add(Node(f"{name}/model", "model", finish, deps=[gathers[k] for k in keys],
                          kwargs={"keys": keys}, model=name, on_driver=True, cpu_share=0))


@dataclass
class ModelPlan:
    """What the stage-seeds of one model share when their nodes are added: the model (node
    name ``name``, run folder ``out``), its folds and the judge rows of each fold."""

    name: str
    config: RunConfig
    model: Model
    data: MoAData
    out: Path
    folds: np.ndarray
    judge: dict[int, np.ndarray]
    device: str | None = None  # FitContext.device: None = as the params say

    def add_stage_seed(self, graph: TaskGraph, index: int, seed: int, upstream: list[str]) -> tuple[str, int]:
        """The nodes of one stage-seed: features -> folds -> gather (only the gather, reading
        oof.npy / test.npy, when it finished before). ``upstream``: the gather nodes it
        reads. Returns (gather id, fold jobs added)."""
        n_folds = self.config.cv.n_folds
        stage = self.model.stages()[index]
        sdir = stage_dir(self.out, stage, seed)
        prefix = f"{self.name}/{stage.name}/seed_{seed}"
        where = {"model": self.name, "stage": stage.name, "seed": seed}
        gather = Node(f"{prefix}/gather", "gather", gather_stage_seed, shared={"folds": self.folds},
                      kwargs={"stage_dir": str(sdir), "n_folds": n_folds}, cpu_share=0, **where)
        if (sdir / layout.STAGE_OOF).exists() and (sdir / layout.STAGE_TEST).exists():
            return graph.add(gather), 0
        pending = [k for k in range(n_folds) if not fold_done(layout.fold_dir(sdir, k))]
        if pending:
            feat = graph.add(Node(f"{prefix}/features", "features", fit_stage_seed, deps=upstream,
                                  shared={"data": self.data},
                                  kwargs={"model": self.model, "index": index, "seed": seed,
                                          "seeds": list(self.config.seeds), "run_dir": str(self.out),
                                          "feature_cache": feature_cache.settings()}, **where))
            for k in pending:
                gather.deps.append(graph.add(Node(
                    f"{prefix}/fold_{k}", "fold", train_fold, deps=[feat], kwargs={"job": self.fold_job(stage, seed, k)},
                    fold=k, gpu_share=self.model.fold_gpu_share, **where)))
        return graph.add(gather), len(pending)

    def fold_job(self, stage: StageSpec, seed: int, k: int) -> FoldJob:
        """Fold ``k`` of a stage-seed: it trains on the stage's rows of the other folds minus
        its judge rows, is judged on its judge rows and predicts every row of fold ``k``."""
        tr, folds, judge = self.data.train, self.folds, self.judge[k]
        rows = training_rows(stage, tr)
        controls = np.flatnonzero(tr.is_control & (folds != k))
        return FoldJob(model_name=self.config.model, params=self.config.params, stage=stage, seed=seed, fold=k,
                       out_dir=str(layout.fold_dir(stage_dir(self.out, stage, seed), k)), arrays=None,
                       fit_rows=np.flatnonzero(rows & (folds != k) & ~judge),
                       judge_rows=np.flatnonzero(rows & judge), oof_rows=np.flatnonzero(folds == k),
                       device=self.device, refit=self.config.selection.policy == "holdout_refit",
                       control_rows=controls,
                       control_groups=tr.cp_time[controls].astype(np.int64) * 64 + tr.cp_dose[controls])


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
