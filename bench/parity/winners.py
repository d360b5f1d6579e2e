"""Run the winners' own training scripts on a moakit data folder and collect their predictions.

The scripts are those of the public repository guitarmind/kaggle_moa_winner_hungry_for_gold
(``final/Best LB/Training/Local/*.py``). They are never vendored: the user points ``--winners``
at a local checkout (a work tree, or a bare git directory read with ``git show``). The
script text is patched at run time (the number of seeds, the torch thread count, a stub for
an unused plotting import), checked line by line (a patch that no longer matches stops with
a message naming it), written to the output folder and run there with ``python``.

    .venv/bin/python bench/parity/winners.py three_stage_nn --winners PATH \\
        --data bench/out/data/realistic-seed0 --out bench/out/parity/winners-three_stage_nn --seeds 1

After the run, ``predictions.npz`` in the output folder holds, per stage, the script's
out-of-fold and test predictions on the scored targets (rows in the data folder's order,
control rows 0), which ``bench/parity/compare.py`` scores beside moakit's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

TRAINING = "final/Best LB/Training/Local"


@dataclass
class Spec:
    """How to run one of the winners' scripts: the file, the patches, how to read its outputs."""

    script: str
    patches: Callable[[argparse.Namespace], list[tuple[str, str, int | None]]]  # (regex, replacement, count)
    collect: Callable[[Path, Path], dict[str, np.ndarray]]
    notes: list[str] = field(default_factory=list)


