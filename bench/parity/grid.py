"""Parity over a grid of generated datasets: moakit beside the winners' scripts on each.

    .venv/bin/python bench/parity/grid.py run --winners W --out bench/out/grid \\
        [--generators pathway factor] [--seeds 0 1] [--scales 1.0] [--rows 3000] \\
        [--models simple_nn cnn1d] [--variants shipped] [--labels-from LABELS_DIR]
    .venv/bin/python bench/parity/grid.py report --out bench/out/grid [--report FILE]

Datasets: ``moakit simulate`` with each generator x seed x effect scale (synthetic labels of
``--rows`` rows; the same seed gives the same labels, drugs and split for every generator
and scale, so the datasets are paired). With ``--labels-from DIR`` (the real lish-moa
``train_targets_scored``, ``train_targets_nonscored`` and ``train_drug`` .csv.zip) the
datasets are ``moakit simulate --labels-from`` instead: the 23,814 real rows, labels and drug
ids (``--rows`` ignored; whole drugs, ``--test-fraction`` of the rows, held out as test),
named ``real-GENERATOR-seedS-xE`` so they never clash with the synthetic ones. On each, in this order (every step is skipped when
its output exists, so a stopped grid resumes, and a later call with more models, scales or
variants adds to it):

- a model with a winners' script (``simple_nn``, ``simple_nn_drug_cv``, ``three_stage_nn``,
  ``two_stage_nn_tabnet``, ``resnet_2heads``: Keras, run by ``--python``): the script at moakit's ``cpu`` sizes (``winners.py --size cpu
  --seeds 1``), then moakit's config on the script's own folds (``moakit_side.py --size cpu
  --seeds 1 --folds-from``; the 3-stage NN: its script's stage-2 folds for every stage; the
  2-stage NN + TabNet: the script's TabNet folds; the 2-heads ResNet: its shuffled KFold) once per variant: ``shipped`` (the config's
  own selection policy), ``oof`` (each fold's epoch chosen on the fold, as the script),
  ``holdout`` (chosen on a holdout of the training folds, which are not trained on), ``holdout_refit``
  (chosen on that holdout, then replayed on all of them), and
  for the Simple NNs one setting changed: ``torch_bias`` (the script's output-bias start),
  ``no_smoothing`` (label smoothing 0), ``float64`` (feature blocks kept in float64 between
  the steps, as the script's pandas frames; the network's input stays float32);
  for the models with UMAP features (the 3-stage NN, the 2-stage NN + TabNet) ``umap_rows``
  (every umap step's ``transform: rows``, each row embedded on its own, instead of the
  shipped config's umap-learn block transform; where every row is in the UMAP's fit, as in the
  scripts, the two agree almost everywhere), and ``umap_fit1000`` / ``umap_rows_fit1000`` (each
  UMAP fitted on a seeded 1,000 of the rows, the rest transformed: most rows new to the UMAP, as
  at the cpu profile's 5,000 of ~24k rows), with umap-learn's / the row-by-row transform;
  the 3-stage NN is scored at stage 2 (``three_stage_nn.stage2``) and at its output;
  ``--moakit-seed N`` trains moakit's side with run seed N (same folds and holdout) into
  ``moakit-MODEL-VARIANT-sN``, reported as the variant ``VARIANT-sN`` (paired with ``shipped-sN``);
  ``--set KEY=VALUE`` changes one profile parameter for BOTH codes (the script's patches read it,
  e.g. ``stage2.tabnet.batch_size=128``): a setting other than the profile, so give it an ``--out`` of its own;
- a model without a script (``cnn1d``): ``moakit train --profile cpu`` on its own folds
  (the test rows, which every comparison uses, are the same).

``report`` scores every finished run on the test rows (drugs unseen in training, answers
in ``DATA/answers``), treated rows only: mean column-wise log loss, and over the targets
with a positive test row the mean per-MoA average precision (PR-AUC) and ROC-AUC; then per
model and variant the ratio to the script (moakit / script: below 1 is better for log loss,
above 1 better for PR-AUC and ROC-AUC) with its min / median / max over the grid; a model
without a script (``cnn1d``) is compared with the Simple NN's script on the same test rows.
A script run folder ``winners-MODEL-sK`` beside ``winners-MODEL`` (made by ``winners.py
--seed-index K``, not by ``run``: the script's K-th seed alone) is reported as ``MODEL/script-sK``,
with its ratio to the grid's script run (``script``, which every moakit run is compared with).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import write_report  # noqa: E402  (bench/common.py)

SCRIPTED = ("simple_nn", "simple_nn_drug_cv", "three_stage_nn", "two_stage_nn_tabnet", "resnet_2heads")
# the scripts that are Keras: run with --python (an environment with TensorFlow 2.15, pandas < 2)
KERAS = ("resnet_2heads",)
REFERENCE = "simple_nn"  # the script a model without one (cnn1d) is compared with
VARIANTS = ("shipped", "oof", "holdout", "holdout_refit", "torch_bias", "no_smoothing", "float64", "umap_rows",
            "umap_fit1000", "umap_rows_fit1000")
# the variants that change one setting of the Simple NN's config (top-level network / train)
SIMPLE_ONLY = ("torch_bias", "no_smoothing", "float64")
# the variants that change the models' umap steps, and those models
UMAP_ONLY, UMAP_MODELS = ("umap_rows", "umap_fit1000", "umap_rows_fit1000"), ("three_stage_nn", "two_stage_nn_tabnet")
# (moakit stage, the grid's name of it) of each model's scored predictions; the last is
# the model's output. The 3-stage NN is scored at stage 2 as well (the table).
OUTPUTS = {"three_stage_nn": [("scored", "three_stage_nn.stage2"), ("stack", "three_stage_nn")]}


# a script run's test scores, written beside its predictions.npz by `report` and read when
# those predictions are gone (a disk cleanup): the run counts as done and stays in the report
SCRIPT_SCORES = "test_scores.json"


def outputs(model: str) -> list[tuple[str, str]]:
    return OUTPUTS.get(model, [("scored", model)])


def variant_args(model: str, variant: str) -> list[str]:
    """moakit_side.py options of a variant: the config's own selection policy (moakit_side's
    default is the scripts' ``oof``) plus the variant's one change."""
    from moakit.config import load_config

    shipped = ["--selection", load_config(model).selection.policy]
    return {"shipped": shipped, "oof": ["--selection", "oof"], "holdout": ["--selection", "holdout"],
            "holdout_refit": ["--selection", "holdout_refit"],
            "torch_bias": shipped + ["--set", "network.output_bias=torch"],
            "no_smoothing": shipped + ["--set", "train.smoothing=0"],
            "float64": shipped + ["--block-dtype", "float64"],
            "umap_rows": shipped + ["--umap-transform", "rows"],
            "umap_fit1000": shipped + ["--umap-fit-rows", "1000"],
            "umap_rows_fit1000": shipped + ["--umap-transform", "rows", "--umap-fit-rows", "1000"]}[variant]


def run_name(model: str, variant: str, moakit_seed: int | None = None) -> str:
    """A moakit run's folder name: ``moakit-MODEL-VARIANT``, with ``-sN`` for a run seed other than
    the config's first (``--moakit-seed N``)."""
    return f"moakit-{model}-{variant}" + (f"-s{moakit_seed}" if moakit_seed is not None else "")


