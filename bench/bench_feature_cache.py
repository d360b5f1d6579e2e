"""Feature fits per run and the feature cache across runs (BENCHMARKS.md, "Feature reuse and
streaming prediction", issue 29).

Part ``fits``: for every model of ``blend_best_lb`` (its profile's entries), every stage-seed's
``features`` node (moakit.fold_jobs.fit_stage_seed, as the runner calls it) on simulated data,
with placeholder upstream predictions for a stacked model's later stages (uniform random
arrays of the upstream stage's shape: the networks are not trained here); counts the
fit_features calls and the process CPU seconds inside them, without within-run reuse
(MOAKIT_FEATURE_REUSE=0) and with it; part ``cache``: with a cold, then a warm feature cache.
Part ``count``: the fits a profile needs, counted from the content keys (no fitting), for
each ``--blend`` (default blend_best_lb; blend_moakit adds the 1D-CNN).
Part ``rerun``: ``moakit train three_stage_nn`` twice with --feature-cache, the second with
another stage-3 width (and, to compare, that second config without the cache), each under
/usr/bin/time -v: wall, user + sys CPU seconds, peak RSS, and the feature sources.

    nice -n 19 .venv/bin/python bench/bench_feature_cache.py OUT {fits|cache|count|rerun} [--profile cpu]
        [--blend blend_best_lb --blend blend_moakit]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import write_result  # bench/common.py

REPO = Path(__file__).resolve().parents[1]
MOAKIT = [sys.executable, "-m", "moakit"]


def _load(data_dir: Path):
    from moakit.data.io import load

    return load(data_dir)


def _simulated(out: Path, rows: int) -> Path:
    data_dir = out / f"data{rows}"
    if not (data_dir / "train_features.csv").exists():
        subprocess.run([*MOAKIT, "simulate", str(data_dir), "--rows", str(rows), "--seed", "5"], check=True)
    return data_dir


class FitCounter:
    """Counts fit_features calls of every model class and the process CPU seconds in them."""

    def __init__(self) -> None:
        from moakit import models  # noqa: F401  registers the models
        from moakit.models.base import Model

        self.fits, self.cpu_s, self.original = 0, 0.0, {}
        todo = list(Model.__subclasses__())
        while todo:
            cls = todo.pop()
            todo.extend(cls.__subclasses__())
            if "fit_features" in vars(cls):
                self.original[cls] = vars(cls)["fit_features"]

    def __enter__(self):
        for cls, f in self.original.items():
            def wrapped(model, *a, _f=f, **k):
                t0 = time.process_time()
                try:
                    return _f(model, *a, **k)
                finally:
                    self.fits += 1
                    self.cpu_s += time.process_time() - t0
            cls.fit_features = wrapped
        return self

    def __exit__(self, *exc) -> None:
        for cls, f in self.original.items():
            cls.fit_features = f


def _entries(profile: str, blend: str = "blend_best_lb") -> dict:
    from moakit.workflow import load_blend_config, resolve_models

    return resolve_models(load_blend_config(blend, profile))


def features_pass(configs: dict, data, root: Path) -> dict:
    """Every stage-seed's features node of every model (placeholder upstream predictions)."""
    from moakit import feature_cache, runner
    from moakit.fold_jobs import fit_stage_seed
    from moakit.stages import StageChain, stage_targets

    rng = np.random.default_rng(0)
    cache = feature_cache.settings()  # the cache the environment names, as the runner passes it
    per_model = {}
    for name, config in configs.items():
        model = runner.build_model(config)
        chain = StageChain(model, list(config.seeds))
        outputs: dict = {}
        with FitCounter() as counter:
            for index, stage in enumerate(chain.stages):
                width = stage_targets(stage, data.train)[0].shape[1]
                for seed in config.seeds:
                    upstream = [outputs[k] for k in chain.upstream(index, seed)]
                    fit_stage_seed(data, *upstream, model=model, index=index, seed=seed, seeds=list(config.seeds),
                                   run_dir=str(root / name), feature_cache=cache)
                    outputs[(index, seed)] = (rng.random((len(data.train), width), dtype=np.float32),
                                              rng.random((len(data.test), width), dtype=np.float32))
        per_model[name] = {"stage_seeds": len(chain.stages) * len(config.seeds), "fits": counter.fits,
                           "fit_cpu_s": round(counter.cpu_s, 2)}
    return {"models": per_model, "fits": sum(m["fits"] for m in per_model.values()),
            "fit_cpu_s": round(sum(m["fit_cpu_s"] for m in per_model.values()), 2)}


