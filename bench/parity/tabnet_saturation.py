"""Where the two TabNet losses differ during training: per epoch of one fold, the share of
training logits in the range where the script's loss gives (almost) no gradient (sigmoid
rounds to 1 in float32: logit > 16.6; p < 1e-15: logit < -34.5, where the smoothed target's
pull back up, t = s/2 for a negative, vanishes), split by target value.

    .venv/bin/python bench/parity/tabnet_saturation.py --blocks bench/out/tabnet-swap/blocks-RUN.pkl \\
        --folds WINNERS_OUT/parity_folds.csv --loss script|bce_logits [--fold 0] --out RESULT.json

The matrix is the script's (``tabnet_swap.py``'s block cache), TabNet as ``tabnet_swap.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tabnet_swap import BLOCKS  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=Path, required=True)
    ap.add_argument("--folds", type=Path, required=True)
    ap.add_argument("--loss", choices=["script", "bce_logits"], required=True)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from moakit.config import load_config
    from moakit.models import two_stage_tabnet as tt

    parts = pd.read_pickle(args.blocks)
    X = np.ascontiguousarray(np.concatenate([parts["train"]["script"][b] for b in BLOCKS], axis=1), dtype=np.float32)
    Y = parts["Y"]
    folds = pd.read_csv(args.folds).set_index("sig_id").loc[parts["train_ids"], "kfold"].to_numpy()
    tab = load_config("two_stage_nn_tabnet", profile="cpu").model_dump(mode="json")["params"]["stage2"]["tabnet"]
    cfg = tt.TabNetConfig(**{**tab, "batch_size": 128, "virtual_batch_size": 128, "loss": args.loss})
    counts = {"batches": 0, "neg_high": 0, "neg_low": 0, "neg": 0, "pos_low": 0, "pos": 0, "max": -np.inf,
              "min": np.inf}
    epochs = []
    real = tt.smoothed_loss

    def counting(kind, smoothing):
        loss = real(kind, smoothing)

        def wrapped(logits, y):
            with torch.no_grad():
                z, pos = logits.detach(), y > 0.5
                counts["batches"] += 1
                counts["neg_high"] += int(((z > 16.6) & ~pos).sum())
                counts["neg_low"] += int(((z < -34.5) & ~pos).sum())
                counts["neg"] += int((~pos).sum())
                counts["pos_low"] += int(((z < -34.5) & pos).sum())
                counts["pos"] += int(pos.sum())
                counts["max"], counts["min"] = max(counts["max"], float(z.max())), min(counts["min"], float(z.min()))
            return loss(logits, y)
        return wrapped

    def on_epoch(rec):
        epochs.append({**rec, **{k: counts[k] for k in counts}})
        counts.update({"batches": 0, "neg_high": 0, "neg_low": 0, "neg": 0, "pos_low": 0, "pos": 0, "max": -np.inf,
                       "min": np.inf})

    tt.smoothed_loss = counting
    trn, val = folds != args.fold, folds == args.fold
    est = tt.fit_tabnet(cfg, X[trn], Y[trn], X[val], Y[val], 0, on_epoch=on_epoch)
    args.out.write_text(json.dumps({"loss": args.loss, "fold": args.fold, "best_epoch": est.info["best_epoch"],
                                    "epochs": epochs}, indent=1))
    for e in epochs:
        print(f"epoch {e['epoch']:2d} train {e['train_loss']:.5f} valid {e['valid_loss']:.5f} "
              f"neg logit>16.6 {e['neg_high']} <-34.5 {e['neg_low']} of {e['neg']}, pos logit<-34.5 {e['pos_low']} of {e['pos']} "
              f"logits [{e['min']:.1f}, {e['max']:.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
