"""Benchmark of the 2-heads ResNet: out-of-fold log loss and seconds per epoch.

Trains the ``resnet_2heads`` config (``cpu`` profile by default) through the runner on the
realistic benchmark data: moakit's simulator driven by the real lish-moa label files
(``../shared/data/lish-moa-labels`` next to the repository). Writes ``bench/out/resnet.md``.

    .venv/bin/python bench/bench_resnet.py                 # cpu profile, V1
    .venv/bin/python bench/bench_resnet.py --config resnet_2heads_v2 --profile smoke

Skips with a message when the label files are absent. An interrupted run resumes (finished
folds are kept; ``--fresh`` starts over); the "training wall time" then covers this
invocation only, while "seconds per epoch" uses every fold's own fit time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from score_runs import test_scores  # noqa: E402  (bench/score_runs.py)
from common import LABELS, OUT, ready_for_realistic_data, realistic_data_dir, write_report  # noqa: E402  (bench/common.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="resnet_2heads")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="simulator seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="discard a previous (partial) run; by default it resumes")
    ap.add_argument("--report", default=str(OUT / "resnet.md"))
    args = ap.parse_args()

    if not ready_for_realistic_data(args.threads):
        return 0

    from moakit import runner
    from moakit.config import load_config
    from moakit.data.io import load

    tag = f"{args.config}-{args.profile}-{args.seed}"
    t0 = time.perf_counter()
    data = load(realistic_data_dir(args.seed))
    t_data = time.perf_counter() - t0

    config = load_config(args.config, args.profile)
    run_dir = OUT / "runs" / tag
    if args.fresh and run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    result = runner.train(config, data, run_dir, show_progress=True)  # resumes finished folds
    t_train = time.perf_counter() - t0

    folds = []
    for done in sorted(run_dir.glob("stages/*/seed_*/fold_*/done.json")):
        folds.append(json.loads(done.read_text()))
    phases = ("nonscored", "scored", "frozen", "unfrozen")
    epochs = sum(sum(f["info"].get(f"{p}_epochs", 0) for p in phases) for f in folds)
    fit_seconds = sum(f["fit_seconds"] for f in folds)
    per_epoch = fit_seconds / max(epochs, 1)

    t0 = time.perf_counter()
    again = runner.predict_run(run_dir, data.test)
    t_predict = time.perf_counter() - t0
    reload_ok = bool(np.allclose(again, result.test, atol=1e-6, rtol=0))

    m = result.metrics
    test = test_scores(data, result.test)
    lines = [
        f"# 2-heads ResNet benchmark ({args.config}, profile {args.profile})",
        "",
        f"Command: `.venv/bin/python bench/bench_resnet.py --config {args.config} --profile {args.profile}"
        + f" --seed {args.seed} --threads {args.threads}`",
        "",
        f"Data: simulated with the real lish-moa labels ({LABELS.name}), {len(data.train)} training rows, "
        f"{len(data.test)} test rows, {data.train.genes.shape[1]} genes, {data.train.cells.shape[1]} cells.",
        f"CV: {config.cv.scheme} {config.cv.n_folds} folds, seeds {config.seeds}; torch threads {args.threads}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| OOF log loss (all rows, controls 0) | {m['log_loss']:.5f} |",
        f"| OOF log loss (treated rows) | {m['log_loss_treated']:.5f} |",
        f"| test log loss, unseen drugs (all / treated rows) | {test['log_loss']:.5f} / {test['log_loss_treated']:.5f} |",
        f"| prior baseline (all / treated) | {m['prior']['log_loss']:.5f} / {m['prior']['log_loss_treated']:.5f} |",
        f"| seconds per epoch (mean over all phases and folds) | {per_epoch:.2f} |",
        f"| epochs trained (all folds) | {epochs} |",
        f"| training wall time (this invocation) | {t_train:.0f} s; sum of fold fit times {fit_seconds:.0f} s |",
        f"| data simulation + load | {t_data:.0f} s |",
        f"| predict_run on test | {t_predict:.1f} s (equals the run's test predictions: {reload_ok}) |",
        "",
        "Per fold (losses on the early-stopping holdout carved from the training folds; the OOF",
        "fold's loss is computed only after training):",
        "",
        "| fold | selected (t-test) | non-scored targets | epochs ns/sc/frozen/unfrozen | loops"
        " | improving epochs frozen/unfrozen | holdout loss | OOF fold loss | fit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in folds:
        i = f["info"]
        lines.append(
            f"| {f['seed']}/{f['fold']} | {i['n_selected']} | {i['n_nonscored_targets']} | "
            + "/".join(str(i.get(f"{p}_epochs", 0)) for p in phases)
            + f" | {i.get('loops', '-')} | {i.get('frozen_improved', '-')}/{i.get('unfrozen_improved', '-')}"
            f" | {i['holdout_loss']:.5f} | "
            f"{i.get('valid_loss', float('nan')):.5f} | {f['fit_seconds']:.0f} |")
    write_report(args.report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
