"""Feature fits of the models whose seeds now share one fit because steps that draw nothing
carry no seed in the content key (BENCHMARKS.md, "Feature fits per run, and the feature
cache across runs (issue 29)").

Part ``fits``: each named model of ``blend_best_lb`` at ``--profile`` (its widths / sizes)
with its ``full`` profile's seed list (or ``--seeds N``), every stage-seed's ``features``
node (bench_feature_cache.features_pass: moakit.fold_jobs.fit_stage_seed, placeholder
upstream predictions for a stacked model's later stages), without within-run reuse
(MOAKIT_FEATURE_REUSE=0) and with it: fits and process CPU seconds inside fit_features.
Part ``train``: ``moakit train simple_nn --profile P`` with ``--seeds`` seeds, with and without
reuse, each under /usr/bin/time -v (CPU seconds, peak RSS), and the largest OOF difference.

    nice -n 19 .venv/bin/python bench/bench_seedless_fits.py OUT fits [--profile cpu] [--models a b]
    nice -n 19 .venv/bin/python bench/bench_seedless_fits.py OUT train [--profile smoke] [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_feature_cache as fc  # noqa: E402  (the features pass and the timing helper)
from common import write_result  # noqa: E402  (bench/common.py)

MODELS = ["simple_nn", "simple_nn_drug_cv", "two_stage_nn_tabnet"]


def part_fits(out: Path, profile: str, rows: int, models: list[str], seeds: int | None) -> dict:
    data = fc._load(fc._simulated(out, rows))
    full = fc._entries("full")
    configs = {}
    for name, config in fc._entries(profile).items():
        if name in models:
            seed_list = list(range(seeds)) if seeds else list(full[name].seeds)
            configs[name] = config.model_copy(update={"seeds": seed_list})
    result = {"profile": profile, "rows": rows, "seeds": {n: list(c.seeds) for n, c in configs.items()},
              "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="seedless-", dir=out) as work:
        os.environ["MOAKIT_FEATURE_REUSE"] = "0"
        result["no_reuse"] = fc.features_pass(configs, data, Path(work) / "no_reuse")
        os.environ["MOAKIT_FEATURE_REUSE"] = "1"
        result["reuse"] = fc.features_pass(configs, data, Path(work) / "reuse")
    result["load_after"] = os.getloadavg()
    return result


def part_train(out: Path, profile: str, rows: int, seeds: int) -> dict:
    data_dir = fc._simulated(out, rows)
    work = out / f"train-{profile}"
    work.mkdir(parents=True, exist_ok=True)
    base = [*fc.MOAKIT, "train", "simple_nn", "--profile", profile, "--data", str(data_dir), "--quiet",
            "--seeds", str(seeds)]
    result = {"profile": profile, "rows": rows, "seeds": seeds}
    for label, reuse in (("no_reuse", "0"), ("reuse", "1")):
        run_dir = work / label
        os.environ["MOAKIT_FEATURE_REUSE"] = reuse
        result[label] = {"load_before": os.getloadavg(),
                         **fc._timed([*base, "--out", str(run_dir)], work / f"{label}.log"),
                         "load_after": os.getloadavg()}
        from moakit.runs import ModelRun

        sources = [rec.origin for _, _, rec in ModelRun(run_dir).feature_sources()]
        result[label]["feature_sources"] = {s: sources.count(s) for s in sorted(set(sources))}
    os.environ["MOAKIT_FEATURE_REUSE"] = "1"
    for what in ("oof", "test"):
        a, b = (getattr(ModelRun(work / label), what).select_dtypes("number").to_numpy(float)
                for label in ("no_reuse", "reuse"))
        result[f"max_abs_{what}_diff"] = float(np.max(np.abs(a - b)))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("part", choices=["fits", "train"])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--seeds", type=int, default=None)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "fits":
        profile = args.profile or "cpu"
        result = part_fits(args.out, profile, args.rows, args.models, args.seeds)
    else:
        profile = args.profile or "smoke"
        result = part_train(args.out, profile, args.rows, args.seeds or 3)
    write_result(args.out / f"{args.part}-{profile}.json", result)


if __name__ == "__main__":
    main()
