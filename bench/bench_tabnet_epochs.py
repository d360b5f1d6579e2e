"""Is TabNet's last epoch as good as its best one at the full schedule? (issue: honest OOF)

    .venv/bin/python bench/bench_tabnet_epochs.py --run bench/out/policy/two_stage_nn_tabnet-cpu-last \\
        [--fold 0] [--epochs 200] [--threads 1]

Reads a finished ``two_stage_nn_tabnet`` run on the realistic data (its folds, stage-1
predictions and saved stage-2 features), then trains the full profile's TabNet on one fold's
training rows for ``--epochs`` epochs with the full schedule (MultiStepLR milestones 100 /
150) and NO early stopping, scoring the unseen-drug test rows after every epoch. The
question it answers: under ``selection: last`` (no epoch chosen on any row), how much worse
is the last epoch than the best one would have been?
Writes ``bench/out/policy/tabnet_epochs.md`` and a per-epoch CSV beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ready_for_realistic_data, write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished two_stage_nn_tabnet run folder")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not ready_for_realistic_data(args.threads):
        return 0

    import pandas as pd

    from moakit import runner
    from moakit.config import RunConfig, load_config
    from moakit.data.io import load
    from moakit.manifest import read_manifest
    from moakit.models.two_stage_tabnet import TabNetConfig, fit_tabnet
    from moakit.artifacts import read_json, resolve_recorded

    run = args.run
    config = RunConfig(**read_json(run / "config.json"))
    data = load(resolve_recorded(read_manifest(run).data_source, run))
    model = runner.build_model(config)
    upstream = tuple(np.load(run / "stages" / "nonscored" / f"seed_{s}" / name) for s in config.seeds
                     for name in ("oof.npy", "test.npy"))
    pairs = [(upstream[i], upstream[i + 1]) for i in range(0, len(upstream), 2)]
    arrays = runner.fit_stage_seed(data, *pairs, model=model, index=1, seed=config.seeds[0], seeds=config.seeds,
                                   run_dir=str(run))  # reloads the saved stage-2 features
    folds = np.load(run / "folds.npy")
    treated = ~data.train.is_control
    fit = treated & (folds != args.fold)
    full = load_config("two_stage_nn_tabnet").params["stage2"]["tabnet"]  # the full profile's TabNet
    cfg = TabNetConfig(**{**full, "max_epochs": args.epochs, "patience": args.epochs + 1})
    truth = pd.read_csv(Path(data.source) / "answers" / "test_targets_scored.csv").set_index("sig_id")
    Y_test = truth.loc[np.asarray(data.test.sig_id), list(data.train.scored_names)].to_numpy(np.float64)
    test_treated = ~data.test.is_control

    rows = []
    # The eval set is the unseen-drug test rows (treated): with patience > epochs it decides
    # nothing, and each epoch's record is the test loss of that epoch's network.
    fit_tabnet(cfg, arrays.X[fit], arrays.Y[fit], arrays.X_test[test_treated], Y_test[test_treated],
               runner.fold_seed(0, args.fold),
               lambda r: rows.append({"epoch": r["epoch"], "train_loss": r["train_loss"], "test_loss": r["valid_loss"]}))
    curve = pd.DataFrame(rows)
    best = int(curve.test_loss.idxmin())
    last = len(curve) - 1
    out = OUT / "policy"
    out.mkdir(parents=True, exist_ok=True)
    curve.to_csv(out / "tabnet_epochs.csv", index=False)
    lines = [f"### TabNet at the full schedule, one fold ({args.epochs} epochs, no early stopping)", "",
             f"Run `{run}`, fold {args.fold}: {int(fit.sum())} training rows; scored after every epoch on the "
             f"{int(test_treated.sum())} treated test rows (unseen drugs; they decide nothing).", "",
             "| epoch | training loss | test log loss (treated) |", "|---|---|---|"]
    for e in sorted({0, 9, 24, 49, 74, 99, 124, 149, 174, best, last}):
        if e <= last:
            tag = " (lowest)" if e == best else (" (last)" if e == last else "")
            lines.append(f"| {e}{tag} | {curve.train_loss[e]:.5f} | {curve.test_loss[e]:.5f} |")
    lines += ["", f"Last epoch (what `selection: last` keeps) {curve.test_loss[last]:.5f} vs the lowest "
              f"{curve.test_loss[best]:.5f} at epoch {best}: "
              f"{100 * (curve.test_loss[last] / curve.test_loss[best] - 1):+.1f}%."]
    write_report(out / "tabnet_epochs.md", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
