#!/usr/bin/env python
"""Mean per-MoA PR-AUC (average precision over targets with a positive test row) and test log
loss of each model and the blend of a `moakit run` / `moakit demo` folder, treated test rows."""
import json, sys
from pathlib import Path
import numpy as np, pandas as pd
from sklearn.metrics import average_precision_score
from moakit.metrics import mean_log_loss

run, data = Path(sys.argv[1]), Path(sys.argv[2])
ans = pd.read_csv(next((data / "answers").glob("test_targets_scored.*"))).set_index("sig_id")
feat = pd.read_csv(data / "test_features.csv").set_index("sig_id")
treated = feat.loc[ans.index, "cp_type"].eq("trt_cp").to_numpy()
Y = ans.to_numpy()[treated]
def score(path):
    p = pd.read_csv(path).set_index("sig_id").loc[ans.index, ans.columns].to_numpy()[treated]
    cols = Y.sum(0) > 0
    ap = np.mean([average_precision_score(Y[:, j], p[:, j]) for j in np.flatnonzero(cols)])
    return mean_log_loss(Y, p), ap, int(cols.sum())
rows = {}
for d in sorted((run / "models").iterdir()):
    rows[d.name] = score(d / "test_predictions.csv")
rows["blend"] = score(run / "submission.csv")
prior = np.tile(pd.read_csv(data / "train_targets_scored.csv").set_index("sig_id").to_numpy().mean(0), (len(Y), 1))
cols = Y.sum(0) > 0
rows["prior"] = (mean_log_loss(Y, prior), np.mean([average_precision_score(Y[:, j], prior[:, j]) for j in np.flatnonzero(cols)]), int(cols.sum()))
for k, (ll, ap, n) in rows.items():
    print(f"{k:22s} test log loss (treated) {ll:.6f}  mean PR-AUC {ap:.4f} over {n} targets")
