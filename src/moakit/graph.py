"""The task graph of a run: every feature fit, fold job, stage output, model and blend.

A run (``moakit train`` = one model, ``moakit run`` = every model of a blend, then the
blend) is a directed acyclic graph of :class:`Node` objects:

- ``features`` of a (model, stage, seed): fits the stage's feature transform (CPU only) and
  returns the stage's matrices (:class:`moakit.fold_jobs.StageArrays`);
- ``fold`` (model, stage, seed, fold): trains one fold from those matrices, writes its
  artifacts and ``done.json``; it depends on its ``features`` node;
- ``gather`` (model, stage, seed): the stage-seed's out-of-fold and fold-averaged test
  predictions (``oof.npy``, ``test.npy``), from its fold nodes; a stacked model's next
  stage depends on the gathers it reads: the same seed's, or ALL seeds' when the
  meta-features are the seed mean;
- ``model``: writes a model's predictions and metrics, from its last stage's gathers;
- ``blend``: depends on every model.

Models are independent of each other. The node ids are unique and name what they are
(``entry/stage/seed_0/fold_3``); nodes are added in a topological order that is also the
order in which the previous, sequential runner worked (model by model, stage by stage, seed
by seed, fold by fold), and the local executor (:func:`run_local`) runs them in exactly that
order, so its results equal the sequential ones. The Ray executor
(:class:`moakit.distributed.RayExecutor`) submits every node at once and lets Ray start each
as soon as its inputs exist.

A node runs a module-level function ``fn(*shared_values, *dependency_values, **kwargs)``
(``shared`` holds the big read-only inputs, such as the data, that the Ray executor puts in
the object store once). ``on_driver`` nodes (a model's last step, the blend) always run in
the calling process. A failed node is reported with its model / stage / seed / fold; nodes
that depend on it are skipped, every other node still runs, and the finished ones keep their
done markers, so a rerun does the rest.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

NodeKind = Literal["features", "fold", "gather", "model", "blend"]


@dataclass
class Node:
    id: str
    kind: NodeKind
    fn: Callable[..., Any]
    deps: list[str] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # name -> big read-only value
    model: str | None = None  # the model entry (or run) it belongs to
    stage: str | None = None
    seed: int | None = None
    fold: int | None = None
    # What the node asks a cluster for, as shares of one job's CPUs / GPUs (the Ray
    # executor's --job-cpus / --job-gpus): fold jobs of a CNN a whole GPU, of an MLP a part
    # of one, feature fits no GPU, gathers nothing (they only read a few files).
    cpu_share: float = 1.0
    gpu_share: float = 0.0
    on_driver: bool = False

    def describe(self) -> str:
        parts = [f"model {self.model!r}"] if self.model is not None else []
        if self.stage is not None:
            parts.append(f"stage {self.stage!r}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        if self.fold is not None:
            parts.append(f"fold {self.fold}")
        return " ".join(parts) or self.kind

    def call(self, dep_values: list[Any], **extra) -> Any:
        return self.fn(*self.shared.values(), *dep_values, **self.kwargs, **extra)


@dataclass
class NodeFailure:
    node: Node
    error: str  # "ExceptionType: message"

    def __str__(self) -> str:
        return f"{self.node.describe()} ({self.node.kind}): {self.error}"


class GraphFailed(ValueError):
    """Some nodes failed (``failures``); the nodes that depend on them were skipped
    (``skipped``); every other node finished and keeps its artifacts. (A ValueError, as
    every "the work failed" error of moakit: the CLI reports it in one line, exit code 1.)"""

    def __init__(self, failures: list[NodeFailure], skipped: list[Node], total: int) -> None:
        self.failures = failures
        self.skipped = skipped
        shown = "; ".join(str(f) for f in failures[:5]) + (f"; ... {len(failures) - 5} more" if len(failures) > 5 else "")
        super().__init__(f"{len(failures)} task(s) failed, {len(skipped)} skipped because of them, "
                         f"{total - len(failures) - len(skipped)} of {total} finished (kept; rerun to resume): {shown}")

    def failed_models(self) -> set[str]:
        return {n.model for n in [f.node for f in self.failures] + self.skipped if n.model is not None}


class Observer:
    """Told what happens to each node (progress bars, manifests). Every method may be a no-op."""

    def on_start(self, node: Node) -> None: ...

    def on_done(self, node: Node, value: Any) -> None: ...

    def on_failed(self, node: Node, error: str) -> None: ...

    def on_skipped(self, node: Node) -> None: ...


class Observers(Observer):
    def __init__(self, *observers: Observer | None) -> None:
        self.observers = [o for o in observers if o is not None]

    def on_start(self, node):
        for o in self.observers:
            o.on_start(node)

    def on_done(self, node, value):
        for o in self.observers:
            o.on_done(node, value)

    def on_failed(self, node, error):
        for o in self.observers:
            o.on_failed(node, error)

    def on_skipped(self, node):
        for o in self.observers:
            o.on_skipped(node)


class TaskGraph:
    """Nodes by id, in the order they were added (a topological order: a node's
    dependencies must already be in the graph)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.trace: dict[str, dict] = {}  # node id -> start / end / host / pid of its run
        self.peak_in_flight = 0  # most nodes submitted and not finished at once (Ray)
        # per model: (its label for progress bars, its fold jobs in all, those already done)
        self.models: dict[str, tuple[str, int, int]] = {}

    def add(self, node: Node) -> str:
        if node.id in self.nodes:
            raise ValueError(f"task graph: node {node.id!r} added twice")
        missing = [d for d in node.deps if d not in self.nodes]
        if missing:
            raise ValueError(f"task graph: node {node.id!r} depends on unknown node(s) {missing}")
        self.nodes[node.id] = node
        return node.id

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes.values())

    def dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {nid: [] for nid in self.nodes}
        for node in self.nodes.values():
            for dep in node.deps:
                out[dep].append(node.id)
        return out

    def of_model(self, model: str, kind: NodeKind | None = None) -> list[Node]:
        return [n for n in self.nodes.values() if n.model == model and (kind is None or n.kind == kind)]

    def summary(self) -> dict:
        """Counts by kind, the peak number of nodes in flight and running at once (from the
        trace), and the sum of node seconds: what ``graph.json`` records."""
        kinds: dict[str, int] = {}
        for node in self.nodes.values():
            kinds[node.kind] = kinds.get(node.kind, 0) + 1
        spans = [(t["start"], t["end"]) for t in self.trace.values() if "end" in t]
        return {"nodes": len(self.nodes), "by_kind": kinds, "executed": len(spans),
                "peak_in_flight": self.peak_in_flight, "peak_running": peak_overlap(spans),
                "node_seconds": round(sum(e - s for s, e in spans), 3),
                "wall_seconds": round(max(e for _, e in spans) - min(s for s, _ in spans), 3) if spans else 0.0}


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one instant."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    best = running = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def stamp() -> dict:
    return {"start": time.time(), "host": socket.gethostname(), "pid": os.getpid()}


