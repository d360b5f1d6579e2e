"""Running fold jobs on a Ray cluster (or a local Ray instance).

Each (stage, seed, fold) job becomes one Ray task that declares its CPU/GPU needs. The big
matrices of a stage-seed (``runner.StageArrays``: all training rows, their targets, the test
rows) go into the object store once with ``ray.put``; every task of that stage-seed receives
the same object reference plus its own row indices, so the data is not copied per task
(numpy arrays are read zero-copy from the object store on each node).

Tasks run :func:`moakit.runner.run_fold_job`, which writes the fold's artifacts to the run
folder: that folder must be on a filesystem every node sees (NFS, a shared disk). Results are
identical to the local executor's: same arrays, same row indices, same per-fold seeds.

Ray is an optional extra: ``pip install 'moakit[ray]'``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from moakit.progress import RunProgress
from moakit.runner import FoldJob, StageArrays, run_fold_job

_INSTALL_HINT = "the Ray executor needs Ray: pip install 'moakit[ray]'"


def import_ray():
    """``ray``, imported on first use, with an error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return ray


def _fold_task(job: FoldJob, arrays: StageArrays, threads: int) -> str:
    """The body of one Ray task: reattach the shared arrays and train the fold with as many
    torch threads as the task reserved CPUs (the result depends on the BLAS thread count
    only in the last float bits)."""
    import torch

    torch.set_num_threads(threads)
    return run_fold_job(dataclasses.replace(job, arrays=arrays))


class RayExecutor:
    """Runs fold jobs as Ray tasks, ``num_cpus_per_job`` / ``num_gpus_per_job`` each.

    ``address``: None or "" starts (or reuses) a local Ray instance; "auto" joins the cluster
    this node belongs to (``ray start``); "ray://host:10001" uses Ray Client.
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
            # max_retries=0: a failed fold is reported, not silently retried; a rerun resumes it.
            self._remote = ray.remote(max_retries=0)(_fold_task)
        return ray

    def run(self, jobs: list[FoldJob], progress: RunProgress) -> None:
        if not jobs:
            return
        ray = self._ray()
        shared: dict[int, Any] = {}  # id(StageArrays) -> ObjectRef: one ray.put per stage-seed
        pending: dict[Any, FoldJob] = {}
        for job in jobs:
            if job.arrays is None:
                raise ValueError(f"fold job {job.out_dir} carries no arrays")
            key = id(job.arrays)
            if key not in shared:
                shared[key] = ray.put(job.arrays)
            light = dataclasses.replace(job, arrays=None)  # only indices and settings travel per task
            ref = self._remote.options(num_cpus=self.num_cpus_per_job, num_gpus=self.num_gpus_per_job,
                                       name=f"moakit:{job.stage.name}:seed{job.seed}:fold{job.fold}",
                                       ).remote(light, shared[key], max(1, int(self.num_cpus_per_job)))
            pending[ref] = job
        first = jobs[0]
        advance = progress.jobs(f"ray: {first.model_name} {first.stage.name} ({len(jobs)} fold tasks)", len(jobs))
        failures: list[str] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    ray.get(ref)
                except Exception as exc:  # a RayTaskError wrapping the fold's exception
                    failures.append(f"{job.stage.name} seed {job.seed} fold {job.fold}: {_cause(exc)}")
                advance()
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(jobs)} Ray fold task(s) failed (finished folds are kept; "
                               f"rerun to resume): " + "; ".join(failures))


def _cause(exc: Exception) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
