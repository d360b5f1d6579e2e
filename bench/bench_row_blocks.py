"""Predict cost and chunk-independence of a run folder (BENCHMARKS.md, "Streaming `moakit predict`",
issue 29: fixed row blocks and TabNet loading).

For each run (a model run, not a blend): the CPU seconds to open it and load every
estimator, the first N rows of the input as one matrix per transform (what one pass did
before the row blocks: ``RunPredictor.predict_block``), one pass (fixed row blocks), and a
stream of odd-sized chunks (CHUNK rows, rounded up by the
predictor) over the same rows; rows per CPU second of each and whether the stream equals
the one pass bit for bit (``np.array_equal``) or by how much it differs.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/bench_row_blocks.py \
        OUT.json RUN_DIR... [--input CSV] [--rows N] [--chunk CHUNK]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import write_result


def _cpu() -> float:
    return time.process_time()


def measure(run_dir: Path, ds, chunk: int) -> dict:
    from moakit.runs.predict import Predictor, collect
    from moakit.streaming import DatasetRows

    t = _cpu()
    predictor = Predictor(run_dir)
    for model in predictor.models:
        model.batch_sizes()  # loads every estimator
    load_s = _cpu() - t
    predictor.predict(ds.subset(np.arange(10)), "input")  # first calls (numba's compilation of umap) not timed
    from moakit.data.io import apply_panel

    t = _cpu()  # as before the row blocks: the whole input in one matrix per transform
    whole = predictor.models[0].predict_block(apply_panel(ds, predictor.panels[0], "input"))
    whole_s = _cpu() - t
    t = _cpu()
    one, _ = predictor.predict(ds, "input")
    one_s = _cpu() - t
    t = _cpu()
    _, streamed, _ = collect(predictor, DatasetRows(ds), chunk)
    stream_s = _cpu() - t
    return {"run": str(run_dir), "rows": len(ds), "load_cpu_s": round(load_s, 2),
            "whole_matrix_cpu_s": round(whole_s, 2), "whole_matrix_rows_per_cpu_s": round(len(ds) / whole_s, 1),
            "blocks_vs_whole_matrix_max_abs_diff": float(np.max(np.abs(whole - one))),
            "one_pass_cpu_s": round(one_s, 2), "one_pass_rows_per_cpu_s": round(len(ds) / one_s, 1),
            "chunk_rows_asked": chunk, "chunk_rows": predictor.aligned_chunk_rows(chunk),
            "stream_cpu_s": round(stream_s, 2), "stream_rows_per_cpu_s": round(len(ds) / stream_s, 1),
            "stream_equals_one_pass": bool(np.array_equal(one, streamed)),
            "max_abs_diff": float(np.max(np.abs(one - streamed)))}


def main() -> None:
    import torch

    from moakit.data.io import read_features

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--input", default="bench/out/stream_predict/rows_10000.csv")
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=37)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = read_features(args.input)
    ds = ds.subset(np.arange(min(args.rows, len(ds))))
    write_result(args.out, {"input": args.input, "results": [measure(Path(r), ds, args.chunk) for r in args.runs]})


if __name__ == "__main__":
    main()
