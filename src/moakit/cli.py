"""The `moakit` command line: one Typer app for every job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from moakit.progress import console

app = typer.Typer(
    name="moakit",
    help="Predict drug mechanisms of action from L1000/PRISM cell profiles "
    "(the 1st-place lish-moa solution as a toolkit).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Options shared by `train` and `run` (declared once).
ExecutorOption = Annotated[str, typer.Option("--executor", help="local or ray.")]
AddressOption = Annotated[Optional[str], typer.Option(
    "--address", help="Ray cluster address (e.g. auto, ray://head:10001); default: a local Ray instance. "
    "Only with --executor ray.")]
JobCpusOption = Annotated[float, typer.Option("--job-cpus", help="Ray: CPUs each fold task reserves.")]
JobGpusOption = Annotated[float, typer.Option("--job-gpus", help="Ray: GPUs each fold task reserves (e.g. 1 or 0.5).")]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command()
def simulate(
    out: Path = typer.Argument(..., help="Folder to create (must not exist or be empty)."),
    rows: int = typer.Option(6000, "--rows", help="Total rows (train + test); ignored with --labels-from."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same files."),
    labels_from: Optional[Path] = typer.Option(
        None, "--labels-from", help="Folder with the real lish-moa label files (train_targets_*.csv.zip, "
        "train_drug.csv.zip): simulate profiles on top of the real labels."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of rows (whole drugs) held out as test."),
    file_format: str = typer.Option("csv", "--format", help="csv or parquet."),
) -> None:
    """Write a complete, MoA-like lish-moa folder (plus answers/ with the test labels)."""
    from moakit.data.simulate import simulate as run_simulation

    try:
        path = run_simulation(out, n_rows=rows, seed=seed, labels_from=labels_from,
                              test_fraction=test_fraction, file_format=file_format)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"wrote simulated lish-moa data to [bold]{path}[/]")


@app.command()
def folds(
    data: Path = typer.Argument(..., help="lish-moa data folder."),
    out: Path = typer.Option(Path("folds.csv"), "--out", help="CSV to write: sig_id, drug_id, fold."),
    cv: str = typer.Option("old", "--cv", help="old (multilabel stratified) or drug (drug-aware)."),
    n_folds: int = typer.Option(5, "--folds", help="Number of folds."),
    seed: int = typer.Option(42, "--seed", help="Seed of the split."),
    max_replicates: int = typer.Option(18, "--max-replicates",
                                       help="drug CV: drugs with more rows than this are split row-wise."),
) -> None:
    """Assign every training row to a cross-validation fold."""
    import pandas as pd

    from moakit.artifacts import atomic_file
    from moakit.cv import assign_folds
    from moakit.data.io import DataError, load

    try:
        moa = load(data)
        fold_ids = assign_folds(moa.train, cv, n_folds, seed, max_replicates)
    except (DataError, ValueError) as exc:
        _fail(str(exc))
    frame = pd.DataFrame({"sig_id": moa.train.sig_id, "fold": fold_ids})
    if moa.train.drug_id is not None:
        frame.insert(1, "drug_id", moa.train.drug_id)
    with atomic_file(out, "w") as fh:
        frame.to_csv(fh, index=False)
    sizes = np.bincount(fold_ids, minlength=n_folds)
    console.print(f"{cv} CV, {n_folds} folds, rows per fold {sizes.tolist()} -> {out}")


@app.command()
def score(
    submission: Path = typer.Argument(..., help="Submission CSV: sig_id + the 206 scored targets."),
    answers: Path = typer.Argument(..., help="Answers CSV with the true 0/1 targets (e.g. answers/test_targets_scored.csv)."),
    features: Optional[Path] = typer.Option(None, "--features", help="test_features file, to also score treated rows only and zero control rows."),
) -> None:
    """Score a submission: mean column-wise log loss over the scored targets."""
    from moakit import metrics
    from moakit.data.io import DataError, read_answers, read_features, read_submission

    try:
        sub = read_submission(submission)
        truth = read_answers(answers, sub.sig_id, sub.names)
        is_control = np.zeros(len(sub.sig_id), bool)
        if features is not None:
            ds = read_features(features)
            order = {s: i for i, s in enumerate(ds.sig_id)}
            missing = [s for s in sub.sig_id if s not in order]
            if missing:
                raise DataError(f"{features}: no row for sig_id {missing[0]!r} of {submission}")
            is_control = ds.is_control[[order[s] for s in sub.sig_id]]
    except DataError as exc:
        _fail(str(exc))
    result = metrics.score(truth, sub.values, is_control)
    console.print(f"log loss {result['log_loss']:.6f}")
    if features is not None:
        console.print(f"log loss (treated rows) {result['log_loss_treated']:.6f}")


@app.command()
def train(
    config: str = typer.Argument(..., help="Model config: a YAML path or a shipped name (e.g. simple_nn)."),
    data: Path = typer.Option(..., "--data", help="lish-moa data folder."),
    out: Path = typer.Option(..., "--out", help="Run folder (resumes if it holds an interrupted run of the same config)."),
    profile: str = typer.Option("full", "--profile", help="full (the write-up's numbers), cpu or smoke."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Use only the first N seeds."),
    n_folds: Optional[int] = typer.Option(None, "--folds", help="Override the number of folds."),
    cv: Optional[str] = typer.Option(None, "--cv", help="Override the CV scheme: old or drug."),
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    job_cpus: JobCpusOption = 1.0,
    job_gpus: JobGpusOption = 0.0,
    quiet: QuietOption = False,
) -> None:
    """Train one model over seeds x folds; write OOF/test predictions, artifacts, metrics.json."""
    from moakit import runner
    from moakit.config import ConfigError, load_config
    from moakit.data.io import DataError, load

    try:
        cfg = load_config(config, profile=profile, seeds=seeds, folds=n_folds, cv=cv)
        exec_obj = _executor(executor, address, job_cpus, job_gpus)
        moa = load(data)
        result = runner.train(cfg, moa, out, executor=exec_obj, show_progress=not quiet)
    except (ConfigError, DataError, ValueError, ImportError) as exc:
        _fail(str(exc))
    m = result.metrics
    console.print(f"{cfg.model}: OOF log loss {m['log_loss']:.6f} (treated rows {m['log_loss_treated']:.6f}); "
                  f"prior {m['prior']['log_loss']:.6f} -> {out}/metrics.json")


def _executor(name: str, address: Optional[str], job_cpus: float = 1.0, job_gpus: float = 0.0):
    """An executor object for --executor / --address (Ray is imported only when asked for)."""
    from moakit import runner

    if name == "ray":
        return runner.make_executor("ray", address=address, num_cpus_per_job=job_cpus, num_gpus_per_job=job_gpus)
    if address or job_cpus != 1.0 or job_gpus != 0.0:
        raise ValueError("--address, --job-cpus and --job-gpus are only used with --executor ray")
    return runner.make_executor(name)


def _print_workflow(result, answers: Optional[Path] = None) -> None:
    """Per-model and blended OOF log loss (and holdout log loss when test answers exist),
    then where the submission and the report are."""
    from rich.table import Table

    from moakit import metrics
    from moakit.data.io import DataError, find_file, read_answers, read_features, read_submission

    weights = result.manifest.get("blend", {}).get("weights", {})
    holdout = None
    if answers is not None and answers.exists():
        holdout = {}
        try:
            test_ds = read_features(find_file(Path(result.manifest["data_source"]), "test_features"))
            for name in result.models:
                sub = read_submission(result.run_dir / "models" / name / "test_predictions.csv")
                truth = read_answers(answers, sub.sig_id, sub.names)
                holdout[name] = metrics.score(truth, sub.values, test_ds.is_control)["log_loss"]
            sub = read_submission(result.submission)
            holdout["blend"] = metrics.score(read_answers(answers, sub.sig_id, sub.names), sub.values,
                                             test_ds.is_control)["log_loss"]
        except (DataError, KeyError, OSError):
            holdout = None
    table = Table(title=f"moakit run: {result.run_dir}")
    table.add_column("model", no_wrap=True, min_width=24)
    table.add_column("profile")
    table.add_column("seeds×folds", justify="right")
    table.add_column("OOF loss", justify="right")
    table.add_column("weight", justify="right")
    if holdout is not None:
        table.add_column("test loss", justify="right")
    for name, res in result.models.items():
        info = result.manifest["models"][name]
        row = [name, info["profile"], f"{len(info['seeds'])} x {info['folds']}", f"{res.metrics['log_loss']:.6f}",
               f"{weights[name]:.3f}" if name in weights else "-"]
        if holdout is not None:
            row.append(f"{holdout[name]:.6f}")
        table.add_row(*row)
    prior = (result.blend_summary.get("prior") or {}).get("log_loss")
    if prior is not None:  # the per-target mean: what a model must beat
        table.add_row("[dim]prior[/]", "", "", f"[dim]{prior:.6f}[/]", "", *([""] if holdout is not None else []))
    blended = result.manifest.get("blend", {}).get("log_loss")
    row = ["[bold]blend[/]", "", "", f"[bold]{blended:.6f}[/]" if blended is not None else "-", "1.000"]
    if holdout is not None:
        row.append(f"[bold]{holdout['blend']:.6f}[/]")
    table.add_row(*row)
    console.print(table)
    console.print(f"submission: [bold]{result.submission}[/]  report: [bold]{result.report}[/]")


@app.command()
def run(
    config: str = typer.Argument(..., help="Blend config: a YAML path or a shipped name (blend_best_lb, blend_best_cv)."),
    data: Path = typer.Option(..., "--data", help="lish-moa data folder."),
    out: Path = typer.Option(..., "--out", help="Run folder (resumes an interrupted run of the same config)."),
    profile: str = typer.Option("full", "--profile", help="full (the write-up's numbers), cpu, demo or smoke: "
                                "applied to the blend config and to every model config."),
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    job_cpus: JobCpusOption = 1.0,
    job_gpus: JobGpusOption = 0.0,
    quiet: QuietOption = False,
) -> None:
    """Train every model of a blend config, blend them, write submission.csv and report/."""
    from moakit.config import ConfigError
    from moakit.data.io import DataError
    from moakit.workflow import run_workflow

    try:
        result = run_workflow(config, data, out, profile=profile, executor=_executor(executor, address, job_cpus, job_gpus),
                              show_progress=not quiet)
    except (ConfigError, DataError, ValueError, ImportError) as exc:
        _fail(str(exc))
    _print_workflow(result, Path(data) / "answers" / "test_targets_scored.csv")


@app.command()
def predict(
    run_dir: Path = typer.Option(..., "--run", help="A run folder of `moakit train` or `moakit run`, or a blend folder of `moakit blend`."),
    features: Path = typer.Option(..., "--features", help="Features file (test_features layout: .csv, .csv.zip, .parquet)."),
    out: Path = typer.Option(Path("submission.csv"), "--out", help="Submission CSV to write."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1,
                                             help="Inference batch size (default: the saved one; 2048 NN, 512 CNN)."),
) -> None:
    """Predict new rows from a run's saved artifacts (nothing is refitted); controls get 0."""
    import time

    from moakit.data.io import DataError
    from moakit.inference import InferenceError, predict_to_file

    start = time.perf_counter()
    try:
        path, frame = predict_to_file(run_dir, features, out, batch_size=batch_size)
    except (DataError, InferenceError, ValueError) as exc:
        _fail(str(exc))
    seconds = time.perf_counter() - start
    console.print(f"{len(frame)} rows x {frame.shape[1] - 1} targets -> [bold]{path}[/] "
                  f"({seconds:.1f} s, {len(frame) / max(seconds, 1e-9):.0f} rows/s)")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-run"), "--out", help="Folder for the demo's data and run."),
    rows: int = typer.Option(3000, "--rows", help="Rows of simulated data."),
    config: str = typer.Option("blend_best_lb", "--config", help="Blend config to run."),
    profile: str = typer.Option("demo", "--profile", help="Profile of the blend and model configs."),
    quiet: QuietOption = False,
) -> None:
    """Simulate data, run the 7-model best-LB blend (demo profile), print the scores.

    Writes OUT/data (the simulated lish-moa folder), OUT/models, OUT/blend,
    OUT/submission.csv and OUT/report/index.html; a rerun resumes."""
    from moakit.config import ConfigError
    from moakit.data.io import DataError
    from moakit.data.simulate import simulate as run_simulation
    from moakit.workflow import run_workflow

    data_dir = out / "data"
    if not (data_dir / "train_features.csv").exists():
        run_simulation(data_dir, n_rows=rows, seed=0)
        console.print(f"simulated {rows} rows -> {data_dir}")
    try:
        result = run_workflow(config, data_dir, out, profile=profile, show_progress=not quiet)
    except (ConfigError, DataError, ValueError, ImportError) as exc:
        _fail(str(exc))
    _print_workflow(result, data_dir / "answers" / "test_targets_scored.csv")


