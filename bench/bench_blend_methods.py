"""Which blend method to make the default: in-sample, nested (several split seeds) and test
log loss of every weight search on a set of runs (issue: honest OOF, per-target weights).

    .venv/bin/python bench/bench_blend_methods.py RUN [RUN ...] --name NAME [--name ...] \\
        [--seeds 0 1 2] [--trials 100] [--report bench/out/blend/methods.md]

The runs are single-model run folders on the same data (the realistic data: its test drugs
are unseen in training and its answers are in ``answers/test_targets_scored.csv``). For each
method of ``moakit.blend.METHODS``: the in-sample OOF log loss of the weights searched on all
OOF rows, the nested score (``blend.nested_evaluation``: weights searched on 4/5 of the OOF
rows, scored on the 5th) for each split seed, and the test log loss of the all-rows weights.
The best single model (chosen on OOF) is the reference. Log loss over all rows (controls 0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, write_report  # noqa: E402  (bench/common.py)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--name", action="append", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="nested split seeds")
    ap.add_argument("--trials", type=int, default=100, help="Optuna trials")
    ap.add_argument("--report", default=str(OUT / "blend" / "methods.md"))
    args = ap.parse_args(argv)

    from moakit import blend, metrics
    from moakit.artifacts import resolve_recorded
    from moakit.manifest import read_manifest

    names = args.name or [p.name for p in args.runs]
    inputs = blend.load_runs(args.runs, names)
    source = Path(resolve_recorded(read_manifest(args.runs[0]).data_source, args.runs[0]))
    answers = source / "answers" / "test_targets_scored.csv"
    if not answers.exists():
        print(f"skipped: {answers} is absent (the test scores need answers)", file=sys.stderr)
        return 0
    truth = pd.read_csv(answers).set_index("sig_id").loc[inputs.test_sig_id, inputs.target_names].to_numpy(np.float64)

    def score(preds, w, y, ctl) -> float:
        blended = blend.blend_predictions(preds, w)  # one weight per model, or per model and target
        return metrics.score(y, metrics.zero_controls(np.clip(blended, 0, 1), ctl), ctl)["log_loss"]

    weights = {}
    oof_single = [metrics.score(inputs.y, o, inputs.is_control)["log_loss"] for o in inputs.oof]
    weights["best_single"] = np.eye(len(names))[int(np.argmin(oof_single))]
    for method in blend.METHODS:
        if method == "per_target":
            weights[method] = blend.search_weights_per_target(inputs.oof, inputs.y, inputs.is_control)
        else:
            weights[method] = blend.search_weights(inputs.oof, inputs.y, inputs.is_control, method=method,
                                                   n_trials=args.trials, seed=0, names=names).weights
    nested = {s: blend.nested_evaluation(inputs.oof, inputs.y, inputs.is_control, methods=blend.METHODS,
                                         n_trials=args.trials, seed=s)["methods"] for s in args.seeds}
    ref_test = score(inputs.test, weights["best_single"], truth, inputs.test_is_control)
    command = " ".join([".venv/bin/python bench/bench_blend_methods.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [f"# Blend methods: in-sample, nested and test log loss ({len(names)} models)", "",
             f"Command: `{command}`", "", f"Models: {', '.join(names)}; best single on OOF: "
             f"{names[int(np.argmin(oof_single))]}.", "",
             "| method | OOF in-sample | " + " | ".join(f"nested (seed {s})" for s in args.seeds)
             + " | test (unseen drugs) | test vs best single |",
             "|---|---|" + "---|" * len(args.seeds) + "---|---|"]
    for method in ["best_single", *blend.METHODS]:
        ins = score(inputs.oof, weights[method], inputs.y, inputs.is_control)
        test = score(inputs.test, weights[method], truth, inputs.test_is_control)
        nest = " | ".join(f"{nested[s][method]['log_loss']:.6f}" for s in args.seeds)
        lines.append(f"| {method} | {ins:.6f} | {nest} | {test:.6f} | {100 * (test / ref_test - 1):+.2f}% |")
    ranks = {s: sorted(blend.METHODS, key=lambda m: nested[s][m]["log_loss"])[0] for s in args.seeds}
    lines += ["", "Method with the lowest nested score, per seed: "
              + ", ".join(f"seed {s}: {m}" for s, m in ranks.items()) + "."]
    write_report(args.report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
