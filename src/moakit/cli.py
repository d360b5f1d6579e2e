"""The `moakit` command line: one Typer app for every job."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

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
    executor: str = typer.Option("local", "--executor", help="local or ray."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train one model over seeds x folds; write OOF/test predictions, artifacts, metrics.json."""
    from moakit import runner
    from moakit.config import ConfigError, load_config
    from moakit.data.io import DataError, load

    try:
        cfg = load_config(config, profile=profile, seeds=seeds, folds=n_folds, cv=cv)
        moa = load(data)
        result = runner.train(cfg, moa, out, executor=executor, show_progress=not quiet)
    except (ConfigError, DataError, ValueError) as exc:
        _fail(str(exc))
    m = result.metrics
    console.print(f"{cfg.model}: OOF log loss {m['log_loss']:.6f} (treated rows {m['log_loss_treated']:.6f}); "
                  f"prior {m['prior']['log_loss']:.6f} -> {out}/metrics.json")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-run"), "--out", help="Folder for the demo's data and run."),
    rows: int = typer.Option(3000, "--rows", help="Rows of simulated data."),
) -> None:
    """Simulate embedded data, assign folds and score the per-target prior baseline."""
    from moakit import metrics
    from moakit.cv import assign_folds
    from moakit.data.io import load
    from moakit.data.simulate import simulate as run_simulation

    data_dir = out / "data"
    if not (data_dir / "train_features.csv").exists():
        run_simulation(data_dir, n_rows=rows, seed=0)
    moa = load(data_dir)
    fold_ids = assign_folds(moa.train, "old", 5, 42)
    oof = np.zeros_like(moa.train.scored)
    for k in range(5):
        tr = fold_ids != k
        oof[~tr] = metrics.prior_predictions(moa.train.scored[tr], moa.train.is_control[tr], int((~tr).sum()))
    result = metrics.score(moa.train.scored, oof, moa.train.is_control)
    console.print(f"per-target prior, 5-fold OOF log loss: {result['log_loss']:.6f} "
                  f"(treated rows {result['log_loss_treated']:.6f})")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