@app.command()
def blend(
    runs: list[Path] = typer.Argument(..., help="Single-model run folders (of `moakit train`, or RUN/models/<name>)."),
    out: Path = typer.Option(..., "--out", help="Blend folder to write (blend.json, submission.csv, heatmaps ...)."),
    method: Optional[list[str]] = typer.Option(None, "--method", help="Weight search: slsqp and/or optuna "
                                               "(repeat the option; default both)."),
    trials: int = typer.Option(300, "--trials", min=1, help="Optuna trials."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (sqlite:///blend.db, "
                                          "postgresql://...): keep / resume / share the study."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Use fixed write-up weights (best_cv: Table 3) "
                                         "instead of the searched ones (searches still run for comparison "
                                         "unless --method none)."),
    data: Optional[Path] = typer.Option(None, "--data", help="lish-moa data folder with the true targets "
                                        "(default: the one recorded in the runs' manifest.json)."),
    names: Optional[list[str]] = typer.Option(None, "--name", help="Model names, one per run (default: folder names)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Optuna sampler."),
) -> None:
    """Blend single-model runs: search OOF-optimal weights, write the blended submission,
    correlation heatmaps and blend.json."""
    from rich.table import Table

    from moakit.blend import BlendError, blend_runs
    from moakit.data.io import DataError, load

    methods = [m.lower() for m in (method or ["slsqp", "optuna"]) if m.lower() != "none"]
    try:
        moa = load(data) if data is not None else None
        res = blend_runs(runs, out, names=names or None, methods=methods, n_trials=trials, storage=storage,
                         preset=preset, data=moa, seed=seed)
    except (BlendError, DataError, ValueError, OSError) as exc:
        _fail(str(exc))
    summary = res.summary
    table = Table(title=f"blend -> {out}")
    table.add_column("model")
    table.add_column("OOF log loss", justify="right")
    table.add_column("treated rows", justify="right")
    for m in summary["methods"]:
        table.add_column(f"{m} weight", justify="right")
    if summary.get("preset"):
        table.add_column(f"preset {summary['preset']['name']}", justify="right")
    for name in res.names:
        sc = summary["models"][name]
        row = [name, f"{sc['log_loss']:.6f}", f"{sc['log_loss_treated']:.6f}"]
        row += [f"{s['weights'][name]:.3f}" for s in summary["methods"].values()]
        if summary.get("preset"):
            row.append(f"{summary['preset']['weights'][name]:.3f}")
        table.add_row(*row)
    row = ["[bold]blend[/]", "", ""] + [f"{s['log_loss']:.6f}" for s in summary["methods"].values()]
    if summary.get("preset"):
        row.append(f"{summary['preset']['log_loss']:.6f}")
    table.add_row(*row)
    console.print(table)
    console.print(f"chosen: [bold]{res.method}[/], blended OOF log loss [bold]{res.log_loss:.6f}[/] "
                  f"(treated rows {res.log_loss_treated:.6f}); best single model {summary['best_single']} "
                  f"{summary['models'][summary['best_single']]['log_loss']:.6f}")
    console.print(f"submission: [bold]{out / 'submission.csv'}[/]")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run folder of `moakit train` or `moakit run`."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default RUN/report)."),
) -> None:
    """Write an HTML report (index.html + PNGs) of a single-model or multi-model run."""
    from moakit.report import ReportError, write_report

    try:
        path = write_report(run_dir, out)
    except (ReportError, ValueError, OSError) as exc:
        _fail(str(exc))
    console.print(f"report: [bold]{path}[/]")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
