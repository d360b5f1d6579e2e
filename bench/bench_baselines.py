"""Baselines on the realistic benchmark data (simulated profiles on the REAL labels).

OOF mean column-wise log loss of the per-target prior, a multi-label logistic regression
and a small MLP (both trained with moakit's shared loop), under the old (multilabel
stratified) and the new (drug-aware) CV. Writes bench/out/baselines.md.

    .venv/bin/python bench/bench_baselines.py [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.preprocessing import StandardScaler

from moakit import metrics
from moakit.cv import assign_folds
from moakit.data.io import load
from moakit.nn.blocks import MLP
from moakit.nn.train import TrainParams, fit_network, predict_proba

from common import LABELS, OUT, realistic_data_dir, write_report  # noqa: E402  (bench/common.py)


def realistic_data(folder: Path | None = None) -> Path:
    if folder is None and not LABELS.exists():
        sys.exit(f"real labels not found at {LABELS}: this benchmark needs them")
    return folder or realistic_data_dir(0)


def oof_of(train_fn, X, Y, rows, folds):
    oof = np.zeros(Y.shape, np.float32)
    for k in np.unique(folds):
        fit = rows & (folds != k)
        val = folds == k
        oof[val] = train_fn(X[fit], Y[fit], X[val & rows], Y[val & rows], X[val])
    return oof


def prior_fn(Xf, Yf, Xv, Yv, Xo):
    return np.repeat(Yf.mean(0, keepdims=True), len(Xo), axis=0)


def net_fn(hidden):
    def fn(Xf, Yf, Xv, Yv, Xo):
        net = MLP(Xf.shape[1], Yf.shape[1], hidden, [0.0] + [0.25] * len(hidden), [False] * (len(hidden) + 1), "relu")
        params = TrainParams(epochs=12, batch_size=256, lr=1e-3, max_lr=3e-3 if not hidden else 1e-2,
                             weight_decay=1e-5, smoothing=0.001)
        fit_network(net, Xf, Yf, Xv, Yv, params, seed=0)
        return predict_proba(net, Xo)
    return fn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args()
    folder = realistic_data(args.data)
    moa = load(folder)
    tr = moa.train
    X = StandardScaler().fit_transform(np.hstack([tr.features, tr.cp_onehot()])).astype(np.float32)
    Y = tr.scored
    rows = ~tr.is_control
    lines = [f"Data: `{folder}` ({len(tr)} train rows, {int(rows.sum())} treated)", "",
             "| CV | model | OOF log loss (all rows) | treated rows | vs prior | seconds |",
             "|---|---|---|---|---|---|"]
    for scheme in ("old", "drug"):
        folds = assign_folds(tr, scheme, 5, 42)
        prior_loss = None
        for name, fn in [("per-target prior", prior_fn), ("logistic regression (linear, all targets)", net_fn([])),
                         ("MLP 1x512", net_fn([512]))]:
            t0 = time.perf_counter()
            oof = oof_of(fn, X, Y, rows, folds)
            sec = time.perf_counter() - t0
            s = metrics.score(Y, oof, tr.is_control)
            prior_loss = prior_loss or s["log_loss_treated"]
            gain = 1 - s["log_loss_treated"] / prior_loss
            lines.append(f"| {scheme} | {name} | {s['log_loss']:.5f} | {s['log_loss_treated']:.5f} | "
                         f"{-gain:+.1%} | {sec:.0f} |")
            print(lines[-1], flush=True)
    write_report(OUT / "baselines.md", lines)


if __name__ == "__main__":
    main()
