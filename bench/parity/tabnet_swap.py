"""Component swap for the 2-stage NN + TabNet: train moakit's TabNet (``fit_tabnet``) on a
stage-2 input matrix assembled block by block from the winners' script's matrix
(``interim/503_pre_train.pkl`` / ``503_pre_test.pkl``) or from a moakit run's (rebuilt as
``tabnet_inputs.py`` does), on the script's TabNet folds, with the script's epoch rule
(each fold judged on itself), and score the fold-averaged test predictions as grid.py does.

    .venv/bin/python bench/parity/tabnet_swap.py --data DATA --winners WINNERS_OUT --moakit RUN \\
        --source script [--blocks meta=moakit c=moakit ...] [--set batch_size=128 ...] --out RESULT.json

Blocks: cp_cat g c fa_g fa_c km_g km_c stats meta (the two codes' shared column layout).
``--engine script`` trains with the script's own calls instead (TabNetRegressor built and
fitted as its run_training_tabnet, seed_everything(seed) first), to check moakit's loop.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import test_scores  # noqa: E402
from tabnet_inputs import moakit_matrices, script_blocks  # noqa: E402

BLOCKS = ("cp_cat", "g", "c", "fa_g", "fa_c", "km_g", "km_c", "stats", "meta")


def script_matrix(frame: pd.DataFrame, blocks: dict, meta_order: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for name in BLOCKS:
        if name == "cp_cat":
            out[name] = np.stack([frame["cp_time"].map({24: 0, 48: 1, 72: 2}).to_numpy(np.float64),
                                  frame["cp_dose"].map({"D1": 0, "D2": 1}).to_numpy(np.float64)], axis=1)
        else:
            cols = meta_order if name == "meta" else blocks[name]
            out[name] = frame[cols].to_numpy(np.float64)
    return out


def moakit_blocks(mat: np.ndarray, widths: dict, rows: np.ndarray) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for name, width in widths.items():
        out[name] = mat[rows, offset:offset + width].astype(np.float64)
        offset += width
    return out


def fit_script_engine(X, Y, Xv, Yv, seed: int, cfg):
    """The script's run_training_tabnet calls (its LabelSmoothing loss and metrics)."""
    import torch
    from pytorch_tabnet.metrics import Metric
    from pytorch_tabnet.tab_model import TabNetRegressor

    def smooth_loss(s):
        conf, low = 1.0 - s + s / 2, s / 2

        def f(x, t):
            p = torch.sigmoid(x)
            t1 = conf * t + (1 - t) * low
            return (-(torch.log(p + 1e-15) * t1 + (1 - t1) * torch.log(1 - p + 1e-15))).mean()
        return f

    def metric(s, name):
        fn = smooth_loss(s)

        def init(self):
            self._name, self._maximize = name, False

        def call(self, yt, ys):
            return fn(torch.from_numpy(ys.astype(np.float32)), torch.from_numpy(yt.astype(np.float32))).item()
        return type(f"Swap{name.replace('.', '_')}", (Metric,), {"__init__": init, "__call__": call})

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = TabNetRegressor(n_d=cfg.n_d, n_a=cfg.n_a, n_steps=cfg.n_steps, lambda_sparse=cfg.lambda_sparse,
                            cat_dims=list(cfg.cat_dims), cat_emb_dim=list(cfg.cat_emb_dim),
                            cat_idxs=list(cfg.cat_idxs), optimizer_fn=torch.optim.Adam,
                            optimizer_params=dict(lr=cfg.lr, weight_decay=cfg.weight_decay),
                            mask_type=cfg.mask_type, scheduler_params=dict(milestones=list(cfg.milestones),
                                                                           gamma=cfg.scheduler_gamma),
                            scheduler_fn=torch.optim.lr_scheduler.MultiStepLR, verbose=0, seed=seed)
    model.fit(X_train=X, y_train=Y, eval_set=[(Xv, Yv)],
              eval_metric=[metric(0.0, "raw"), metric(cfg.stop_smoothing, "smooth")],
              max_epochs=cfg.max_epochs, patience=cfg.patience, batch_size=cfg.batch_size,
              virtual_batch_size=cfg.virtual_batch_size, num_workers=0, drop_last=False,
              loss_fn=smooth_loss(cfg.smoothing))
    return lambda Z: 1.0 / (1.0 + np.exp(-model.predict(Z)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--winners", type=Path, required=True)
    ap.add_argument("--moakit", type=Path, required=True)
    ap.add_argument("--source", choices=["script", "moakit"], default="script")
    ap.add_argument("--blocks", nargs="*", default=[], metavar="BLOCK=SOURCE")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="TabNetConfig overrides (YAML values)")
    ap.add_argument("--engine", choices=["moakit", "script"], default="moakit")
    ap.add_argument("--script-arithmetic", nargs="*", default=[], choices=["loss", "metric"],
                    help="moakit engine: compute its loss / stopping metric with the script's formula "
                         "(sigmoid, log(p + 1e-15), float32) instead of moakit's (BCE with logits; float64 log loss)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-test", action="store_true",
                    help="also write the fold-averaged test predictions (all test rows) beside --out, as NAME.test.npy")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch
    import yaml

    torch.set_num_threads(1)
    from moakit.config import load_config
    from moakit.models.two_stage_tabnet import TabNetConfig, fit_tabnet

    if "loss" in args.script_arithmetic:  # fit_tabnet calls torch's F.binary_cross_entropy_with_logits by name
        def script_bce(x, t, *a, **k):
            p = torch.sigmoid(x)
            return (-(torch.log(p + 1e-15) * t + (1 - t) * torch.log(1 - p + 1e-15))).mean()
        torch.nn.functional.binary_cross_entropy_with_logits = script_bce
    if "metric" in args.script_arithmetic:  # the metric's mean_log_loss(y, sigmoid(score)), as the script's
        import moakit.models.two_stage_tabnet as tt
        tt.sigmoid = lambda z: np.asarray(z, np.float32)
        tt.mean_log_loss = lambda y, z: float(script_metric(y, z))

        def script_metric(y, z):
            x, t = torch.from_numpy(np.asarray(z, np.float32)), torch.from_numpy(np.asarray(y, np.float32))
            p = torch.sigmoid(x)
            return (-(torch.log(p + 1e-15) * t + (1 - t) * torch.log(1 - p + 1e-15))).mean().item()
    t0, c0, load0 = time.time(), time.process_time(), os.getloadavg()
    tabnet = load_config("two_stage_nn_tabnet", profile="cpu").model_dump(mode="json")["params"]["stage2"]["tabnet"]
    tabnet.update({"batch_size": 128, "virtual_batch_size": 128})
    for item in args.set:
        key, _, value = item.partition("=")
        tabnet[key] = yaml.safe_load(value)
    cfg = TabNetConfig(**tabnet)

    sources = {b: args.source for b in BLOCKS}
    for item in args.blocks:
        b, _, s = item.partition("=")
        if b not in sources or s not in ("script", "moakit"):
            raise SystemExit(f"--blocks {item}: BLOCK one of {BLOCKS}, SOURCE script or moakit")
        sources[b] = s
    cache = args.out.parent / f"blocks-{args.moakit.name}.pkl"
    if cache.exists():
        parts = pd.read_pickle(cache)
    else:
        data, X, Xt, widths, ns_targets, _, _ = moakit_matrices(args.data, args.moakit)
        tr = pd.read_pickle(args.winners / "interim/503_pre_train.pkl")
        te = pd.read_pickle(args.winners / "interim/503_pre_test.pkl")
        blocks = script_blocks(te, ns_targets)
        parts = {"Y": tr[list(data.train.scored_names)].to_numpy(np.float32),
                 "train_ids": tr["sig_id"].to_numpy(), "test_ids": te["sig_id"].to_numpy(),
                 "all_test_ids": np.asarray(data.test.sig_id)}
        for split, frame, mat, ds in (("train", tr, X, data.train), ("test", te, Xt, data.test)):
            index = {s: i for i, s in enumerate(ds.sig_id)}
            rows = np.array([index[s] for s in frame["sig_id"]])
            parts[split] = {"moakit": moakit_blocks(mat, widths, rows),
                            "script": script_matrix(frame, blocks, ns_targets)}
        pd.to_pickle(parts, cache)
    mats = [np.concatenate([parts[split][sources[b]][b] for b in BLOCKS], axis=1) for split in ("train", "test")]
    Xtr, Xte = (np.ascontiguousarray(m, dtype=np.float32) for m in mats)
    Y = parts["Y"]
    folds = pd.read_csv(args.winners / "parity_folds.csv").set_index("sig_id").loc[parts["train_ids"], "kfold"].to_numpy()
    pred = np.zeros((len(Xte), Y.shape[1]))
    epochs = []
    for f in np.unique(folds):
        trn, val = folds != f, folds == f
        if args.engine == "moakit":
            est = fit_tabnet(cfg, Xtr[trn], Y[trn], Xtr[val], Y[val], args.seed)
            logits = est.regressor.predict(np.ascontiguousarray(Xte, dtype=np.float32))
            pred += 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64))) / len(np.unique(folds))
            epochs.append(est.info.get("best_epoch"))
        else:
            predict = fit_script_engine(Xtr[trn], Y[trn], Xtr[val], Y[val], args.seed, cfg)
            pred += predict(Xte) / len(np.unique(folds))
    full = np.zeros((len(parts["all_test_ids"]), Y.shape[1]))
    index = {s: i for i, s in enumerate(parts["all_test_ids"])}
    full[[index[s] for s in parts["test_ids"]]] = pred
    scores = test_scores(args.data, full, {})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {"sources": sources, "engine": args.engine, "script_arithmetic": args.script_arithmetic, "seed": args.seed, "tabnet": tabnet, "best_epochs": epochs,
              **scores, "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "fit_cpu_s": round(time.process_time() - c0, 1),
              "wall_s": round(time.time() - t0, 1), "loadavg_start_end": [list(load0), list(os.getloadavg())]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    if args.save_test:
        np.save(args.out.with_suffix(".test.npy"), full.astype(np.float32))
    print(json.dumps({k: result[k] for k in ("engine", "script_arithmetic", "seed", "log_loss_treated", "pr_auc", "roc_auc", "cpu_s",
                                             "best_epochs")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
