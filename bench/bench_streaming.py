"""Feature reuse and streaming prediction (BENCHMARKS.md, "Feature reuse and streaming prediction").

Part 1: a 2-seed three_stage_nn (smoke profile) on simulated data, with and without feature
reuse (MOAKIT_FEATURE_REUSE=0): feature fits per run and process CPU seconds inside them;
and, counted from the content keys, the fits the `full` profile (5 seeds) needs.
Part 2: `moakit predict` on 100,000 simulated rows from a simple_nn smoke run, one pass
(--chunk-rows 0) vs chunks of 20,000: rows/s and peak RSS (/usr/bin/time -v).

    nice -n 19 .venv/bin/python bench/bench_streaming.py bench/out/streaming
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from moakit import runner
from moakit.config import load_config
from moakit.data.io import load
from moakit.data.simulate import simulate
from moakit.models.base import Model


def count_fits(out: Path, data, reuse: bool) -> dict:
    from moakit import models  # noqa: F401  registers the models

    calls = {"fits": 0, "cpu_s": 0.0}
    original = {}
    for cls in Model.__subclasses__() + [c for b in Model.__subclasses__() for c in b.__subclasses__()]:
        if "fit_features" in vars(cls):
            original[cls] = vars(cls)["fit_features"]

            def wrapped(self, *a, _f=original[cls], **k):
                t0 = time.process_time()
                try:
                    return _f(self, *a, **k)
                finally:
                    calls["fits"] += 1
                    calls["cpu_s"] += time.process_time() - t0
            cls.fit_features = wrapped
    os.environ["MOAKIT_FEATURE_REUSE"] = "1" if reuse else "0"
    config = load_config("three_stage_nn", profile="smoke").model_copy(update={"seeds": [0, 1]})
    t0, c0 = time.perf_counter(), time.process_time()
    result = runner.train(config, data, out, show_progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for cls, f in original.items():
        cls.fit_features = f
    return {"reuse": reuse, "feature_fits": calls["fits"], "feature_cpu_s": round(calls["cpu_s"], 2),
            "run_cpu_s": round(cpu, 2), "run_wall_s": round(wall, 2), "oof": result.oof, "test": result.test}


def from_graph(run: Path, reuse: bool) -> dict:
    """A finished run's feature nodes: how many fitted (no "from" in features_key.json) and
    their wall seconds (graph.json)."""
    nodes = [n for n in json.loads((run / "graph.json").read_text())["node_list"] if n["kind"] == "features"]
    fitted = [p for p in run.glob("stages/*/seed_*/features_key.json") if "from" not in json.loads(p.read_text())]
    return {"reuse": reuse, "feature_fits": len(fitted), "features_nodes": len(nodes),
            "features_nodes_wall_s": round(sum(n.get("seconds", 0.0) for n in nodes), 2)}


def full_profile_fits(data) -> dict:
    from moakit import feature_reuse

    config = load_config("three_stage_nn")  # the full profile: 5 seeds
    model = runner.build_model(config)
    chain = runner.StageChain(model, config.seeds)
    keys = {feature_reuse.stage_key(model, chain, i, s, data) for i in range(len(chain.stages)) for s in config.seeds}
    return {"stage_seeds": len(chain.stages) * len(config.seeds), "distinct_fits": len(keys)}


def predict_bench(root: Path, data_dir: Path) -> list[dict]:
    data = load(data_dir)
    run = root / "simple_run"
    if not (run / "metrics.json").exists():
        runner.train(load_config("simple_nn", profile="smoke"), data, run, show_progress=False)
    big = root / "rows_100k.csv"
    if not big.exists():  # 100,000 rows: the simulated test rows, repeated with fresh sig_ids
        test = pd.read_csv(data_dir / "test_features.csv")
        reps = -(-100_000 // len(test))
        frame = pd.concat([test] * reps, ignore_index=True).iloc[:100_000]
        frame["sig_id"] = [f"id_{i:06d}" for i in range(len(frame))]
        frame.to_csv(big, index=False)
    out = []
    moakit = str(Path(sys.executable).with_name("moakit"))
    for chunk in (0, 20_000):
        dest = root / f"pred_{chunk}.csv"
        cmd = ["/usr/bin/time", "-v", moakit, "predict", "--run", str(run), "--features", str(big), "--out",
               str(dest), "--chunk-rows", str(chunk), "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
        info = json.loads(proc.stdout)
        out.append({"chunk_rows": chunk, "rows": info["rows"], "predict_rows_per_s": info["rows_per_second"],
                    "command_wall_s": round(wall, 1), "peak_rss_mib": round(rss / 1024)})
    out.append({"byte_identical": (root / "pred_0.csv").read_bytes() == (root / "pred_20000.csv").read_bytes()})
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/streaming")
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    if not (data_dir / "train_features.csv").exists():
        simulate(data_dir, n_rows=3000, seed=5)
    data = load(data_dir)
    results: dict = {"uptime_start": os.popen("uptime").read().strip()}
    done = {r: sorted(root.glob(f"three_stage_reuse_{int(r)}_*/graph.json")) for r in (False, True)}
    if all(done.values()):  # measured before: read the finished runs (graph.json node seconds)
        results["three_stage_smoke_2_seeds"] = [from_graph(done[r][-1].parent, r) for r in (False, True)]
        oofs = [pd.read_csv(done[r][-1].parent / "oof_predictions.csv").iloc[:, 1:].to_numpy() for r in (False, True)]
        results["max_abs_diff_oof_csv"] = float(np.max(np.abs(oofs[0] - oofs[1])))
    else:
        runs = [count_fits(root / f"three_stage_reuse_{int(r)}_{int(time.time())}", data, r) for r in (False, True)]
        results["max_abs_diff_oof"] = float(np.max(np.abs(runs[0]["oof"] - runs[1]["oof"])))
        results["max_abs_diff_test"] = float(np.max(np.abs(runs[0]["test"] - runs[1]["test"])))
        results["three_stage_smoke_2_seeds"] = [{k: v for k, v in r.items() if k not in ("oof", "test")} for r in runs]
    results["three_stage_full_profile"] = full_profile_fits(data)
    results["predict_100k_simple_nn_smoke"] = predict_bench(root, data_dir)
    results["uptime_end"] = os.popen("uptime").read().strip()
    (root / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