def part_fits(out: Path, profile: str, rows: int, cache: bool, blend: str = "blend_best_lb",
              models: list[str] | None = None) -> dict:
    """Without reuse and with it (``cache``: with a cold, then a warm feature cache), for the
    blend's models (``models``: only these)."""
    from moakit import feature_cache

    data = _load(_simulated(out, rows))
    configs = {k: v for k, v in _entries(profile, blend).items() if not models or k in models}
    result = {"profile": profile, "rows": rows, "models": list(configs), "load_before": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="fits-", dir=out))
    try:
        if not cache:
            os.environ["MOAKIT_FEATURE_REUSE"] = "0"
            result["no_reuse"] = features_pass(configs, data, work / "no_reuse")
            os.environ["MOAKIT_FEATURE_REUSE"] = "1"
            result["reuse"] = features_pass(configs, data, work / "reuse")
        else:
            with feature_cache.using(work / "cache"):
                result["reuse_cold_cache"] = features_pass(configs, data, work / "reuse")
                result["reuse_warm_cache"] = features_pass(configs, data, work / "again")
            result["cache_mb"] = round(feature_cache.FeatureCache(work / "cache", 10**12).size_bytes() / 1e6, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_after"] = os.getloadavg()
    return result


def part_count(out: Path, rows: int, blends: list[str]) -> dict:
    data = _load(_simulated(out, rows))
    return {blend: _count_blend(blend, data) for blend in blends}


def _count_blend(blend: str, data) -> dict:
    from moakit import feature_reuse, runner
    from moakit.stages import StageChain

    result = {}
    for profile in ("cpu", "full"):
        per_model = {}
        for name, config in _entries(profile, blend).items():
            model = runner.build_model(config)
            chain = StageChain(model, list(config.seeds))
            keys = {feature_reuse.stage_key(model, chain, i, s, data)
                    for i in range(len(chain.stages)) for s in config.seeds}
            per_model[name] = {"stage_seeds": len(chain.stages) * len(config.seeds), "distinct_fits": len(keys)}
        result[profile] = {"models": per_model,
                           "stage_seeds": sum(m["stage_seeds"] for m in per_model.values()),
                           "distinct_fits": sum(m["distinct_fits"] for m in per_model.values())}
    return result


def _timed(cmd: list[str], log: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([\d.]+)", proc.stderr).group(1))

    return {"wall_s": round(wall, 1), "cpu_s": round(field("User time (seconds)") + field("System time (seconds)"), 1),
            "peak_rss_mb": round(field("Maximum resident set size (kbytes)") / 1024)}


def _stage3_width_config(path: Path, profile: str, hidden: list[int]) -> Path:
    """The shipped three_stage_nn config with another stage-3 width (in the profile too)."""
    import yaml

    raw = yaml.safe_load((REPO / "src/moakit/configs/three_stage_nn.yaml").read_text())
    raw["params"]["stage3"]["network"]["hidden"] = hidden
    prof = (raw.get("profiles") or {}).get(profile) or {}
    stage3 = (prof.get("params") or {}).get("stage3") or {}
    if "network" in stage3:
        stage3["network"]["hidden"] = hidden
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def part_rerun(out: Path, profile: str, rows: int) -> dict:
    from moakit.runs import ModelRun

    data_dir = _simulated(out, rows)
    work = out / f"rerun-{profile}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    changed = _stage3_width_config(work / "three_stage_stage3_width.yaml", profile, [256, 256])
    base = [*MOAKIT, "train", "--profile", profile, "--data", str(data_dir), "--quiet"]
    cache = ["--feature-cache", str(work / "cache")]
    result = {"profile": profile, "rows": rows, "load_before": os.getloadavg()}
    runs = {"first": ["three_stage_nn", *cache], "second": [str(changed), *cache], "second_no_cache": [str(changed)]}
    for label, args in runs.items():
        run_dir = work / label
        result[label] = _timed([*base, "--out", str(run_dir), *args[:1], *args[1:]], work / f"{label}.log")
        result[label]["load_after"] = os.getloadavg()
        sources = [rec.origin for _, _, rec in ModelRun(run_dir).feature_sources()]
        result[label]["feature_sources"] = {s: sources.count(s) for s in sorted(set(sources))}
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("part", choices=["fits", "cache", "count", "rerun"])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--blend", action="append", help="the blend(s) (default blend_best_lb; fits / cache: the first)")
    ap.add_argument("--models", nargs="*", help="fits / cache: only these models of the blend")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part in ("fits", "cache"):
        result = part_fits(args.out, args.profile, args.rows, cache=args.part == "cache",
                           blend=(args.blend or ["blend_best_lb"])[0], models=args.models)
    elif args.part == "count":
        result = part_count(args.out, args.rows, args.blend or ["blend_best_lb"])
    else:
        result = part_rerun(args.out, args.profile, args.rows)
    write_result(args.out / f"{args.part}-{args.profile}.json", result)


if __name__ == "__main__":
    main()
