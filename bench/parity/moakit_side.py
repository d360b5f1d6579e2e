"""Train the moakit model at the same sizes as a ``bench/parity/winners.py`` run.

    .venv/bin/python bench/parity/moakit_side.py three_stage_nn --data bench/out/data/realistic-seed0 \\
        --out bench/out/parity/moakit-three_stage_nn-cpu --size cpu --seeds 1 --threads 1 [--set KEY=VALUE ...]

The shipped ``full`` profile, with only the hidden widths and epochs of ``--size`` (the
table ``SIZES`` of winners.py) changed; ``--set stage2.train.smoothing=0.001`` changes one
parameter more (an ablation); ``--reuse RUN`` copies RUN's folds and finished first stage,
so an ablation of the later stages does not fit the first again (the first stage's config
must then be the same: the caller's responsibility). The run folder is a normal
``moakit train`` folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from winners import SIZES  # noqa: E402


def _set(params: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = params
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(SIZES))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", choices=["full", "cpu"], default="full")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default=None, help="a config YAML instead of the shipped one (e.g. an older version)")
    ap.add_argument("--reuse", type=Path, default=None, metavar="RUN",
                    help="start from RUN's folds and finished first stage (an ablation of the later stages)")
    ap.add_argument("--selection", choices=["oof", "holdout", "last"], default="oof",
                    help="the epoch-selection policy (default oof: the winners' scripts judge on the OOF fold)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override, VALUE in YAML (e.g. stage1.features.fit_controls=false)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from moakit import runner
    from moakit.config import load_config
    from moakit.data.io import load

    config = load_config(args.config or args.model)
    params = config.model_dump(mode="json")["params"]
    for stage, (hidden, epochs) in SIZES[args.model][args.size].items():
        n_hidden = len(params[stage]["network"]["hidden"])
        params[stage]["network"]["hidden"] = [hidden] * n_hidden
        params[stage]["train"]["epochs"] = epochs
    for item in args.set:
        key, _, value = item.partition("=")
        _set(params, key, yaml.safe_load(value))
    selection = config.selection.model_copy(update={"policy": args.selection})
    config = config.model_copy(update={"params": params, "seeds": config.seeds[: args.seeds], "selection": selection})
    if args.reuse is not None and not args.out.exists():
        first = runner.build_model(config).stages()[0].name
        args.out.mkdir(parents=True)
        shutil.copy(args.reuse / "folds.npy", args.out / "folds.npy")
        shutil.copytree(args.reuse / "stages" / first, args.out / "stages" / first)
    result = runner.train(config, load(args.data), args.out, show_progress=False)
    print({k: result.metrics[k] for k in ("log_loss", "log_loss_treated")}, result.timings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
