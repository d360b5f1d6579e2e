"""Commands that say how far a run can be trusted: ``report``, ``evaluate`` (per-MoA trust)
and ``explain`` (which columns drive a target)."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from moakit import choices
from moakit.cli.common import (check_out, device_name, fail, markup_path, print_json, print_log, print_result,
                               stdout_console, usage_error)
from moakit.cli.options import (DEFAULT_DEVICE, DeviceOption, ExplainMethod, JsonOption, QuietOption,
                                data_option, file_option, run_dir_argument, seed_option)
from moakit.runs import layout


def report(
    run_dir: Annotated[Path, run_dir_argument("A run folder of `moakit train` or `moakit run`.")],
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default RUN/report)."),
    data: Annotated[Optional[Path], data_option(
        "The run's lish-moa data folder, if it moved (default: the one its manifest records); gives per-fold, "
        "per-target and test scores.")] = None,
) -> None:
    """Write an HTML report (index.html + PNGs + report.json) of a single-model or multi-model run."""
    from moakit.report import ReportError, write_report

    check_out(out if out is not None else layout.report_dir(run_dir), "report")
    try:
        from moakit.validate import check_finished

        check_finished(run_dir, "report")  # running, interrupted or failed: say which
        path = write_report(run_dir, out, data=data)
    except (ReportError, ValueError, OSError) as exc:
        fail(str(exc))
    print_result(f"report: {markup_path(path)}")


def evaluate(
    run_dir: Annotated[Path, run_dir_argument(
        "A run folder of `moakit train` or `moakit run`, or a blend folder of `moakit blend` (its blended OOF / "
        "test predictions are evaluated).")],
    data: Annotated[Optional[Path], data_option(
        "The run's data folder (default: the one its manifest records); its answers/ (test targets) give the test "
        "rows.")] = None,
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the per-target table to this CSV file."),
    shuffled_baseline: bool = typer.Option(False, "--shuffled-baseline",
                                           help="Train the label-shuffled baseline first (the same config(s) on the "
                                           "same folds, training labels permuted; whole drugs under the drug-aware "
                                           "CV), stored in RUN/shuffled/ and reused. Without it, a baseline already "
                                           "there is used."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Permutation seeds of the shuffled baseline."),
    device: DeviceOption = DEFAULT_DEVICE,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Per-MoA trust: per target, on honest rows (OOF; test answers), PR-AUC, ROC-AUC, log loss,
    Brier, calibration error beside the prior and a label-shuffled baseline; writes RUN/evaluation/."""
    from moakit.blend import BlendError
    from moakit.data.io import DataError
    from moakit.evaluate import EvaluateError, evaluate as run_evaluation, write_csv

    if out is not None and out.is_dir():
        usage_error(f"{out} is a folder; give the CSV file to write", "--out", "evaluate")
    try:
        result = run_evaluation(run_dir, data=data, shuffled_baseline=seeds if shuffled_baseline else 0,
                                show_progress=not quiet, device=device_name(device))
        if out is not None:
            write_csv(result, out)
    except (EvaluateError, BlendError, DataError, ValueError, OSError) as exc:
        fail(str(exc))
    files = {"evaluation": str(result.out_dir / layout.EVALUATION), "csv": str(result.out_dir / layout.EVALUATION_CSV),
             "plot": str(result.out_dir / layout.EVALUATION_PNG), **({"out": str(out)} if out is not None else {})}
    if as_json:
        from moakit.evaluate import table_records

        print_json({**result.summary, "files": files,
               "per_target": {k: table_records(t) for k, t in result.tables.items()}})
        return
    _print_evaluation(result)
    stdout_console().print(f"files: {markup_path(files['evaluation'])}, {markup_path(files['csv'])}, "
                           f"{markup_path(files['plot'])}"
                    + (f", {markup_path(out)}" if out is not None else ""))


