"""CPU seconds to load a run's TabNet estimators: each network built afresh (the loader
before issue 29: pytorch-tabnet's embedding group matrix, a Python loop over input_dim x
input_dim entries, per estimator) vs ``TabNetEstimator.load`` (one build per architecture,
copied); the two loads' predictions compared on random rows.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/bench_tabnet_load.py OUT.json RUN_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from common import write_result


def load_afresh(path: Path):
    """The loader before: a TabNetRegressor built for this estimator alone."""
    import torch
    from pytorch_tabnet.tab_model import TabNetRegressor

    from moakit.artifacts import read_json
    from moakit.models.estimators import SPEC
    from moakit.runs import layout

    spec = read_json(path / SPEC)
    state = torch.load(path / layout.ESTIMATOR_WEIGHTS, map_location="cpu", weights_only=True)
    reg = TabNetRegressor(**{**spec["init_params"], "device_name": "cpu", "verbose": 0})
    reg._set_network()
    reg.network.load_state_dict(state)
    reg.network.eval()
    reg.batch_size = int(spec["batch_size"])
    return reg


def main() -> None:
    import torch

    from moakit.metrics import sigmoid
    from moakit.models.estimators import SPEC
    from moakit.models.two_stage_tabnet import TabNetEstimator

    torch.set_num_threads(1)
    out, run = sys.argv[1], Path(sys.argv[2])
    folders = sorted(p.parent for p in run.rglob(SPEC) if '"tabnet_regressor"' in p.read_text())
    t = time.process_time()
    afresh = [load_afresh(f) for f in folders]
    afresh_s = time.process_time() - t
    t = time.process_time()
    loaded = [TabNetEstimator.load(f) for f in folders]
    loaded_s = time.process_time() - t
    X = np.random.default_rng(0).normal(size=(512, afresh[0].input_dim)).astype(np.float32)
    for i, j in zip(afresh[0].cat_idxs, afresh[0].cat_dims):
        X[:, i] = np.arange(512) % j
    same = all(np.array_equal(sigmoid(a.predict(X)), b.predict_proba(X)) for a, b in zip(afresh, loaded))
    write_result(out, {"run": str(run), "tabnets": len(folders), "input_dim": int(afresh[0].input_dim),
                       "load_cpu_s_built_each": round(afresh_s, 2), "load_cpu_s_built_once": round(loaded_s, 2),
                       "predictions_identical": bool(same)})


if __name__ == "__main__":
    main()
