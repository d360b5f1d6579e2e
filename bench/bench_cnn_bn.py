"""Why the DeepInsight CNNs' CPU profiles use 64 px images and not smaller: eval-mode
BatchNorm against batch-statistics BatchNorm, by image size.

Trains the configured backbone from random weights on a seeded subset of the realistic
benchmark data (the same feature map for every size; grid = image size), then scores a
held-out subset four ways: the network in eval mode (running statistics: how it predicts),
in train mode (batch statistics), and in eval mode after recomputing the running statistics
over the training rows ("precise BN"); beside the per-target prior. Writes
``bench/out/cnn_bn.md``.

    .venv/bin/python bench/bench_cnn_bn.py                          # EfficientNet-B3, 32 and 64 px
    .venv/bin/python bench/bench_cnn_bn.py --backbone resnest50d_fast_2s2x40d --sizes 32 64
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import OUT, ready_for_realistic_data, realistic_data_dir, write_report  # noqa: E402  (bench/common.py)


def bce(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="tf_efficientnet_b3")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--train-rows", type=int, default=3000)
    ap.add_argument("--valid-rows", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.000352)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--report", default=str(OUT / "cnn_bn.md"))
    args = ap.parse_args()
    if not ready_for_realistic_data(args.threads):
        return 0

    from moakit.data.io import load
    from moakit.deepinsight import FeatureMap, LogNormScaler
    from moakit.features import blocks_from_dataset
    from moakit.models.deepinsight_cnn import DeepInsightCNN, RenderTransform, raw_matrix
    from moakit.nn.train import TrainParams, fit_network, init_output_bias

    train = load(realistic_data_dir(0)).train
    rng = np.random.default_rng(0)
    order = rng.permutation(train.n_rows)
    fit_rows, valid_rows = order[:args.train_rows], order[args.train_rows:args.train_rows + args.valid_rows]
    raw = raw_matrix(blocks_from_dataset(train))
    scaler = LogNormScaler().fit(raw[fit_rows])
    X = scaler.transform(raw)
    Y = train.scored.astype(np.float32)
    t0 = time.perf_counter()
    fmap = FeatureMap(perplexity=5, n_iter=500, metric="cosine", random_state=0, method="exact").fit(X[fit_rows])
    t_map = time.perf_counter() - t0
    rate = np.clip(Y[fit_rows].mean(axis=0), 1e-4, 1 - 1e-4)
    y_valid = torch.from_numpy(Y[valid_rows])
    prior = bce(torch.from_numpy(np.log(rate / (1 - rate))).float().expand(len(valid_rows), -1), y_valid)
    params = TrainParams(epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=512, optimizer="radam", lr=args.lr,
                         weight_decay=0.0, scheduler="cosine", cosine_t_max=5, smoothing=0.001, restore_best=False)

    rows = []
    for size in args.sizes:
        from moakit.deepinsight import Renderer

        px_rows, px_cols = fmap.pixels(size)
        renderer = Renderer(px_rows, px_cols, size, size)
        plain = RenderTransform(renderer, torch.device("cpu"))
        noisy = RenderTransform(renderer, torch.device("cpu"), X[fit_rows], 0.1, 0.15)
        torch.manual_seed(0)
        net = DeepInsightCNN(args.backbone, Y.shape[1])
        init_output_bias(net.head.fc2, Y[fit_rows])
        t0 = time.perf_counter()
        fit_network(net, X[fit_rows], Y[fit_rows], X[valid_rows], Y[valid_rows], params, seed=0,
                    batch_transform=noisy, eval_transform=plain)
        seconds = time.perf_counter() - t0
        bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        xv = plain(torch.from_numpy(X[valid_rows]), False, rng)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            net.eval()
            eval_loss = bce(net(xv), y_valid)
            net.train()  # batch statistics (this also updates the running ones: restored below)
            batch_loss = bce(net(xv), y_valid)
            net.load_state_dict(state)
            for m in bns:  # precise BN: running statistics averaged over the training rows
                m.reset_running_stats()
                m.momentum = None
            for start in range(0, len(fit_rows), args.batch_size):
                net(plain(torch.from_numpy(X[fit_rows[start:start + args.batch_size]]), False, rng))
            net.eval()
            precise_loss = bce(net(xv), y_valid)
        with torch.no_grad():
            final = net.backbone.forward_features(xv[:2]) if hasattr(net.backbone, "forward_features") else None
        fmap_shape = "x".join(str(d) for d in final.shape[2:]) if final is not None else "?"
        rows.append(f"| {size} | {fmap_shape} | {eval_loss:.5f} | {batch_loss:.5f} | {precise_loss:.5f} | "
                    f"{prior:.5f} | {seconds:.0f} |")
        print(rows[-1], flush=True)

    lines = [
        f"# Eval-mode BatchNorm by image size ({args.backbone})",
        "",
        f"Command: `.venv/bin/python bench/bench_cnn_bn.py --backbone {args.backbone} --sizes "
        f"{' '.join(map(str, args.sizes))} --train-rows {args.train_rows} --valid-rows {args.valid_rows} "
        f"--epochs {args.epochs} --threads {args.threads} --lr {args.lr} --batch-size {args.batch_size}`",
        "",
        f"{args.train_rows} training / {args.valid_rows} held-out rows of the realistic benchmark data (seeded), "
        f"random initial weights, {args.epochs} epochs (RAdam {args.lr:g}, cosine, batch {args.batch_size}, swap noise), "
        f"feature map fitted once ({t_map:.0f} s). Mean BCE over the 206 scored targets on the held-out rows:",
        "",
        "| image px | last feature map | eval mode (running stats) | train mode (batch stats) | "
        "eval after precise BN | prior | train s |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    write_report(args.report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