def _print_evaluation(result) -> None:
    """One table per set of honest rows (targets with positives, best PR-AUC first), then its summary."""
    from rich.table import Table

    stdout = stdout_console()
    for key, t in result.tables.items():
        s = result.summary["sets"][key]
        base = "shuffled_pr_auc_mean" in t
        table = Table(title=f"{key}: {s['rows']} treated rows; prior {s['prior']}")
        for col in ("target", "pos", "PR-AUC", *(["shuffled"] if base else []), "prior PR-AUC", "ROC-AUC",
                    "log loss", "prior loss", "Brier", "ECE", *(["drug PR-AUC"] if "compound_pr_auc" in t else []),
                    "trust"):
            table.add_column(col, justify="left" if col in ("target", "trust") else "right", no_wrap=col == "target")
        for target, r in t[t["positives"] > 0].iterrows():
            row = [escape(str(target)), str(int(r["positives"])), f"{r['pr_auc']:.3f}"]
            row += [f"{r['shuffled_pr_auc_mean']:.3f}±{r['shuffled_pr_auc_sd']:.3f}"] if base else []
            row += [f"{r['prior_pr_auc']:.3f}", f"{r['roc_auc']:.3f}", f"{r['log_loss']:.5f}",
                    f"{r['prior_log_loss']:.5f}", f"{r['brier']:.5f}", f"{r['ece']:.4f}"]
            row += [f"{r['compound_pr_auc']:.3f}"] if "compound_pr_auc" in t else []
            row.append("[red]no better than shuffled[/]" if r["trust"] == "no better than shuffled" else r["trust"])
            table.add_row(*row)
        stdout.print(table)
        line = (f"{key}: mean PR-AUC {s['mean_pr_auc']:.4f} (prior {s['mean_prior_pr_auc']:.4f}"
                + (f", shuffled {s['mean_shuffled_pr_auc']:.4f}" if base else "") + f") over "
                f"{s['targets_with_positives']} targets with positives; log loss {s['log_loss']:.6f} vs prior "
                f"{s['prior_log_loss']:.6f}; beats the prior on {s['beats_prior']} of {s['targets']} targets")
        if base and s.get("mean_roc_auc") is not None and s.get("mean_shuffled_roc_auc") is not None:
            line += (f"; mean ROC-AUC {s['mean_roc_auc']:.4f} (shuffled {s['mean_shuffled_roc_auc']:.4f}); shuffled "
                     f"log loss {s['shuffled_log_loss']:.6f}")
        if base:
            line += (f"; beats the shuffled baseline on {s['beats_shuffled']}, no better on "
                     f"{s['no_better_than_shuffled']}")
        stdout.print(line)
        if s["note"]:
            stdout.print(f"  note: {s['note']}")
    if not result.summary["shuffled"]["seeds"]:
        stdout.print("no shuffled baseline yet: run with --shuffled-baseline to train it (flags need it)")
    stdout.print(f"rule: {result.summary['rule']}; calibration error: {result.summary['calibration_bins']}")


def explain(
    run_dir: Annotated[Path, run_dir_argument("A run folder of `moakit train` or `moakit run`, or a blend folder.")],
    target: str = typer.Option(..., "--target", help="The scored target (MoA) to explain."),
    features: Annotated[Optional[Path], file_option(
        "--features", "Rows to explain: a features file (labels: --labels).")] = None,
    labels: Annotated[Optional[Path], file_option(
        "--labels", "With --features: their 0/1 targets (held-out rows only).")] = None,
    data: Annotated[Optional[Path], data_option(
        "A data folder: its test rows with answers/ (unseen drugs), else its training rows; baseline from its "
        "controls (default: the run's data).")] = None,
    method: ExplainMethod = typer.Option(ExplainMethod(choices.EXPLAIN_METHODS[0]), "--method", help="ig: Integrated Gradients (networks); "
                                         "permutation: any model, on held-out labelled rows."),
    top: int = typer.Option(50, "--top", min=1, help="Columns listed."),
    rows: int = typer.Option(64, "--rows", min=1, help="ig: at most this many rows attributed (the positives)."),
    steps: int = typer.Option(32, "--steps", min=2, help="ig: integration steps."),
    repeats: int = typer.Option(2, "--repeats", min=1, help="permutation: shuffles per column."),
    negatives: int = typer.Option(200, "--negatives", min=0, help="permutation and deletion curve: negative rows "
                                  "sampled beside every positive (0: all rows)."),
    seed: Annotated[int, seed_option("Seed of the row samples and shuffles.")] = 0,
    save: bool = typer.Option(True, "--save/--no-save", help="Write RUN/explain/<target>.<method>.json."),
    as_json: JsonOption = False,
) -> None:
    """Which raw columns (genes, cell lines, cp_time / cp_dose) drive a run's call of one target."""
    from moakit import explain as ex
    from moakit.data.io import DataError
    from moakit.inference import InferenceError

    if features is not None and data is not None:
        usage_error("give --features or --data, not both", "--features / --data", "explain")
    if labels is not None and features is None:
        usage_error("--labels goes with --features", "--labels", "explain")
    try:
        run = ex.open_run(run_dir)
        ex.resolve_target(run, target)
        inputs = ex.load_inputs(run, data=data, features=features, labels=labels)
        result = ex.explain(run, target, inputs.ds, inputs.y, inputs.reference, method=method.value, top=top,
                            max_rows=rows, n_steps=steps, n_repeats=repeats, seed=seed,
                            negatives=negatives or None, gene_info=inputs.gene_info, rows_note=inputs.note)
        path = ex.save(result, run_dir) if save else None
    except (ex.ExplainError, DataError, InferenceError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        print_json({**result, "saved": str(path) if path else None})
        return
    for line in ex.summary_lines(result, top):
        print_result(escape(line))
    if path:
        print_log(f"saved: {markup_path(path)}")
