"""Which step of a stacked run (two_stage_nn_tabnet) first gives a row other bits when the
same rows are transformed as the tail of a big matrix vs on their own (issue 29).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/bench_row_isolation.py RUN CSV FIRST_TAIL_ROW

Prints, per feature step, per stage-1 estimator and for the first stage-2 estimator, SAME or
DIFF (max |diff|) between rows FIRST_TAIL_ROW.. of the whole input and the same rows alone.
"""
import sys, time
import numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from moakit.artifacts import read_json
from moakit.config import RunConfig
from moakit.models.checks import build_model
from moakit.models.estimators import load_estimator
from moakit.stages import StageChain, stage_dir, stage_blocks
from moakit.runs import layout
from moakit.data.io import read_features, apply_panel
from moakit.runs.predict import run_panel

run = Path(sys.argv[1]); inp = sys.argv[2]; tail = int(sys.argv[3])
cfg = RunConfig(**read_json(run / layout.CONFIG)); model = build_model(cfg); chain = StageChain(model, cfg.seeds)
ds = apply_panel(read_features(inp), run_panel(run), inp)
n = len(ds); small = ds.subset(np.arange(tail, n))
print("rows", n, "tail from", tail)

def cmp(name, a_full, a_small):
    a, b = np.asarray(a_full)[tail:], np.asarray(a_small)
    d = np.max(np.abs(a.astype(np.float64) - b)) if a.size else 0
    print(f"  {name:30s} {'SAME' if np.array_equal(a, b) else 'DIFF'} max|d|={d:.3g} shape={b.shape} dtype={b.dtype}")

def steps(features, bf, bs, label):
    for part in ("base", "own"):
        p = getattr(features, part, None)
        if p is None: continue
        F = {k: v for k, v in bf.items() if k in p.external_inputs()}; S = {k: v for k, v in bs.items() if k in F}
        for step in p.steps:
            F = step.transform(F); S = step.transform(S)
            for b in step.writes: cmp(f"{label}.{part}.{step.name}->{b}", F[b], S[b])
    Xf, Xs = features.transform(bf), features.transform(bs)
    cmp(f"{label} X", Xf, Xs)
    return Xf, Xs

outs_f, outs_s = {}, {}
for index, stage in enumerate(chain.stages):
    for seed in cfg.seeds[: (len(cfg.seeds) if index == 0 else 1)]:
        sdir = stage_dir(run, stage, seed)
        feats = model.load_features(stage, sdir / layout.FEATURES_DIR)
        bf = stage_blocks(ds, chain.meta(index, seed, outs_f)); bs = stage_blocks(small, chain.meta(index, seed, outs_s))
        if "meta" in bf: cmp(f"s{index} meta", bf["meta"], bs["meta"])
        Xf, Xs = steps(feats, bf, bs, f"s{index}/seed{seed}")
        pf, ps = [], []
        for k in range(cfg.cv.n_folds if index == 0 else 1):
            t = time.process_time(); est = load_estimator(layout.estimator_dir(sdir, k)); lt = time.process_time() - t
            a, b = est.predict_proba(Xf), est.predict_proba(Xs); cmp(f"s{index}/seed{seed} est{k} (load {lt:.1f}s)", a, b)
            pf.append(a); ps.append(b)
            # the network alone: the tail of the same X matrix, in the whole matrix vs alone
            cmp(f"s{index}/seed{seed} est{k} on the same X", est.predict_proba(Xf), est.predict_proba(np.ascontiguousarray(Xf[tail:])))
        outs_f[(index, seed)] = np.mean(pf, 0).astype(np.float32); outs_s[(index, seed)] = np.mean(ps, 0).astype(np.float32)
