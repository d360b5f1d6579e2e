"""Score finished runs on the realistic benchmark data: OOF and unseen-drug test log loss.

    .venv/bin/python bench/score_runs.py RUN_DIR [RUN_DIR ...] [--label NAME ...]

Reads each run's ``metrics.json`` (OOF log loss, all rows / treated rows) and scores its
``test_predictions.csv`` against the simulated answers of the realistic data
(``answers/test_targets_scored.csv``: the test drugs are unseen in training). Prints a
markdown table. Skips with a message when the label files are absent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from common import ready_for_realistic_data, realistic_data_dir  # noqa: E402  (bench/common.py)


def test_scores(data, test_pred: np.ndarray) -> dict:
    """Log loss (all rows, controls 0 / treated rows) of test predictions on the simulated answers."""
    from moakit import metrics
    from moakit.data.io import read_answers

    truth = read_answers(Path(data.source) / "answers" / "test_targets_scored.csv", data.test.sig_id,
                         list(data.train.scored_names))
    return metrics.score(truth, metrics.zero_controls(test_pred, data.test.is_control), data.test.is_control)


def read_test_predictions(run_dir: Path, data) -> np.ndarray:
    frame = pd.read_csv(run_dir / "test_predictions.csv").set_index("sig_id")
    return frame.loc[np.asarray(data.test.sig_id), list(data.train.scored_names)].to_numpy(np.float64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--label", nargs="*", default=None, help="one name per run (default: the folder names)")
    ap.add_argument("--seed", type=int, default=0, help="simulator seed of the realistic data")
    args = ap.parse_args()
    if not ready_for_realistic_data(1):
        return 0
    from moakit.data.io import load

    data = load(realistic_data_dir(args.seed))
    labels = args.label or [r.name for r in args.runs]
    print("| run | OOF log loss, all / treated | test log loss (unseen drugs), all / treated |")
    print("|---|---|---|")
    for label, run in zip(labels, args.runs):
        m = json.loads((run / "metrics.json").read_text())
        t = test_scores(data, read_test_predictions(run, data))
        print(f"| {label} | {m['log_loss']:.5f} / {m['log_loss_treated']:.5f} | "
              f"{t['log_loss']:.5f} / {t['log_loss_treated']:.5f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
