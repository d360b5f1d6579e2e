"""Issue 25: the new selection policy and members, each beside what it replaces, same data,
same folds.

    nice -n 19 .venv/bin/python bench/bench_quality_options.py --data sim6000-seed0 [--models simple_nn cnn1d]
    nice -n 19 .venv/bin/python bench/bench_quality_options.py --data realistic-seed0

``--data sim<ROWS>-seed<S>``: ``moakit simulate --rows ROWS --seed S`` (made once under
bench/out/data/); ``realistic-seed<S>``: the simulator on the real lish-moa labels (all
23,814 rows; needs ../shared/data/lish-moa-labels). Variants (one seed, the cpu profile at
the sizes below, the config's CV):

* Simple NN (cpu profile, hidden 512 x 512, 12 epochs) and 1D-CNN (cpu profile):
  ``last`` (the shipped policy), ``holdout``, ``holdout_refit``; ``ctlaug`` (last +
  ``train.control_augment: 0.5``); ``joint`` (last + ``network.joint_nonscored_head``);
  ``nosmooth`` (last, every smoothing 0); ``last_seed1`` (last, torch seed 1 instead of 0:
  how far two runs differing only by the seed lie apart);
* ``label_powerset_nn`` (its cpu profile at the Simple NN's sizes), selection ``last``.

Scores: OOF log loss (treated rows), unseen-drug test log loss (treated rows, against the
simulated answers), mean per-MoA PR-AUC on the test rows (targets with a positive test row),
fit seconds, and the mean target-wise correlation of each variant's test predictions with
its model's ``last`` run. Then blends (SLSQP weights, nested 5-part score; test = the
blend's weights applied to the test predictions): base = the ``last`` runs of the Simple NN
(and the 1D-CNN when measured), and base + each new member or option. Writes
bench/out/quality/<data>/report.md and scores.json.
A finished run is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from common import LABELS, OUT, write_report  # noqa: E402  (bench/common.py)

SIZES = {"simple_nn": {"network": {"hidden": [512, 512]}, "train": {"epochs": 12}},
         "label_powerset_nn": {"network": {"hidden": [512, 512]}, "train": {"epochs": 12}},
         "simple_nn_drug_cv": {"network": {"hidden": [512, 512]}, "train": {"epochs": 12}},
         "cnn1d": {}, "three_stage_nn": {}, "resnet_2heads": {}, "two_stage_nn_tabnet": {}}  # {}: the cpu profile as shipped
VARIANTS = {  # name -> (selection, params overlay, no smoothing)
    "last": ("last", {}, False),
    "holdout": ("holdout", {}, False),
    "holdout_refit": ("holdout_refit", {}, False),
    "ctlaug": ("last", {"train": {"control_augment": 0.5}}, False),
    "joint": ("last", {"network": {"joint_nonscored_head": True}}, False),
    "nosmooth": ("last", {}, True),
    "last_seed1": ("last", {}, False),  # the shipped policy with another seed: the run-to-run noise floor
    "oof": ("oof", {}, False),  # the winners' rule: the fold's own rows judge (optimistic OOF)
}
NO_LAST = {"resnet_2heads"}  # judges its loops on held-out rows: selection last is refused


def data_dir(name: str) -> Path:
    from moakit.data.simulate import simulate

    folder = OUT / "data" / name
    if folder.exists():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    if name.startswith("realistic-seed"):
        if not LABELS.exists():
            raise SystemExit(f"skipped: {LABELS} is absent")
        simulate(tmp, seed=int(name.split("seed")[1]), labels_from=LABELS)
    else:  # sim<ROWS>-seed<S>, or sim<ROWS>-factor-seed<S> (the other generator, same labels and split)
        rows, seed = name[3:].split("-seed")
        rows, _, generator = rows.partition("-")
        simulate(tmp, n_rows=int(rows), seed=int(seed), generator=generator or "pathway")
    tmp.rename(folder)
    return folder


def config_for(model: str, variant: str):
    from moakit.config import deep_merge, load_config
    from moakit.models.quality import config_without_smoothing

    selection, overlay, nosmooth = VARIANTS[variant]
    config = load_config(model, "cpu", selection=selection)
    params = deep_merge(deep_merge(config.params, SIZES.get(model, {})), overlay)
    config = config.model_copy(update={"params": params, **({"seeds": [1]} if variant == "last_seed1" else {})})
    return config_without_smoothing(config) if nosmooth else config


def test_truth(data) -> np.ndarray:
    from moakit.data.io import read_answers

    return read_answers(Path(data.source) / "answers" / "test_targets_scored.csv", data.test.sig_id,
                        list(data.train.scored_names))


def scores(result, data, truth) -> dict:
    from sklearn.metrics import average_precision_score

    from moakit import metrics

    tr_t, te_t = ~data.train.is_control, ~data.test.is_control
    test = metrics.zero_controls(result.test, data.test.is_control)
    y, p = truth[te_t], test[te_t]
    pos = y.sum(axis=0) > 0
    pr = [average_precision_score(y[:, j], p[:, j]) for j in np.flatnonzero(pos)]
    return {"oof": metrics.mean_log_loss(data.train.scored[tr_t], result.oof[tr_t]),
            "test": metrics.mean_log_loss(y, p), "pr_auc": float(np.mean(pr)), "n_pr_targets": int(pos.sum())}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    na, nb = np.sqrt((a ** 2).sum(axis=0)), np.sqrt((b ** 2).sum(axis=0))
    ok = (na > 0) & (nb > 0)
    return float(((a[:, ok] * b[:, ok]).sum(axis=0) / (na[ok] * nb[ok])).mean())


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (its threads included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train_all(data, folder: Path, jobs: list[tuple[str, str]], truth) -> dict:
    from moakit import runner

    out = {}
    for model, variant in jobs:
        run_dir = folder / f"{model}-{variant}"
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        result = runner.train(config_for(model, variant), data, run_dir, show_progress=False)
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0  # cpu ~0 when the run was reused
        done = [json.loads(p.read_text()) for p in sorted(run_dir.glob("stages/*/seed_*/fold_*/done.json"))]
        fit_seconds = sum(d["fit_seconds"] for d in done)
        out[(model, variant)] = (result, {**scores(result, data, truth), "fit_seconds": round(fit_seconds, 1),
                                          "wall_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                                          "load": [round(x, 1) for x in os.getloadavg()], "run_dir": str(run_dir)})
        print(model, variant, out[(model, variant)][1], flush=True)
    return out


def blends(data, folder: Path, runs: dict, truth) -> list[dict]:
    from moakit import metrics
    from moakit.blend import blend_runs

    te_t = ~data.test.is_control
    base = [k for k in (("simple_nn", "last"), ("cnn1d", "last")) if k in runs]  # the shipped members measured
    # last_seed1 too: a second run of the same model, the seed-averaging control of every "+ member" gain
    extra = [k for k in runs if k not in base and k[1] not in ("holdout", "holdout_refit")]
    rows = []
    for add in [None, *extra]:
        members = base + ([add] if add else [])
        names = [f"{m}-{v}" for m, v in members]
        res = blend_runs([runs[m][1]["run_dir"] for m in members], folder / "blend" / "+".join(names), names=names,
                         methods=["slsqp"], data=data, nested_folds=5)
        nested = res.summary["nested"]["methods"]
        test = metrics.zero_controls(np.clip(res.test, 0, 1), data.test.is_control)
        rows.append({"members": names, "weights": np.round(np.asarray(res.weights), 3).tolist(), "method": res.method,
                     "nested_oof": nested["slsqp"]["log_loss_treated"],
                     "nested_per_target": nested.get("per_target", {}).get("log_loss_treated"),
                     "test": metrics.mean_log_loss(truth[te_t], test[te_t])})
        print(rows[-1], flush=True)
    return rows


def report(name: str, data, runs: dict, blend_rows: list[dict], folder: Path, tag: str = "") -> None:
    import os

    lines = [f"## {name}", "", f"load (uptime): {os.getloadavg()}", "",
             "| model | variant | OOF log loss (treated) | test log loss, unseen drugs (treated) "
             "| test PR-AUC (mean per MoA) | corr. with `last` (test, treated; powerset: with Simple NN; "
             "ResNet: with `holdout`) | fit s | CPU s | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    treated = ~data.test.is_control
    for (model, variant), (result, s) in runs.items():
        ref_model = model if model != "label_powerset_nn" else "simple_nn"
        ref = runs.get((ref_model, "last"), runs.get((ref_model, "holdout")))  # the ResNet has no `last`
        corr = correlation(result.test[treated], ref[0].test[treated]) if ref is not None else float("nan")
        lines.append(f"| {model} | {variant} | {s['oof']:.5f} | {s['test']:.5f} | {s['pr_auc']:.4f} | {corr:.3f} "
                     f"| {s['fit_seconds']:.0f} | {s.get('cpu_seconds', float('nan')):.0f} | {s.get('load', '')} |")
    if blend_rows:
        lines += ["", "| blend (SLSQP) | weights | nested OOF (treated) | test (treated) |", "|---|---|---|---|"]
        for r in blend_rows:
            lines.append(f"| {' + '.join(r['members'])} | {r['weights']} | {r['nested_oof']:.5f} | {r['test']:.5f} |")
    write_report(folder / f"report{tag}.md", lines)
    (folder / f"scores{tag}.json").write_text(json.dumps(
        {"runs": {f"{m}-{v}": s for (m, v), (_, s) in runs.items()}, "blends": blend_rows}, indent=2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="sim6000-seed0")
    ap.add_argument("--models", nargs="*", default=["simple_nn", "label_powerset_nn", "cnn1d"])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-blend", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from moakit.data.io import load

    data = load(data_dir(args.data))
    truth = test_truth(data)
    folder = OUT / "quality" / args.data
    jobs = [(m, v) for m in args.models for v in (["last"] if m == "label_powerset_nn" else args.variants)
            if not (m in NO_LAST and v in ("last", "last_seed1", "ctlaug", "joint", "nosmooth"))]
    runs = train_all(data, folder, jobs, truth)
    blend_rows = [] if args.no_blend else blends(data, folder, runs, truth)
    tag = "" if "simple_nn" in args.models else "-" + "-".join(args.models)  # a partial run: its own file
    if tag and args.variants != list(VARIANTS):
        tag += "-" + "-".join(args.variants)
    report(args.data, data, runs, blend_rows, folder, tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
