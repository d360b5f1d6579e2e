"""The end-to-end workflow: train every model of a blend config, blend, report.

A blend config names the models of a final submission and how their weights are searched::

    models:
      - {name: three_stage_nn, config: three_stage_nn, seeds: 5, folds: 10}
      - {name: simple_nn_drug_cv, config: simple_nn_drug_cv}
    blend: {methods: [slsqp, optuna], optuna_trials: 3000, storage: null, preset: null, calibrate: null}
    model_profile_fallback: {demo: smoke}   # e.g., for a model config without a demo profile
    profiles:
      cpu:  {blend: {optuna_trials: 300}, models: {three_stage_nn: {seeds: null, folds: null}}}

``name`` is the entry's (unique) name: its run folder and its column in the blend. ``config``
is a model config (a shipped name or a path, relative paths from the blend config's folder).
``seeds`` (first N seeds, or a list) and ``folds`` override the model config's.

The profile passed to :func:`run_workflow` is applied to the blend config (if it has that
profile; the overlay's ``models`` may be a mapping ``entry name -> changes``) and to every
model config, which must have that profile, or one that ``model_profile_fallback`` maps it to.

Run layout::

    RUN/
      workflow.json          the resolved blend config and every resolved model config
      manifest.json          versions, data fingerprint, per-model status/timings/scores
      graph.json             the run's task graph: every node, when and where it ran
      models/<name>/         one runner run per entry (see moakit.runner)
      blend/                 blend.json (weights), oof_predictions.csv, submission.csv, ...
      submission.csv         copy of blend/submission.csv
      report/index.html      moakit.report

The whole run is one task graph (models x stages x seeds x folds, then the blend; see
:mod:`moakit.graph`). A rerun into the same RUN resumes node by node: finished folds and
stage outputs (and a finished blend whose inputs and settings did not change) are not
computed again, and the result is the same. The blend
settings may change between runs (the blend is then redone); a model entry whose resolved
config changed, or other data, is refused.

The blend config (schema, loading, resolving the entries) is :mod:`moakit.workflow_config`.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moakit import executors, runner
from moakit.artifacts import atomic_dir, atomic_file, run_lock
from moakit.config import RunConfig
from moakit.data.dataset import MoAData
from moakit.data.identity import data_fingerprint, data_source
from moakit.graph import GraphFailed, Node, Observer, Observers, TaskGraph
from moakit.manifest import Manifest, new_manifest, read_manifest
from moakit.manifest import ModelEntry as ManifestEntry
from moakit.models.checks import build_model
from moakit.runs import layout, records
from moakit.runs.run import check_resume
from moakit.workflow_config import (  # noqa: F401  (the blend config, re-exported)
    BlendConfig, BlendSettings, EntryConfigError, ModelEntry, SkipModels, WorkflowError, check_models,
    load_blend_config, resolve_models, skip_message,
)

WORKFLOW_FILE = layout.WORKFLOW
# --------------------------------------------------------------------------- running


@dataclass
class WorkflowResult:
    run_dir: Path
    models: dict[str, runner.TrainResult]
    blend: Any  # blend.BlendResult, or None when a finished blend was reused
    blend_summary: dict  # blend.json
    submission: Path
    report: Path | None
    manifest: dict = field(default_factory=dict)

    @property
    def model_scores(self) -> dict[str, float]:
        return {name: float(r.metrics["log_loss"]) for name, r in self.models.items()}


def _file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _make_executor(executor, ray_address):
    if not isinstance(executor, str):
        return executors.as_executor(executor)
    if executor == "ray":
        return executors.make_executor("ray", address=ray_address)
    if ray_address:
        raise WorkflowError("--address is only used with --executor ray")
    return executors.make_executor(executor)


def run_workflow(
    config: str | Path | BlendConfig,
    data_dir: str | Path | MoAData,
    out: str | Path,
    profile: str = "full",
    executor: str | executors.Executor = "local",
    ray_address: str | None = None,
    show_progress: bool = True,
    device: str | None = None,
) -> WorkflowResult:
    """Train every model of ``config`` into ``out/models/<name>``, blend them into
    ``out/blend``, copy the blended submission to ``out/submission.csv`` and write the
    report. Resumes an interrupted run in ``out``. ``device`` (cpu / cuda) overrides where
    every network trains (None: as each config says).

    All of it is one task graph (:mod:`moakit.graph`): every model's feature fits, fold jobs
    and stage outputs, then the blend, which depends on every model. The local executor runs
    it in order; the Ray executor runs whatever is ready at once, across models. A failed
    node is reported with its model / stage / seed / fold; the nodes that do not depend on it
    finish, and a rerun does the rest."""
    from moakit.data.io import load

    if isinstance(config, BlendConfig):
        if profile not in ("full", config.profile):
            raise WorkflowError(f"the blend config was resolved for profile {config.profile!r}, not {profile!r}")
        blend_config = config
    else:
        blend_config = load_blend_config(config, profile)
    model_configs = resolve_models(blend_config)
    if show_progress and skip_message(blend_config):
        from moakit.progress import console

        console.print(f"note: {skip_message(blend_config)}", soft_wrap=True, highlight=False, markup=False)
    data = data_dir if isinstance(data_dir, MoAData) else load(data_dir)
    check_models(model_configs, data)
    exec_obj = _make_executor(executor, ray_address)

    out = runner.check_out_dir(out)
    from moakit.validate import check_device, check_folder_kind

    check_folder_kind(out, "workflow", "this workflow run")  # never into a model / blend / data folder
    check_device(device)
    fingerprint = data_fingerprint(data)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):  # a second run into ``out`` fails fast
        from moakit.validate import clean_leftovers

        clean_leftovers(out)  # temporary files and folders of a killed run (.blend.*/, .report.*/ ...)
        return _WorkflowRun(blend_config, model_configs, data, out, exec_obj, fingerprint, device).run(show_progress)


class WorkflowManifest(Observer):
    """``manifest.json`` of a workflow run (:class:`moakit.manifest.Manifest`, kind
    workflow), kept current from the task graph's events."""

    def __init__(self, out: Path, content: Manifest) -> None:
        self.out = out
        self.content = content
        self.graph: TaskGraph | None = None

    def save(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self.content, key, value)
        self.content.write(self.out)

    def model(self, name: str) -> ManifestEntry:
        return self.content.models[name]

    def set_model(self, name: str, **changes) -> None:
        self.content.models[name] = self.model(name).model_copy(update=changes)
        self.save()

    def on_start(self, node) -> None:
        if node.model in self.content.models and self.model(node.model).status == "pending":
            self.set_model(node.model, status="running")

    def on_done(self, node, value) -> None:
        if node.kind != "model":
            return
        m = value.metrics
        self.set_model(node.model, status="complete", seconds=self._seconds(node.model),
                       training_seconds=value.timings.get("total_seconds"), log_loss=m["log_loss"],
                       log_loss_treated=m["log_loss_treated"])

    def on_failed(self, node, error: str) -> None:
        if node.model in self.content.models:
            self.set_model(node.model, status="failed", error=executors.node_error(node, error),
                           seconds=self._seconds(node.model))

    def _seconds(self, name: str) -> float:
        """Wall seconds of the model's nodes that ran now (first start to last end)."""
        spans = [self.graph.trace[n.id] for n in self.graph.of_model(name) if "end" in self.graph.trace.get(n.id, {})]
        return round(max(t["end"] for t in spans) - min(t["start"] for t in spans), 3) if spans else 0.0


