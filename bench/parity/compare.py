"""Score the winners' script and moakit side by side on the same data: test and OOF log loss.

    .venv/bin/python bench/parity/compare.py three_stage_nn \\
        --data bench/out/data/realistic-seed0 \\
        --winners-out bench/out/parity/winners-three_stage_nn \\
        --moakit-run bench/out/parity/moakit-three_stage_nn-cpu="shipped config" \\
        [--moakit-run OTHER_RUN="label" ...] [--report FILE]

``--winners-out`` is the folder written by ``bench/parity/winners.py``; each ``--moakit-run``
a ``moakit train`` run folder on the same ``--data`` (several make an ablation table). Both are scored with moakit's metric
(mean column-wise log loss over the 206 scored targets, control rows predicted 0) on all
rows and on treated rows: on the test rows (unseen drugs, answers in ``DATA/answers``) and
on their own out-of-fold rows (each code's own folds and epoch choice, so an OOF number
says how each judges itself, the test number which is better).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write_report  # noqa: E402  (bench/common.py)

STAGES = {"three_stage_nn": ["scored", "stack"], "simple_nn": ["scored"], "simple_nn_drug_cv": ["scored"],
          "resnet_2heads": ["scored"], "two_stage_nn_tabnet": ["scored"]}


def moakit_predictions(run: Path, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """A stage's OOF and test predictions, averaged over the run's seeds."""
    seeds = sorted((run / "stages" / stage).glob("seed_*"))
    if not seeds:
        raise SystemExit(f"{run}: no stage {stage!r} (is it a finished moakit run of this model?)")
    oof = np.mean([np.load(s / "oof.npy") for s in seeds], axis=0)
    test = np.mean([np.load(s / "test.npy") for s in seeds], axis=0)
    return oof.astype(np.float64), test.astype(np.float64)


def _seconds(wall, cpu) -> str:
    return " / ".join("" if x is None else f"{x:.0f}" for x in (wall, cpu))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(STAGES))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--winners-out", type=Path, required=True)
    ap.add_argument("--moakit-run", action="append", required=True, metavar="RUN[=LABEL]",
                    help="a moakit run folder, optionally with a label; repeat for an ablation table")
    ap.add_argument("--report", type=Path, default=None)
    args = ap.parse_args(argv)

    from moakit import metrics
    from moakit.data.io import load, read_answers

    data = load(args.data)
    answers = read_answers(args.data / "answers" / "test_targets_scored.csv", data.test.sig_id,
                           list(data.train.scored_names))
    tr, te = data.train, data.test
    theirs = np.load(args.winners_out / "predictions.npz")
    run_info = json.loads((args.winners_out / "run.json").read_text())
    runs = []
    for item in args.moakit_run:
        path, _, label = item.partition("=")
        runs.append((Path(path), label or Path(path).name))

    def scores(oof, test):
        o = metrics.score(tr.scored, oof, tr.is_control)
        t = metrics.score(answers, test, te.is_control)
        return {"test": t["log_loss"], "test_treated": t["log_loss_treated"],
                "oof": o["log_loss"], "oof_treated": o["log_loss_treated"]}

    lines = [f"### {args.model}: moakit vs the winners' script, same data",
             "",
             f"Winners: `{run_info['script']}`, {run_info['seeds']} seed(s), size `{run_info.get('size', 'full')}`, "
             f"{run_info['threads']} torch thread(s), {run_info['seconds']:.0f} s wall"
             + (f", {run_info['cpu_seconds']:.0f} CPU s." if run_info.get("cpu_seconds") else "."),
             "",
             "| stage | code | test log loss (all / treated) | vs winners (test, treated) | OOF log loss (all / treated) "
             "| OOF-to-test gap | wall s / CPU s |",
             "|---|---|---|---|---|---|---|"]
    summary = {}
    for stage in STAGES[args.model]:
        them = scores(theirs[f"{stage}_oof"], theirs[f"{stage}_test"])
        summary[stage] = {"winners": them}
        rows = [("winners' script", them, (run_info["seconds"], run_info.get("cpu_seconds")))]
        for path, label in runs:
            mine = scores(*moakit_predictions(path, stage))
            summary[stage][label] = mine
            seconds = json.loads((path / "manifest.json").read_text()).get("timings", {}).get("total_seconds")
            cpu = path / "parity_cpu.json"
            rows.append((f"moakit: {label}", mine,
                         (seconds, json.loads(cpu.read_text())["cpu_seconds"] if cpu.exists() else None)))
        for who, sc, seconds in rows:
            ratio = sc["test_treated"] / them["test_treated"]
            lines.append(f"| {stage} | {who} | {sc['test']:.5f} / {sc['test_treated']:.5f} | {ratio:.4f}x | "
                         f"{sc['oof']:.5f} / {sc['oof_treated']:.5f} | {sc['test'] / sc['oof'] - 1:+.1%} | "
                         f"{_seconds(*seconds)} |")
    if args.report:
        write_report(args.report, lines)
        args.report.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
