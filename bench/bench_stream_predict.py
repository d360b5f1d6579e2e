"""Streaming `moakit predict` (BENCHMARKS.md, "Feature reuse and streaming prediction").

Step `train`: blend_moakit's tabular models at their `full` seed count with the smoke
profile's widths, epochs and 3 folds, on simulate(n_rows=3000, seed=5) (the first
BENCH_MODELS of MODELS; the DeepInsight CNNs left out: their CPU predict of 100,000 rows
takes hours), and a `moakit blend --method per_target` of those trained (every model keeps a
weight, so every model runs at prediction).
Step `train_gene_only`: simple_nn (6 seeds, smoke widths) on the same data without c- columns.
Step `inputs`: 100,000 rows (the simulated test rows repeated with fresh sig_ids) as CSV, and
their genes as a 100,000-signature GCTX (for the gene-only run).
Step `predict NAME...`: `/usr/bin/time -v moakit predict` per run (NAME_gctx: the GCTX input),
one pass (--chunk-rows 0) and streaming (--chunk-rows 20000) (BENCH_CHUNKS="0,20000"): rows/s,
wall, CPU seconds, peak RSS, the load (uptime) before and after; the outputs compared byte
for byte when both ran.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 BENCH_MODELS=3 nice -n 19 .venv/bin/python bench/bench_stream_predict.py train

BENCH_TRAIN=a,b (`train`): train these models instead (DeepInsight ones too: their configs' one
seed, smoke widths: 16 px images, 2 folds). Step `blend NAME MODEL...`: a per_target blend of
those trained runs as runs/NAME. Step `head N`: the first N rows of the 100,000-row CSV as
rows_N.csv; BENCH_INPUT=rows_N.csv (`predict`): that input instead. BENCH_MEMBERS=1
(`predict`): the same `moakit predict` run through this script's `_cli` step, which adds each
model's CPU seconds inside the one process (members_cpu_s, a blend's members one by one).
BENCH_LABEL=text (`predict`): written as "label" in each result row (e.g. which code ran).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path("bench/out/stream_predict")
DATA = Path("bench/out/streaming/data")  # simulate(n_rows=3000, seed=5), as bench_streaming.py
MODELS = ["simple_nn", "simple_nn_drug_cv", "resnet_2heads", "cnn1d", "three_stage_nn", "two_stage_nn_tabnet"]
DEEPINSIGHT = ["deepinsight_efficientnet", "deepinsight_resnest_v2"]
ROWS = 100_000


def train() -> None:
    import torch

    from moakit import runner
    from moakit.config import load_config
    from moakit.data.io import load

    torch.set_num_threads(1)
    data = load(DATA)
    chosen = os.environ.get("BENCH_TRAIN")
    for name in chosen.split(",") if chosen else MODELS[:int(os.environ.get("BENCH_MODELS", len(MODELS)))]:
        out = ROOT / "runs" / name
        if (out / "metrics.json").exists():
            continue
        config = load_config(name, profile="smoke").model_copy(update={"seeds": list(load_config(name).seeds)})
        t0, c0 = time.perf_counter(), time.process_time()
        runner.train(config, data, out, show_progress=False)
        with open(ROOT / "train_times.jsonl", "a") as fh:
            fh.write(json.dumps({"trained": name, "seeds": len(config.seeds), "folds": config.cv.n_folds,
                                 "wall_s": round(time.perf_counter() - t0, 1),
                                 "cpu_s": round(time.process_time() - c0, 1),
                                 "uptime": os.popen("uptime").read().strip()}) + "\n")
        print(json.dumps({"trained": name, "seeds": len(config.seeds), "folds": config.cv.n_folds,
                          "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                          "uptime": os.popen("uptime").read().strip()}), flush=True)
    blend = ROOT / "runs" / "blend"
    if not chosen and not (blend / "blend.json").exists():
        moakit = str(Path(sys.executable).with_name("moakit"))
        trained = [m for m in MODELS if (ROOT / "runs" / m / "metrics.json").exists()]
        subprocess.run([moakit, "blend", *[str(ROOT / "runs" / m) for m in trained], "--out", str(blend),
                        "--method", "per_target"], check=True, stdout=subprocess.DEVNULL)


def train_gene_only() -> None:
    """simple_nn (6 seeds, smoke widths) on the same data without the cell columns: the run
    a GCTX of gene expression alone can be predicted with."""
    import pandas as pd
    import torch

    from moakit import runner
    from moakit.config import load_config
    from moakit.data.io import load

    torch.set_num_threads(1)
    data_dir = ROOT / "data_genes"
    if not (data_dir / "train_features.csv").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        for f in DATA.rglob("*.csv"):
            dest = data_dir / f.relative_to(DATA)
            dest.parent.mkdir(parents=True, exist_ok=True)
            frame = pd.read_csv(f)
            frame.drop(columns=[c for c in frame.columns if c.startswith("c-")]).to_csv(dest, index=False)
    out = ROOT / "runs" / "simple_nn_genes"
    if not (out / "metrics.json").exists():
        seeds = list(load_config("simple_nn").seeds)
        config = load_config("simple_nn", profile="smoke").model_copy(update={"seeds": seeds})
        runner.train(config, load(data_dir), out, show_progress=False)


def inputs() -> None:
    """100,000 rows: the simulated test rows repeated with fresh sig_ids (bench_streaming.py's
    input, written line by line from the test CSV's text: the same values), and their genes
    as a 100,000-signature GCTX (Entrez ids as gene ids, cp_* as column annotations)."""
    import numpy as np
    import pandas as pd

    from moakit.data import gctx
    from moakit.data.column_maps import lish_moa_gene_ids

    lines = (DATA / "test_features.csv").read_text().splitlines()
    header, body = lines[0], lines[1:]
    big = ROOT / "rows_100k.csv"
    if not big.exists():
        with open(big, "w") as fh:
            fh.write(header + "\n")
            for i in range(ROWS):
                fh.write(f"id_{i:06d}" + body[i % len(body)][body[i % len(body)].index(","):] + "\n")
    path = ROOT / "rows_100k.gctx"
    if not path.exists():
        test = pd.read_csv(DATA / "test_features.csv")
        genes = [c for c in test.columns if c.startswith("g-")]
        ids = lish_moa_gene_ids()
        values = test[genes].to_numpy(np.float32)
        take = np.arange(ROWS) % len(test)
        cid = [f"id_{i:06d}" for i in range(ROWS)]
        meta = test[["cp_type", "cp_time", "cp_dose"]].iloc[take].set_axis(pd.Index(cid))
        blocks = (values[take[i:i + 10_000]] for i in range(0, ROWS, 10_000))
        gctx.write_gctx_blocks(path, cid, [ids[g] for g in genes], blocks, col_meta=meta)


def blend_of(name: str, members: list[str]) -> None:
    """`moakit blend --method per_target` of trained runs (every model keeps a weight)."""
    moakit = str(Path(sys.executable).with_name("moakit"))
    subprocess.run([moakit, "blend", *[str(ROOT / "runs" / m) for m in members], "--out", str(ROOT / "runs" / name),
                    "--method", "per_target"], check=True)


def head(n: int) -> None:
    """The first n rows of the 100,000-row CSV (the same text) as rows_n.csv."""
    with open(ROOT / "rows_100k.csv") as src, open(ROOT / f"rows_{n}.csv", "w") as dest:
        for i, line in enumerate(src):
            if i > n:
                break
            dest.write(line)


def cli_with_member_times(times_path: str, argv: list[str]) -> None:
    """`moakit ARGV...` with each model's CPU seconds (RunPredictor.predict, all chunks)
    written to times_path as JSON: {run folder name: CPU s}."""
    import atexit

    from moakit import streaming
    from moakit.cli import main

    spent: dict[str, float] = {}
    original = streaming.RunPredictor.predict

    def timed(self, ds):
        c0 = time.process_time()
        try:
            return original(self, ds)
        finally:
            spent[self.run_dir.name] = spent.get(self.run_dir.name, 0.0) + time.process_time() - c0

    streaming.RunPredictor.predict = timed
    atexit.register(lambda: Path(times_path).write_text(json.dumps({k: round(v, 1) for k, v in spent.items()})))
    sys.argv = ["moakit", *argv]
    main()


def one(run: Path, features: Path, out: Path, chunk: int) -> dict:
    moakit = str(Path(sys.executable).with_name("moakit"))
    members = ROOT / "member_times.json"
    if os.environ.get("BENCH_MEMBERS") == "1":
        members.unlink(missing_ok=True)
        moakit = [sys.executable, __file__, "_cli", str(members)]
    cmd = ["/usr/bin/time", "-v", *([moakit] if isinstance(moakit, str) else moakit), "predict", "--run", str(run), "--features", str(features), "--out",
           str(out), "--chunk-rows", str(chunk), "--json"]
    load_before = os.popen("uptime").read().strip()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"run": run.name, "chunk_rows": chunk, "error": proc.stderr[-2000:]}
    err = proc.stderr
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", err).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", err).group(1))
    info = json.loads(proc.stdout)
    extra = {"members_cpu_s": json.loads(members.read_text())} if not isinstance(moakit, str) else {}
    return {"run": run.name, "input": features.name, "chunk_rows": chunk, "rows": info["rows"],
            "rows_per_s": info["rows_per_second"], "wall_s": round(wall, 1), "cpu_s": round(user + system, 1),
            "peak_rss_mib": round(rss / 1024), "uptime_before": load_before,
            "uptime_after": os.popen("uptime").read().strip(), **extra,
            **({"label": os.environ["BENCH_LABEL"]} if os.environ.get("BENCH_LABEL") else {})}


def predict(which: list[str]) -> None:
    results = ROOT / "results.jsonl"
    for name in which:
        run = ROOT / "runs" / name
        features = ROOT / ("rows_100k.gctx" if name.endswith("gctx") else os.environ.get("BENCH_INPUT", "rows_100k.csv"))
        if name.endswith("gctx"):
            run = ROOT / "runs" / name.removesuffix("_gctx")
        outs = []
        for chunk in [int(c) for c in os.environ.get("BENCH_CHUNKS", "0,20000").split(",")]:
            dest = ROOT / "pred" / f"{name}_{features.stem}_{chunk}.csv"
            dest.parent.mkdir(parents=True, exist_ok=True)
            row = one(run, features, dest, chunk)
            outs.append(dest)
            with open(results, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        if len(outs) == 2:
            same = all(p.exists() for p in outs) and outs[0].read_bytes() == outs[1].read_bytes()
            with open(results, "a") as fh:
                fh.write(json.dumps({"run": name, "input": features.name, "byte_identical": same}) + "\n")


if __name__ == "__main__":
    step = sys.argv[1]
    if step == "train":
        train()
    elif step == "train_gene_only":
        train_gene_only()
    elif step == "inputs":
        inputs()
    elif step == "blend":
        blend_of(sys.argv[2], sys.argv[3:])
    elif step == "head":
        head(int(sys.argv[2]))
    elif step == "_cli":
        cli_with_member_times(sys.argv[2], sys.argv[3:])
    else:
        predict(sys.argv[2:])
