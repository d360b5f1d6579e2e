"""L1000 gene-only quality on unseen compounds beside a label-shuffled baseline.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/bench_l1000_quality.py \
        [--rows 6000] [--profile cpu] [--seeds 1] [--models simple_nn,cnn1d,three_stage_nn]

Every step is a `moakit` command (printed as it runs, so the section in BENCHMARKS.md can
quote it), each skipped when its output is already complete (resumable):

1. ``moakit simulate OUT/lincs --layout l1000 --rows N --seed 0``: a LINCS-style folder;
2. ``moakit dataset l1000 OUT/lincs --out OUT/data``: the default filters (treated only, 978
   landmark genes, MoAs with >= 5 compounds scored, the rarer ones non-scored, 20% of the
   treated signatures held out as whole compounds: ``test_features`` + ``answers/``);
3. per model ``moakit train MODEL --data OUT/data --out OUT/runs/MODEL-P --profile P``;
4. per model ``moakit evaluate OUT/runs/MODEL-P --shuffled-baseline --seeds S``: the same config
   on the same folds trained on permuted labels, both scored on the held-out compounds.

OUT = bench/out/l1000_quality; run folders OUT/runs/MODEL-PROFILE. Writes OUT/results.json
(``profiles.<profile>.models.<model>``): per model the held-out ("test") summary of ``evaluate`` (log loss, the shuffled baseline's and the prior's; mean per-MoA
PR-AUC and ROC-AUC over the MoAs with a positive test signature, the baseline's; how many
MoAs beat the baseline; compound-level PR-AUC), the OOF summary, and per step the CPU
seconds of the command (``getrusage(RUSAGE_CHILDREN)``), its wall seconds and the load
average (``os.getloadavg``) before and after it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT  # noqa: E402

ROOT = OUT / "l1000_quality"
MODELS = ("simple_nn", "cnn1d", "three_stage_nn")
SUMMARY_FIELDS = ("rows", "targets", "targets_with_positives", "log_loss", "shuffled_log_loss", "prior_log_loss",
                  "mean_pr_auc", "mean_shuffled_pr_auc", "mean_prior_pr_auc", "mean_roc_auc", "mean_shuffled_roc_auc",
                  "beats_shuffled", "no_better_than_shuffled", "beats_prior", "mean_compound_pr_auc", "prior", "note")


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run(args: list, steps: dict, key: str) -> None:
    """Run one moakit command (its exact text printed and recorded) with its CPU seconds."""
    exe = Path(sys.executable).with_name("moakit")
    shown = "moakit " + " ".join(str(a) for a in args)
    print(f"$ {shown}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load0, cpu0, t0 = os.getloadavg(), _children_cpu(), time.time()
    subprocess.run([str(exe), *map(str, args)], check=True, env=env)
    steps[key] = {"command": shown, "cpu_s": round(_children_cpu() - cpu0, 1), "wall_s": round(time.time() - t0, 1),
                  "load_before": [round(v, 2) for v in load0], "load_after": [round(v, 2) for v in os.getloadavg()]}


def complete(run_dir: Path) -> bool:
    from moakit.artifacts import read_json
    from moakit.runs import layout

    try:
        return (run_dir / layout.METRICS).exists() and read_json(run_dir / layout.MANIFEST).get("status") == "complete"
    except (OSError, ValueError):
        return False


def evaluation_of(run_dir: Path, seeds: int) -> dict | None:
    """The saved evaluation when it used ``seeds`` shuffled seeds, else None."""
    from moakit.runs import layout

    path = layout.evaluation_dir(run_dir) / layout.EVALUATION
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    return doc if len(doc.get("shuffled", {}).get("seeds") or []) >= seeds else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, default=1, help="permutation seeds of the shuffled baseline")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sim-seed", type=int, default=0, help="the simulator's seed (another dataset: OUT/l1000_quality-seedN)")
    args = ap.parse_args()
    root = ROOT if args.sim_seed == 0 else ROOT.with_name(f"{ROOT.name}-seed{args.sim_seed}")
    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["rows"] = args.rows
    steps = results.setdefault("steps", {})  # simulate, dataset
    this = results.setdefault("profiles", {}).setdefault(args.profile, {})
    this["shuffled_seeds"] = args.seeds
    models = this.setdefault("models", {})

    def save() -> None:
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(results_path)

    lincs, data = root / "lincs", root / "data"
    if not lincs.exists():
        run(["simulate", lincs, "--layout", "l1000", "--rows", args.rows, "--seed", args.sim_seed], steps, "simulate")
    if not data.exists():
        run(["dataset", "l1000", lincs, "--out", data], steps, "dataset")
    results["dataset"] = json.loads((data / "dataset.json").read_text())
    for key in ("dropped_targets", "targets", "nonscored_targets"):
        results["dataset"][key] = len(results["dataset"].get(key) or [])
    save()
    for name in args.models.split(","):
        run_dir = root / "runs" / f"{name}-{args.profile}"
        if not complete(run_dir):
            run(["train", name, "--data", data, "--out", run_dir, "--profile", args.profile, "--quiet"],
                models.setdefault(name, {}), "train")
            save()
        doc = evaluation_of(run_dir, args.seeds)
        if doc is None:
            run(["evaluate", run_dir, "--shuffled-baseline", "--seeds", args.seeds], models.setdefault(name, {}),
                "evaluate")
            doc = evaluation_of(run_dir, args.seeds)
        models.setdefault(name, {}).update({key: {f: s.get(f) for f in SUMMARY_FIELDS}
                                            for key, s in doc["sets"].items()})
        models[name].update(run_dir=str(run_dir.relative_to(OUT.parent.parent)), shuffled=doc["shuffled"]["how"])
        save()
        test = models[name].get("test", {})
        print(f"{name}: test log loss {test.get('log_loss')} (shuffled {test.get('shuffled_log_loss')}, prior "
              f"{test.get('prior_log_loss')}); PR-AUC {test.get('mean_pr_auc')} (shuffled "
              f"{test.get('mean_shuffled_pr_auc')}); ROC-AUC {test.get('mean_roc_auc')} (shuffled "
              f"{test.get('mean_shuffled_roc_auc')}); beats shuffled on {test.get('beats_shuffled')} of "
              f"{test.get('targets_with_positives')}", flush=True)
    print(f"-> {results_path}")


if __name__ == "__main__":
    main()