def parse_run_name(name: str) -> tuple[str, str]:
    """(model, the report's variant label) of a run folder: ``holdout_refit-s1`` for seed 1."""
    model, variant, *seed = name.removeprefix("moakit-").split("-")
    return model, "-".join([variant, *seed])


def set_args(args) -> list[str]:
    """``--set KEY=VALUE`` of ``grid.py run``, given alike to the script's side (winners.py) and
    moakit's (moakit_side.py): both codes at one setting other than the profile's."""
    return [opt for item in getattr(args, "set", None) or [] for opt in ("--set", item)]


def dataset_name(generator: str, seed: int, scale: float, real_labels: bool = False) -> str:
    return f"{'real-' if real_labels else ''}{generator}-seed{seed}-x{scale:g}"


def make_dataset(folder: Path, rows: int, generator: str, seed: int, scale: float,
                 labels_from: Path | None = None, test_fraction: float = 0.2) -> None:
    """Simulate the dataset at ``folder`` unless it is there: synthetic labels of ``rows``
    rows, or the real labels, sig_ids and drug ids of ``labels_from`` (all 23,814 rows)."""
    from moakit.data.simulate import simulate

    if not (folder / "answers").exists():
        simulate(folder, n_rows=rows, seed=seed, generator=generator, effect_scale=scale,
                 labels_from=labels_from, test_fraction=test_fraction)


