"""Issue 25, item 2: ``blend_moakit`` against ``blend_best_lb`` searched the same way on the
same member runs (cpu profiles), and the candidate members admitted by the nested score.

    nice -n 19 .venv/bin/python bench/bench_blend_cpu.py --data sim6000-seed0
    nice -n 19 .venv/bin/python bench/bench_blend_cpu.py --data sim6000-seed1

Member runs are bench_quality_options.py's run folders under bench/out/quality/<data>/
(reused when finished, trained there when missing), each at its shipped selection policy:
``three_stage_nn``, ``simple_nn`` (the bench's 512 x 512, 12 epochs), ``simple_nn_drug_cv``
(the same size), ``resnet_2heads`` / ``two_stage_nn_tabnet`` (``holdout``), ``cnn1d``
(cpu profile, ``last``); candidates: ``label_powerset_nn`` and the Simple NN with
``train.control_augment: 0.5``. Every blend is searched the same way (SLSQP, Optuna TPE
``--trials``, per-target SLSQP; the method of the lowest nested log loss is kept; nested
= 5 parts of the OOF rows). ``best_lb (preset)`` is blend_best_lb's cpu profile as shipped
(the preset's weights renormalised, or the search when its nested score is lower).
Scores: nested OOF log loss (treated rows), unseen-drug test log loss (treated), mean
per-MoA test PR-AUC, mean target-wise correlation between the members (test, treated).
Control row: ``+ simple_nn_seed1`` (the Simple NN ``last`` with torch seed 1), what a second
run of a model gains by seed averaging alone. Diagnostic column (never a selection): the test
log loss of SLSQP weights fitted on the test labels, the best one weight vector over those
members could do there. ``--without`` members are dropped from the preset as well;
``--candidates`` measures only those named (the realistic data: ``--candidates simple_nn_ctlaug``).
``--rows`` computes only the blends named, in that order (preset, searched, moakit,
candidates, controls, both, resnet); ``--reuse-only`` reads the member runs (finished, read
only, through moakit.blend.load_runs) and trains nothing, into ``<out>-reuse[-<tag>]``;
``--resnet-variant V`` adds the rows ``best_lb, ResNet V`` and ``moakit, ResNet V`` (both blends
with the ``resnet_2heads-V`` run in place of its ``holdout`` one; read only, refused unless finished).
Each row is printed and the report rewritten as soon as it is done.
Writes bench/out/quality/<data>/blend-cpu/report.md and scores.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import SimpleNamespace

import numpy as np

from bench_quality_options import OUT, _cpu_seconds, data_dir, scores, test_truth, train_all
from common import write_report  # noqa: E402  (bench/common.py)

BEST_LB = {"three_stage_nn": ("three_stage_nn", "last"), "two_stage_nn_tabnet": ("two_stage_nn_tabnet", "holdout"),
           "simple_nn": ("simple_nn", "last"), "simple_nn_drug_cv": ("simple_nn_drug_cv", "last"),
           "resnet_2heads": ("resnet_2heads", "holdout")}
MOAKIT = {**BEST_LB, "cnn1d": ("cnn1d", "last")}
CANDIDATES = {"label_powerset_nn": ("label_powerset_nn", "last"), "simple_nn_ctlaug": ("simple_nn", "ctlaug")}
# The control of every "+ candidate" row: a second Simple NN run differing only by its torch seed
# (a second run of the same model gains by seed averaging alone; the ctlaug candidate is one).
CONTROLS = {"simple_nn_seed1": ("simple_nn", "last_seed1")}
ROW_GROUPS = ["preset", "searched", "moakit", "candidates", "controls", "both", "resnet"]
SKIPPED = {"models": ["deepinsight_efficientnet", "deepinsight_resnest_v2"], "reason": "need a GPU (cpu profile)"}


def _oracle(data, truth, tests: list) -> tuple[float, np.ndarray]:
    """A DIAGNOSTIC, never a selection: the unseen-drug test log loss (treated) of SLSQP
    weights fitted on the test labels themselves: the best any one weight vector over these
    members could do on this test set (what the OOF-searched weights leave on the table)."""
    from moakit import metrics
    from moakit.blend import blend_predictions, search_weights

    ctl = np.asarray(data.test.is_control, bool)
    w = search_weights(tests, truth, ctl, method="slsqp").weights
    test = metrics.zero_controls(np.clip(blend_predictions(tests, w), 0, 1), ctl)
    return metrics.mean_log_loss(truth[~ctl], test[~ctl]), np.asarray(w)


def _skipped(without) -> dict:
    """The preset's models left out: the GPU CNNs, plus any ``--without`` member (its preset
    weight dropped, the rest renormalised)."""
    if not without:
        return SKIPPED
    return {"models": [*SKIPPED["models"], *without],
            "reason": f"{SKIPPED['reason']}; {', '.join(without)}: left out of this benchmark (--without)"}


def _blend(data, truth, runs: dict, members: dict, out, trials: int, preset: str | None = None,
           without: list[str] = ()) -> dict:
    from moakit import metrics
    from moakit.blend import blend_predictions, blend_runs, mean_target_correlation

    names = list(members)
    dirs = [runs[members[n]][1]["run_dir"] for n in names]
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    res = blend_runs(dirs, out, names=names, methods=["slsqp", "optuna", "per_target"], n_trials=trials, data=data,
                     nested_folds=5, preset=preset, choose="nested", skipped=_skipped(without) if preset else None)
    nested = res.summary["nested"]["methods"]
    chosen = "preset" if res.method.startswith("preset") else res.method
    te = ~data.test.is_control
    test = metrics.zero_controls(np.clip(res.test, 0, 1), data.test.is_control)
    sc = scores(SimpleNamespace(oof=res.oof, test=test), data, truth)  # scores() reads .oof / .test
    corr = mean_target_correlation([runs[members[n]][0].test for n in names], data.test.is_control)
    oracle = _oracle(data, truth, [runs[members[n]][0].test for n in names])
    off = corr[~np.eye(len(names), dtype=bool)]
    fixed = {}
    if preset:  # the preset's own weights, whichever the nested score chose
        fixed_test = metrics.zero_controls(np.clip(blend_predictions(
            [runs[members[n]][0].test for n in names], res.preset_weights), 0, 1), data.test.is_control)
        fixed = {"preset_nested_oof": nested["preset"]["log_loss_treated"],
                 "preset_test": metrics.mean_log_loss(truth[te], fixed_test[te]),
                 "preset_weights": {n: round(float(w), 3) for n, w in zip(names, res.preset_weights)}}
    return {**fixed, "members": names, "method": res.method, "weights": {n: round(float(w), 3) for n, w in zip(
        names, np.asarray(res.weights).mean(axis=-1) if np.ndim(res.weights) > 1 else res.weights)},
            "nested_oof": nested[chosen]["log_loss_treated"],
            "nested_best_single": nested["best_single"]["log_loss_treated"],
            "oof": sc["oof"], "test": metrics.mean_log_loss(truth[te], test[te]), "pr_auc": sc["pr_auc"],
            "mean_corr_test": float(np.nanmean(off)), "oracle_test": oracle[0],
            "oracle_weights": {n: round(float(w), 3) for n, w in zip(names, oracle[1])},
            "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(_cpu_seconds() - cpu0, 1)}


def _short(weights: dict) -> str:
    """The non-zero weights, e.g. ``simple_nn 0.29, resnet_2heads 0.25``."""
    return ", ".join(f"{n} {w:.2f}" for n, w in weights.items() if w >= 0.005) or "-"


def _reuse_all(data, folder, jobs: list[tuple[str, str]], truth) -> dict:
    """train_all's answer for member runs that are all finished, read only (no runner.train:
    its resume check would write into a folder, and refuses a config that changed since)."""
    from moakit.blend.members import load_runs
    from moakit.runs.run import open_run

    out = {}
    for model, variant in jobs:
        run_dir = folder / f"{model}-{variant}"
        if not (run_dir.is_dir() and open_run(run_dir).is_complete):
            raise SystemExit(f"{run_dir}: not a finished run (--reuse-only trains nothing)")
        inputs = load_runs([run_dir], [f"{model}-{variant}"], data=data)
        if not (np.array_equal(inputs.train_sig_id, data.train.sig_id)
                and np.array_equal(inputs.test_sig_id, data.test.sig_id)):
            raise SystemExit(f"{run_dir}: its predictions are not in the data's row order")
        result = SimpleNamespace(oof=inputs.oof[0], test=inputs.test[0])
        out[(model, variant)] = (result, {**scores(result, data, truth), "run_dir": str(run_dir)})
        print(model, variant, out[(model, variant)][1], flush=True)
    return out


def _row_specs(args) -> list[tuple[str, str, dict, str, str | None]]:
    """(group, row name, members, out subfolder, preset) of every blend, in report order."""
    specs = [("preset", "best_lb (preset)", BEST_LB, "best_lb_preset", "best_lb"),
             ("searched", "best_lb (searched)", BEST_LB, "best_lb", None),
             ("moakit", "moakit", MOAKIT, "moakit", None)]
    specs += [("candidates", f"moakit + {n}", {**MOAKIT, n: k}, f"moakit+{n}", None) for n, k in CANDIDATES.items()]
    specs += [("controls", f"moakit + {n} (control)", {**MOAKIT, n: k}, f"moakit+{n}", None)
              for n, k in CONTROLS.items()]
    if len(CANDIDATES) > 1:
        specs.append(("both", "moakit + both", {**MOAKIT, **CANDIDATES}, "moakit+both", None))
    if args.resnet_variant and "resnet_2heads" in MOAKIT:  # both blends with that ResNet run in place
        resnet = {"resnet_2heads": ("resnet_2heads", args.resnet_variant)}
        specs += [("resnet", f"{b}, ResNet {args.resnet_variant}", {**members, **resnet},
                   f"{b}-resnet_{args.resnet_variant}", None) for b, members in (("best_lb", BEST_LB), ("moakit", MOAKIT))]
    order = {g: i for i, g in enumerate(args.rows)}
    return sorted([s for s in specs if s[0] in order], key=lambda s: order[s[0]])


def _write(args, out, runs: dict, rows: dict) -> None:
    """report.md and scores.json of the rows done so far."""
    lines = [f"## {args.data}: blends at the cpu profile (without: {args.without or 'nothing'}; Optuna "
             f"{args.trials} trials)", "", f"load (uptime): {os.getloadavg()}", "",
             "| member | OOF (treated) | test (treated) | test PR-AUC |", "|---|---|---|---|"]
    for (m, v), (_, s) in runs.items():
        lines.append(f"| {m}-{v} | {s['oof']:.5f} | {s['test']:.5f} | {s['pr_auc']:.4f} |")
    lines += ["", "| blend | method | nested OOF | nested best single | test | test PR-AUC | mean corr. | CPU s "
              "| weights (mean per model) | test, test-fitted weights (diagnostic) | those weights |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['method']} | {r['nested_oof']:.5f} | {r['nested_best_single']:.5f} "
                     f"| {r['test']:.5f} | {r['pr_auc']:.4f} | {r['mean_corr_test']:.3f} | {r['cpu_seconds']:.0f} "
                     f"| {_short(r['weights'])} | {r['oracle_test']:.5f} | {_short(r['oracle_weights'])} |")
    p = rows.get("best_lb (preset)")
    if p:
        lines += ["", f"best_lb preset's own weights (renormalised; not chosen unless the method above says preset): "
                  f"nested OOF {p['preset_nested_oof']:.5f}, test {p['preset_test']:.5f}, "
                  f"weights {_short(p['preset_weights'])}"]
    write_report(out / "report.md", lines)
    (out / "scores.json").write_text(json.dumps({"runs": {f"{m}-{v}": s for (m, v), (_, s) in runs.items()},
                                                 "blends": rows}, indent=2, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="sim6000-seed0")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--without", nargs="*", default=[], help="members left out of every blend (not trained)")
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES),
                    help="the candidates measured (default: all; '+ both' only when both are)")
    ap.add_argument("--rows", nargs="*", default=list(ROW_GROUPS), choices=list(ROW_GROUPS),
                    help="the blends computed, in this order (default: all)")
    ap.add_argument("--reuse-only", action="store_true", help="read the finished member runs; train nothing")
    ap.add_argument("--resnet-variant", default=None, help="add both blends with that ResNet run (finished)")
    ap.add_argument("--tag", default="", help="appended to the blend folder's name")
    args = ap.parse_args()
    for members in (BEST_LB, MOAKIT):
        for name in args.without:
            members.pop(name, None)
    for name in set(CANDIDATES) - set(args.candidates):
        CANDIDATES.pop(name)
    import torch

    torch.set_num_threads(1)
    from moakit.data.io import load

    data = load(data_dir(args.data))
    truth = test_truth(data)
    folder = OUT / "quality" / args.data
    jobs = list(dict.fromkeys([*MOAKIT.values(), *CANDIDATES.values(), *CONTROLS.values()]))
    runs = (_reuse_all if args.reuse_only else train_all)(data, folder, jobs, truth)
    if args.resnet_variant:  # never trained here: another run's folder, read only
        runs.update(_reuse_all(data, folder, [("resnet_2heads", args.resnet_variant)], truth))
    out = folder / ("blend-cpu" + "".join(f"-without-{n}" for n in args.without)
                    + ("" if len(args.candidates) == 2 else "".join(f"-only-{n}" for n in args.candidates))
                    + ("-reuse" if args.reuse_only else "") + (f"-{args.tag}" if args.tag else ""))
    rows = {}
    for _group, name, members, sub, preset in _row_specs(args):
        rows[name] = _blend(data, truth, runs, members, out / sub, args.trials, preset,
                            args.without if preset else ())
        print(name, rows[name], flush=True)
        _write(args, out, runs, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
