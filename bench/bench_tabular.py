"""Quality benchmark of the tabular NN family: OOF log loss and seconds per model.

Trains simple_nn, simple_nn_drug_cv, three_stage_nn and two_stage_nn_tabnet (``cpu``
profile by default) through the runner on the realistic benchmark data: moakit's
simulator driven by the real lish-moa label files (``../shared/data/lish-moa-labels``
next to the repository; all 23,814 rows). Writes ``bench/out/tabular.md``.

    .venv/bin/python bench/bench_tabular.py                       # all four, cpu profile
    .venv/bin/python bench/bench_tabular.py --models three_stage_nn --profile smoke

Skips with a message when the label files are absent. Runs resume (finished folds are
kept; ``--fresh`` starts over); "seconds" is then this invocation's time, and the sum of
the fold fit times is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from score_runs import test_scores  # noqa: E402  (bench/score_runs.py)
from common import LABELS, OUT, ready_for_realistic_data, realistic_data_dir, write_report  # noqa: E402  (bench/common.py)
MODELS = ["simple_nn", "simple_nn_drug_cv", "three_stage_nn", "two_stage_nn_tabnet"]


def realistic_data(seed: int):
    from moakit.data.io import load

    return load(realistic_data_dir(seed))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS, help="config names")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="simulator seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="discard previous (partial) runs")
    ap.add_argument("--report", default=str(OUT / "tabular.md"))
    args = ap.parse_args()
    if not ready_for_realistic_data(args.threads):
        return 0

    from moakit import metrics, runner
    from moakit.config import load_config

    t0 = time.perf_counter()
    data = realistic_data(args.seed)
    t_data = time.perf_counter() - t0
    tr = data.train
    prior = metrics.score(tr.scored, metrics.prior_predictions(tr.scored, tr.is_control, len(tr)), tr.is_control)

    rows = []
    for name in args.models:
        config = load_config(name, args.profile)
        run_dir = OUT / "runs" / f"tabular-{name}-{args.profile}-{args.seed}"
        if args.fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        result = runner.train(config, data, run_dir, show_progress=True)
        seconds = time.perf_counter() - t0
        fit_seconds = sum(json.loads(p.read_text())["fit_seconds"] for p in run_dir.glob("stages/*/seed_*/fold_*/done.json"))
        stages = {k.removeprefix("stage_").removesuffix("_seconds"): v for k, v in result.timings.items()
                  if k.startswith("stage_")}
        again = runner.predict_run(run_dir, data.test)
        rows.append({"model": name, "cv": f"{config.cv.scheme} {config.cv.n_folds}-fold", "seeds": len(config.seeds),
                     "log_loss": result.metrics["log_loss"], "treated": result.metrics["log_loss_treated"],
                     "test": test_scores(data, result.test),
                     "seconds": seconds, "fit_seconds": fit_seconds, "stages": stages,
                     "reload": bool(np.allclose(again, result.test, atol=1e-6, rtol=0))})
        print(rows[-1], flush=True)

    lines = [
        f"# Tabular NN family (profile {args.profile})",
        "",
        f"Command: `.venv/bin/python bench/bench_tabular.py --profile {args.profile} --seed {args.seed} "
        f"--threads {args.threads} --models {' '.join(args.models)}`",
        "",
        f"Data: simulated with the real lish-moa labels ({LABELS.name}), {len(tr)} training rows "
        f"({int((~tr.is_control).sum())} treated), {len(data.test)} test rows; simulation + load {t_data:.0f} s; "
        f"torch threads {args.threads}.",
        f"Per-target prior (each target's treated-row mean, controls 0): log loss {prior['log_loss']:.5f} (all rows) / "
        f"{prior['log_loss_treated']:.5f} (treated rows).",
        "The drug-aware CV model's numbers are on its own (harder) folds and not comparable to the old-CV ones.",
        "",
        "| model | CV | seeds | OOF log loss, all rows | OOF log loss, treated rows | vs prior (all rows)"
        " | test log loss (unseen drugs), all / treated | seconds | fold fit s | stage seconds | predict_run = test |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stage_s = ", ".join(f"{k} {v:.0f}" for k, v in r["stages"].items())
        lines.append(f"| {r['model']} | {r['cv']} | {r['seeds']} | {r['log_loss']:.5f} | {r['treated']:.5f} | "
                     f"{r['log_loss'] - prior['log_loss']:+.5f} | "
                     f"{r['test']['log_loss']:.5f} / {r['test']['log_loss_treated']:.5f} | "
                     f"{r['seconds']:.0f} | {r['fit_seconds']:.0f} | "
                     f"{stage_s} | {r['reload']} |")
    write_report(args.report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
