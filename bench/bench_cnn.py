"""Benchmark of the DeepInsight CNNs: seconds per epoch and out-of-fold log loss.

Trains the ``deepinsight_efficientnet`` and ``deepinsight_resnest`` configs (``cpu``
profile by default) through the runner on the realistic benchmark data: moakit's simulator
driven by the real lish-moa label files (``../shared/data/lish-moa-labels`` next to the
repository). Also measures one training step in fp32 and with bf16 autocast on this CPU
(the ``amp`` default is fp32 on CPU, fp16 autocast on CUDA). Writes ``bench/out/cnn.md``.

    .venv/bin/python bench/bench_cnn.py                              # cpu profile, both models
    .venv/bin/python bench/bench_cnn.py --max-rows 2000 --folds 2 --epochs 1   # timing on a subset

``--tag NAME`` names the run folders ``bench/out/runs/<config>-<profile>-<seed>[-NAME]`` (e.g. to
keep a run of an older checkout: ``PYTHONPATH=/path/to/old/src ... --tag before``). The test
log loss is scored on the simulated answers (the test drugs are unseen in training).

``--max-rows`` keeps a seeded random subset of the training rows (and at most as many test
rows): the log loss of such a run is not the benchmark's, only its seconds per epoch are
representative (per row). Skips with a message when the label files are absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import LABELS, OUT, ready_for_realistic_data, realistic_data_dir, write_report  # noqa: E402  (bench/common.py)
CONFIGS = ["deepinsight_efficientnet", "deepinsight_resnest", "deepinsight_resnest_v2"]


def step_seconds(backbone: str, image_size: int, batch: int, amp: bool, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one forward + backward + RAdam step on CPU."""
    from moakit.models.deepinsight_cnn import DeepInsightCNN
    from moakit.nn.train import autocast_context

    torch.manual_seed(0)
    net = DeepInsightCNN(backbone, 206).train()
    opt = torch.optim.RAdam(net.parameters(), lr=3.52e-4)
    x, y = torch.rand(batch, 3, image_size, image_size), (torch.rand(batch, 206) < 0.01).float()
    best = float("inf")
    for _ in range(repeats + 1):  # the first step warms up
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast_context(amp, torch.device("cpu")):
            logits = net(x)
        torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y).backward()
        opt.step()
        best = min(best, time.perf_counter() - start)
    return best


def load_data(seed: int, max_rows: int | None):
    from moakit.data.dataset import MoAData
    from moakit.data.io import load

    data = load(realistic_data_dir(seed))
    if max_rows is not None and max_rows < len(data.train):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(data.train), max_rows, replace=False))
        test_keep = np.arange(min(len(data.test), max_rows))
        data = MoAData(train=data.train.subset(keep), test=data.test.subset(test_keep), source=data.source)
    return data


