"""Benchmark: rows per second of the full blend inference (``moakit predict``) on CPU.

Trains (or reuses) a workflow run of the best-LB models that are available, then times
``moakit.inference.predict`` -- loading every saved transform and estimator, transforming,
predicting every seed x fold x stage, blending -- on a features file of N rows, for a few
inference batch sizes. Writes ``bench/out/inference.md``.

    .venv/bin/python bench/bench_inference.py                     # cpu profile, defaults
    .venv/bin/python bench/bench_inference.py --run runs/best-lb  # time an existing run
    .venv/bin/python bench/bench_inference.py --run bench/out/blend-lb   # a `moakit blend` folder
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent


def available_entries(blend: str) -> list[dict]:
    """Entries of a shipped blend config whose model config exists and model is registered."""
    from moakit.config import ConfigError, read_yaml, resolve_config_path
    from moakit.models.base import get_model_class

    entries = []
    for entry in read_yaml(resolve_config_path(blend))["models"]:
        try:
            get_model_class(read_yaml(resolve_config_path(entry["config"]))["model"])
        except (ConfigError, ValueError):
            continue
        entries.append(entry)
    return entries


def build_run(work: Path, profile: str, rows: int, blend: str, only: list[str] | None = None) -> Path:
    from moakit.data.simulate import simulate
    from moakit.workflow import run_workflow

    data = work / "data"
    if not (data / "train_features.csv").exists():
        simulate(data, n_rows=rows, seed=0)
    entries = [e for e in available_entries(blend) if not only or e["name"] in only]
    if not entries:
        raise SystemExit(f"no model of {blend} is available" + (f" among {only}" if only else ""))
    cfg = work / "blend.yaml"
    cfg.write_text(yaml.safe_dump({"description": f"{blend}: available models", "models": entries,
                                   "blend": {"methods": ["slsqp"], "optuna_trials": 1},
                                   "model_profile_fallback": {"demo": "smoke"}}, sort_keys=False))
    run = work / f"run-{profile}-{'-'.join(e['name'] for e in entries)}"[:120]
    run_workflow(cfg, data, run, profile=profile, show_progress=False)
    return run


def layout(run: Path) -> tuple[Path, dict[str, Path], dict]:
    """(data folder, model name -> run folder, manifest-like model info) of a workflow run,
    a single-model run or a blend folder of `moakit blend`."""
    if (run / "blend.json").exists() and not (run / "manifest.json").exists():
        summary = json.loads((run / "blend.json").read_text())
        dirs = {n: (run / m["run_dir"]).resolve() for n, m in summary["models"].items()}
        first = json.loads((next(iter(dirs.values())) / "manifest.json").read_text())
        info = {}
        for n, d in dirs.items():
            cfg = json.loads((d / "config.json").read_text())
            info[n] = {"seeds": cfg["seeds"], "folds": cfg["cv"]["n_folds"], "profile": cfg.get("profile")}
        return Path(first["data_source"]), dirs, info
    manifest = json.loads((run / "manifest.json").read_text())
    models = manifest.get("models", {})
    dirs = {n: run / "models" / n for n in models} if (run / "workflow.json").exists() else {run.name: run}
    return Path(manifest["data_source"]), dirs, models


def features_file(run: Path, n_rows: int, work: Path) -> Path:
    """``n_rows`` rows made by repeating the run's test rows (new sig_ids)."""
    source, _, _ = layout(run)
    from moakit.data.io import find_file, read_table

    test = read_table(find_file(source, "test_features"))
    reps = -(-n_rows // len(test))
    big = pd.concat([test] * reps, ignore_index=True).iloc[:n_rows].copy()
    big["sig_id"] = [f"id_bench{i:07d}" for i in range(len(big))]
    path = work / f"features_{n_rows}.csv"
    big.to_csv(path, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="an existing workflow (or single-model) run to time")
    parser.add_argument("--work", type=Path, default=HERE / "out" / "inference-work")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--blend", default="blend_best_lb")
    parser.add_argument("--models", help="comma-separated entry names of the blend to train (default: all available)")
    parser.add_argument("--rows", type=int, default=3000, help="simulated rows to train on")
    parser.add_argument("--predict-rows", type=int, default=20000, help="rows to predict")
    parser.add_argument("--batch-sizes", default="256,2048,8192")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--append", action="store_true", help="add to bench/out/inference.md instead of replacing it")
    args = parser.parse_args()

    import torch

    from moakit import inference
    from moakit.data.io import read_features

    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = args.run or build_run(args.work, args.profile, args.rows, args.blend,
                                args.models.split(",") if args.models else None)
    train_seconds = time.perf_counter() - t0
    path = features_file(run, args.predict_rows, args.work)
    _, model_dirs, models = layout(run)

    t = time.perf_counter()
    ds = read_features(path)
    read_seconds = time.perf_counter() - t
    from moakit import runner

    sizes = [None, *(int(b) for b in args.batch_sizes.split(","))]
    # Cold: the first call in a fresh process pays imports and JIT compiles (numba in UMAP).
    t = time.perf_counter()
    frame = inference.predict(run, ds)
    cold = time.perf_counter() - t
    per_model: dict[str, dict] = {}
    for name, d in model_dirs.items():
        per_model[name] = {}
        for bs in sizes:
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                runner.predict_run(d, ds, batch_size=bs)
                times.append(time.perf_counter() - t)
            per_model[name][bs] = min(times)
            print(f"{name} batch {bs}: {min(times):.2f} s, {len(ds) / min(times):.0f} rows/s", flush=True)
    blend_times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        frame = inference.predict(run, ds)
        blend_times.append(time.perf_counter() - t)
    t = time.perf_counter()
    inference.write_submission(frame, args.work / "submission.csv")
    write_seconds = time.perf_counter() - t
    weights = {}
    for blend_json in (run / "blend" / "blend.json", run / "blend.json"):
        if blend_json.exists():
            from moakit.blend import recorded_weights

            weights = recorded_weights(json.loads(blend_json.read_text()))
            break

    def label(bs):
        return "saved" if bs is None else str(bs)

    lines = [
        "# Inference throughput (`moakit predict`, CPU)",
        "",
        f"Command: `.venv/bin/python bench/bench_inference.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs visible (load average "
        f"{os.getloadavg()[0]:.1f} at the end: shared with other jobs), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- run: `{run}` (profiles {sorted({str(m.get('profile', '?')) for m in models.values()}) or '?'}); "
        f"{len(ds)} rows predicted (the run's test rows repeated); reading the CSV {read_seconds:.2f} s; "
        f"validating + writing the submission {write_seconds:.2f} s",
        f"- training the run: {train_seconds:.0f} s" + (" (reused)" if args.run else ""),
        f"- `inference.predict` of the run's blend (models with weight < 1e-9 are skipped): cold (first call "
        f"in the process) {cold:.2f} s, warm {min(blend_times):.2f} s = {len(ds) / min(blend_times):,.0f} rows/s",
        "",
        "Per model, `runner.predict_run` (load every saved transform and estimator, transform, predict every "
        f"stage x seed x fold), best of {args.repeats}, rows/second by inference batch size; 'all models' is "
        "the cost of a blend that weighs every model:",
        "",
        "| model | blend weight | " + " | ".join(f"batch {label(b)}" for b in sizes) + " |",
        "|---|---:|" + "---:|" * len(sizes),
    ]
    for name, row in per_model.items():
        info = models.get(name, {})
        desc = f"{name} ({len(info.get('seeds', [])) or '?'}x{info.get('folds', '?')})" if info else name
        w = f"{weights[name]:.3f}" if name in weights else "-"
        lines.append(f"| {desc} | {w} | " + " | ".join(f"{len(ds) / row[b]:,.0f}" for b in sizes) + " |")
    totals = {b: sum(row[b] for row in per_model.values()) for b in sizes}
    lines.append("| **all models** | | " + " | ".join(f"**{len(ds) / totals[b]:,.0f}**" for b in sizes) + " |")
    out = HERE / "out" / "inference.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = out.read_text() if args.append and out.exists() else ""
    out.write_text(previous + ("\n" if previous else "") + "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
