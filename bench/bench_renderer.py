"""Benchmark of the DeepInsight renderer: rows/second against the memory-write bound.

For each image size (resolution = image size, 872 features, a t-SNE feature map of
synthetic correlated data) it times:

- ``render`` (numpy, a fresh zeroed output per batch: what a DataLoader does),
- ``render(out=buf)`` (numpy, reusing one output buffer: only occupied pixels written),
- ``render_torch`` with the torch ``index_add_``/``scatter_reduce_`` kernels on CPU,
- the per-row reference (a few hundred rows),

and the machine's write bandwidth in the same run (best of several ``ndarray.fill`` passes over
a buffer the size of one output batch), giving the bound rows/s = bandwidth / (3*H*W*4 bytes).
Writes a markdown table to ``bench/out/renderer.md``.

    .venv/bin/python bench/bench_renderer.py                      # 224 and 300, batch 512
    .venv/bin/python bench/bench_renderer.py --time-tsne          # also time the t-SNE fit
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO / "src"))


def synthetic(n_rows: int, n_features: int, seed: int) -> np.ndarray:
    """Correlated non-negative rows (latent factors + noise), log-scaled like the real input."""
    from moakit.deepinsight import LogNormScaler

    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_rows, 24)).astype(np.float32)
    loads = (rng.normal(size=(24, n_features)) * (rng.random((24, n_features)) < 0.2)).astype(np.float32)
    X = latent @ loads + rng.normal(size=(n_rows, n_features)).astype(np.float32)
    return LogNormScaler().fit_transform(X)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def write_bandwidth(n_bytes: int, repeats: int) -> float:
    buf = np.empty(n_bytes // 4, dtype=np.float32)
    buf.fill(0.0)  # fault the pages in first
    t = best_time(lambda: buf.fill(1.0), repeats)
    return n_bytes / t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="224,300")
    ap.add_argument("--features", type=int, default=872)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--batches", type=int, default=5, help="timed batches per method (best taken)")
    ap.add_argument("--reference-rows", type=int, default=200)
    ap.add_argument("--map-samples", type=int, default=2000, help="rows of synthetic data the bench map's t-SNE sees")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-tsne", action="store_true", help="also time FeatureMap.fit at 18k rows and 4k rows")
    ap.add_argument("--report", default=str(OUT / "renderer.md"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from moakit.deepinsight import FeatureMap, Renderer

    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    X = synthetic(args.map_samples, args.features, seed=0)
    t0 = time.perf_counter()
    fmap = FeatureMap(random_state=0).fit(X)
    t_map = time.perf_counter() - t0
    batch = synthetic(args.batch, args.features, seed=1)
    tbatch = torch.from_numpy(batch)

    say(f"# DeepInsight renderer ({args.features} features, batch {args.batch}, {args.threads} threads)")
    say()
    say(f"Feature map: t-SNE (exact, cosine, perplexity 5, 1000 iterations) of {args.map_samples} synthetic "
        f"rows, {t_map:.1f} s.")
    say()
    say("| image | occupied px | layers | write GB/s | bound rows/s | render rows/s | % bound "
        "| render(out=) rows/s | torch kernels rows/s | reference rows/s | speed-up vs reference |")
    say("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        r = Renderer.from_feature_map(fmap, size)
        image_bytes = 3 * size * size * 4
        bw = write_bandwidth(image_bytes * args.batch, repeats=max(5, args.batches))
        bound = bw / image_bytes

        r.render(batch)  # warm-up
        t_fresh = best_time(lambda: r.render(batch), args.batches)
        buf = r.render(batch)
        t_reuse = best_time(lambda: r.render(batch, out=buf), args.batches)
        r.render_torch(tbatch, backend="torch")
        t_torch = best_time(lambda: r.render_torch(tbatch, backend="torch"), args.batches)
        n_ref = min(args.reference_rows, args.batch)
        t_ref = best_time(lambda: [r.render_reference(x) for x in batch[:n_ref]], 1)

        assert np.array_equal(buf, r.render(batch))
        assert np.array_equal(r.render(batch[:3]), np.stack([r.render_reference(x) for x in batch[:3]]))

        rps = args.batch / t_fresh
        say(f"| {size}x{size} | {r.n_pixels} | {len(r.layer_groups)} | {bw / 1e9:.1f} | {bound:,.0f} | {rps:,.0f} "
            f"| {100 * rps / bound:.0f}% | {args.batch / t_reuse:,.0f} | {args.batch / t_torch:,.0f} "
            f"| {n_ref / t_ref:,.0f} | {rps / (n_ref / t_ref):,.0f}x |")
        del buf

    if args.time_tsne:
        say()
        say("| t-SNE fit (872 features) | rows seen | seconds |")
        say("|---|---|---|")
        big = synthetic(18000, args.features, seed=2)
        for max_samples in (None, 4000):
            t0 = time.perf_counter()
            FeatureMap(random_state=0, max_samples=max_samples).fit(big)
            say(f"| exact, max_samples={max_samples} | {max_samples or 18000} | {time.perf_counter() - t0:.1f} |")

    say()
    say(f"Command: `.venv/bin/python bench/bench_renderer.py{' --time-tsne' if args.time_tsne else ''}`")
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
