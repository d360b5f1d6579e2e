"""Running a run's task graph on a Ray cluster (or a local Ray instance).

Every node of the graph (:mod:`moakit.graph`) except the driver's (a model's last step,
the blend) becomes one Ray task that declares its resources: a feature fit ``--job-cpus``
CPUs and no GPU; a fold job ``--job-cpus`` CPUs and ``--job-gpus`` x the model's
``fold_gpu_share`` GPUs (a CNN fold a whole GPU, an MLP fold a part of one); a gather (it
only reads a few files) nothing. All tasks are submitted at once, each with the object
references of the tasks it depends on, and Ray starts each as soon as its inputs exist:
every model, seed, stage and fold that can run runs, as far as the cluster's resources go.

A feature task's result (``fold_jobs.StageArrays``: the stage-seed's matrices) stays in the
object store and every fold task of that stage-seed reads the same object (numpy arrays
zero-copy on each node); the data is put there once per run. Tasks write their artifacts to
the run folder, which must be on a filesystem every node sees (NFS, a shared disk). Results
equal the local executor's: same inputs, same row indices, same per-fold seeds.

Ray is an optional extra: ``pip install 'moakit[ray]'``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from moakit.graph import GraphFailed, Node, NodeFailure, Observer, TaskGraph, error_text, stamp
from moakit.progress import RunProgress

_INSTALL_HINT = "the Ray executor needs Ray: pip install 'moakit[ray]'"


def import_ray():
    """``ray``, imported on first use, with an error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return ray


def _node_task(fn, kwargs: dict, threads: int, run_id: str, *values) -> tuple[Any, dict]:
    """The body of one Ray task: run the node with as many torch and BLAS threads as the
    task reserved CPUs; return its value and when / where it ran (two separate objects).
    Equal fold fits are reused across the tasks of run ``run_id`` this worker runs
    (:func:`moakit.fold_transforms.worker_cache`).

    The thread count changes results in the last float bits, which iterative fits (factor
    analysis, UMAP's layout, training) can grow: a local run matches a Ray run with the
    same count (e.g. ``OMP_NUM_THREADS=1`` for ``--job-cpus 1``)."""
    import torch
    from threadpoolctl import threadpool_limits

    from moakit import fold_transforms

    torch.set_num_threads(threads)
    info = stamp()
    with threadpool_limits(limits=threads), fold_transforms.reusing_fits(fold_transforms.worker_cache(run_id)):
        value = fn(*values, **kwargs)
    info["end"] = time.time()
    return value, info


class RayExecutor:
    """Runs a task graph as Ray tasks (see the module's text).

    ``address``: None or "" starts (or reuses) a local Ray instance; "auto" joins the cluster
    this node belongs to (``ray start``); "ray://host:10001" uses Ray Client.
    ``num_cpus_per_job`` / ``num_gpus_per_job``: ``--job-cpus`` / ``--job-gpus``.
    """

    def __init__(self, address: str | None = None, num_cpus_per_job: float = 1, num_gpus_per_job: float = 0,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        if num_cpus_per_job <= 0:
            raise ValueError("num_cpus_per_job must be > 0")
        if num_gpus_per_job < 0:
            raise ValueError("num_gpus_per_job must be >= 0")
        self.address = address
        self.num_cpus_per_job = num_cpus_per_job
        self.num_gpus_per_job = num_gpus_per_job
        self.init_kwargs = dict(init_kwargs or {})
        self._remote = None

    def _ray(self):
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address or None, ignore_reinit_error=True, include_dashboard=False,
                     log_to_driver=False, **self.init_kwargs)
        if self._remote is None:
            # max_retries=0: a failed node is reported, not silently retried; a rerun resumes it.
            self._remote = ray.remote(max_retries=0, num_returns=2)(_node_task)
        return ray

    def resources(self, node: Node) -> dict[str, float]:
        return {"num_cpus": self.num_cpus_per_job * node.cpu_share, "num_gpus": self.num_gpus_per_job * node.gpu_share}

    def run_graph(self, graph: TaskGraph, observer: Observer, progress: RunProgress | None = None) -> None:
        _GraphRun(self, self._ray(), graph, observer).run()


