"""``moakit blend``: blend single-model runs and print the weights and scores."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from moakit import choices
from moakit.cli.common import check_out, fail, markup_path, print_json, stdout_console, usage_error
from moakit.cli.options import BlendMethod, CalibrationMethod, JsonOption, data_option, seed_option
from moakit.runs import layout


def blend(
    runs: list[Path] = typer.Argument(..., exists=True, file_okay=False,
                                      help="Single-model run folders (of `moakit train`, or RUN/models/<name>)."),
    out: Path = typer.Option(..., "--out", help="Blend folder to write (blend.json, submission.csv, heatmaps ...)."),
    method: Optional[list[BlendMethod]] = typer.Option(None, "--method", help="Weight search (repeat the option; "
                                                       "default: slsqp, optuna and per_target, weights per model and "
                                                       "target; the method with the best nested score is kept; none: "
                                                       "only --preset)."),
    trials: int = typer.Option(300, "--trials", min=1, help="Optuna trials."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (sqlite:///blend.db, "
                                          "postgresql://...): keep / resume / share the study."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Use a named set of fixed weights (e.g. best_cv: "
                                         "the write-up's Table 3) instead of the searched ones (searches still "
                                         "run for comparison unless --method none)."),
    data: Annotated[Optional[Path], data_option(
        "lish-moa data folder with the true targets (default: the one recorded in the runs' manifest.json).")] = None,
    names: Optional[list[str]] = typer.Option(None, "--name", help="Model names, one per run (default: folder names)."),
    seed: Annotated[int, seed_option("Seed of the Optuna sampler.")] = 0,
    calibrate: Optional[CalibrationMethod] = typer.Option(
        None, "--calibrate", help="Per-target calibration of the blend (platt: logistic on the logit; isotonic), "
        "fitted on the OOF predictions and kept only if it lowers the nested log loss (blend.json records the "
        "decision and both scores). Default: none."),
    as_json: JsonOption = False,
) -> None:
    """Blend single-model runs: search OOF-optimal weights, write the blended submission,
    correlation heatmaps and blend.json."""
    from rich.table import Table

    from moakit.blend import BlendError, apply_preset, blend_runs
    from moakit.data.io import DataError, load

    check_out(out, "blend")
    chosen = [m.value for m in method] if method else list(choices.DEFAULT_BLEND_METHODS)
    methods = [m for m in chosen if m != BlendMethod.none.value]
    if not methods and preset is None:
        usage_error("--method none needs a --preset", "--method", "blend")
    if names and len(names) != len(runs):
        usage_error(f"{len(names)} --name value(s) for {len(runs)} run(s)", "--name", "blend")
    if preset is not None:
        try:
            apply_preset(names or [Path(r).name for r in runs], preset)
        except BlendError as exc:
            usage_error(str(exc), "--preset", "blend")
    try:
        from moakit.validate import check_finished

        for run in runs:
            check_finished(run, "blend")  # running, interrupted or failed: say which
        moa = load(data) if data is not None else None
        res = blend_runs(runs, out, names=names or None, methods=methods, n_trials=trials, storage=storage,
                         preset=preset, data=moa, seed=seed, calibrate=calibrate.value if calibrate else None)
    except (BlendError, DataError, ValueError, OSError) as exc:
        fail(str(exc))
    summary = res.summary
    if as_json:
        print_json({"out": str(out), "submission": str(out / layout.BLEND_TEST), "method": res.method,
               "weights": summary["weights"], "log_loss": res.log_loss, "log_loss_treated": res.log_loss_treated,
               "best_single": summary["best_single"], "nested": summary.get("nested"),
               "prior_oof_log_loss": (summary.get("prior_oof") or {}).get("log_loss"),
               "prior_log_loss": (summary.get("prior") or {}).get("log_loss"),
               "calibration": summary.get("calibration"),
               "models": {n: {"log_loss": summary["models"][n]["log_loss"],
                              "log_loss_treated": summary["models"][n]["log_loss_treated"]} for n in res.names}})
        return
    table = Table(title=f"blend -> {markup_path(out)}")
    table.add_column("model", no_wrap=True)
    table.add_column("OOF log loss", justify="right")
    table.add_column("treated rows", justify="right")
    for m in summary["methods"]:
        table.add_column(f"{m} weight", justify="right")
    if summary.get("preset"):
        table.add_column(f"preset {summary['preset']['name']}", justify="right")
    for name in res.names:
        sc = summary["models"][name]
        row = [markup_path(name), f"{sc['log_loss']:.6f}", f"{sc['log_loss_treated']:.6f}"]
        row += [f"{s['weights'][name]:.3f}" for s in summary["methods"].values()]
        if summary.get("preset"):
            row.append(f"{summary['preset']['weights'][name]:.3f}")
        table.add_row(*row)
    row = ["[bold]blend[/]", "", ""] + [f"{s['log_loss']:.6f}" for s in summary["methods"].values()]
    if summary.get("preset"):
        row.append(f"{summary['preset']['log_loss']:.6f}")
    table.add_row(*row)
    stdout = stdout_console()
    stdout.print(table)
    stdout.print(f"chosen: [bold]{res.method}[/], blended OOF log loss [bold]{res.log_loss:.6f}[/] "
                 f"(treated rows {res.log_loss_treated:.6f}); best single model {markup_path(summary['best_single'])} "
                 f"{summary['models'][summary['best_single']]['log_loss']:.6f}")
    _print_nested(stdout, summary.get("nested"))
    cal = summary.get("calibration")
    if cal:
        stdout.print(f"calibration {cal['method']}: nested log loss {cal['nested_log_loss']['on']:.6f} calibrated vs "
                     f"{cal['nested_log_loss']['off']:.6f} not: {'kept' if cal['kept'] else 'not kept'}")
    if summary.get("prior_oof"):
        stdout.print(f"per-target prior out of fold (the models' own folds, blended): "
                     f"{summary['prior_oof']['log_loss']:.6f}; the blend's OOF must beat it")
    stdout.print(f"submission: {markup_path(out / layout.BLEND_TEST)}")


def _print_nested(stdout, nested: dict | None) -> None:
    """The nested (honest) blend scores: weights searched on other rows than they are scored on."""
    if not nested:
        return
    parts = ", ".join(f"{m} {s['log_loss']:.6f}" for m, s in nested["methods"].items())
    stdout.print(f"nested evaluation ({nested['n_folds']} parts; weights never scored on the rows they were "
                 f"searched on): {parts}")
    if "beats_best_single" in nested:
        verdict = ("beats" if nested["beats_best_single"] else "does NOT beat")
        stdout.print(f"the weight search ({nested['best_search']}) {verdict} the best single model under nested "
                     f"evaluation ({nested['gain_vs_best_single']:+.2%})")
