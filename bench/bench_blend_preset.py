"""Best-LB preset blend vs the searched blend on the runs of a `moakit run blend_best_lb`.

    .venv/bin/moakit run blend_best_lb --data DATA --out RUN --profile demo
    .venv/bin/python bench/bench_blend_preset.py RUN [--trials 300] [--report bench/out/blend_preset.md]

Reads the seven model runs under ``RUN/models/<name>`` and the data folder recorded in their
manifests, then scores, on the OOF predictions and on the test rows (the data's
``answers/test_targets_scored.csv``; in the simulated and realistic data the test drugs are
unseen in training): the ``best_lb`` preset (the winning submission's weights), the weights
searched on the OOF predictions (SLSQP and Optuna TPE, as ``moakit blend`` does) and every
model alone. Log loss: all rows (controls predicted 0) / treated rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, write_report  # noqa: E402  (bench/common.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a `moakit run blend_best_lb` folder")
    ap.add_argument("--trials", type=int, default=300, help="Optuna trials")
    ap.add_argument("--report", default=str(OUT / "blend_preset.md"))
    args = ap.parse_args()

    from moakit import blend, metrics
    from moakit.artifacts import read_json

    names = list(blend.PRESETS["best_lb"])
    inputs = blend.load_runs([args.run / "models" / n for n in names], names)
    source = Path(read_json(args.run / "models" / names[0] / "manifest.json")["data_source"])
    answers = source / "answers" / "test_targets_scored.csv"
    truth = None
    if answers.exists():
        frame = pd.read_csv(answers).set_index("sig_id")
        truth = frame.loc[inputs.test_sig_id, inputs.target_names].to_numpy(np.float64)

    def scores(w: np.ndarray) -> str:
        oof = metrics.score(inputs.y, blend.blend_predictions(inputs.oof, w), inputs.is_control)
        text = f"{oof['log_loss']:.6f} / {oof['log_loss_treated']:.6f} | "
        if truth is None:
            return text + "- |"
        test = metrics.score(truth, blend.blend_predictions(inputs.test, w), inputs.test_is_control)
        return text + f"{test['log_loss']:.6f} / {test['log_loss_treated']:.6f} |"

    def weights(w: np.ndarray) -> str:
        w = np.asarray(w)
        mean = w.mean(axis=1) if w.ndim == 2 else w  # per-target weights: their mean per model
        return ("mean " if w.ndim == 2 else "") + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, mean) if v >= 0.0005)

    command = " ".join([".venv/bin/python bench/bench_blend_preset.py", *sys.argv[1:]])
    lines = [f"# best_lb preset vs searched blend weights: {args.run}", "", f"Command: `{command}`", "",
             f"Data: {source} ({len(inputs.y)} training rows, {len(inputs.test_sig_id)} test rows"
             + ("" if truth is not None else "; no test answers") + ").", "",
             "| blend | OOF log loss (all / treated) | test log loss (all / treated) | weights |",
             "|---|---|---|---|"]
    preset = blend.apply_preset(names, "best_lb")
    lines.append(f"| **best_lb preset** | {scores(preset)} {weights(preset)} |")
    for method in blend.METHODS:
        found = blend.search_weights(inputs.oof, inputs.y, inputs.is_control, method=method, n_trials=args.trials,
                                     seed=0, names=names)
        lines.append(f"| searched ({method}) | {scores(found.weights)} {weights(found.weights)} |")
    for k, name in enumerate(names):
        lines.append(f"| {name} alone | {scores(np.eye(len(names))[k])} |")
    write_report(args.report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