def error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}".rstrip(": ")


def run_local(graph: TaskGraph, observer: Observer | None = None,
              call: Callable[[Node, list[Any]], Any] | None = None) -> dict[str, Any]:
    """Run every node in this process, in the order they were added (deterministic).

    ``call(node, dep_values)`` runs one node (default: ``node.call(dep_values)``). A node's
    value is dropped once every node that reads it has run, so only the live stage's
    matrices stay in memory. Returns the values of the nodes nobody depends on.
    Raises :class:`GraphFailed` after running everything that could run."""
    observer = observer or Observer()
    call = call or (lambda node, values: node.call(values))
    dependents = graph.dependents()
    remaining = {nid: len(deps) for nid, deps in dependents.items()}
    values: dict[str, Any] = {}
    bad: set[str] = set()
    failures: list[NodeFailure] = []
    skipped: list[Node] = []
    for node in graph:
        if any(d in bad for d in node.deps):
            bad.add(node.id)
            skipped.append(node)
            observer.on_skipped(node)
            continue
        observer.on_start(node)
        graph.trace[node.id] = stamp()
        try:
            value = call(node, [values[d] for d in node.deps])
        except Exception as exc:  # reported with the node's model / stage / seed / fold
            graph.trace[node.id]["end"] = time.time()
            bad.add(node.id)
            failures.append(NodeFailure(node, error_text(exc)))
            observer.on_failed(node, failures[-1].error)
            continue
        graph.trace[node.id]["end"] = time.time()
        graph.peak_in_flight = max(graph.peak_in_flight, 1)
        values[node.id] = value
        observer.on_done(node, value)
        for dep in node.deps:
            remaining[dep] -= 1
            if remaining[dep] == 0:
                values.pop(dep, None)
    if failures:
        raise GraphFailed(failures, skipped, len(graph))
    return {nid: v for nid, v in values.items() if not dependents[nid]}
