"""How hard is the simulated data? Prior vs. a quick logistic-regression baseline.

Simulates (a) the default dataset (``--rows`` rows) and (b) the realistic benchmark on the
real lish-moa labels (``--labels-from``, skipped when absent), and reports on the test
split (answers/) the mean column-wise log loss over the 206 scored targets, on treated
rows (controls are predicted 0 and score nothing), of

* prior: each target's mean over the treated training rows;
* logreg: per-target L2 logistic regression on standardised features reduced by PCA
  (``--pca`` dims), with C picked on a drug-grouped validation split of the training set.

On real data the best models cut the prior's log loss by about 30 %; the simulator's
signal is tuned so that this baseline cuts it by roughly 15-35 % on the benchmark.

    python bench/simulator_baseline.py [--rows 6000] [--labels-from DIR] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "simulator"
LABELS = REPO.parent / "shared" / "data" / "lish-moa-labels"
EPS = 1e-15


def column_log_loss(y, p):
    import numpy as np

    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0)))


def design(ds):
    import numpy as np

    onehot = np.stack([ds.cp_time == 0, ds.cp_time == 1, ds.cp_time == 2, ds.cp_dose == 1], axis=1)
    return np.hstack([ds.genes, ds.cells, onehot]).astype(np.float64)


def fit_predict(X, Y, Xs, C, jobs):
    """Per-target logistic regression; targets with no positive get the prior (0)."""
    import numpy as np
    from joblib import Parallel, delayed
    from sklearn.linear_model import LogisticRegression

    def one(j):
        y = Y[:, j]
        if y.sum() == 0:
            return [np.zeros(len(x)) for x in Xs]
        model = LogisticRegression(C=C, max_iter=300, tol=1e-4).fit(X, y)
        return [model.predict_proba(x)[:, 1] for x in Xs]

    out = Parallel(n_jobs=jobs)(delayed(one)(j) for j in range(Y.shape[1]))
    return [np.stack([o[i] for o in out], axis=1) for i in range(len(Xs))]


def mlp_predict(X, Y, Xt, groups, seed=0, threads=2):
    """A small multi-label MLP (872-512-256-206, dropout, label smoothing-free BCE), early
    stopped on a drug-grouped validation split; returns test predictions."""
    import numpy as np
    import torch
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.preprocessing import StandardScaler

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    scaler = StandardScaler().fit(X)
    Xs, Xts = (torch.tensor(scaler.transform(a), dtype=torch.float32) for a in (X, Xt))
    Yt_ = torch.tensor(Y, dtype=torch.float32)
    fit_idx, val_idx = next(GroupShuffleSplit(n_splits=1, test_size=0.15, random_state=seed).split(X, groups=groups))
    net = torch.nn.Sequential(
        torch.nn.Dropout(0.2), torch.nn.Linear(X.shape[1], 512), torch.nn.BatchNorm1d(512), torch.nn.SiLU(),
        torch.nn.Dropout(0.4), torch.nn.Linear(512, 256), torch.nn.BatchNorm1d(256), torch.nn.SiLU(),
        torch.nn.Dropout(0.4), torch.nn.Linear(256, Y.shape[1]))
    with torch.no_grad():
        net[-1].bias.copy_(torch.logit(torch.tensor(Y.mean(0).clip(1e-4, 1), dtype=torch.float32)))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
    lossf = torch.nn.BCEWithLogitsLoss()
    best, best_state, bad = np.inf, None, 0
    fit_t = torch.tensor(fit_idx)
    for epoch in range(40):
        net.train()
        for batch in fit_t[torch.randperm(len(fit_t))].split(256):
            opt.zero_grad()
            lossf(net(Xs[batch]), Yt_[batch]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            p = torch.sigmoid(net(Xs[val_idx])).numpy()
        v = column_log_loss(Y[val_idx], p)
        if v < best:
            best, bad = v, 0
            best_state = {k: t.clone() for k, t in net.state_dict().items()}
        else:
            bad += 1
            if bad >= 4:
                break
    net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        return torch.sigmoid(net(Xts)).numpy()


def evaluate(name, data_dir, args):
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.preprocessing import StandardScaler

    from moakit.data.io import load, read_answers

    data = load(data_dir)
    tr, te = data.train, data.test
    y_test = read_answers(data_dir / "answers" / "test_targets_scored.csv", te.sig_id, tr.scored_names)
    trt, tet = tr.cp_type == 0, te.cp_type == 0
    Y, Yt = tr.scored[trt].astype(float), y_test[tet].astype(float)
    X, Xt = design(tr)[trt], design(te)[tet]
    prior = Y.mean(axis=0)
    loss_prior = column_log_loss(Yt, np.broadcast_to(prior, Yt.shape))

    t0 = time.perf_counter()
    scaler = StandardScaler().fit(X)
    pca = PCA(n_components=args.pca, whiten=True, random_state=0).fit(scaler.transform(X))
    Z, Zt = pca.transform(scaler.transform(X)), pca.transform(scaler.transform(Xt))
    # pick C on a drug-grouped validation split of the training rows
    groups = tr.drug_id[trt]
    fit_idx, val_idx = next(GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=0).split(Z, groups=groups))
    scores = {}
    for C in args.C:
        (pred,) = fit_predict(Z[fit_idx], Y[fit_idx], [Z[val_idx]], C, args.jobs)
        scores[C] = column_log_loss(Y[val_idx], pred)
    best_C = min(scores, key=scores.get)
    (pred,) = fit_predict(Z, Y, [Zt], best_C, args.jobs)
    loss_lr = column_log_loss(Yt, pred)
    seconds = time.perf_counter() - t0
    gain = 1 - loss_lr / loss_prior
    if args.mlp:
        t1 = time.perf_counter()
        loss_mlp = column_log_loss(Yt, mlp_predict(X, Y, Xt, tr.drug_id[trt], threads=args.jobs))
        print(f"{name}: mlp {loss_mlp:.5f} -> {100 * (1 - loss_mlp / loss_prior):.1f}% better than the prior "
              f"[{time.perf_counter() - t1:.0f} s]", flush=True)
    print(f"{name}: train {trt.sum()} / test {tet.sum()} treated rows; prior {loss_prior:.5f}, "
          f"logreg {loss_lr:.5f} (C={best_C}; val {', '.join(f'{c}:{s:.5f}' for c, s in scores.items())}) "
          f"-> {100 * gain:.1f}% better than the prior [{seconds:.0f} s]", flush=True)
    return loss_prior, loss_lr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labels-from", type=Path, default=LABELS)
    ap.add_argument("--pca", type=int, default=100)
    ap.add_argument("--C", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", choices=["default", "real"], default=None)
    ap.add_argument("--mlp", action="store_true", help="also a small torch MLP")
    ap.add_argument("--signal", type=float, default=None, help="override simulate_profiles.SIGNAL (tuning)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO / "src"))
    from moakit.data import simulate_profiles
    from moakit.data.simulate import simulate

    if args.signal is not None:
        simulate_profiles.SIGNAL = args.signal

    runs = []
    if args.only in (None, "default"):
        runs.append((f"default ({args.rows} rows)", OUT / f"default-{args.rows}-{args.seed}",
                     dict(n_rows=args.rows, seed=args.seed)))
    if args.only in (None, "real"):
        if args.labels_from.is_dir():
            runs.append(("real labels", OUT / f"real-{args.seed}", dict(seed=args.seed, labels_from=args.labels_from)))
        else:
            print(f"skipped the real-label benchmark: {args.labels_from} not found", file=sys.stderr)
    for name, folder, kwargs in runs:
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        simulate(folder, **kwargs)
        print(f"simulated {name} in {time.perf_counter() - t0:.1f} s -> {folder}", flush=True)
        evaluate(name, folder, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
