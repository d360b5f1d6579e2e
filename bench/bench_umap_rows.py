#!/usr/bin/env python
"""UMAP features that do not depend on the other rows of a call: quality and speed.

    bench_umap_rows.py OUT quality DATA [--profile demo] [--models three_stage_nn two_stage_nn_tabnet]
    bench_umap_rows.py OUT speed DATA [--fit-rows 1000 5000] [--rows 4096]

quality: each model trained twice on DATA (a simulated folder with answers/), its umap steps
with ``transform: rows`` (the default) and ``transform: umap`` (umap-learn's transform);
test log loss and mean per-MoA PR-AUC on the treated test rows (drugs unseen in training),
and how far a row's prediction moves when it is predicted alone instead of with the whole
test set (the run's test predictions). speed: CPU seconds of umap-learn's transform and of
moakit's row-by-row transform of ``--rows`` rows, for a UMAP on the genes fitted on each of
``--fit-rows`` rows (the demo / cpu profiles' max_fit_rows). Numbers in OUT/*.json.
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def with_transform(config, transform: str):
    """``config`` with every umap step's ``transform`` set."""
    from moakit.features import steps_of_kind

    params = copy.deepcopy(config.params)
    for step in steps_of_kind(params, "umap"):
        step["transform"] = transform
    return config.model_copy(update={"params": params})


def scores(data_dir: Path, ds, proba: np.ndarray) -> dict:
    import pandas as pd
    from sklearn.metrics import average_precision_score

    from moakit.metrics import mean_log_loss

    answers = pd.read_csv(data_dir / "answers" / "test_targets_scored.csv").set_index("sig_id")
    frame = pd.DataFrame(proba, index=ds.test.sig_id, columns=ds.scored_names)
    treated = ~np.asarray(ds.test.is_control)
    Y = answers.loc[frame.index[treated], ds.scored_names].to_numpy()
    P = frame.to_numpy()[treated]
    cols = np.flatnonzero(Y.sum(axis=0) > 0)
    return {"test_log_loss": float(mean_log_loss(Y, P)),
            "mean_pr_auc": float(np.mean([average_precision_score(Y[:, j], P[:, j]) for j in cols])),
            "pr_auc_targets": int(len(cols)), "treated_test_rows": int(treated.sum())}


def quality(args) -> None:
    import torch

    from moakit import runner
    from moakit.config import load_config
    from moakit.data.io import load
    from moakit.streaming import RunPredictor

    torch.set_num_threads(1)
    ds = load(args.data)
    out = Path(args.out)
    result = {"data": str(args.data), "profile": args.profile, "models": {}}
    treated = np.flatnonzero(~np.asarray(ds.test.is_control))
    alone_rows = treated[:: max(1, len(treated) // args.alone)][: args.alone]
    for name in args.models:
        for transform in ("rows", "umap"):
            config = with_transform(load_config(name, profile=args.profile), transform)
            c0, t0 = cpu_s(), time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trained = runner.train(config, ds, out / "runs" / f"{name}-{transform}", show_progress=False)
            entry = {"train_cpu_s": round(cpu_s() - c0, 1), "train_wall_s": round(time.time() - t0, 1),
                     **scores(Path(args.data), ds, trained.test)}
            predictor = RunPredictor(trained.run_dir)
            c0 = cpu_s()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                alone = np.concatenate([predictor.predict(ds.test.subset(np.array([i]))) for i in alone_rows])
            gap = np.abs(alone - trained.test[alone_rows])
            entry.update({"alone_rows": int(len(alone_rows)), "alone_max_abs_diff": float(gap.max()),
                          "alone_mean_abs_diff": float(gap.mean()), "alone_cpu_s": round(cpu_s() - c0, 1)})
            result["models"][f"{name}/{transform}"] = entry
            write_result(out / f"quality-{args.profile}.json", result)


def speed(args) -> None:
    import umap

    from moakit.data.io import load
    from moakit.features.umap_rows import transform_rows
    from moakit.stages import stage_blocks

    ds = load(args.data)
    g = stage_blocks(ds.train, None)["g"]
    rng = np.random.default_rng(0)
    result = {"data": str(args.data), "rows": args.rows, "fits": {}}
    for n_fit in args.fit_rows:
        fit_rows = np.sort(rng.choice(len(g), n_fit, replace=False))
        others = np.setdiff1d(np.arange(len(g)), fit_rows)
        queries = g[np.concatenate([others, fit_rows])[: args.rows]]  # rows outside the fit first
        c0 = cpu_s()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = umap.UMAP(n_components=5, random_state=1903, transform_seed=42, n_jobs=1).fit(g[fit_rows])
        entry = {"fit_cpu_s": round(cpu_s() - c0, 1), "small_data": bool(model._small_data),
                 "queries_outside_fit": int(min(len(others), args.rows))}
        for label, run in (("umap", model.transform), ("rows", lambda X: transform_rows(model, X))):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run(queries[:8])  # numba's compilation is not timed
                c0, t0 = cpu_s(), time.time()
                emb = run(queries)
            entry[f"{label}_cpu_s"] = round(cpu_s() - c0, 2)
            entry[f"{label}_wall_s"] = round(time.time() - t0, 2)
            entry[f"{label}_embedding"] = emb
        a, b = entry.pop("rows_embedding"), entry.pop("umap_embedding")
        spread = float(np.linalg.norm(model.embedding_ - model.embedding_.mean(axis=0), axis=1).mean())
        entry["median_row_distance_rows_vs_umap"] = float(np.median(np.linalg.norm(a - b, axis=1)))
        entry["mean_distance_to_centre_of_fit_embedding"] = spread
        result["fits"][str(n_fit)] = entry
        write_result(Path(args.out) / "speed.json", result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("data")
    q.add_argument("--profile", default="demo")
    q.add_argument("--models", nargs="+", default=["three_stage_nn", "two_stage_nn_tabnet"])
    q.add_argument("--alone", type=int, default=20, help="treated test rows predicted one at a time")
    s = sub.add_parser("speed")
    s.add_argument("data")
    s.add_argument("--fit-rows", type=int, nargs="+", default=[1000, 5000])
    s.add_argument("--rows", type=int, default=4096)
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    quality(args) if args.what == "quality" else speed(args)


if __name__ == "__main__":
    main()
