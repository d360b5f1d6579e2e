"""Compare the 2-stage NN + TabNet's stage-2 input matrix of a moakit run with the winners'
script's (its ``interim/503_pre_train.pkl`` / ``503_pre_test.pkl``), block by block, on the
same rows (matched by sig_id).

    .venv/bin/python bench/parity/tabnet_inputs.py --data DATA --moakit RUN --winners WINNERS_OUT [--json OUT]

Per block (cp codes, g, c, factor analysis, k-means one-hot, row statistics, stage-1
predictions): column count, the median absolute difference, the median per-column
correlation, and per-column mean / std of both sides, for the training and the test rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

STATS = [f"{p}_{s}" for p in ("g", "c", "gc") for s in ("mean", "std", "kurt", "skew")]


def script_blocks(frame: pd.DataFrame, meta_cols: list[str]) -> dict[str, list[str]]:
    cols = list(frame.columns)
    pick = lambda pred: [c for c in cols if pred(str(c))]  # noqa: E731
    return {
        "cp_cat": ["cp_time", "cp_dose"],
        "g": pick(lambda c: c.startswith("g-")),
        "c": pick(lambda c: c.startswith("c-")),
        "fa_g": pick(lambda c: c.startswith("pca_G-")),
        "fa_c": pick(lambda c: c.startswith("pca_C-")),
        "km_g": pick(lambda c: c.startswith("clusters_g_")),
        "km_c": pick(lambda c: c.startswith("clusters_c_")),
        "stats": [c for c in STATS if c in cols],
        "meta": meta_cols,
    }


def moakit_matrices(data_dir: Path, run: Path):
    """moakit's stage-2 (scored) matrices of seed 0, rebuilt from the run's saved features
    and the stage-1 predictions (the mean over the run's stage-1 seeds)."""
    from moakit.data.io import load
    from moakit.models.stacked import StackedFeatures
    from moakit.stages import stage_blocks

    data = load(data_dir)
    seeds = sorted(run.glob("stages/nonscored/seed_*"))
    oof = np.mean([np.load(s / "oof.npy") for s in seeds], axis=0).astype(np.float32)
    test = np.mean([np.load(s / "test.npy") for s in seeds], axis=0).astype(np.float32)
    feats = StackedFeatures.load(run / "stages/scored/seed_0/features")
    X = feats.transform(stage_blocks(data.train, oof))
    Xt = feats.transform(stage_blocks(data.test, test))
    own = feats.own
    widths = {b: len(own.block_names_[b]) for b in own.config.output}
    ns_targets = json.loads((run / "stages/nonscored/seed_0/targets.json").read_text())["names"]
    return data, X, Xt, widths, ns_targets, oof, test


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(a - b)
    corr = []
    for j in range(a.shape[1]):
        if a[:, j].std() > 0 and b[:, j].std() > 0:
            corr.append(np.corrcoef(a[:, j], b[:, j])[0, 1])
    return {"cols": [a.shape[1], b.shape[1]], "max_abs": float(diff.max()) if diff.size else 0.0,
            "median_abs": float(np.median(diff)) if diff.size else 0.0,
            "median_corr": float(np.median(corr)) if corr else float("nan"),
            "min_corr": float(np.min(corr)) if corr else float("nan"),
            "mean_m/s": [float(a.mean()), float(b.mean())], "std_m/s": [float(a.std()), float(b.std())]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--moakit", type=Path, required=True)
    ap.add_argument("--winners", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    data, X, Xt, widths, ns_targets, oof, test = moakit_matrices(args.data, args.moakit)
    tr = pd.read_pickle(args.winners / "interim/503_pre_train.pkl")
    te = pd.read_pickle(args.winners / "interim/503_pre_test.pkl")
    scored = set(pd.read_csv(args.data / "train_targets_scored.csv", nrows=0).columns)
    meta_cols = [c for c in te.columns if c not in scored and c in set(
        pd.read_csv(args.data / "train_targets_nonscored.csv", nrows=0).columns)]
    blocks = script_blocks(te, meta_cols)
    print(f"moakit X {X.shape} test {Xt.shape}; script train {tr.shape} test {te.shape} "
          f"(feature columns {sum(len(v) for v in blocks.values())})")
    print("moakit blocks:", widths, "stage-1 targets:", len(ns_targets), "script meta columns:", len(meta_cols))
    missing = set(ns_targets) ^ set(meta_cols)
    print("stage-1 target set difference:", sorted(missing)[:10], len(missing))
    report = {}
    for split, frame, mat, ds in (("train", tr, X, data.train), ("test", te, Xt, data.test)):
        index = {s: i for i, s in enumerate(ds.sig_id)}
        rows = np.array([index[s] for s in frame["sig_id"]])
        offset = 0
        for block, width in widths.items():
            cols = blocks[block]
            if block == "meta":  # moakit's column order: its stage-1 target order
                cols = ns_targets
            ours = mat[rows, offset:offset + width]
            if block == "cp_cat":  # the script's process_data, applied inside its training
                sub = pd.DataFrame({"t": frame["cp_time"].map({24: 0, 48: 1, 72: 2}),
                                    "d": frame["cp_dose"].map({"D1": 0, "D2": 1})})
                theirs = sub.to_numpy(np.float64)
            else:
                theirs = frame[cols].to_numpy(np.float64) if len(cols) == width else None
            offset += width
            if theirs is None:
                report[f"{split}/{block}"] = {"cols": [width, len(cols)]}
            else:
                report[f"{split}/{block}"] = compare(ours, theirs)
            print(split, block, json.dumps(report[f"{split}/{block}"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