def test_scores(data, test_pred: np.ndarray) -> str:
    """'all / treated' log loss of the test predictions on the simulated answers ('-' without them)."""
    import pandas as pd

    from moakit import metrics

    answers = Path(data.source) / "answers" / "test_targets_scored.csv"
    if not answers.exists():
        return "-"
    frame = pd.read_csv(answers).set_index("sig_id")  # all test rows; a --max-rows run keeps a subset
    truth = frame.loc[np.asarray(data.test.sig_id), list(data.train.scored_names)].to_numpy(np.float64)
    sc = metrics.score(truth, test_pred, data.test.is_control)
    return f"{sc['log_loss']:.5f} / {sc['log_loss_treated']:.5f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="simulator seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-rows", type=int, default=None, help="train on a random subset (timing only)")
    ap.add_argument("--folds", type=int, default=None, help="override the profile's fold count")
    ap.add_argument("--epochs", type=int, default=None, help="override the profile's epoch cap")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="override the config's seeds")
    ap.add_argument("--skip-amp-check", action="store_true")
    ap.add_argument("--tag", default=None, help="suffix of the run folder names (and of the default report)")
    ap.add_argument("--report", default=None, help="default bench/out/cnn[-TAG].md")
    args = ap.parse_args()
    if args.report is None:
        args.report = str(OUT / (f"cnn-{args.tag}.md" if args.tag else "cnn.md"))

    if not ready_for_realistic_data(args.threads):
        return 0

    from moakit import runner
    from moakit.config import load_config

    command = " ".join([".venv/bin/python bench/bench_cnn.py", *sys.argv[1:]])
    t0 = time.perf_counter()
    data = load_data(args.seed, args.max_rows)
    t_data = time.perf_counter() - t0
    subset = args.max_rows is not None and args.max_rows < 23814
    lines = [
        f"# DeepInsight CNN benchmark (profile {args.profile})",
        "",
        f"Command: `{command}`",
        "",
        f"Data: simulated with the real lish-moa labels ({LABELS.name}), {len(data.train)} training rows"
        + (" (a random SUBSET: timing only, the log loss is not the benchmark's)" if subset else "")
        + f", {len(data.test)} test rows, {data.train.genes.shape[1]} genes, {data.train.cells.shape[1]} cells; "
        f"torch threads {args.threads}; data {t_data:.0f} s.",
        "",
    ]

    if not args.skip_amp_check:
        from moakit.runner import build_model

        lines += ["## Mixed precision on this CPU (one training step, best of 3)", "",
                  "| backbone | image | batch | fp32 s | bf16 autocast s | bf16 / fp32 |", "|---|---|---|---|---|---|"]
        for name in args.configs:
            params = build_model(load_config(name, args.profile)).params
            size, batch = params.image_size, params.train.batch_size
            fp32 = step_seconds(params.backbone, size, batch, amp=False)
            bf16 = step_seconds(params.backbone, size, batch, amp=True)
            lines.append(f"| {params.backbone} | {size} | {batch} | {fp32:.2f} | {bf16:.2f} | {bf16 / fp32:.2f} |")
            print(lines[-1], flush=True)
        lines.append("")

    lines += ["## Training (runner, OOF over all folds)", "",
              "| config | backbone | image | folds | epochs (all folds) | s / epoch | t-SNE + map s | "
              "shared pixels | OOF log loss (all / treated) | prior (all / treated) | test log loss (all / treated) | "
              "train s | predict_run = test |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.configs:
        config = load_config(name, args.profile, folds=args.folds, seeds=args.seeds)
        if args.epochs is not None:
            config.params.setdefault("train", {})["epochs"] = args.epochs
        model = runner.build_model(config)
        tag = (f"{name}-{args.profile}-{args.seed}" + (f"-rows{args.max_rows}" if subset else "")
               + (f"-{args.tag}" if args.tag else ""))
        run_dir = OUT / "runs" / tag
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        result = runner.train(config, data, run_dir, show_progress=False)
        t_train = time.perf_counter() - t0
        folds = [json.loads(p.read_text()) for p in sorted(run_dir.glob("stages/*/seed_*/fold_*/done.json"))]
        epochs = sum(f["info"]["epochs"] for f in folds)
        per_epoch = sum(f["fit_seconds"] for f in folds) / max(epochs, 1)
        feat = json.loads(next(run_dir.glob("stages/*/seed_*/features/deepinsight.json")).read_text())["info"]
        t0 = time.perf_counter()
        again = runner.predict_run(run_dir, data.test)
        t_predict = time.perf_counter() - t0
        same = bool(np.array_equal(again, result.test))
        m = result.metrics
        test = test_scores(data, result.test)
        lines.append(
            f"| {name} | {model.params.backbone} | {model.params.image_size} | {config.cv.n_folds} | {epochs} | "
            f"{per_epoch:.1f} | {feat['fit_seconds']:.0f} | {feat['collision_rate']:.1%} | "
            f"{m['log_loss']:.5f} / {m['log_loss_treated']:.5f} | "
            f"{m['prior']['log_loss']:.5f} / {m['prior']['log_loss_treated']:.5f} | {test} | {t_train:.0f} | "
            f"{same} ({t_predict:.0f} s) |")
        print(lines[-1], flush=True)
    lines += ["", "s / epoch: training seconds of all folds (training epochs + their validation passes) divided "
              "by the number of epochs; the feature map's t-SNE is fitted once per seed (column t-SNE)."]
    write_report(args.report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
