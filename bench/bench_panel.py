"""Gene-only panels: what the cell block is worth to the Simple NN on unseen drugs.

    nice -n 19 .venv/bin/python bench/bench_panel.py [--profile cpu] [--threads 1]

The simulated 6,000-row folder (``moakit simulate bench/out/data/sim6000-seed0 --rows 6000
--seed 0``, made here when absent) and a copy of it without the ``c-`` columns (a gene-only
panel: the same rows, targets, drugs and test split). ``simple_nn`` is trained on each
(cpu profile: 1 seed x 5 folds) and scored on the test rows, whose drugs are unseen in
training: mean column-wise log loss and mean per-target PR-AUC (average precision, over
the targets with a positive test row). Writes ``bench/out/panel_gene_only.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT  # noqa: E402


def gene_only_copy(src: Path, dst: Path) -> Path:
    """``src`` without its cell columns (everything else copied as is)."""
    import pandas as pd

    if dst.exists():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    for stem in ("train_features", "test_features"):
        path = tmp / f"{stem}.csv"
        frame = pd.read_csv(path)
        frame.drop(columns=[c for c in frame.columns if c.startswith("c-")]).to_csv(path, index=False)
    tmp.rename(dst)
    return dst


def score(data, proba) -> dict:
    from sklearn.metrics import average_precision_score

    from moakit.metrics import mean_log_loss

    y = data.Y_test.set_index("sig_id").loc[proba.index].to_numpy()
    p = proba.to_numpy()
    with_pos = np.flatnonzero(y.sum(axis=0) > 0)
    pr = [average_precision_score(y[:, j], p[:, j]) for j in with_pos]
    return {"test_log_loss": round(float(mean_log_loss(y, p)), 5), "mean_pr_auc": round(float(np.mean(pr)), 4),
            "targets_with_positive_test_row": int(len(with_pos)), "test_rows": int(len(y))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    import moakit

    torch.set_num_threads(args.threads)
    src = OUT / "data" / "sim6000-seed0"
    if not src.exists():
        exe = Path(sys.executable).with_name("moakit")
        subprocess.run([str(exe), "simulate", str(src), "--rows", "6000", "--seed", "0"], check=True)
    variants = {"genes + cells (lish-moa layout)": src,
                "gene-only panel": gene_only_copy(src, OUT / "panel" / "sim6000-seed0-gene-only")}
    results = {}
    for name, folder in variants.items():
        data = moakit.load_dataset(folder)
        run_dir = OUT / "panel" / "runs" / f"{args.profile}-{'cells' if 'cells' in name else 'gene-only'}"
        t0 = time.time()
        model = moakit.MoAModel("simple_nn", profile=args.profile, run_dir=run_dir).fit(**data.fit_args)
        results[name] = {"n_features_in": int(model.n_features_in_), "oof_log_loss": model.metrics_["log_loss"],
                         **score(data, model.test_predictions_), "seconds": round(time.time() - t0, 1)}
        print(name, results[name], flush=True)
    out = OUT / "panel_gene_only.json"
    out.write_text(json.dumps({"profile": args.profile, "threads": args.threads, "data": str(src),
                               "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