class _WorkflowRun:
    """One locked run of a workflow: build the graph (models, blend), run it, write the
    submission and the report."""

    def __init__(self, blend_config: BlendConfig, model_configs: dict[str, RunConfig], data: MoAData, out: Path,
                 executor, fingerprint: str, device: str | None = None) -> None:
        self.blend_config, self.model_configs, self.data = blend_config, model_configs, data
        self.out, self.executor, self.fingerprint, self.device = out, executor, fingerprint, device
        self.names = [e.name for e in blend_config.models]
        self.manifest: WorkflowManifest | None = None

    def run(self, show_progress: bool) -> WorkflowResult:
        # the one resume rule (moakit.runs); the blend settings may change between runs (the
        # blend is redone); a model entry whose config changed is refused by its own check
        # (runner.prepare_run, the error names the entry)
        check_resume(self.out, "workflow", self.fingerprint, error=WorkflowError)
        resolved = {"blend_config": self.blend_config.model_dump(mode="json"),
                    "model_configs": {n: c.model_dump(mode="json") for n, c in self.model_configs.items()}}
        records.write_workflow(self.out, resolved["blend_config"], resolved["model_configs"])
        self.manifest = WorkflowManifest(self.out, self._initial_manifest(resolved))
        self.manifest.save()
        start = time.perf_counter()
        with contextlib.ExitStack() as locks:
            graph = self._graph(locks)
            self.manifest.graph = graph
            collected: dict[str, Any] = {}
            try:
                failures = executors.FailureRecorder({n: layout.model_dir(self.out, n) for n in self.names})
                executors.execute(graph, self.executor, show_progress,
                                  Observers(self.manifest, failures, _Values(collected)), self.out / layout.GRAPH)
            except GraphFailed as exc:
                self.manifest.save(status="failed")
                raise WorkflowError(str(exc)) from exc
        results = {n: collected[f"{n}/model"] for n in self.names}
        blend_result, summary = collected["blend"]
        return self._finish(results, blend_result, summary, start)

    def _initial_manifest(self, resolved: dict) -> Manifest:
        previous = read_manifest(self.out) if (self.out / layout.MANIFEST).exists() else None
        cfgs = self.model_configs
        return new_manifest(
            "workflow", config_source=self.blend_config.source, profile=self.blend_config.profile, config=resolved,
            data_fingerprint=self.fingerprint, data_source=data_source(self.data, self.out),
            n_train=len(self.data.train), n_test=len(self.data.test),
            executor=type(getattr(self.executor, "executor", self.executor)).__name__,
            created=previous.created if previous else None,
            models={n: ManifestEntry(model=cfgs[n].model, profile=cfgs[n].profile, run_dir=f"{layout.MODELS_DIR}/{n}",
                                     seeds=cfgs[n].seeds, folds=cfgs[n].cv.n_folds, cv=cfgs[n].cv.scheme)
                    for n in self.names},
            blend=(previous.blend if previous and previous.blend else {"status": "pending"}))

    def _graph(self, locks: contextlib.ExitStack) -> TaskGraph:
        """Every model's nodes (each run folder locked and checked), then the blend."""
        graph = TaskGraph()
        model_nodes = []
        for name in self.names:
            cfg = self.model_configs[name]
            model_dir = layout.model_dir(self.out, name)
            try:
                model_dir.mkdir(parents=True, exist_ok=True)
                locks.enter_context(run_lock(model_dir))
                model_nodes.append(runner.add_model(graph, name, cfg, build_model(cfg), self.data, model_dir,
                                                    self.fingerprint, device=self.device))
            except Exception as exc:
                self.manifest.content.status = "failed"
                self.manifest.set_model(name, status="failed", error=f"{type(exc).__name__}: {exc}")
                raise WorkflowError(f"model entry {name!r} ({cfg.model}) failed: {exc}") from exc
        graph.add(Node("blend", "blend", self._blend, deps=model_nodes, on_driver=True, cpu_share=0))
        return graph

    def _blend(self, *results: runner.TrainResult):
        """The blend node (skipped when a finished blend of the same inputs exists):
        returns (BlendResult or None, blend.json)."""
        from moakit import blend as blend_mod

        settings_obj = self.blend_config.blend
        run_dirs = [layout.model_dir(self.out, n) for n in self.names]
        inputs = _file_digest([p for d in run_dirs for p in (d / layout.OOF_PREDICTIONS, d / layout.TEST_PREDICTIONS)])
        settings = settings_obj.model_dump(mode="json")
        blend_dir = layout.blend_dir(self.out)
        prev = self.manifest.content.blend or {}
        blend_result = None
        t0 = time.perf_counter()
        if not (prev.get("status") == "complete" and prev.get("inputs") == inputs and prev.get("settings") == settings
                and (blend_dir / layout.BLEND).exists() and (blend_dir / layout.BLEND_TEST).exists()):
            self.manifest.save(blend={"status": "running"})
            try:
                with atomic_dir(blend_dir) as tmp:  # a killed blend leaves no half-written blend/
                    blend_result = blend_mod.blend_runs(
                        [str(d) for d in run_dirs], tmp, names=self.names, methods=tuple(settings_obj.methods),
                        n_trials=settings_obj.optuna_trials, storage=settings_obj.storage, preset=settings_obj.preset,
                        data=self.data, seed=settings_obj.seed, calibrate=settings_obj.calibrate,
                        choose=settings_obj.choose, note=settings_obj.note or None,
                        skipped=self.blend_config.skip_models.model_dump() if self.blend_config.skip_models else None)
            except Exception as exc:
                self.manifest.save(status="failed", blend={"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
                raise
            blend_result.out_dir = blend_dir  # it was written to a temporary folder, now renamed
        summary = records.read_object(blend_dir / layout.BLEND)
        seconds = round(time.perf_counter() - t0, 3) if blend_result is not None else prev.get("seconds")
        self.manifest.save(blend={"status": "complete", "inputs": inputs, "settings": settings, "seconds": seconds,
                                  **_blend_scores(summary)})
        return blend_result, summary

    def _finish(self, results, blend_result, summary, start: float) -> WorkflowResult:
        from moakit import report as report_mod

        submission = self.out / layout.SUBMISSION
        with atomic_file(submission, "wb") as fh, open(layout.blend_dir(self.out) / layout.BLEND_TEST, "rb") as src:
            shutil.copyfileobj(src, fh)
        # the manifest is complete before the report is written, so the report shows it so
        self.manifest.save(status="complete", error=None,
                           timings={"total_seconds": round(time.perf_counter() - start, 3)})
        try:
            report_path = Path(report_mod.write_report(self.out))
        except Exception as exc:
            self.manifest.save(status="failed", error=f"report: {type(exc).__name__}: {exc}")
            raise WorkflowError(f"report failed (models and blend are complete): {exc}") from exc
        return WorkflowResult(self.out, results, blend_result, summary, submission, report_path,
                              self.manifest.content.to_json())


class _Values(Observer):
    """Keeps the values of the model and blend nodes by node id."""

    def __init__(self, into: dict) -> None:
        self.into = into

    def on_done(self, node, value) -> None:
        if node.kind in ("model", "blend"):
            self.into[node.id] = value


def _blend_scores(summary: dict) -> dict:
    """The blended OOF log loss and the weights, from blend.json (whatever else it holds)."""
    out = {}
    for key in ("log_loss", "log_loss_treated", "method", "chosen"):
        if key in summary:
            out[key] = summary[key]
    from moakit.blend import recorded_weights

    weights = recorded_weights(summary)
    if weights:
        out["weights"] = weights
    return out


def is_workflow_run(run_dir: str | Path) -> bool:
    return layout.kind_of(run_dir) == "workflow"
