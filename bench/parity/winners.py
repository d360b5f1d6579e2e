"""Run the winners' own training scripts on a moakit data folder and collect their predictions.

The scripts are those of the public repository guitarmind/kaggle_moa_winner_hungry_for_gold
(``final/Best LB/Training/Local/*.py``). They are never vendored: the user points ``--winners``
at a local checkout (a work tree, or a bare git directory read with ``git show``). The
script text is patched at run time (seeds, sizes, folds, the thread count, fixes for today's
pandas / scikit-learn / Keras, lines that save the predictions and the folds), checked line
by line (a patch that no longer matches stops with a message naming it), written to the
output folder and run there with ``--python``.

    .venv/bin/python bench/parity/winners.py three_stage_nn --winners PATH \\
        --data bench/out/data/realistic-seed0 --out bench/out/parity/winners-three_stage_nn --seeds 1
    .venv/bin/python bench/parity/winners.py simple_nn --winners PATH --data D --out OUT --size cpu

Models: three_stage_nn (sizes in ``SIZES``); simple_nn, simple_nn_drug_cv, resnet_2heads
(Keras: ``--python`` of an environment with TensorFlow 2.15 and pandas < 2) and
two_stage_nn_tabnet, at the sizes of the moakit config's profile named by ``--size``. The
DeepInsight CNN scripts are not run: BENCHMARKS.md ("Parity: the other models") says why.

After the run, ``predictions.npz`` in the output folder holds, per stage, the script's
out-of-fold and test predictions on the scored targets (rows in the data folder's order,
control rows 0), which ``bench/parity/compare.py`` scores beside moakit's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml

TRAINING = "final/Best LB/Training/Local"


@dataclass
class Spec:
    """How to run one of the winners' scripts: the file, the patches, how to read its outputs."""

    script: str
    patches: Callable[[argparse.Namespace], list[tuple[str, str, int | None]]]  # (regex, replacement, count)
    collect: Callable[[Path, Path], dict[str, np.ndarray]]
    notes: list[str] = field(default_factory=list)
    config: str | None = None  # the moakit config whose profile (--size) gives the sizes, if not in SIZES
    framework: str = "torch"  # what the prologue fixes the thread count of: torch or tensorflow
    extra_files: list[str] = field(default_factory=list)  # repository files the script reads, copied to --out
    # the script's fold assignment, computed as the script does (--folds-only), so that the
    # moakit side can start before the script has finished; None where not reproduced here
    folds: Callable[[argparse.Namespace, Path], pd.DataFrame] | None = None