def read_script(winners: Path, rel: str) -> str:
    """The script's text from a checkout (work tree) or a bare git directory."""
    if (winners / rel).exists():
        return (winners / rel).read_text()
    try:
        return subprocess.run(["git", "--git-dir", str(winners), "show", f"HEAD:{rel}"], check=True,
                              capture_output=True, text=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        raise SystemExit(f"{winners}: neither a checkout holding {rel!r} nor a git directory "
                         f"of the winners' repository ({exc})") from None


def apply_patches(text: str, patches: list[tuple[str, str, int | None]], script: str) -> str:
    """Each (regex, replacement, expected count): stop if the script no longer matches."""
    for pattern, repl, expected in patches:
        text, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        if n == 0 or (expected is not None and n != expected):
            raise SystemExit(f"{script}: patch {pattern!r} matched {n} time(s), expected "
                             f"{expected if expected is not None else 'at least 1'}: the script changed")
    return text


def prologue(threads: int) -> str:
    """Lines run before the script: fixed thread counts (the same as moakit's run)."""
    return (f"import os as _os\n_os.environ['OMP_NUM_THREADS'] = '{threads}'\n"
            f"import torch as _torch\n_torch.set_num_threads({threads})\n")


def _sig_order(data: Path, name: str) -> pd.Series:
    return pd.read_csv(data / name, usecols=["sig_id"])["sig_id"]


def _aligned(frame: pd.DataFrame, sig_id: pd.Series, targets: list[str]) -> np.ndarray:
    """``frame``'s target columns in the order of ``sig_id``; rows it lacks (controls) are 0."""
    out = frame.set_index("sig_id")[targets].reindex(sig_id.to_numpy()).fillna(0.0)
    return out.to_numpy(np.float64)


# --------------------------------------------------------------------------- 3-stage NN


# Sizes at which both codes can be run side by side: "full" = the script's own numbers;
# "cpu" = moakit's cpu profile sizes (hidden widths, epochs) for 2 CPU cores, every method
# kept (the UMAP fits on all rows, unlike moakit's cpu profile, which subsamples them).
SIZES = {
    "three_stage_nn": {
        "full": {"stage1": (2048, 15), "stage2": (2048, 25), "stage3": (1024, 25)},
        "cpu": {"stage1": (1024, 10), "stage2": (1024, 12), "stage3": (512, 12)},
    },
}


def three_stage_patches(args) -> list[tuple[str, str, int | None]]:
    size = SIZES["three_stage_nn"][args.size]
    (h1, e1), (h2, e2), (h3, e3) = size["stage1"], size["stage2"], size["stage3"]
    if args.epochs:  # a quick check of the harness only
        e1 = e2 = e3 = args.epochs
    if h1 != h2 or e2 != e3:
        raise SystemExit("the script shares one hidden size between stages 1 and 2 and one epoch count "
                         "between stages 2 and 3")
    return [
        (r"^NSEEDS = 5\b", f"NSEEDS = {args.seeds}", 1),
        # (in this order, so that a value written by one patch is never matched by the next)
        (r"^hidden_size=1024$", f"hidden_size={h3}", 1),  # stage 3
        (r"^hidden_size=2048$", f"hidden_size={h1}", 2),  # stages 1 and 2
        (r"^EPOCHS = 25$", f"EPOCHS = {e2}", None),  # stages 2 and 3
        (r"^EPOCHS = 15$", f"EPOCHS = {e1}", 1),  # stage 1
        (r"^import seaborn as sns$", "sns = None  # unused plotting import", 1),
        # pandas >= 2 makes bool dummies, which turn the feature matrix into objects; the
        # pandas of 2020 made uint8 ones
        (r"pd\.get_dummies\(data, columns=\['cp_time','cp_dose'\]\)",
         "pd.get_dummies(data, columns=['cp_time','cp_dose'], dtype=np.uint8)", 2),
    ]


def three_stage_collect(out: Path, data: Path) -> dict[str, np.ndarray]:
    targets = [c for c in pd.read_csv(data / "train_targets_scored.csv", nrows=1).columns if c != "sig_id"]
    train_ids, test_ids = _sig_order(data, "train_features.csv"), _sig_order(data, "test_features.csv")
    interim = out / "interim"
    result = {}
    # NB '25' is the script's notebook number in its file names
    for stage, stem in (("scored", "25-{}-score-pred.pkl"), ("stack", "25-{}-score-stack-pred.pkl")):
        train = pd.read_pickle(interim / stem.format("train"))
        test = pd.read_pickle(interim / stem.format("test"))
        result[f"{stage}_oof"] = _aligned(train, train_ids, targets)
        result[f"{stage}_test"] = _aligned(test, test_ids, targets)
    return result


SPECS: dict[str, Spec] = {
    "three_stage_nn": Spec(
        script=f"{TRAINING}/3stage-nn-train.py", patches=three_stage_patches, collect=three_stage_collect,
        notes=["stages 'scored' (stage 2) and 'stack' (stage 3, the model's output)"],
    ),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(SPECS))
    ap.add_argument("--winners", type=Path, required=True,
                    help="local checkout (or bare git dir) of guitarmind/kaggle_moa_winner_hungry_for_gold")
    ap.add_argument("--data", type=Path, required=True, help="a lish-moa folder of CSV files (moakit simulate)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=1, help="the script's first N seeds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", choices=["full", "cpu"], default="full", help="see SIZES")
    ap.add_argument("--epochs", type=int, default=None, help="override every EPOCHS (a quick check only)")
    args = ap.parse_args(argv)

    spec = SPECS[args.model]
    text = apply_patches(read_script(args.winners, spec.script), spec.patches(args), spec.script)
    args.out.mkdir(parents=True, exist_ok=True)
    script = args.out / "patched_script.py"
    script.write_text(prologue(args.threads) + text)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    with open(args.out / "script.log", "w") as log:
        rc = subprocess.run([sys.executable, str(script.resolve()), str(args.data.resolve()), str(args.out.resolve())],
                            cwd=args.out, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        print(f"the winners' script failed (exit {rc}); see {args.out / 'script.log'}", file=sys.stderr)
        return 1
    np.savez_compressed(args.out / "predictions.npz", **spec.collect(args.out, args.data))
    (args.out / "run.json").write_text(json.dumps({
        "model": args.model, "script": spec.script, "seeds": args.seeds, "threads": args.threads, "size": args.size,
        "epochs_override": args.epochs, "seconds": round(seconds, 1), "notes": spec.notes}, indent=1))
    print(f"{args.model}: the winners' script ran in {seconds:.0f} s; predictions in {args.out / 'predictions.npz'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
