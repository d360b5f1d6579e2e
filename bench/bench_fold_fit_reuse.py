"""BENCHMARKS.md, "cnn1d's fold transforms applied once per fold" (issue 29).

cnn1d, 16 seeds x 3 folds at smoke widths, trained twice in one process: fold-transform
reuse off (MOAKIT_FEATURE_REUSE=0), then on. Writes bench/out/fold_fit/results.json: CPU s,
fold-feature fits, bytes of the fold features listed and stored (distinct inodes), and the
max |diff| of the two runs' OOF and test predictions.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/bench_fold_fit_reuse.py
"""
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
from moakit import runner
from moakit.config import load_config
from moakit.data.io import load
from moakit.features import Pipeline

out = Path("bench/out/fold_fit")
data = load(Path("bench/out/streaming/data"))
config = load_config("cnn1d", profile="smoke").model_copy(update={"seeds": list(load_config("cnn1d").seeds)})
real = Pipeline.fit
results = {}
for mode in ("off", "on"):
    fits = []

    def fit(self, *a, **k):
        if self.config.steps and self.config.steps[0].kind == "quantile":
            fits.append(self.seed)
        return real(self, *a, **k)

    Pipeline.fit = fit
    os.environ["MOAKIT_FEATURE_REUSE"] = "1" if mode == "on" else "0"
    load_before = os.popen("uptime").read().strip()
    c0, t0 = time.process_time(), time.perf_counter()
    res = runner.train(config, data, out / mode / "run", show_progress=False)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    Pipeline.fit = real
    files = [p for p in (out / mode / "run").rglob("estimator/features/*") if p.is_file()]
    inodes = {p.stat().st_ino: p.stat().st_size for p in files}
    results[mode] = {"cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "fold_fits": len(fits),
                     "fold_feature_files": len(files), "bytes_listed": sum(p.stat().st_size for p in files),
                     "bytes_stored": sum(inodes.values()), "uptime_before": load_before,
                     "uptime_after": os.popen("uptime").read().strip()}
    results[mode + "_arrays"] = (res.oof, res.test)
    print(mode, results[mode], flush=True)
(a_oof, a_test), (b_oof, b_test) = results.pop("off_arrays"), results.pop("on_arrays")
results["oof_max_abs_diff"] = float(np.abs(a_oof - b_oof).max())
results["test_max_abs_diff"] = float(np.abs(a_test - b_test).max())
(out / "results.json").write_text(json.dumps(results, indent=1))
print(json.dumps(results, indent=1))
