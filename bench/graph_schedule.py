"""On paper: the full-profile best-LB run's task graph scheduled on 1, 8, 16 and 64 GPUs.

The graph's SHAPE is moakit's own (the full profile of every model of blend_best_lb, the
same stage chain as training: ``runner.StageChain``); the node DURATIONS are estimates
derived from measured cpu-profile times (BENCHMARKS.md) and the write-up (see DURATIONS).
Two schedulers are simulated on a cluster of P workers, each 1 GPU + ``--cpus-per-gpu`` CPUs:

- ``today``: the runner before the task graph: models one after another, stages and seeds
  one after another, each stage-seed's feature fit on the driver, then only that
  stage-seed's folds in parallel (as many as the cluster holds);
- ``graph``: every node submitted at once, started (first come first served, as Ray does)
  as soon as its inputs exist and its resources are free.

Resources per node as moakit declares them with ``--job-cpus 2 --job-gpus 1``: a feature fit
2 CPUs; an MLP-family fold 2 CPUs and 0.25 GPU (moakit trains the MLPs on the CPU, so the
GPU share is only a reservation); a CNN fold 2 CPUs and 1 GPU; TabNet's stage 2 (CUDA when
available) as an MLP fold.

    .venv/bin/python bench/graph_schedule.py [--cpus-per-gpu 8] [--out bench/out/graph/schedule.md]
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, write_report  # noqa: E402

# Seconds per fold of the full profile, from the cpu-profile measurements in BENCHMARKS.md
# (2 threads, 19,051 training rows, 5 folds) scaled by the epoch ratio full / cpu (and x1.125
# for 10-fold models, whose folds train on 90% of the rows instead of 80%); the CNNs from
# the write-up ("about 12-25 hours to train for 10-folds" on two 2080 Ti: 2.4-5 GPU-hours per
# fold; which CNN took which is not stated: EfficientNet is given the low end, ResNeSt the high).
DURATIONS = {
    # model: {stage: seconds per fold}
    "simple_nn": {"scored": 25.4 * 25 / 12},  # 127 s / 5 folds at 12 epochs -> 25 epochs
    "simple_nn_drug_cv": {"scored": 24.2 * 25 / 12},  # 121 s / 5 folds
    # 503 s (1 thread, 15 folds + features) ~ 27 s per fold at 10/12/12 epochs -> 15/25/25
    "three_stage_nn": {"nonscored": 27 * 15 / 10, "scored": 27 * 25 / 12, "stack": 15 * 25 / 12},
    # stage 1 as the 3-stage's; TabNet ~100 s per fold at 24 epochs -> up to 200 (no early stop)
    "two_stage_nn_tabnet": {"nonscored": 27 * 15 / 10 * 1.125, "scored": 100 * 200 / 24 * 1.125},
    # fold fits 52-56 s at epoch caps 10/15/5/5 (35) -> caps 50/50/100/100 (300), an upper bound
    "resnet_2heads": {"scored": 54 * 300 / 35 * 1.125},
    "deepinsight_efficientnet": {"scored": 2.4 * 3600},
    "deepinsight_resnest_v2": {"scored": 5.0 * 3600},
}
FEATURE_SECONDS = {  # per stage-seed feature fit (the 3-stage's FA + UMAP on all rows; t-SNE map 4 s)
    "three_stage_nn": {"nonscored": 120, "scored": 10, "stack": 5},
    "two_stage_nn_tabnet": {"nonscored": 120, "scored": 10},
    "deepinsight_efficientnet": {"scored": 30},
    "deepinsight_resnest_v2": {"scored": 30},
}
DEFAULT_FEATURE_SECONDS = 15


@dataclass
class Task:
    id: str
    model: str
    stage: int
    seed: int
    kind: str  # features / fold / gather
    seconds: float
    cpus: float
    gpus: float
    deps: list[str] = field(default_factory=list)


def build_tasks(job_cpus: float = 2, job_gpus: float = 1) -> list[Task]:
    """The full-profile best-LB graph (without the driver's model / blend nodes)."""
    from moakit import runner
    from moakit.workflow import load_blend_config, resolve_models

    tasks: list[Task] = []
    for name, config in resolve_models(load_blend_config("blend_best_lb")).items():
        model = runner.build_model(config)
        chain = runner.StageChain(model, config.seeds)
        for i, stage in enumerate(chain.stages):
            for seed in config.seeds:
                prefix = f"{name}/{stage.name}/{seed}"
                deps = [f"{name}/{chain.stages[j].name}/{s}/gather" for j, s in chain.upstream(i, seed)]
                feat = FEATURE_SECONDS.get(name, {}).get(stage.name, DEFAULT_FEATURE_SECONDS)
                tasks.append(Task(f"{prefix}/features", name, i, seed, "features", feat, job_cpus, 0, deps))
                folds = []
                for k in range(config.cv.n_folds):
                    tasks.append(Task(f"{prefix}/fold_{k}", name, i, seed, "fold", DURATIONS[name][stage.name],
                                      job_cpus, job_gpus * model.fold_gpu_share, [f"{prefix}/features"]))
                    folds.append(tasks[-1].id)
                tasks.append(Task(f"{prefix}/gather", name, i, seed, "gather", 1.0, 0, 0, folds))
    return tasks


def critical_path(tasks: list[Task]) -> tuple[float, list[str]]:
    finish: dict[str, tuple[float, list[str]]] = {}
    for t in tasks:  # topological order
        best = max((finish[d] for d in t.deps), default=(0.0, []), key=lambda x: x[0])
        finish[t.id] = (best[0] + t.seconds, best[1] + [t.id])
    return max(finish.values(), key=lambda x: x[0])


def simulate(tasks: list[Task], gpus: int, cpus_per_gpu: int, batches: list[list[Task]] | None = None) -> float:
    """Wall seconds of a first-come-first-served list schedule of ``tasks`` on ``gpus``
    workers; ``batches`` (today's scheduler): run one batch after the other."""
    if batches is not None:
        return sum(simulate(b, gpus, cpus_per_gpu) for b in batches)
    free_cpu, free_gpu = [float(cpus_per_gpu)] * gpus, [1.0] * gpus
    done: set[str] = set()
    ids = {t.id for t in tasks}
    waiting = list(tasks)
    running: list[tuple[float, int, str, int]] = []  # (end, seq, id, worker)
    now, seq = 0.0, 0
    by_id = {t.id: t for t in tasks}
    while waiting or running:
        started = True
        while started:
            started = False
            for t in list(waiting):
                if any(d in ids and d not in done for d in t.deps):
                    continue
                w = next((w for w in range(gpus) if free_cpu[w] >= t.cpus - 1e-9 and free_gpu[w] >= t.gpus - 1e-9), None)
                if w is None:
                    continue
                free_cpu[w] -= t.cpus
                free_gpu[w] -= t.gpus
                heapq.heappush(running, (now + t.seconds, seq, t.id, w))
                seq += 1
                waiting.remove(t)
                started = True
        if not running:
            raise RuntimeError("deadlock: a task needs more than one worker holds")
        now, _, tid, w = heapq.heappop(running)
        free_cpu[w] += by_id[tid].cpus
        free_gpu[w] += by_id[tid].gpus
        done.add(tid)
    return now


def today_batches(tasks: list[Task]) -> list[list[Task]]:
    """The sequential runner: per model, per stage, per seed: the feature fit (driver), then
    that stage-seed's folds."""
    batches: list[list[Task]] = []
    for t in tasks:
        if t.kind == "features":
            batches.append([Task(t.id, t.model, t.stage, t.seed, t.kind, t.seconds, 0, 0)])  # on the driver
            batches.append([])
        elif t.kind == "fold":
            batches[-1].append(Task(t.id, t.model, t.stage, t.seed, t.kind, t.seconds, t.cpus, t.gpus))
    return [b for b in batches if b]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpus-per-gpu", type=int, default=8)
    parser.add_argument("--out", default=str(OUT / "graph" / "schedule.md"))
    args = parser.parse_args()
    tasks = build_tasks()
    cp, path = critical_path(tasks)
    work_gpu = sum(t.seconds * t.gpus for t in tasks) / 3600
    work_cpu = sum(t.seconds * t.cpus for t in tasks) / 3600
    n_folds = sum(t.kind == "fold" for t in tasks)
    cnn_folds = sum(t.kind == "fold" and t.gpus >= 1 for t in tasks)
    lines = [f"Full-profile blend_best_lb: {len(tasks)} tasks ({n_folds} fold jobs, {cnn_folds} of them CNN folds "
             f"with a whole GPU); reserved work {work_gpu:.1f} GPU-hours, {work_cpu:.1f} CPU-hours; "
             f"{args.cpus_per_gpu} CPUs per GPU.", "",
             f"Critical path {cp / 3600:.2f} h: {' -> '.join(path)}", "",
             "| GPUs | today's scheduler (h) | task graph (h) | speed-up | graph vs critical path |",
             "|---|---|---|---|---|"]
    for gpus in (1, 8, 16, 20, 32, 64):
        today = simulate(tasks, gpus, args.cpus_per_gpu, today_batches(tasks))
        graph = simulate(tasks, gpus, args.cpus_per_gpu)
        lines.append(f"| {gpus} | {today / 3600:.2f} | {graph / 3600:.2f} | {today / graph:.2f}x | "
                     f"{graph / cp:.2f}x |")
    lower = math.ceil(cnn_folds)
    lines += ["", f"A CNN fold holds a whole GPU: with {lower} GPUs every CNN fold runs at once and the "
              "wall time is the critical path (the longest CNN fold); more GPUs cannot help."]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
