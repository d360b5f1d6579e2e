"""The 2nd place's 1D-CNN (model ``cnn1d``) on the realistic benchmark data.

Trains ``cnn1d`` (``cpu`` profile by default) through the runner on moakit's simulator
driven by the real lish-moa labels (bench/common.py ``realistic_data_dir``), then reports:
OOF log loss (all / treated rows), unseen-drug test log loss, the epoch kept and the fold's
own validation curve when judged (``--selection oof``), seconds per epoch, inference rows/s
of ``predict_run`` (and that it reproduces the run's test predictions), and the mean
target-wise correlation of its predictions with other runs' (``--compare``, e.g. a Simple NN
run on the same data: the write-up's diversity measure). Writes
``bench/out/cnn1d/<run>.md``.

    nice -n 10 .venv/bin/python bench/bench_cnn1d.py                          # cpu, config's policy
    nice -n 10 .venv/bin/python bench/bench_cnn1d.py --selection oof          # the notebook's choice
    nice -n 10 .venv/bin/python bench/bench_cnn1d.py --compare simple_nn=bench/out/policy/simple_nn-cpu-last

Skips with a message when the label files are absent. A run resumes (finished folds kept;
``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from common import LABELS, OUT, ready_for_realistic_data, realistic_data_dir, write_report  # noqa: E402
from score_runs import read_test_predictions, test_scores  # noqa: E402


def read_oof(run_dir: Path, data) -> np.ndarray:
    import pandas as pd

    frame = pd.read_csv(run_dir / "oof_predictions.csv").set_index("sig_id")
    return frame.loc[np.asarray(data.train.sig_id), list(data.train.scored_names)].to_numpy(np.float64)


def mean_target_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Mean over targets of the Pearson correlation of two prediction matrices (rows given
    by the caller; targets where either is constant are skipped). Returns (mean, n targets)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na, nb = np.sqrt((a ** 2).sum(axis=0)), np.sqrt((b ** 2).sum(axis=0))
    ok = (na > 0) & (nb > 0)
    corr = (a[:, ok] * b[:, ok]).sum(axis=0) / (na[ok] * nb[ok])
    return float(corr.mean()), int(ok.sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--selection", default=None, help="holdout|last|oof (default: the config's)")
    ap.add_argument("--seed", type=int, default=0, help="simulator seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fresh", action="store_true", help="discard a previous (partial) run")
    ap.add_argument("--compare", nargs="*", default=[], metavar="NAME=RUN_DIR",
                    help="finished runs on the same data to correlate with")
    args = ap.parse_args()
    if not ready_for_realistic_data(args.threads):
        return 0

    from moakit import metrics, runner
    from moakit.config import load_config
    from moakit.data.io import load

    data = load(realistic_data_dir(args.seed))
    tr, te = data.train, data.test
    config = load_config("cnn1d", args.profile, selection=args.selection)
    policy = config.selection.policy
    name = f"cnn1d-{args.profile}-{policy}-{args.seed}"
    run_dir = OUT / "cnn1d" / name
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    result = runner.train(config, data, run_dir, show_progress=True)
    seconds = time.perf_counter() - t0

    folds = sorted(run_dir.glob("stages/scored/seed_*/fold_*"))
    done = [json.loads((f / "done.json").read_text()) for f in folds]
    histories = [json.loads((f / "history.json").read_text())["epochs"] if (f / "history.json").exists() else []
                 for f in folds]
    fit_seconds = [d["fit_seconds"] for d in done]
    epochs_run = [len(h) for h in histories] or [config.params["aux"]["epochs"] + config.params["train"]["epochs"]]
    per_epoch = sum(fit_seconds) / max(sum(epochs_run), 1)
    best = [d["info"].get("best_epoch") for d in done]
    n_aux = [len(d["info"].get("aux_targets", [])) for d in done]
    curves = []
    for h in histories:
        scored = [r["valid_loss"] for r in h if r.get("phase") == "scored" and r.get("valid_loss") is not None]
        if scored:
            curves.append((int(np.argmin(scored)), len(scored) - 1, min(scored), scored[-1]))

    t1 = time.perf_counter()
    again = runner.predict_run(run_dir, te)
    predict_seconds = time.perf_counter() - t1
    reload_ok = bool(np.allclose(again, result.test, atol=1e-6, rtol=0))
    test = test_scores(data, result.test)
    prior = metrics.score(tr.scored, metrics.prior_predictions(tr.scored, tr.is_control, len(tr)), tr.is_control)

    lines = [
        f"# cnn1d (2nd place 1D-CNN), profile {args.profile}, selection {policy}",
        "",
        f"Command: `nice -n 10 .venv/bin/python bench/bench_cnn1d.py --profile {args.profile} --selection {policy} "
        f"--seed {args.seed} --threads {args.threads}"
        + (f" --compare {' '.join(args.compare)}" if args.compare else "") + "`",
        "",
        f"Data: simulated with the real lish-moa labels ({LABELS.name}), {len(tr)} training rows "
        f"({int((~tr.is_control).sum())} treated), {len(te)} test rows (unseen drugs); torch threads {args.threads}; "
        f"CV {config.cv.scheme} {config.cv.n_folds}-fold (seed {config.cv.seed}), seeds {config.seeds}.",
        f"Prior (each target's treated-row mean): OOF log loss {prior['log_loss']:.5f} / {prior['log_loss_treated']:.5f}.",
        "",
        "| OOF log loss, all / treated | test log loss (unseen drugs), all / treated | run seconds "
        "| fold fit s (mean) | s per epoch | epochs run per fold | aux targets per fold "
        "| predict_run rows/s | predict_run = test |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result.metrics['log_loss']:.5f} / {result.metrics['log_loss_treated']:.5f} "
        f"| {test['log_loss']:.5f} / {test['log_loss_treated']:.5f} | {seconds:.0f} "
        f"| {np.mean(fit_seconds):.0f} | {per_epoch:.1f} | {', '.join(map(str, epochs_run))} "
        f"| {', '.join(map(str, n_aux))} | {len(te) / predict_seconds:.0f} | {reload_ok} |",
        "",
        f"Epoch kept per fold (scored phase, from 0): {best}.",
    ]
    if curves:
        lines.append("Judged curve per fold (best epoch / last epoch, best / last validation loss): "
                     + "; ".join(f"{b} / {n}, {lb:.5f} / {ll:.5f}" for b, n, lb, ll in curves) + ".")
    if args.compare:
        treated_tr, treated_te = ~tr.is_control, ~te.is_control
        own_oof = read_oof(run_dir, data)
        lines += ["", "| compared with | mean target-wise correlation, OOF (treated rows) "
                      "| mean target-wise correlation, test (treated rows) | its OOF / test log loss (all rows) |",
                  "|---|---|---|---|"]
        for item in args.compare:
            label, _, path = item.partition("=")
            other = Path(path)
            c_oof, n_oof = mean_target_correlation(own_oof[treated_tr], read_oof(other, data)[treated_tr])
            other_test = read_test_predictions(other, data)
            c_test, n_test = mean_target_correlation(result.test[treated_te].astype(np.float64),
                                                     other_test[treated_te])
            m = json.loads((other / "metrics.json").read_text())
            t = test_scores(data, other_test)
            lines.append(f"| {label} | {c_oof:.3f} ({n_oof} targets) | {c_test:.3f} ({n_test} targets) "
                         f"| {m['log_loss']:.5f} / {t['log_loss']:.5f} |")
    write_report(OUT / "cnn1d" / f"{name}.md", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
