"""GPU check of moakit's training path: the DeepInsight CNNs with mixed precision at full
image size, and one 3-stage NN fold at full size, in one command of a few minutes.

    .venv/bin/python bench/gpu_check.py               # on a CUDA machine: < 5 minutes
    .venv/bin/python bench/gpu_check.py --cpu-smoke   # tiny sizes on CPU: the script itself works

For each CNN (the ``full`` profiles of ``deepinsight_efficientnet`` and
``deepinsight_resnest_v2``: 300 px / batch 48 and 224 px / batch 128, dropout, drop path,
RAdam, weight decay, gradient clipping, cosine schedule) it trains a few hundred steps through
the shared loop (``nn.train.fit_network``) with 16-bit autocast as a run on that GPU would
(bf16 where supported, else fp16 + GradScaler), then a shorter pass forced to fp16 +
GradScaler (the scripts' precision=16) so the loss-scaling path runs on the GPU too. It
prints per epoch the training and validation loss, steps/s and peak GPU memory, and checks:
no inf/NaN in losses or weights, and the training loss going down.

The data are simulated (``moakit.data.simulate``: MoA-like profiles and labels, ~23.8k
training rows as in lish-moa); the DeepInsight feature map comes from a 2-D PCA of the
features instead of the t-SNE (seconds instead of minutes: this checks training, not the map).

The 3-stage NN fold: the ``three_stage_nn`` config's stage-1 network (2048-2048 MLP with
weight norm) and training settings (15 epochs, batch 256, OneCycle, targets clipped) on one
5-fold split of the simulated non-scored targets, with the stage's input width (cp, g, c plus
stand-in columns of the FA / UMAP widths: the feature pipeline is not what is checked).

Exit status 1 when a check fails. ``--report`` writes the printed lines as markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT  # noqa: E402  (bench/common.py)

CNN_CONFIGS = ["deepinsight_efficientnet", "deepinsight_resnest_v2"]


def log(lines: list[str], text: str = "") -> None:
    lines.append(text)
    print(text, flush=True)


def simulated_data(n_rows: int, seed: int = 0):
    from moakit.data.io import load
    from moakit.data.simulate import simulate

    tmp = Path(tempfile.mkdtemp(prefix="moakit-gpu-check-"))
    return load(simulate(tmp / "data", n_rows=n_rows, seed=seed))


def finite_weights(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


class EpochClock:
    """on_epoch callback: per-epoch seconds, steps/s and peak memory, printed as it goes."""

    def __init__(self, lines: list[str], steps_per_epoch: int, device: torch.device) -> None:
        self.lines, self.steps, self.device = lines, steps_per_epoch, device
        self.records: list[dict] = []
        self.last = time.perf_counter()

    def __call__(self, record: dict) -> None:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        mem = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else float("nan")
        rec = {**record, "seconds": seconds, "steps_per_s": self.steps / seconds, "peak_gib": mem}
        self.records.append(rec)
        log(self.lines, f"| {record['epoch']} | {record['train_loss']:.5f} | {record['valid_loss']:.5f} | "
                        f"{seconds:.1f} | {rec['steps_per_s']:.2f} | {mem:.2f} |")


def check_run(name: str, records: list[dict], module: torch.nn.Module, failures: list[str],
              lines: list[str], need_progress: bool = True) -> None:
    """inf/NaN in losses or weights fail; so does a training loss that did not go down
    (``need_progress``; at the --cpu-smoke sizes a few steps prove nothing either way)."""
    losses = [r["train_loss"] for r in records] + [r["valid_loss"] for r in records]
    if not np.isfinite(losses).all():
        failures.append(f"{name}: a loss is inf/NaN")
    if not finite_weights(module):
        failures.append(f"{name}: a weight is inf/NaN")
    if len(records) > 1 and not records[-1]["train_loss"] < records[0]["train_loss"]:
        text = (f"{name}: training loss did not go down ({records[0]['train_loss']:.5f} -> "
                f"{records[-1]['train_loss']:.5f})")
        if need_progress:
            failures.append(text)
        else:
            log(lines, f"note: {text}")
            log(lines)


def underflow_check(device: torch.device, lines: list[str], failures: list[str]) -> None:
    """Why fp16 needs loss scaling: the weight gradient of an output layer predicting ~0.05%
    positives (per-logit gradients ~5e-8 at batch 48 x 206 targets) under fp16 autocast,
    without and with GradScaler, against fp32."""
    from moakit.nn.train import MixedPrecision

    def layer():
        torch.manual_seed(0)
        out = torch.nn.Linear(512, 206).to(device)
        with torch.no_grad():
            out.bias.fill_(-7.6)
        return out

    x = torch.randn(48, 512, generator=torch.Generator().manual_seed(1)).to(device)
    y = torch.zeros(48, 206, device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    ref = layer()
    loss_fn(ref(x), y).backward()
    errors = {}
    for scaled in (False, True):
        net = layer()
        amp = MixedPrecision(True, device, "float16")
        with amp.autocast():
            out = net(x)
        loss = loss_fn(out.float(), y)
        if scaled:
            amp.backward_step(loss, torch.optim.SGD(net.parameters(), lr=0.0), list(net.parameters()), 10.0)
        else:
            loss.backward()
        errors[scaled] = float((net.weight.grad - ref.weight.grad).norm() / ref.weight.grad.norm())
    log(lines, f"fp16 gradient of a rare-label output layer vs fp32 (relative error): without loss scaling "
               f"{errors[False]:.4f}, with GradScaler {errors[True]:.4f}")
    log(lines)
    if not errors[True] < 0.01:
        failures.append(f"fp16 + GradScaler gradient error {errors[True]:.4f}")


def cnn_check(name: str, data, args, device: torch.device, lines: list[str], failures: list[str]) -> dict:
    from sklearn.decomposition import PCA

    from moakit.config import load_config
    from moakit.deepinsight import FeatureMap, LogNormScaler
    from moakit.features import blocks_from_dataset
    from moakit.models.deepinsight_cnn import DeepInsightFeatures, RenderTransform, build_cnn, feature_groups, raw_matrix
    from moakit.nn.train import fit_network, init_output_bias
    from moakit.runner import build_model

    params = build_model(load_config(name)).params  # the full profile
    if args.cpu_smoke:
        params = params.model_copy(update={"image_size": 32, "train": params.train.model_copy(update={"batch_size": 16})})
    size, batch = params.image_size, params.train.batch_size
    blocks = blocks_from_dataset(data.train)
    X_raw = raw_matrix(blocks)
    scaler = LogNormScaler().fit(X_raw)
    X = scaler.transform(X_raw)
    layout = PCA(n_components=2, random_state=0).fit_transform(X.T)
    features = DeepInsightFeatures(scaler, FeatureMap.from_embedding(layout), params.grid, size, feature_groups(blocks))
    Y = data.train.scored.astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    n_valid = min(args.valid_rows, len(X) // 4)
    results = {}
    for label, dtype, steps in (("auto", "auto", args.steps), ("float16 + GradScaler", "float16", args.fp16_steps)):
        epochs = args.epochs if label == "auto" else 1
        per_epoch = max(1, steps // epochs)
        n_train = min(per_epoch * batch, len(X) - n_valid)
        per_epoch = math.ceil(n_train / batch)
        tr, va = order[n_valid:n_valid + n_train], order[:n_valid]
        torch.manual_seed(0)
        net, _, _ = build_cnn(params, Y.shape[1])
        init_output_bias(net.head.fc2, Y[tr])
        renderer = features.renderer()
        train_tf = RenderTransform(renderer, device, X[tr], params.swap_noise.p, params.swap_noise.fraction,
                                   columns=features.noise_columns())
        eval_tf = RenderTransform(renderer, device)
        tp = params.train.model_copy(update={"epochs": epochs, "patience": None, "amp": device.type == "cuda" or
                                             dtype == "float16", "amp_dtype": dtype})
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        log(lines, f"### {name}: {params.backbone}, {size} px, batch {batch}, {epochs} x {per_epoch} steps, "
                   f"autocast {label}")
        log(lines)
        log(lines, "| epoch | train loss | valid loss | s | steps/s | peak GPU GiB |")
        log(lines, "|---|---|---|---|---|---|")
        clock = EpochClock(lines, per_epoch, device)
        start = time.perf_counter()
        result = fit_network(net, X[tr], Y[tr], X[va], Y[va], tp, seed=0, batch_transform=train_tf,
                             eval_transform=eval_tf, on_epoch=clock, device=device)
        seconds = time.perf_counter() - start
        log(lines)
        log(lines, f"precision: {json.dumps(result.precision)}; {epochs * per_epoch} steps in {seconds:.1f} s "
                   f"({epochs * per_epoch / seconds:.2f} steps/s incl. validation)")
        log(lines)
        check_run(f"{name} ({label})", clock.records, net, failures, lines, need_progress=not args.cpu_smoke)
        if dtype == "float16" and result.precision.get("skipped_steps", 0) > max(3, 0.1 * result.precision["steps"]):
            failures.append(f"{name}: GradScaler skipped {result.precision['skipped_steps']} steps")
        results[label] = {"records": clock.records, "precision": result.precision, "seconds": seconds}
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def three_stage_check(data, args, device: torch.device, lines: list[str], failures: list[str]) -> dict:
    from sklearn.preprocessing import QuantileTransformer

    from moakit.config import load_config
    from moakit.cv import assign_folds
    from moakit.nn.blocks import build_network
    from moakit.nn.train import fit_network, init_output_bias
    from moakit.runner import build_model

    model = build_model(load_config("three_stage_nn"))
    stage = model.params.stage1
    net_cfg, train = stage.network, stage.train
    tr = data.train
    keep = ~tr.is_control  # the stage trains on the treated rows
    Y_all = tr.nonscored[keep].astype(np.float32)
    Y_all = Y_all[:, Y_all.sum(axis=0) > 0]  # non-scored targets with a positive row
    gc = np.concatenate([tr.genes, tr.cells], axis=1)[keep]
    gc = QuantileTransformer(n_quantiles=100, output_distribution="normal", random_state=0).fit_transform(gc)
    extra = sum(int((s.model_extra or {}).get("n_components", 0)) for s in stage.features.steps
                if s.kind in ("factor_analysis", "umap", "pca"))
    rng = np.random.default_rng(0)
    stand_in = (gc @ rng.normal(size=(gc.shape[1], extra)) / math.sqrt(gc.shape[1])).astype(np.float32)
    X = np.concatenate([tr.cp_onehot()[keep], gc, stand_in], axis=1).astype(np.float32)
    hidden = list(net_cfg.hidden) if not args.cpu_smoke else [64, 64]
    folds = assign_folds(tr.subset(np.flatnonzero(keep)), scheme="old", n_folds=5, seed=42)
    fit, val = folds != 0, folds == 0
    epochs = train.epochs if not args.cpu_smoke else 2
    tp = train.model_copy(update={"epochs": epochs} if not args.cpu_smoke else {"epochs": epochs, "batch_size": 32})
    torch.manual_seed(0)
    module = build_network("mlp", {"n_in": X.shape[1], "n_out": Y_all.shape[1], "hidden": hidden,
                                   "dropouts": net_cfg.dropouts, "weight_norm_layers": net_cfg.weight_norm,
                                   "activation_name": net_cfg.activation})
    init_output_bias(module.net[-1], Y_all[fit])
    steps = math.ceil(int(fit.sum()) / tp.batch_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log(lines, f"### three_stage_nn stage 1, one fold: {int(fit.sum())} training / {int(val.sum())} validation rows, "
               f"{X.shape[1]} inputs, hidden {hidden}, {Y_all.shape[1]} non-scored targets, {epochs} x {steps} steps, "
               f"batch {tp.batch_size}, {tp.scheduler}, amp {tp.amp}")
    log(lines)
    log(lines, "| epoch | train loss | valid loss | s | steps/s | peak GPU GiB |")
    log(lines, "|---|---|---|---|---|---|")
    clock = EpochClock(lines, steps, device)
    start = time.perf_counter()
    result = fit_network(module, X[fit], Y_all[fit], X[val], Y_all[val], tp, seed=0, on_epoch=clock, device=device)
    seconds = time.perf_counter() - start
    log(lines)
    log(lines, f"best epoch {result.best_epoch}, best valid loss {result.best_loss:.5f}; {seconds:.1f} s")
    log(lines)
    check_run("three_stage_nn stage 1", clock.records, module, failures, lines, need_progress=not args.cpu_smoke)
    return {"records": clock.records, "seconds": seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (checks the script runs)")
    ap.add_argument("--rows", type=int, default=None, help="simulated rows (train + test); default 29,800 "
                    "(~23.8k training rows), 500 with --cpu-smoke")
    ap.add_argument("--steps", type=int, default=300, help="training steps per CNN (16-bit autocast)")
    ap.add_argument("--fp16-steps", type=int, default=60, help="further steps per CNN forced to fp16 + GradScaler")
    ap.add_argument("--epochs", type=int, default=5, help="the CNN steps are split into this many epochs")
    ap.add_argument("--valid-rows", type=int, default=1024)
    ap.add_argument("--configs", nargs="+", default=CNN_CONFIGS)
    ap.add_argument("--skip-three-stage", action="store_true")
    ap.add_argument("--report", default=None, help="markdown copy of the output (default bench/out/gpu_check.md)")
    args = ap.parse_args()
    if args.cpu_smoke:
        # fp16 convolutions have no fast CPU kernels: one fp16 step is enough to run the scaler path
        args.steps, args.fp16_steps, args.epochs, args.valid_rows = min(args.steps, 4), min(args.fp16_steps, 1), 2, 32
        args.rows = args.rows or 400
        device = torch.device("cpu")
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run on a GPU machine, or use --cpu-smoke", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        args.rows = args.rows or 29_800
    lines: list[str] = []
    failures: list[str] = []
    t0 = time.perf_counter()
    command = " ".join([".venv/bin/python bench/gpu_check.py", *sys.argv[1:]])
    log(lines, "# GPU check" + (" (--cpu-smoke: tiny sizes on CPU)" if args.cpu_smoke else ""))
    log(lines)
    log(lines, f"Command: `{command}`")
    log(lines)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else None
    log(lines, f"Device: {dev}; torch {torch.__version__}; CUDA bf16 supported: {bf16}")
    data = simulated_data(args.rows)
    log(lines, f"Data: {len(data.train)} simulated training rows ({int(data.train.is_control.sum())} controls), "
               f"{data.train.genes.shape[1]} genes, {data.train.cells.shape[1]} cells; {time.perf_counter() - t0:.0f} s")
    log(lines)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    underflow_check(device, lines, failures)
    for name in args.configs:
        cnn_check(name, data, args, device, lines, failures)
    if not args.skip_three_stage:
        three_stage_check(data, args, device, lines, failures)
    log(lines, f"Total {time.perf_counter() - t0:.0f} s. " + ("All checks passed." if not failures else
                                                             "FAILED: " + "; ".join(failures)))
    report = Path(args.report or OUT / ("gpu_check_cpu_smoke.md" if args.cpu_smoke else "gpu_check.md"))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