def _run(cmd: list[str], log: Path) -> bool:
    """Run ``cmd`` (1 thread), its output to ``log``; True when it succeeded."""
    env_cmd = ["env", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1", *cmd]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(env_cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    print(f"  {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.perf_counter() - t0:.0f} s: {' '.join(cmd[1:4])} ... "
          f"(log {log})", flush=True)
    return rc == 0


def _finished(run: Path) -> bool:
    manifest = run / "manifest.json"
    return manifest.exists() and json.loads(manifest.read_text()).get("status") == "complete"


def run_dataset(data: Path, out: Path, args) -> None:
    py = sys.executable
    for model in args.models:
        if model in SCRIPTED:
            theirs = out / f"winners-{model}"
            if not ((theirs / "predictions.npz").exists() or (theirs / SCRIPT_SCORES).exists()):
                keras = ["--python", str(args.python)] if model in KERAS else []
                _run([py, str(HERE / "winners.py"), model, "--winners", str(args.winners), "--data", str(data),
                      "--out", str(theirs), "--size", "cpu", "--seeds", "1", "--threads", "1", *keras,
                      *set_args(args)],
                     out / f"winners-{model}.log")
            if not (theirs / "parity_folds.csv").exists():
                continue
            for variant in args.variants:
                if variant in SIMPLE_ONLY and model not in ("simple_nn", "simple_nn_drug_cv"):
                    print(f"  {model}: variant {variant} skipped (a Simple NN setting)", flush=True)
                    continue
                if variant in UMAP_ONLY and model not in UMAP_MODELS:
                    print(f"  {model}: variant {variant} skipped (no umap step)", flush=True)
                    continue
                seed = getattr(args, "moakit_seed", None)
                mine = out / run_name(model, variant, seed)
                if not _finished(mine):
                    _run([py, str(HERE / "moakit_side.py"), model, "--data", str(data), "--out", str(mine),
                          "--size", "cpu", "--seeds", "1", "--threads", "1", "--folds-from", str(theirs),
                          *(["--seed", str(seed)] if seed is not None else []),
                          *variant_args(model, variant), *set_args(args)], out / f"{mine.name}.log")
        else:
            mine = out / f"moakit-{model}-shipped"
            if not _finished(mine):
                moakit = str(Path(py).with_name("moakit"))
                _run([moakit, "train", model, "--data", str(data), "--out", str(mine), "--profile", "cpu",
                      "--quiet"], out / f"moakit-{model}-shipped.log")


def cmd_run(args) -> int:
    if any(m in SCRIPTED for m in args.models) and args.winners is None:
        raise SystemExit("--winners is needed for the models with a script (" + ", ".join(SCRIPTED) + ")")
    if any(m in KERAS for m in args.models) and args.python is None:
        raise SystemExit("--python (an interpreter with TensorFlow 2.15) is needed for the Keras script(s) of "
                         + ", ".join(m for m in args.models if m in KERAS))
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variant(s) {bad}; known: {', '.join(VARIANTS)}")
    for scale in args.scales:
        for seed in args.seeds:
            for generator in args.generators:
                name = dataset_name(generator, seed, scale, args.labels_from is not None)
                data = args.out / "data" / name
                make_dataset(data, args.rows, generator, seed, scale, args.labels_from, args.test_fraction)
                print(f"{name}:", flush=True)
                (args.out / name).mkdir(parents=True, exist_ok=True)
                run_dataset(data, args.out / name, args)
    return 0


# --------------------------------------------------------------------------- scoring