class _GraphRun:
    """The driver's side of one graph on Ray: submit, wait, report, release."""

    def __init__(self, executor: RayExecutor, ray, graph: TaskGraph, observer: Observer) -> None:
        self.executor, self.ray, self.graph, self.observer = executor, ray, graph, observer
        self.dependents = graph.dependents()
        self.readers_left = {nid: len(d) for nid, d in self.dependents.items()}
        self.refs: dict[str, Any] = {}  # node id -> ObjectRef of its value (while someone needs it)
        self.values: dict[str, Any] = {}  # driver node id -> its value
        self.info_of: dict[str, Any] = {}  # remote node id -> the ObjectRef of its start / end
        self.shared: dict[int, Any] = {}  # id(value) -> ObjectRef: each big input put once
        self.in_flight: dict[Any, str] = {}  # info ObjectRef -> node id
        self.state: dict[str, str] = {}  # node id -> submitted / done / failed / skipped
        self.run_id = uuid.uuid4().hex  # what the workers keep their reused fold fits for
        self.failures: list[NodeFailure] = []
        self.skipped: list[Node] = []

    def run(self) -> None:
        while True:
            self._submit_ready()
            if not self.in_flight:
                break
            ready, _ = self.ray.wait(list(self.in_flight), num_returns=1)
            for ref in ready:
                self._finished(self.in_flight.pop(ref), ref)
        if self.failures:
            raise GraphFailed(self.failures, self.skipped, len(self.graph))

    def _submit_ready(self) -> None:
        """Submit every remote node whose inputs are submitted (Ray waits for them); run
        every driver node whose inputs are done; skip nodes behind a failure."""
        progressed = True
        while progressed:
            progressed = False
            for node in self.graph:
                if node.id in self.state:
                    continue
                states = [self.state.get(d) for d in node.deps]
                if any(s in ("failed", "skipped") for s in states):
                    self._skip(node)
                elif node.on_driver and all(s == "done" for s in states):
                    self._run_on_driver(node)
                elif not node.on_driver and all(s in ("done", "submitted") for s in states):
                    self._submit(node)
                else:
                    continue
                progressed = True

    def _submit(self, node: Node) -> None:
        ray = self.ray
        shared = []
        for value in node.shared.values():
            if id(value) not in self.shared:
                self.shared[id(value)] = ray.put(value)
            shared.append(self.shared[id(value)])
        res = self.executor.resources(node)
        threads = max(1, int(res["num_cpus"]))
        value_ref, info_ref = self.executor._remote.options(name=f"moakit:{node.id}", **res).remote(
            node.fn, node.kwargs, threads, self.run_id, *shared, *[self._ref(d) for d in node.deps])
        self.refs[node.id] = value_ref
        self.in_flight[info_ref] = node.id
        self.info_of[node.id] = info_ref
        self.state[node.id] = "submitted"
        self.graph.peak_in_flight = max(self.graph.peak_in_flight, len(self.in_flight))
        self.observer.on_start(node)

    def _run_on_driver(self, node: Node) -> None:
        self.observer.on_start(node)
        self.graph.trace[node.id] = stamp()
        try:
            value = node.call([self.values[d] if d in self.values else self.ray.get(self.refs[d]) for d in node.deps])
        except Exception as exc:
            self.graph.trace[node.id]["end"] = time.time()
            self._fail(node, error_text(exc))
            return
        self.graph.trace[node.id]["end"] = time.time()
        self.values[node.id] = value
        self._done(node, value)

    def _ref(self, nid: str):
        if nid not in self.refs:  # a driver node's value read by a remote node
            self.refs[nid] = self.ray.put(self.values[nid])
        return self.refs[nid]

    def _finished(self, nid: str, info_ref) -> None:
        node = self.graph.nodes[nid]
        try:
            self.graph.trace[nid] = self.ray.get(info_ref)
        except Exception as exc:  # a RayTaskError wrapping the node's exception
            for dep in node.deps:  # an input's end not seen yet: see it first
                if self.state.get(dep) == "submitted":
                    self.in_flight.pop(self.info_of[dep], None)
                    self._finished(dep, self.info_of[dep])
            if any(self.state.get(d) != "done" for d in node.deps):
                self._skip(node)  # it never ran: an input failed
            else:
                self._fail(node, _cause(exc))
            return
        self._done(node, None)

    def _done(self, node: Node, value) -> None:
        self.state[node.id] = "done"
        self.observer.on_done(node, value)
        for dep in node.deps:  # an input nobody else reads leaves the object store
            self.readers_left[dep] -= 1
            if self.readers_left[dep] == 0:
                self.refs.pop(dep, None)
        if not self.dependents[node.id]:
            self.refs.pop(node.id, None)

    def _fail(self, node: Node, error: str) -> None:
        self.state[node.id] = "failed"
        self.failures.append(NodeFailure(node, error))
        self.observer.on_failed(node, error)

    def _skip(self, node: Node) -> None:
        self.state[node.id] = "skipped"
        self.skipped.append(node)
        self.observer.on_skipped(node)


def _cause(exc: Exception) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return error_text(cause)
    return error_text(exc)
