"""The label-shuffled baseline of ``moakit evaluate`` (:mod:`moakit.evaluate`): the run's own
configs trained on its own folds with the training labels permuted (whole drugs under the
drug-aware CV), stored in ``ROOT/shuffled/seed_<s>/<member>/`` and reused, and their
predictions on the honest rows."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from moakit.runs import layout

if TYPE_CHECKING:
    from moakit.evaluate import Loaded


# --------------------------------------------------------------------------- shuffled-label baseline


def shuffle_labels(data, by_drug: bool, seed: int):
    """A copy of ``data`` whose treated training rows' label rows (scored and non-scored,
    one permutation for both, so a non-scored stage carries no signal either) are permuted:
    by whole drugs when ``by_drug`` (drug d's rows all take the labels of drug pi(d)'s first
    row, so replicates still agree, as under the drug-aware CV they must), else row by row.
    Features, controls, drug ids and test rows are untouched."""
    train = data.train
    rng = np.random.default_rng(seed)
    treated = np.flatnonzero(~np.asarray(train.is_control, bool))
    if by_drug:
        drug = np.asarray(train.drug_id).astype(str)[treated]
        uniq, first, inverse = np.unique(drug, return_index=True, return_inverse=True)
        source = treated[first[rng.permutation(len(uniq))][inverse]]
    else:
        source = treated[rng.permutation(len(treated))]
    changes = {}
    for field in ("scored", "nonscored"):
        values = getattr(train, field, None)
        if values is not None:
            new = np.array(values, copy=True)
            new[treated] = values[source]
            changes[field] = new
    return dataclasses.replace(data, train=dataclasses.replace(train, **changes), source="")


def _complete(run_dir: Path) -> bool:
    from moakit.artifacts import read_json
    from moakit.runs import layout

    try:
        return ((run_dir / layout.METRICS).exists()
                and read_json(run_dir / layout.MANIFEST).get("status") == "complete")
    except (OSError, ValueError):
        return False


def train_shuffled(loaded: Loaded, seeds: int, show_progress: bool = False, device: str | None = None) -> list[Path]:
    """Train the shuffled-label baseline: for permutation seeds 0..seeds-1 and every member,
    the member's own config on its own folds (its folds.npy is copied first, so the runner
    uses it), on :func:`shuffle_labels` data (whole drugs under the drug-aware CV). Finished
    baseline runs are kept and reused; returns the baseline's run folders."""
    from moakit import runner
    from moakit.config import RunConfig
    from moakit.runs import layout

    out = []
    for seed in range(seeds):
        for name, member in loaded.run.members.items():
            target = layout.shuffled_dir(loaded.run.root, seed, name)
            out.append(target)
            if _complete(target):
                continue
            cfg = RunConfig(**loaded.run.configs[name])
            by_drug = cfg.cv.scheme == "drug" and getattr(loaded.data.train, "drug_id", None) is not None
            target.mkdir(parents=True, exist_ok=True)
            if not (target / layout.FOLDS).exists():
                shutil.copyfile(member / layout.FOLDS, target / layout.FOLDS)
            runner.train(cfg, shuffle_labels(loaded.data, by_drug, seed), target, show_progress=show_progress,
                         label=f"shuffled {name} seed {seed}", device=device)
    return out


def shuffled_seeds(loaded: Loaded) -> list[int]:
    """The permutation seeds whose baseline runs are complete for every member."""
    root, members = loaded.run.root, loaded.run.members
    return [s for s in layout.shuffled_seeds(root) if all(_complete(layout.shuffled_dir(root, s, n)) for n in members)]


def shuffled_predictions(loaded: Loaded, seed: int) -> dict[str, np.ndarray]:
    """One baseline seed's predictions on each honest set's rows (a blend: the members'
    baseline predictions blended with the blend's weights, uncalibrated)."""
    from moakit import blend as blend_mod

    names = list(loaded.run.members)
    inputs = blend_mod.load_runs([layout.shuffled_dir(loaded.run.root, seed, n) for n in names], names,
                                 targets=np.zeros_like(loaded.inputs.y),  # only the predictions are read
                                 is_control=np.zeros(len(loaded.inputs.y), bool))
    weights = [loaded.run.weights[n] for n in names] if loaded.run.weights else [1.0]
    out = {}
    for key, preds, ids in (("oof", inputs.oof, inputs.train_sig_id), ("test", inputs.test, inputs.test_sig_id)):
        if key in loaded.sets:
            blended = np.clip(blend_mod.blend_predictions(preds, weights), 0.0, 1.0)
            pos = pd.Index(np.asarray(ids).astype(str)).get_indexer(np.asarray(loaded.sets[key].sig_id).astype(str))
            out[key] = blended[pos]
    return out