def ranking_scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float, int]:
    """(mean average precision, mean ROC-AUC, number of targets) over the targets with a
    positive (and, for ROC-AUC, a negative) row."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    cols = np.flatnonzero((y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y)))
    ap = [average_precision_score(y[:, j], p[:, j]) for j in cols]
    auc = [roc_auc_score(y[:, j], p[:, j]) for j in cols]
    return float(np.mean(ap)), float(np.mean(auc)), len(cols)


def test_scores(data_dir: Path, test_pred: np.ndarray, cache: dict) -> dict:
    from moakit import metrics

    if data_dir not in cache:
        from moakit.data.io import load, read_answers

        data = load(data_dir)
        answers = read_answers(data_dir / "answers" / "test_targets_scored.csv", data.test.sig_id,
                               list(data.train.scored_names))
        cache[data_dir] = (data, answers)
    data, answers = cache[data_dir]
    treated = ~np.asarray(data.test.is_control, dtype=bool)
    y, p = answers[treated], np.asarray(test_pred, dtype=np.float64)[treated]
    ap, auc, n = ranking_scores(y, p)
    return {"log_loss_treated": metrics.mean_log_loss(y, p), "pr_auc": ap, "roc_auc": auc, "n_targets": n}


def prior_test(data_dir: Path, cache: dict) -> dict:
    from moakit import metrics

    data, _ = cache[data_dir]
    prior = metrics.prior_predictions(data.train.scored, data.train.is_control, len(data.test.sig_id))
    return test_scores(data_dir, prior, cache)


def moakit_test(run: Path, stage: str) -> np.ndarray:
    """A moakit run's test predictions of ``stage``, averaged over its seeds (only what the report
    scores: a disk cleanup may have removed the OOF arrays)."""
    seeds = sorted((run / "stages" / stage).glob("seed_*"))
    if not seeds:
        raise SystemExit(f"{run}: no stage {stage!r} (is it a finished moakit run of this model?)")
    return np.mean([np.load(s / "test.npy") for s in seeds], axis=0).astype(np.float64)


def collect(out: Path) -> dict:
    """{dataset: {code: scores}} for every finished run under ``out``."""
    cache: dict = {}
    result: dict = {}
    for data_dir in sorted((out / "data").iterdir()):
        runs = out / data_dir.name
        if not runs.is_dir():
            continue
        entry: dict = {}
        for theirs in sorted(runs.glob("winners-*")):
            if theirs.is_dir():
                entry.update(script_scores(theirs, data_dir, cache))
        for mine in sorted(runs.glob("moakit-*")):
            if mine.is_dir() and _finished(mine):
                model, variant = parse_run_name(mine.name)
                cpu = mine / "parity_cpu.json"  # (moakit_side.py runs; not `moakit train`)
                cpu_s = json.loads(cpu.read_text())["cpu_seconds"] if cpu.exists() else None
                for stage, key in outputs(model):
                    entry[f"{key}/{variant}"] = test_scores(data_dir, moakit_test(mine, stage), cache)
                    entry[f"{key}/{variant}"]["cpu_s"] = cpu_s
        if entry:
            entry["prior"] = prior_test(data_dir, cache)
            result[data_dir.name] = entry
    return result


def parse_script_name(name: str) -> tuple[str, str]:
    """(model, the report's code label) of a script run folder: ``winners-MODEL`` is the grid's
    script run (``script``); ``winners-MODEL-sK`` another run of it, its seed index K alone
    (``winners.py --seed-index K``), reported as ``script-sK`` beside it, never in its place."""
    model, _, suffix = name.removeprefix("winners-").partition("-")
    return model, "script" + (f"-{suffix}" if suffix else "")


def script_scores(theirs: Path, data_dir: Path, cache: dict) -> dict:
    """{"KEY/script": scores} of a finished script run (``winners-MODEL``; ``KEY/script-sK`` for
    ``winners-MODEL-sK``): scored from its
    predictions.npz, and those scores written to ``SCRIPT_SCORES`` beside them; without the
    predictions (removed to free disk), that file's scores; neither: nothing (not finished)."""
    predictions, saved = theirs / "predictions.npz", theirs / SCRIPT_SCORES
    if not predictions.exists():
        return json.loads(saved.read_text()) if saved.exists() else {}
    model, label = parse_script_name(theirs.name)
    cpu_s = json.loads((theirs / "run.json").read_text()).get("cpu_seconds")
    pred = np.load(predictions)
    scores = {f"{key}/{label}": {**test_scores(data_dir, pred[f"{stage}_test"], cache), "cpu_s": cpu_s}
              for stage, key in outputs(model)}
    saved.write_text(json.dumps(scores, indent=1))
    return scores


def _fmt_ratio(values: list[float]) -> str:
    if not values:
        return ""
    return f"{min(values):.3f} / {float(np.median(values)):.3f} / {max(values):.3f} (n={len(values)})"


def report_lines(result: dict) -> list[str]:
    lines = ["| dataset | code | test log loss (treated) | PR-AUC | ROC-AUC | targets | CPU s |",
             "|---|---|---|---|---|---|---|"]
    ratios: dict[str, dict[str, list[float]]] = {}
    paired: dict[str, dict[str, list[float]]] = {}  # a variant over the shipped config, same dataset
    for name, entry in result.items():
        scale = f"{', real labels' if name.startswith('real-') else ''}, effect scale {name.rsplit('-x', 1)[-1]}"
        for code, sc in entry.items():
            lines.append(f"| {name} | {code} | {sc['log_loss_treated']:.5f} | {sc['pr_auc']:.4f} | "
                         f"{sc['roc_auc']:.4f} | {sc['n_targets']} | {sc.get('cpu_s') or ''} |")
            model = code.split("/")[0]
            label = code if f"{model}/script" in entry else f"{code} (vs the {REFERENCE} script)"
            script = entry.get(f"{model}/script", entry.get(f"{REFERENCE}/script"))
            if "/" in code and not code.endswith("/script") and script is not None:
                _add_ratios(ratios, label + scale, sc, script)
            variant, _, seed = code.partition("/")[2].partition("-")  # a run seed's variant: holdout_refit-s1
            shipped = entry.get(f"{model}/shipped" + (f"-{seed}" if seed else ""))  # same run seed
            if "/" in code and variant not in ("script", "shipped") and shipped is not None:
                _add_ratios(paired, code + scale, sc, shipped)
    lines += ["", "Ratio moakit / script over the grid, min / median / max (log loss: below 1 better; "
              "PR-AUC, ROC-AUC: above 1 better):", ""] + _ratio_table(ratios)
    if paired:
        lines += ["", "Each variant over moakit's shipped config on the same dataset and folds, "
                  "min / median / max:", ""] + _ratio_table(paired)
    return lines


def _add_ratios(table: dict, label: str, sc: dict, ref: dict) -> None:
    r = table.setdefault(label, {"log_loss": [], "pr_auc": [], "roc_auc": []})
    for key in r:
        field = f"{key}_treated" if key == "log_loss" else key
        r[key].append(sc[field] / ref[field])


def _ratio_table(table: dict) -> list[str]:
    lines = ["| model / variant | log loss | PR-AUC | ROC-AUC |", "|---|---|---|---|"]
    for code, r in sorted(table.items()):
        lines.append(f"| {code} | {_fmt_ratio(r['log_loss'])} | {_fmt_ratio(r['pr_auc'])} | {_fmt_ratio(r['roc_auc'])} |")
    return lines


def cmd_report(args) -> int:
    sys.path.insert(0, str(HERE))
    result = collect(args.out)
    lines = report_lines(result)
    path = args.report or args.out / "grid.md"
    write_report(path, lines)
    Path(path).with_suffix(".json").write_text(json.dumps(result, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate the datasets and train what is missing")
    run.add_argument("--winners", type=Path, default=None,
                     help="checkout (or bare git dir) of guitarmind/kaggle_moa_winner_hungry_for_gold")
    run.add_argument("--python", type=Path, default=None,
                     help="the interpreter that runs a Keras script (resnet_2heads): a venv with TensorFlow 2.15, "
                          "pandas < 2 (winners.py --python)")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--generators", nargs="+", default=["pathway", "factor"])
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    run.add_argument("--scales", nargs="+", type=float, default=[1.0])
    run.add_argument("--rows", type=int, default=3000)
    run.add_argument("--models", nargs="+", default=["simple_nn", "cnn1d"])
    run.add_argument("--variants", nargs="+", default=["shipped"], help=f"of {', '.join(VARIANTS)}")
    run.add_argument("--moakit-seed", type=int, default=None,
                     help="moakit's run seed (moakit_side.py --seed; default the config's first): the runs "
                          "are moakit-MODEL-VARIANT-sN, reported as the variant VARIANT-sN")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a params override given to BOTH codes (winners.py and moakit_side.py --set; e.g. "
                          "stage2.tabnet.batch_size=128); use an --out of its own, the runs are named as without it")
    run.add_argument("--labels-from", type=Path, default=None,
                     help="folder of the real lish-moa label files: datasets on the real labels and drugs "
                          "(23,814 rows; --rows ignored), named real-GENERATOR-seedS-xE")
    run.add_argument("--test-fraction", type=float, default=0.2,
                     help="share of the rows (whole drugs, unseen in training) held out as test")
    rep = sub.add_parser("report", help="score every finished run")
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--report", type=Path, default=None)
    args = ap.parse_args(argv)
    return cmd_run(args) if args.command == "run" else cmd_report(args)


if __name__ == "__main__":
    raise SystemExit(main())
