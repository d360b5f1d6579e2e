"""Running a task graph (:mod:`moakit.graph`): the executors (local, Ray), the one
``execute`` call that training and the workflow use (progress bars, graph.json), and the
observers that training hangs on a run (failure recorder, model results).

Executors are found by name in :data:`EXECUTORS` (``local``, ``ray``); any object with
``run_graph(graph, observer, progress)`` is one. A run's in-memory reuse of equal fold fits
(:mod:`moakit.fold_transforms`) lives as long as its ``execute`` call (a Ray worker's, as long
as the worker works for that run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from moakit import fold_transforms
from moakit.artifacts import write_json
from moakit.graph import Node, Observer, Observers, TaskGraph, run_local
from moakit.manifest import read_manifest
from moakit.progress import GraphProgress, RunProgress
from moakit.registry import Registry
from moakit.runs import layout


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
    where and when to ``trace_path`` (graph.json) even when nodes failed. Equal fold fits
    are reused within this run only (a cache made here, dropped at the end)."""
    try:
        with RunProgress(show_progress) as progress, fold_transforms.reusing_fits():
            as_executor(executor).run_graph(graph, Observers(GraphProgress(progress, graph), observer), progress)
    finally:
        if trace_path is not None:
            write_trace(graph, trace_path, executor)


def write_trace(graph: TaskGraph, path: Path, executor) -> None:
    """graph.json: every node, its dependencies and shares, and when / where it ran."""
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


# --------------------------------------------------------------------------- observers


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


class ModelResults(Observer):
    """Keeps the values of the ``model`` nodes (a TrainResult each) by node id."""

    def __init__(self, into: dict) -> None:
        self.into = into

    def on_done(self, node: Node, value) -> None:
        if node.kind == "model":
            self.into[node.id] = value
