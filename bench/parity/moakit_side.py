"""Train the moakit model at the same sizes as a ``bench/parity/winners.py`` run.

    .venv/bin/python bench/parity/moakit_side.py three_stage_nn --data bench/out/data/realistic-seed0 \\
        --out bench/out/parity/moakit-three_stage_nn-cpu --size cpu --seeds 1 --threads 1 [--set KEY=VALUE ...]

For the 3-stage NN: the shipped ``full`` profile, with only the hidden widths and epochs of
``--size`` (the table ``SIZES`` of winners.py) changed; for the other models: the config's
profile named by ``--size`` (``cpu``: the sizes winners.py patches into the script), with the
first ``--seeds`` seeds of the config's ``full`` list and every UMAP fitted on all rows (the
scripts subsample none; the cpu profiles fit UMAP on a sample of rows); ``--set stage2.train.smoothing=0.001`` changes one
parameter more (an ablation), ``--umap-transform rows`` every umap step's transform (``--umap-fit-rows N``: its fit
on N rows); ``--reuse RUN`` copies RUN's folds and finished first stage,
so an ablation of the later stages does not fit the first again (the first stage's config
must then be the same: the caller's responsibility); ``--folds-from WINNERS_OUT`` trains on
the script's own fold assignment (``parity_folds.csv``, written by winners.py; control
rows, which the scripts drop, keep moakit's). The run folder is a normal ``moakit train`` folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from winners import SIZES, SPECS  # noqa: E402


def _set(params: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = params
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def use_umap_transform(params: dict, transform: str | None = None, fit_rows: int | None = None) -> int:
    """Set every umap step's ``transform`` in ``params`` (``rows``: each row embedded on its own;
    ``umap``: umap-learn's transform of the whole call) and / or its ``max_fit_rows`` (fitted on
    a seeded subsample of ``fit_rows`` rows, the other rows transformed, as the cpu profile at
    the realistic size). Returns how many steps it set; none is an error (the variant would not
    apply)."""
    from moakit.features import steps_of_kind

    found = list(steps_of_kind(params, "umap"))
    if not found:
        raise SystemExit("--umap-transform / --umap-fit-rows: the config has no umap step")
    for step in found:
        if transform is not None:
            step["transform"] = transform
        if fit_rows is not None:
            step["max_fit_rows"] = fit_rows
    return len(found)


def use_block_dtype(name: str) -> list[int]:
    """Keep the feature blocks in ``name`` between the steps (an ablation: moakit's blocks are
    float32; the scripts' pandas frames were float64). The matrix the network reads stays
    float32. Returns a one-item list counting the blocks made (a check that it applied:
    the local executor trains in this process)."""
    import numpy as np

    from moakit.features import pipeline, steps

    dtype, made = np.dtype(name), [0]

    def as_block(array, block: str):
        out = np.asarray(array, dtype=dtype)
        if out.ndim != 2:
            raise ValueError(f"block {block!r} must be 2-D, got shape {out.shape}")
        made[0] += 1
        return out

    steps.as_block = pipeline.as_block = as_block
    steps.Step._as_output = staticmethod(lambda x: np.ascontiguousarray(x, dtype=dtype))
    return made


def write_script_folds(csv: Path, data, config, out: Path) -> None:
    """folds.npy of ``out`` from the script's (sig_id, kfold) table; rows the script dropped
    (controls) keep moakit's own fold."""
    import numpy as np
    import pandas as pd

    from moakit.cv import assign_folds

    theirs = pd.read_csv(csv).set_index("sig_id")["kfold"]
    folds = assign_folds(data.train, config.cv.scheme, config.cv.n_folds, config.cv.seed, config.cv.max_replicates)
    ids = pd.Index(np.asarray(data.train.sig_id))
    where = ids.get_indexer(theirs.index)
    if (where < 0).any():
        raise SystemExit(f"{csv}: {int((where < 0).sum())} sig_id(s) not in the data's training rows")
    if theirs.max() >= config.cv.n_folds:
        raise SystemExit(f"{csv}: fold ids up to {theirs.max()}, the config has {config.cv.n_folds} folds")
    folds[where] = theirs.to_numpy()
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "folds.npy", folds.astype(np.int64))
    print(f"folds: {len(where)} rows from {csv}, {len(folds) - len(where)} (controls) moakit's own")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(set(SIZES) | {k for k, v in SPECS.items() if v.config}))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", choices=["full", "cpu"], default="full")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=None,
                    help="train with this one run seed instead of the first --seeds of the config's list "
                         "(a second model seed on the same folds and holdout)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default=None, help="a config YAML instead of the shipped one (e.g. an older version)")
    ap.add_argument("--reuse", type=Path, default=None, metavar="RUN",
                    help="start from RUN's folds and finished first stage (an ablation of the later stages)")
    ap.add_argument("--folds-from", type=Path, default=None, metavar="WINNERS_OUT",
                    help="the fold assignment of a winners.py run (its parity_folds.csv), or such a CSV file "
                         "(winners.py --folds-only)")
    ap.add_argument("--selection", choices=["oof", "holdout", "last", "holdout_refit"], default="oof",
                    help="the epoch-selection policy (default oof: the winners' scripts judge on the OOF fold)")
    ap.add_argument("--block-dtype", choices=["float32", "float64"], default="float32",
                    help="the dtype of the feature blocks between the steps (float64: an ablation)")
    ap.add_argument("--umap-transform", choices=["rows", "umap"], default=None,
                    help="every umap step's transform (default: the config's; rows: each row embedded on its own)")
    ap.add_argument("--umap-fit-rows", type=int, default=None, metavar="N",
                    help="fit every umap step on a seeded subsample of N rows (the others transformed)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override, VALUE in YAML (e.g. stage1.features.fit_controls=false)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    made = use_block_dtype(args.block_dtype) if args.block_dtype != "float32" else None
    from moakit import runner
    from moakit.config import load_config
    from moakit.data.io import load

    if args.model in SIZES:
        config = load_config(args.config or args.model)
        params = config.model_dump(mode="json")["params"]
        for stage, (hidden, epochs) in SIZES[args.model][args.size].items():
            n_hidden = len(params[stage]["network"]["hidden"])
            params[stage]["network"]["hidden"] = [hidden] * n_hidden
            params[stage]["train"]["epochs"] = epochs
    else:
        name = args.config or SPECS[args.model].config
        config = load_config(name, profile=args.size)
        config = config.model_copy(update={"seeds": load_config(name).seeds})
        params = config.model_dump(mode="json")["params"]
        from moakit.features import steps_of_kind

        for step in steps_of_kind(params, "umap"):
            if step.pop("max_fit_rows", None) is not None:
                print(f"UMAP {step['name']}: fitted on all rows (as the script), not the profile's sample")
    if args.umap_transform is not None or args.umap_fit_rows is not None:
        n = use_umap_transform(params, args.umap_transform, args.umap_fit_rows)
        print(f"UMAP transform {args.umap_transform or 'as configured'}, fit rows {args.umap_fit_rows or 'all'}: "
              f"{n} step(s)")
    for item in args.set:
        key, _, value = item.partition("=")
        _set(params, key, yaml.safe_load(value))
    selection = config.selection.model_copy(update={"policy": args.selection})
    seeds = [args.seed] if args.seed is not None else config.seeds[: args.seeds]
    config = config.model_copy(update={"params": params, "seeds": seeds, "selection": selection})
    if args.reuse is not None and not args.out.exists():
        first = runner.build_model(config).stages()[0].name
        args.out.mkdir(parents=True)
        shutil.copy(args.reuse / "folds.npy", args.out / "folds.npy")
        shutil.copytree(args.reuse / "stages" / first, args.out / "stages" / first)
    data = load(args.data)
    if args.folds_from is not None and not (args.out / "folds.npy").exists():
        csv = args.folds_from if args.folds_from.is_file() else args.folds_from / "parity_folds.csv"
        write_script_folds(csv, data, config, args.out)
    result = runner.train(config, data, args.out, show_progress=False)
    # CPU time of the whole run (on a shared machine a fairer cost than the wall time)
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    (args.out / "parity_cpu.json").write_text(json.dumps(
        {"cpu_seconds": round(sum(u.ru_utime + u.ru_stime for u in usage), 1)}))
    print({k: result.metrics[k] for k in ("log_loss", "log_loss_treated")}, result.timings)
    if made is not None:
        print(f"feature blocks: {made[0]} made as {args.block_dtype}")
        if not made[0]:
            raise SystemExit(f"--block-dtype {args.block_dtype} did not apply (no block made in this process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