def read_script(winners: Path, rel: str) -> str:
    """The script's text from a checkout (work tree) or a bare git directory."""
    if (winners / rel).exists():
        return (winners / rel).read_text()
    try:
        return subprocess.run(["git", "--git-dir", str(winners), "show", f"HEAD:{rel}"], check=True,
                              capture_output=True, text=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        raise SystemExit(f"{winners}: neither a checkout holding {rel!r} nor a git directory "
                         f"of the winners' repository ({exc})") from None


def apply_patches(text: str, patches: list[tuple[str, str, int | None]], script: str) -> str:
    """Each (regex, replacement, expected count): stop if the script no longer matches."""
    for pattern, repl, expected in patches:
        text, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        if n == 0 or (expected is not None and n != expected):
            raise SystemExit(f"{script}: patch {pattern!r} matched {n} time(s), expected "
                             f"{expected if expected is not None else 'at least 1'}: the script changed")
    return text


def set_param(params: dict, dotted: str, value) -> None:
    """``params[a][b][c] = value`` for ``dotted`` ``a.b.c``; every key but the last must exist
    (a misspelt override stops instead of patching nothing)."""
    *path, last = dotted.split(".")
    node = params
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise SystemExit(f"--set {dotted}: no {key!r} in the profile's params")
        node = node[key]
    node[last] = value


def prologue(threads: int, framework: str = "torch") -> str:
    """Lines run before the script: fixed thread counts (the same as moakit's run)."""
    head = f"import os as _os\n_os.environ['OMP_NUM_THREADS'] = '{threads}'\n"
    if framework == "tensorflow":
        return head + (f"import tensorflow as _tf\n_tf.config.threading.set_intra_op_parallelism_threads({threads})\n"
                       f"_tf.config.threading.set_inter_op_parallelism_threads({threads})\n")
    return head + f"import torch as _torch\n_torch.set_num_threads({threads})\n"


def _sig_order(data: Path, name: str) -> pd.Series:
    return pd.read_csv(data / name, usecols=["sig_id"])["sig_id"]


def _aligned(frame: pd.DataFrame, sig_id: pd.Series, targets: list[str]) -> np.ndarray:
    """``frame``'s target columns in the order of ``sig_id``; rows it lacks (controls) are 0."""
    out = frame.set_index("sig_id")[targets].reindex(sig_id.to_numpy()).fillna(0.0)
    return out.to_numpy(np.float64)


# --------------------------------------------------------------------------- 3-stage NN


# Sizes at which both codes can be run side by side: "full" = the script's own numbers;
# "cpu" = moakit's cpu profile sizes (hidden widths, epochs) for 2 CPU cores, every method
# kept (the UMAP fits on all rows, unlike moakit's cpu profile, which subsamples them).
SIZES = {
    "three_stage_nn": {
        "full": {"stage1": (2048, 15), "stage2": (2048, 25), "stage3": (1024, 25)},
        "cpu": {"stage1": (1024, 10), "stage2": (1024, 12), "stage3": (512, 12)},
    },
}


def three_stage_patches(args) -> list[tuple[str, str, int | None]]:
    size = SIZES["three_stage_nn"][args.size]
    (h1, e1), (h2, e2), (h3, e3) = size["stage1"], size["stage2"], size["stage3"]
    if args.epochs:  # a quick check of the harness only
        e1 = e2 = e3 = args.epochs
    if h1 != h2 or e2 != e3:
        raise SystemExit("the script shares one hidden size between stages 1 and 2 and one epoch count "
                         "between stages 2 and 3")
    return [
        (r"^NSEEDS = 5\b", f"NSEEDS = {args.seeds}", 1),
        # (in this order, so that a value written by one patch is never matched by the next)
        (r"^hidden_size=1024$", f"hidden_size={h3}", 1),  # stage 3
        (r"^hidden_size=2048$", f"hidden_size={h1}", 2),  # stages 1 and 2
        (r"^EPOCHS = 25$", f"EPOCHS = {e2}", None),  # stages 2 and 3
        (r"^EPOCHS = 15$", f"EPOCHS = {e1}", 1),  # stage 1
        (r"^import seaborn as sns$", "sns = None  # unused plotting import", 1),
        # pandas >= 2 makes bool dummies, which turn the feature matrix into objects; the
        # pandas of 2020 made uint8 ones
        (r"pd\.get_dummies\(data, columns=\['cp_time','cp_dose'\]\)",
         "pd.get_dummies(data, columns=['cp_time','cp_dose'], dtype=np.uint8)", 2),
        # scikit-learn >= 1.x refuses a column with one label (a target without positives in
        # small data, bench/parity/grid.py); the printed CV only
        (r"log_loss\(y_true\[:, i\], y_pred\[:, i\]\)", "log_loss(y_true[:, i], y_pred[:, i], labels=[0, 1])", 3),
        # each stage's fold assignment (the unshuffled splitter draws its ties from numpy's
        # global generator, so only the script can say what they were); stage 2's (the
        # scored stage) is parity_folds.csv, which moakit_side --folds-from uses for every stage
        (r"^NB = '25'$", "NB = '25'\n_PARITY_STAGE = 1", 1),
        (r"^folds\['kfold'\] = folds\['kfold'\]\.astype\(int\)$", THREE_STAGE_FOLDS, 3),
    ]


THREE_STAGE_FOLDS = """folds['kfold'] = folds['kfold'].astype(int)
folds[['sig_id', 'kfold']].to_csv(f'{output_folder}/parity_folds_stage{_PARITY_STAGE}.csv', index=False)
if _PARITY_STAGE == 2:
    folds[['sig_id', 'kfold']].to_csv(f'{output_folder}/parity_folds.csv', index=False)
_PARITY_STAGE += 1"""


def three_stage_collect(out: Path, data: Path) -> dict[str, np.ndarray]:
    targets = [c for c in pd.read_csv(data / "train_targets_scored.csv", nrows=1).columns if c != "sig_id"]
    train_ids, test_ids = _sig_order(data, "train_features.csv"), _sig_order(data, "test_features.csv")
    interim = out / "interim"
    result = {}
    # NB '25' is the script's notebook number in its file names
    for stage, stem in (("scored", "25-{}-score-pred.pkl"), ("stack", "25-{}-score-stack-pred.pkl")):
        train = pd.read_pickle(interim / stem.format("train"))
        test = pd.read_pickle(interim / stem.format("test"))
        result[f"{stage}_oof"] = _aligned(train, train_ids, targets)
        result[f"{stage}_test"] = _aligned(test, test_ids, targets)
    return result


# --------------------------------------------------------------------------- what several specs share


def common_patches(args) -> list[tuple[str, str, int | None]]:
    """Compatibility patches every torch script needs with today's libraries."""
    return [
        (r"^import seaborn as sns$", "sns = None  # unused plotting import", 1),
        # pandas >= 3 gives NaN for the skew / kurtosis of a constant row (e.g. every cell
        # viability at the quantile transform's floor), which makes the network's loss NaN;
        # the pandas of 2020 gave 0
        (r"\.(kurtosis|skew)\(axis = 1\)", r".\1(axis = 1).fillna(0)", 6),
    ]


def get_dummies_uint8(count: int) -> tuple[str, str, int]:
    """pandas >= 2 makes bool dummies, which turn a feature matrix with floats into objects
    (torch refuses them); the pandas of 2020 made uint8 ones."""
    return (r"pd\.get_dummies\((\w+), ", r"pd.get_dummies(\1, dtype=np.uint8, ", count)


# The lines a patch inserts where a script has its out-of-fold and test predictions (and its
# fold assignment) in memory: written as pickles that the spec's collect reads.
SAVE_FRAMES = """
{train}[['sig_id'] + {cols}].to_pickle(f'{{output_folder}}/parity_oof.pkl')
{test}[['sig_id'] + {cols}].to_pickle(f'{{output_folder}}/parity_test.pkl')
{folds}[['sig_id', 'kfold']].to_csv(f'{{output_folder}}/parity_folds.csv', index=False)
"""


def collect_frames(out: Path, data: Path, stage: str = "scored") -> dict[str, np.ndarray]:
    """Read the pickles written by SAVE_FRAMES (controls, which the scripts drop, predicted 0)."""
    targets = [c for c in pd.read_csv(data / "train_targets_scored.csv", nrows=1).columns if c != "sig_id"]
    train_ids, test_ids = _sig_order(data, "train_features.csv"), _sig_order(data, "test_features.csv")
    return {f"{stage}_oof": _aligned(pd.read_pickle(out / "parity_oof.pkl"), train_ids, targets),
            f"{stage}_test": _aligned(pd.read_pickle(out / "parity_test.pkl"), test_ids, targets)}


def first_seeds(listing: str, n: int) -> str:
    """``[a, b, c]`` (the script's seed list, as written) cut to its first n."""
    seeds = [int(x) for x in listing.strip("[] ").split(",")]
    if n > len(seeds):
        raise SystemExit(f"the script lists {len(seeds)} seeds; {n} asked for")
    return str(seeds[:n])


# --------------------------------------------------------------------------- Simple NN (old and new CV)


def simple_nn_patches(args, drug_cv: bool) -> list[tuple[str, str, int | None]]:
    params = args.params
    hidden, epochs = params["network"]["hidden"][0], params["train"]["epochs"]
    if args.epochs:  # a quick check of the harness only
        epochs = args.epochs
    if len(set(params["network"]["hidden"])) != 1:
        raise SystemExit("the script has one hidden size for both hidden layers")
    patches = common_patches(args) + [
        (r"^SEED = (\[940, 1513, 1269,1392,1119,1303\])", lambda m: f"SEED = {first_seeds(m.group(1), args.seeds)}", 1),
        (r"^EPOCHS = 25$", f"EPOCHS = {epochs}", 1),
        (r"^hidden_size=2048$", f"hidden_size={hidden}", 1),
        # pandas >= 2 has no DataFrame.append
        (r"^data = train_features\.append\(test_features\)$", "data = pd.concat([train_features, test_features])", 1),
        # scikit-learn >= 1.x refuses a column with one label unless the labels are given (a
        # target without positives in these training rows); the printed CV only
        (r"log_loss\(y_true\[:, i\], y_pred\[:, i\]\)", "log_loss(y_true[:, i], y_pred[:, i], labels=[0, 1])", 1),
        (r"^test\[target_cols\] = predictions$",
         "test[target_cols] = predictions\n" + SAVE_FRAMES.format(train="train", test="test", folds="folds",
                                                                  cols="target_cols"), 1),
    ]
    if drug_cv:
        patches.append(get_dummies_uint8(1))
    else:
        # KMeans: scikit-learn >= 1.4 runs k-means++ once (n_init 'auto'); the scikit-learn of
        # 2020 ran it 10 times: the number of moakit's config at this size
        n_init = {s["name"]: s.get("n_init", 10) for s in params["features"]["steps"]}
        if n_init["km_g"] != n_init["km_c"]:
            raise SystemExit("the script's two KMeans are patched alike")
        patches += [get_dummies_uint8(5),
                    (r"KMeans\(n_clusters = n_clusters, random_state = SEED\)",
                     f"KMeans(n_clusters = n_clusters, random_state = SEED, n_init = {n_init['km_g']})", 2),
                    cluster_categories(4)]
    return patches


def cluster_categories(count: int) -> tuple[str, str, int]:
    """Small data (bench/parity/grid.py): a k-means cluster without a test row gives the test
    table one dummy column fewer than the training table (KeyError); with every cluster as a
    category both get all columns (the same table whenever every cluster has rows in both, as
    on lish-moa's sizes). After ``get_dummies_uint8``."""
    return (r"pd\.get_dummies\((train|test), dtype=np\.uint8, columns = \[f'clusters_\{kind\}'\]\)",
            r"pd.get_dummies(\1.astype({f'clusters_{kind}': pd.CategoricalDtype(range(n_clusters))}), "
            r"dtype=np.uint8, columns = [f'clusters_{kind}'])", count)


# --------------------------------------------------------------------------- 2-heads ResNet (Keras)

# The loop's two passes (frozen, unfrozen) run while an epoch improves; a cap of epochs per
# pass (moakit's frozen/unfrozen ``epochs``) stops one at its cap with the best epoch kept.
PASS_CAP = """                if reps >= PARITY_PASS_CAP:  # (parity harness: the cap of one pass)
                    m_nn = tf.keras.models.load_model(f'{model_output_folder}/tmp.h5', custom_objects={'logloss': logloss})
                    break
"""

RESNET_SAVE = """
# (parity harness) the out-of-fold and test predictions, the fold of each treated row
_ids = train_features.iloc[non_ctl_idx]['sig_id'].values
_cols = list(train_targets_scored.columns[1:])
pd.DataFrame(oof_predictions, columns=_cols).assign(sig_id=_ids).to_pickle(f'{output_folder}/parity_oof.pkl')
pd.DataFrame(y_pred, columns=_cols).assign(sig_id=test_features['sig_id'].values).to_pickle(
    f'{output_folder}/parity_test.pkl')
pd.DataFrame({'sig_id': _ids, 'kfold': _parity_folds}).to_csv(f'{output_folder}/parity_folds.csv', index=False)
"""


def resnet_patches(args) -> list[tuple[str, str, int | None]]:
    p, cv = args.params, args.cfg["cv"]
    ns, sc, fr, un = p["nonscored"], p["scored"], p["frozen"], p["unfrozen"]
    if args.epochs:
        ns, sc = {**ns, "epochs": args.epochs}, {**sc, "epochs": args.epochs}
    for key in ("patience", "plateau_patience"):
        if ns[key] != sc[key]:
            raise SystemExit(f"the script has one {key} for the non-scored and scored phases")
    if fr["epochs"] != un["epochs"]:
        raise SystemExit("the parity patch caps both loop passes alike")
    if p["include_cp"]:
        raise SystemExit("the script is the V1 (no cp features); there is no V2 script in the repository")
    return [
        (r"^SEEDS = (\[23, 228, 1488, 1998, 2208, 2077, 404\])$",
         lambda m: f"SEEDS = {first_seeds(m.group(1), args.seeds)}", 1),
        (r"^KFOLDS = 10$", f"KFOLDS = {cv['n_folds']}\nPARITY_PASS_CAP = {fr['epochs']}\nPARITY_MAX_LOOPS = {p['max_loops']}", 1),
        # the predictor list beside the script, not in the output folder's parent
        (r'f"\{output_folder\}/\.\./main_predictors\.json"', 'f"{output_folder}/main_predictors.json"', 1),
        # phase lengths and patiences (Keras's ReduceLROnPlateau patience = torch's + 1)
        (r"(y_train_2,\n\s+)epochs=50,", rf"\g<1>epochs={ns['epochs']},", 1),
        (r"(y_train_1,\n\s+)epochs=50,", rf"\g<1>epochs={sc['epochs']},", 1),
        (r"(monitor='val_loss',\n\s+)patience=10,", rf"\g<1>patience={ns['patience']},", 2),
        (r"(ReduceLROnPlateau\(factor=0\.5,\n\s+)patience=4,", rf"\g<1>patience={ns['plateau_patience'] + 1},", 2),
        # Keras >= 2.11 ignores `lr=` (a warning; the rate stays 0.001): the 2020 optimizer
        (r"tf\.keras\.optimizers\.Adadelta\(lr=", "tf.keras.optimizers.legacy.Adadelta(learning_rate=", 2),
        (r"^(            while True:\n)", lambda m: m.group(1) + PASS_CAP, 2),
        (r"^            if \(improved == 0\):\n                break$",
         "            if (improved == 0) or loop >= PARITY_MAX_LOOPS:\n                break", 1),
        # the fold of each treated row
        (r"^(oof_predictions = np\.zeros\(\(tr\.shape\[0\], Y\.shape\[1\]\)\)\n)",
         r"\g<1>_parity_folds = np.zeros(tr.shape[0], dtype=int)\n", 1),
        (r"^(    for train_index, valid_index in kf\.split\(tr\):\n)",
         r"\g<1>        _parity_folds[valid_index] = k\n", 1),
        (r"^(oof_loss = mean_logloss\(oof_predictions, Y\)\n)", lambda m: m.group(1) + RESNET_SAVE, 1),
    ]


# --------------------------------------------------------------------------- 2-stage NN + TabNet

TABNET_FOLDS = """
# (parity harness) the TabNet folds of seed 0 (the splitter is seeded, so these are its folds)
_parity_folds = np.zeros(len(train), dtype=int)
for _f, (_t, _v) in enumerate(MultilabelStratifiedKFold(n_splits=NFOLDS, shuffle=True, random_state=0).split(X=train, y=target)):
    _parity_folds[_v] = _f
pd.DataFrame({'sig_id': train['sig_id'].values, 'kfold': _parity_folds}).to_csv(f'{output_folder}/parity_folds.csv', index=False)
"""


# --seed-index K (the script's K-th seed alone, in both stages): stage 1 draws its folds from
# numpy's global generator (RepeatedMultilabelStratifiedKFold, random_state=None) right before
# the seed's first fold; in the script's own 5-seed run that generator was last seeded by
# seed_everything(K - 1) at the start of seed K-1's last fold (nothing in between draws from
# it), so for K >= 1 the patch seeds it so: the K-th seed's stage-1 folds as the 5-seed run drew
# them. K = 0: the state the preprocessing leaves, as in a 1-seed run (a rerun of seed 0).
STAGE1_FOLDS_OF_SEED = """    np.random.seed({})  # (parity harness) as after seed K-1 of the script's own run
    mskf = RepeatedMultilabelStratifiedKFold("""


def two_stage_seed_patches(k: int) -> list[tuple[str, str, int | None]]:
    """Run only the script's seed ``k`` in both stages (stage 1: range(5), TabNet: range(3)),
    its TabNet folds kept at seed 0's (parity_folds.csv, which moakit trains on); see above."""
    if not 0 <= k < 3:
        raise SystemExit(f"--seed-index {k}: the script's TabNet stage has seeds 0-2")
    patches = [(r"^    seed_list = range\(nseed\)$", f"    seed_list = [{k}]  # (parity harness) --seed-index", 2),
               (r"MultilabelStratifiedKFold\(n_splits=NFOLDS, shuffle=True, random_state = seed\)",
                "MultilabelStratifiedKFold(n_splits=NFOLDS, shuffle=True, random_state = 0)", 1)]
    if k >= 1:
        patches.append((r"^    mskf = RepeatedMultilabelStratifiedKFold\(", STAGE1_FOLDS_OF_SEED.format(k - 1), 1))
    return patches


def two_stage_patches(args) -> list[tuple[str, str, int | None]]:
    p, cv = args.params, args.cfg["cv"]
    s1, tab = p["stage1"], p["stage2"]["tabnet"]
    hidden, epochs = s1["network"]["hidden"], s1["train"]["epochs"]
    max_epochs, patience = tab["max_epochs"], tab["patience"]
    if args.epochs:
        epochs = max_epochs = args.epochs
    if len(hidden) != 1:
        raise SystemExit("the script's stage 1 has one hidden layer")
    n_init = {s["name"]: s.get("n_init", 10) for s in p["stage2"]["features"]["steps"] if s["kind"] == "kmeans_onehot"}
    if len(set(n_init.values())) != 1:
        raise SystemExit("the script's KMeans are patched alike")
    k = getattr(args, "seed_index", None)
    if k is not None and args.seeds != 1:
        raise SystemExit("--seed-index runs one seed: give --seeds 1")
    return common_patches(args) + (two_stage_seed_patches(k) if k is not None else []) + [
        (r"^HIDDEN_SIZE = 2048$", f"HIDDEN_SIZE = {hidden[0]}", 1),
        (r"^EPOCHS = 15$", f"EPOCHS = {epochs}", 1),
        (r"^NFOLDS = 10 # 10$", f"NFOLDS = {cv['n_folds']}", 2),
        (r"^NSEEDS = 5 # 5$", f"NSEEDS = {args.seeds}", 1),  # stage 1: range(NSEEDS)
        (r"^NSEEDS = 3 # 5$", f"NSEEDS = {args.seeds}", 1),  # TabNet: range(NSEEDS)
        # TabNet's batch and ghost-batch sizes too (the cpu profile keeps the script's 1,024 / 128)
        (r"max_epochs=200, patience=50, batch_size=1024, virtual_batch_size=128,",
         f"max_epochs={max_epochs}, patience={patience}, batch_size={tab['batch_size']}, "
         f"virtual_batch_size={tab['virtual_batch_size']},", 1),
        (r"milestones=\[100, 150\]", f"milestones={tab['milestones']}", 2),
        (r"^data = train_features\.append\(test_features\)$", "data = pd.concat([train_features, test_features])", 1),
        get_dummies_uint8(4),  # (one of them in a comment)
        cluster_categories(2),
        (r"KMeans\(n_clusters = n_clusters, random_state = SEED\)",
         f"KMeans(n_clusters = n_clusters, random_state = SEED, n_init = {next(iter(n_init.values()))})", 1),
        # pandas >= 3 refuses to set ints into the string column in place (`.loc[:, col] =`);
        # the pandas of 2020 replaced the column, as plain assignment does
        (r"data\.loc\[:, '(cp_time|cp_dose)'\] = data\.loc\[:, '(?:cp_time|cp_dose)'\]\.map\(",
         r"data['\1'] = data['\1'].map(", 2),
        (r"log_loss\(y_true\[:, i\], y_pred\[:, i\]\)", "log_loss(y_true[:, i], y_pred[:, i], labels=[0, 1])", 2),
        (r"^(run_seeds\(train, test, feature_cols, target_cols, NFOLDS, NSEEDS\)\n)",
         lambda m: m.group(1) + TABNET_FOLDS, 1),
    ]


def two_stage_collect(out: Path, data: Path) -> dict[str, np.ndarray]:
    targets = [c for c in pd.read_csv(data / "train_targets_scored.csv", nrows=1).columns if c != "sig_id"]
    train_ids, test_ids = _sig_order(data, "train_features.csv"), _sig_order(data, "test_features.csv")
    # NB '503' is the script's notebook number of the TabNet stage
    return {"scored_oof": _aligned(pd.read_pickle(out / "interim" / "503_train.pkl"), train_ids, targets),
            "scored_test": _aligned(pd.read_pickle(out / "interim" / "503_test.pkl"), test_ids, targets)}


# --------------------------------------------------------------------------- folds as the scripts draw them


def _treated(data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The treated training rows (as the scripts keep them, in file order) and their targets with sig_id."""
    feats = pd.read_csv(data / "train_features.csv", usecols=["sig_id", "cp_type"])
    targets = pd.read_csv(data / "train_targets_scored.csv")
    keep = (feats["cp_type"] != "ctl_vehicle").to_numpy()
    return feats[keep].reset_index(drop=True), targets[keep].reset_index(drop=True)


def _mskf_folds(data: Path, n_splits: int, global_seed: int | None = None, **kw) -> pd.DataFrame:
    """MultilabelStratifiedKFold over the treated rows, y = the targets frame WITH its sig_id
    column (as the scripts passed it; the splitter reads it as an all-true column). Unseeded,
    the splitter breaks ties with numpy's global generator: ``global_seed`` is the seed the
    script gave it last (nothing between that and the split draws from it)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if global_seed is not None:
        np.random.seed(global_seed)
    feats, target = _treated(data)
    folds = np.zeros(len(feats), dtype=int)
    for k, (_, valid) in enumerate(MultilabelStratifiedKFold(n_splits=n_splits, **kw).split(X=feats, y=target)):
        folds[valid] = k
    return pd.DataFrame({"sig_id": feats["sig_id"], "kfold": folds})


def resnet_folds(args, data: Path) -> pd.DataFrame:
    from sklearn.model_selection import KFold

    feats, _ = _treated(data)
    seed = 23  # the script's first seed
    folds = np.zeros(len(feats), dtype=int)
    for k, (_, valid) in enumerate(KFold(n_splits=args.cfg["cv"]["n_folds"], shuffle=True, random_state=seed).split(feats)):
        folds[valid] = k
    return pd.DataFrame({"sig_id": feats["sig_id"], "kfold": folds})


SPECS: dict[str, Spec] = {
    "three_stage_nn": Spec(
        script=f"{TRAINING}/3stage-nn-train.py", patches=three_stage_patches, collect=three_stage_collect,
        notes=["stages 'scored' (stage 2) and 'stack' (stage 3, the model's output)"],
    ),
    "simple_nn": Spec(
        script=f"{TRAINING}/simple-nn-old-split-train.py", patches=lambda a: simple_nn_patches(a, drug_cv=False),
        collect=collect_frames, config="simple_nn", folds=lambda a, d: _mskf_folds(d, 5, global_seed=42),
        notes=["folds: the script's unshuffled MultilabelStratifiedKFold (parity_folds.csv; moakit_side --folds-from)"],
    ),
    "simple_nn_drug_cv": Spec(
        script=f"{TRAINING}/simple-nn-new-split-train.py", patches=lambda a: simple_nn_patches(a, drug_cv=True),
        collect=collect_frames, config="simple_nn_drug_cv",
        notes=["folds: the script's drug-aware split, seed 34 (parity_folds.csv; moakit_side --folds-from)"],
    ),
    "resnet_2heads": Spec(
        script=f"{TRAINING}/2heads-ResNest-train.py", patches=resnet_patches, collect=collect_frames,
        config="resnet_2heads", framework="tensorflow", extra_files=[f"{TRAINING}/main_predictors.json"],
        folds=resnet_folds,
        notes=["Keras: run with --python of a venv with TensorFlow 2.15 (pandas < 2)",
               "folds: the script's KFold(shuffle, random_state=first seed) (parity_folds.csv; moakit_side --folds-from)"],
    ),
    "two_stage_nn_tabnet": Spec(
        script=f"{TRAINING}/2stage-nn-tabnet-train.py", patches=two_stage_patches, collect=two_stage_collect,
        config="two_stage_nn_tabnet",
        folds=lambda a, d: _mskf_folds(d, a.cfg["cv"]["n_folds"], shuffle=True, random_state=0),
        notes=["folds: TabNet's seed-0 MultilabelStratifiedKFold (parity_folds.csv; moakit_side --folds-from); "
               "the script's stage-1 folds are unseeded (RepeatedMultilabelStratifiedKFold, random_state=None): drawn "
               "from numpy's global generator, which the script seeds (512 at the start, the seed in each fold), so "
               "a run is repeatable (seed 0 rerun bit-identical, BENCHMARKS 'Seventh session')"],
    ),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(SPECS))
    ap.add_argument("--winners", type=Path, required=True,
                    help="local checkout (or bare git dir) of guitarmind/kaggle_moa_winner_hungry_for_gold")
    ap.add_argument("--data", type=Path, required=True, help="a lish-moa folder of CSV files (moakit simulate)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=1, help="the script's first N seeds")
    ap.add_argument("--seed-index", type=int, default=None, metavar="K",
                    help="two_stage_nn_tabnet only: run the script's K-th seed alone (0-2), in both stages, "
                         "its TabNet folds kept at seed 0's (the run-seed noise of the script's whole chain)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", choices=["full", "cpu"], default="full",
                    help="the script's own numbers, or CPU sizes: SIZES, else the moakit config's profile of that name")
    ap.add_argument("--epochs", type=int, default=None, help="override every EPOCHS (a quick check only)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override of the moakit profile the patches read, VALUE in YAML "
                         "(e.g. stage2.tabnet.batch_size=128); the patches must carry it into the script")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter that runs the script (e.g. a venv with TensorFlow for a Keras script)")
    ap.add_argument("--folds-only", type=Path, default=None, metavar="CSV",
                    help="write the script's fold assignment (computed as the script does) to CSV and stop")
    args = ap.parse_args(argv)

    spec = SPECS[args.model]
    if args.seed_index is not None and args.model != "two_stage_nn_tabnet":
        raise SystemExit("--seed-index: only two_stage_nn_tabnet's patches pick a seed")
    args.params = None
    if spec.config is not None:  # the sizes of moakit's profile: both codes at the same numbers
        from moakit.config import load_config

        args.cfg = load_config(spec.config, profile=args.size).model_dump(mode="json")
        args.params = args.cfg["params"]
        for item in args.set:  # the same overrides as moakit_side.py --set: both codes at one setting
            key, _, value = item.partition("=")
            set_param(args.params, key, yaml.safe_load(value))
    elif args.set:
        raise SystemExit(f"--set: {args.model}'s script sizes are not read from a moakit config")
    if args.folds_only is not None:
        if spec.folds is None:
            raise SystemExit(f"{args.model}: the script's folds are not reproduced here; run the script")
        spec.folds(args, args.data).to_csv(args.folds_only, index=False)
        print(f"{args.model}: the script's folds in {args.folds_only}")
        return 0
    text = apply_patches(read_script(args.winners, spec.script), spec.patches(args), spec.script)
    args.out.mkdir(parents=True, exist_ok=True)
    for rel in spec.extra_files:
        (args.out / Path(rel).name).write_text(read_script(args.winners, rel))
    script = args.out / "patched_script.py"
    script.write_text(prologue(args.threads, spec.framework) + text)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TF_NUM_INTRAOP_THREADS": str(args.threads), "TF_NUM_INTEROP_THREADS": str(args.threads),
           "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    with open(args.out / "script.log", "w") as log:
        # (abspath, not resolve: a venv's python is a link whose target is outside the venv)
        python = os.path.abspath(args.python) if os.sep in args.python else args.python
        rc = subprocess.run([python, str(script.resolve()), str(args.data.resolve()), str(args.out.resolve())],
                            cwd=args.out, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the script's CPU time (this process waits for nothing else)
    cpu_seconds = usage.ru_utime + usage.ru_stime
    if rc != 0:
        print(f"the winners' script failed (exit {rc}); see {args.out / 'script.log'}", file=sys.stderr)
        return 1
    np.savez_compressed(args.out / "predictions.npz", **spec.collect(args.out, args.data))
    (args.out / "run.json").write_text(json.dumps({
        "model": args.model, "script": spec.script, "seeds": args.seeds, "threads": args.threads, "size": args.size,
        "epochs_override": args.epochs, "set": args.set, "seed_index": args.seed_index,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "notes": spec.notes}, indent=1))
    print(f"{args.model}: the winners' script ran in {seconds:.0f} s; predictions in {args.out / 'predictions.npz'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
