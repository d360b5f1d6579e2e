"""The `moakit` command line: one Typer app for every job.

Conventions: results (tables, scores, paths written) go to stdout, progress and logs to
stderr; ``--json`` prints a command's results as one JSON object instead. Exit code 0 on
success, 1 when the work failed (bad data, a failed training, an unreadable file), 2 for a
usage error (an unknown option or choice, a missing argument, a config or option value that
cannot be used). Handled errors print one line, no traceback.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

import moakit
from moakit.progress import console  # stderr: progress and logs

app = typer.Typer(
    name="moakit",
    help="Predict drug mechanisms of action from L1000/PRISM cell profiles "
    "(the 1st-place lish-moa solution as a toolkit). Results go to stdout, progress to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# --------------------------------------------------------------------------- choices


class Profile(str, Enum):
    """The profiles every shipped config has (a config may define more: use the Python API)."""

    full = "full"
    cpu = "cpu"
    demo = "demo"
    smoke = "smoke"


class CVScheme(str, Enum):
    old = "old"
    drug = "drug"


class SelectionPolicy(str, Enum):
    holdout = "holdout"
    last = "last"
    oof = "oof"


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class FileFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


class BlendMethod(str, Enum):
    slsqp = "slsqp"
    optuna = "optuna"
    per_target = "per_target"
    none = "none"


# Options shared by several commands (declared once).
ExecutorOption = Annotated[ExecutorName, typer.Option("--executor", help="Where fold jobs run.")]
AddressOption = Annotated[Optional[str], typer.Option(
    "--address", help="Ray cluster address (e.g. auto, ray://head:10001); default: a local Ray instance. "
    "Only with --executor ray.")]
JobCpusOption = Annotated[float, typer.Option("--job-cpus", help="Ray: CPUs each fold task reserves.")]
JobGpusOption = Annotated[float, typer.Option("--job-gpus", help="Ray: GPUs each fold task reserves (e.g. 1 or 0.5).")]
DeviceOption = Annotated[Device, typer.Option(
    "--device", help="Where the networks train: auto (as each config says; by default a CUDA GPU when one is "
    "available), cpu, or cuda (an error when torch sees no GPU). Not part of the run's identity: a run resumes "
    "on another device.")]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the results as one JSON object on stdout.")]
TrustPicklesOption = Annotated[bool, typer.Option(
    "--trust-pickles", help="Load the pickled artifacts of run folders made by older moakit versions (a pickle can "
    "run any code: only for run folders from a source you trust). Without it they are refused.")]


# --------------------------------------------------------------------------- output


def _stdout() -> Console:
    """Results console: stdout; never wraps long lines (paths) when it is not a terminal."""
    return Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 10_000)


def _result(text: str) -> None:
    _stdout().print(text)


def _json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _log(text: str) -> None:
    console.print(text, soft_wrap=True, highlight=False)


def _fail(message: str) -> NoReturn:
    """A runtime failure: one line on stderr, exit 1."""
    console.print(f"[bold red]error:[/] {escape(str(message))}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=1)


def _usage(message: str, param: str, command: str) -> NoReturn:
    """A usage error found by moakit (a config or option value it cannot use): one unwrapped
    line on stderr and a pointer to --help, exit 2 (click's own usage errors exit 2 too)."""
    console.print(f"[bold red]error:[/] invalid value for {param}: {escape(str(message))}", soft_wrap=True,
                  highlight=False)
    console.print(f"Try 'moakit {command} --help' for help.", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def _trust(trust_pickles: bool):
    """The command's context: old pickled artifacts loaded only with --trust-pickles."""
    from moakit.artifacts import trusting_pickles

    return trusting_pickles(trust_pickles)


def _p(path: Path | str) -> str:
    return escape(str(path))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moakit {moakit.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """(the app's options; the help text is the app's)"""


# --------------------------------------------------------------------------- commands


@app.command()
def simulate(
    out: Path = typer.Argument(..., help="Folder to create (must not exist or be empty)."),
    rows: int = typer.Option(6000, "--rows", min=100, help="Total rows (train + test); ignored with --labels-from."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same files."),
    labels_from: Optional[Path] = typer.Option(
        None, "--labels-from", exists=True, file_okay=False,
        help="Folder with the real lish-moa label files (train_targets_*.csv.zip, train_drug.csv.zip): "
        "simulate profiles on top of the real labels."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", min=0.0, max=1.0,
                                        help="Share of rows (whole drugs) held out as test."),
    file_format: FileFormat = typer.Option(FileFormat.csv, "--format", help="File format."),
) -> None:
    """Write a complete, MoA-like lish-moa folder (plus answers/ with the test labels)."""
    from moakit.data.simulate import simulate as run_simulation

    try:
        path = run_simulation(out, n_rows=rows, seed=seed, labels_from=labels_from,
                              test_fraction=test_fraction, file_format=file_format.value)
    except (FileExistsError, FileNotFoundError, ValueError, OSError) as exc:
        _fail(str(exc))
    _result(f"wrote simulated lish-moa data to {_p(path)}")


@app.command()
def folds(
    data: Path = typer.Argument(..., exists=True, file_okay=False, help="lish-moa data folder."),
    out: Path = typer.Option(Path("folds.csv"), "--out", help="CSV to write: sig_id, drug_id, fold."),
    cv: CVScheme = typer.Option(CVScheme.old, "--cv", help="old (multilabel stratified) or drug (drug-aware)."),
    n_folds: int = typer.Option(5, "--folds", min=2, help="Number of folds."),
    seed: int = typer.Option(42, "--seed", help="Seed of the split."),
    max_replicates: int = typer.Option(18, "--max-replicates", min=1,
                                       help="drug CV: drugs with more rows than this are split row-wise."),
) -> None:
    """Assign every training row to a cross-validation fold."""
    import numpy as np
    import pandas as pd

    from moakit.artifacts import atomic_file
    from moakit.cv import assign_folds
    from moakit.data.io import DataError, load

    try:
        moa = load(data)
        fold_ids = assign_folds(moa.train, cv.value, n_folds, seed, max_replicates)
        frame = pd.DataFrame({"sig_id": moa.train.sig_id, "fold": fold_ids})
        if moa.train.drug_id is not None:
            frame.insert(1, "drug_id", moa.train.drug_id)
        with atomic_file(out, "w") as fh:
            frame.to_csv(fh, index=False)
    except (DataError, ValueError, OSError) as exc:
        _fail(str(exc))
    sizes = np.bincount(fold_ids, minlength=n_folds)
    _result(f"{cv.value} CV, {n_folds} folds, rows per fold {sizes.tolist()} -> {_p(out)}")


@app.command()
def score(
    submission: Path = typer.Argument(..., exists=True, dir_okay=False,
                                      help="Submission CSV: sig_id + the 206 scored targets."),
    answers: Path = typer.Argument(..., exists=True, dir_okay=False,
                                   help="Answers CSV with the true 0/1 targets (e.g. answers/test_targets_scored.csv)."),
    features: Optional[Path] = typer.Option(None, "--features", exists=True, dir_okay=False,
                                            help="test_features file, to also score treated rows only and zero "
                                            "control rows."),
    as_json: JsonOption = False,
) -> None:
    """Score a submission: mean column-wise log loss over the scored targets."""
    import numpy as np

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
        result = metrics.score(truth, sub.values, is_control)
    except (DataError, ValueError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        out = {"submission": str(submission), "answers": str(answers), "rows": len(sub.sig_id),
               "targets": len(sub.names), "log_loss": result["log_loss"]}
        if features is not None:
            out["log_loss_treated"] = result["log_loss_treated"]
        _json(out)
        return
    _result(f"log loss {result['log_loss']:.6f}")
    if features is not None:
        _result(f"log loss (treated rows) {result['log_loss_treated']:.6f}")


def _executor(name: ExecutorName, address: Optional[str], job_cpus: float, job_gpus: float, command: str):
    """An executor object for --executor / --address (Ray is imported only when asked for)."""
    from moakit import runner

    if name is ExecutorName.ray:
        try:
            return runner.make_executor("ray", address=address, num_cpus_per_job=job_cpus, num_gpus_per_job=job_gpus)
        except ImportError as exc:
            _fail(str(exc))
    if address or job_cpus != 1.0 or job_gpus != 0.0:
        _usage("--address, --job-cpus and --job-gpus are only used with --executor ray", "--executor", command)
    return runner.make_executor(name.value)


@app.command()
def train(
    config: str = typer.Argument(..., help="Model config: a YAML path or a shipped name (e.g. simple_nn)."),
    data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="lish-moa data folder."),
    out: Path = typer.Option(..., "--out", help="Run folder (resumes if it holds an interrupted run of the same config)."),
    profile: Profile = typer.Option(Profile.full, "--profile", help="full: the write-up's numbers; cpu: 2 CPU "
                                    "cores; demo / smoke: seconds on small data."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Use only the first N seeds."),
    n_folds: Optional[int] = typer.Option(None, "--folds", min=2, help="Override the number of folds."),
    cv: Optional[CVScheme] = typer.Option(None, "--cv", help="Override the CV scheme."),
    selection: Optional[SelectionPolicy] = typer.Option(
        None, "--selection", help="Which rows choose each fold's epoch: holdout (default; part of the training "
        "folds), last (the last epoch), oof (the fold itself, as the winners did: optimistic OOF)."),
    executor: ExecutorOption = ExecutorName.local,
    address: AddressOption = None,
    job_cpus: JobCpusOption = 1.0,
    job_gpus: JobGpusOption = 0.0,
    device: DeviceOption = Device.auto,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    trust_pickles: TrustPicklesOption = False,
) -> None:
    """Train one model over seeds x folds; write OOF/test predictions, artifacts, metrics.json."""
    from moakit import runner
    from moakit.config import ConfigError, load_config
    from moakit.data.io import DataError, load

    try:
        cfg = load_config(config, profile=profile.value, seeds=seeds, folds=n_folds, cv=cv.value if cv else None,
                          selection=selection.value if selection else None)
        runner.build_model(cfg)  # unknown model or invalid params: a config problem
    except (ConfigError, ValueError) as exc:
        _usage(str(exc), "CONFIG", "train")
    _check_out(out, "train")
    exec_obj = _executor(executor, address, job_cpus, job_gpus, "train")
    try:
        moa = load(data)
        from moakit.workflow import check_models

        check_models({config: cfg}, moa)  # the whole config (feature blocks too) before any work
        with _trust(trust_pickles):
            result = runner.train(cfg, moa, out, executor=exec_obj, show_progress=not quiet,
                                  device=_device(device))
    except (ConfigError, DataError, ValueError, ImportError, OSError) as exc:
        _fail(str(exc))
    m = result.metrics
    if as_json:
        _json({"run_dir": str(out), "model": cfg.model, "profile": cfg.profile, "seeds": cfg.seeds,
               "folds": cfg.cv.n_folds, "cv": cfg.cv.scheme, "selection": m.get("selection"), "log_loss": m["log_loss"],
               "log_loss_treated": m["log_loss_treated"], "prior_log_loss": m["prior"]["log_loss"],
               "metrics": str(out / "metrics.json"), "oof_predictions": str(out / "oof_predictions.csv"),
               "test_predictions": str(out / "test_predictions.csv")})
        return
    _result(f"{cfg.model}: OOF log loss {m['log_loss']:.6f} (treated rows {m['log_loss_treated']:.6f}); "
            f"prior {m['prior']['log_loss']:.6f} -> {_p(out / 'metrics.json')}")
    _result(f"test predictions: {_p(out / 'test_predictions.csv')}")


def _workflow_summary(result, answers: Optional[Path] = None) -> dict:
    """Per-model and blended OOF log loss (and holdout log loss when test answers exist)."""
    from moakit import metrics
    from moakit.data.io import DataError, find_file, read_answers, read_features, read_submission

    weights = result.manifest.get("blend", {}).get("weights", {})
    holdout = None
    if answers is not None and answers.exists():
        holdout = {}
        try:
            from moakit.artifacts import resolve_recorded

            source = resolve_recorded(result.manifest["data_source"], result.run_dir)
            test_ds = read_features(find_file(Path(source), "test_features"))
            for name in result.models:
                sub = read_submission(result.run_dir / "models" / name / "test_predictions.csv")
                truth = read_answers(answers, sub.sig_id, sub.names)
                holdout[name] = metrics.score(truth, sub.values, test_ds.is_control)["log_loss"]
            sub = read_submission(result.submission)
            holdout["blend"] = metrics.score(read_answers(answers, sub.sig_id, sub.names), sub.values,
                                             test_ds.is_control)["log_loss"]
        except (DataError, KeyError, OSError):
            holdout = None
    models = {}
    for name, res in result.models.items():
        info = result.manifest["models"][name]
        models[name] = {"model": info["model"], "profile": info["profile"], "seeds": len(info["seeds"]),
                        "folds": info["folds"], "oof_log_loss": res.metrics["log_loss"],
                        "weight": weights.get(name)}
        if holdout is not None:
            models[name]["test_log_loss"] = holdout[name]
    blend = {"oof_log_loss": result.manifest.get("blend", {}).get("log_loss"),
             "method": result.manifest.get("blend", {}).get("method")}
    if result.blend_summary.get("nested"):
        blend["nested"] = result.blend_summary["nested"]
    if result.blend_summary.get("preset"):  # a preset blend still reports the searched weights
        blend["searched"] = {m: {"weights": s["weights"], "oof_log_loss": s["log_loss"]}
                             for m, s in (result.blend_summary.get("methods") or {}).items()}
    if holdout is not None:
        blend["test_log_loss"] = holdout["blend"]
    return {"run_dir": str(result.run_dir), "submission": str(result.submission),
            "report": str(result.report) if result.report else None, "models": models, "blend": blend,
            "prior_oof_log_loss": (result.blend_summary.get("prior") or {}).get("log_loss")}


def _print_workflow(summary: dict) -> None:
    from rich.table import Table

    holdout = any("test_log_loss" in m for m in summary["models"].values())
    table = Table(title=f"moakit run: {_p(summary['run_dir'])}")
    table.add_column("model", no_wrap=True, min_width=24)
    table.add_column("profile")
    table.add_column("seeds×folds", justify="right")
    table.add_column("OOF loss", justify="right")
    table.add_column("weight", justify="right")
    searched = summary["blend"].get("searched") or {}
    for method in searched:
        table.add_column(f"{method} weight", justify="right")
    if holdout:
        table.add_column("test loss", justify="right")
    for name, m in summary["models"].items():
        row = [_p(name), m["profile"], f"{m['seeds']} x {m['folds']}", f"{m['oof_log_loss']:.6f}",
               f"{m['weight']:.3f}" if m["weight"] is not None else "-"]
        row += [f"{s['weights'].get(name, 0.0):.3f}" for s in searched.values()]
        if holdout:
            row.append(f"{m['test_log_loss']:.6f}")
        table.add_row(*row)
    prior = summary["prior_oof_log_loss"]
    if prior is not None:  # the per-target mean: what a model must beat
        table.add_row("[dim]prior[/]", "", "", f"[dim]{prior:.6f}[/]", "", *[""] * len(searched),
                      *([""] if holdout else []))
    blended = summary["blend"]["oof_log_loss"]
    row = ["[bold]blend[/]", "", "", f"[bold]{blended:.6f}[/]" if blended is not None else "-", "1.000"]
    row += [f"OOF {s['oof_log_loss']:.6f}" for s in searched.values()]
    if holdout:
        row.append(f"[bold]{summary['blend']['test_log_loss']:.6f}[/]")
    table.add_row(*row)
    out = _stdout()
    out.print(table)
    out.print(f"submission: {_p(summary['submission'])}")
    out.print(f"report: {_p(summary['report'])}")


def _check_out(out: Path, command: str) -> None:
    """--out must be a folder or not exist yet (checked before any work)."""
    from moakit.runner import check_out_dir

    try:
        check_out_dir(out)
    except ValueError as exc:
        _usage(str(exc), "--out", command)


def _check_blend_config(config: str, profile: str, command: str) -> None:
    """A blend config (and its model configs) that cannot be used is a usage error."""
    from moakit.config import ConfigError
    from moakit.workflow import load_blend_config, resolve_models

    try:
        resolve_models(load_blend_config(config, profile))
    except ConfigError as exc:
        _usage(str(exc), "CONFIG", command)


def _device(device: Device) -> str | None:
    return None if device is Device.auto else device.value


def _run_workflow(config: str, data: Path, out: Path, profile: str, executor, quiet: bool, as_json: bool,
                  answers: Path, trust_pickles: bool = False, device: Device = Device.auto) -> None:
    from moakit.config import ConfigError
    from moakit.data.io import DataError
    from moakit.workflow import run_workflow

    try:
        with _trust(trust_pickles):
            result = run_workflow(config, data, out, profile=profile, executor=executor, show_progress=not quiet,
                                  device=_device(device))
    except (ConfigError, DataError, ValueError, ImportError, OSError) as exc:
        _fail(str(exc))
    summary = _workflow_summary(result, answers)
    if as_json:
        _json(summary)
    else:
        _print_workflow(summary)


@app.command()
def run(
    config: str = typer.Argument(..., help="Blend config: a YAML path or a shipped name (blend_best_lb, blend_best_cv)."),
    data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="lish-moa data folder."),
    out: Path = typer.Option(..., "--out", help="Run folder (resumes an interrupted run of the same config)."),
    profile: Profile = typer.Option(Profile.full, "--profile", help="Applied to the blend config and to every "
                                    "model config (full: the write-up's numbers)."),
    executor: ExecutorOption = ExecutorName.local,
    address: AddressOption = None,
    job_cpus: JobCpusOption = 1.0,
    job_gpus: JobGpusOption = 0.0,
    device: DeviceOption = Device.auto,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    trust_pickles: TrustPicklesOption = False,
) -> None:
    """Train every model of a blend config, blend them, write submission.csv and report/."""
    _check_blend_config(config, profile.value, "run")
    _check_out(out, "run")
    exec_obj = _executor(executor, address, job_cpus, job_gpus, "run")
    _run_workflow(config, data, out, profile.value, exec_obj, quiet, as_json,
                  Path(data) / "answers" / "test_targets_scored.csv", trust_pickles, device)


@app.command()
def predict(
    run_dir: Path = typer.Option(..., "--run", exists=True, file_okay=False,
                                 help="A run folder of `moakit train` or `moakit run`, or a blend folder of `moakit blend`."),
    features: Path = typer.Option(..., "--features", exists=True, dir_okay=False,
                                  help="Features file (test_features layout: .csv, .csv.zip, .parquet)."),
    out: Path = typer.Option(Path("submission.csv"), "--out", help="Submission to write: CSV, or Parquet when "
                             "it ends in .parquet (.csv.gz / .csv.zip: compressed CSV)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1,
                                             help="Inference batch size (default: the saved one; 2048 NN, 512 CNN)."),
    as_json: JsonOption = False,
    trust_pickles: TrustPicklesOption = False,
) -> None:
    """Predict new rows from a run's saved artifacts (nothing is refitted); controls get 0."""
    from moakit.data.io import DataError
    from moakit.inference import InferenceError, predict_to_file

    if out.is_dir():
        _usage(f"{out} is a folder; give the submission file to write", "--out", "predict")
    if out.resolve() == features.resolve() or (out.exists() and out.samefile(features)):
        _usage(f"{out} is the --features file; the submission would overwrite its input", "--out", "predict")
    start = time.perf_counter()
    try:
        with _trust(trust_pickles):
            path, frame = predict_to_file(run_dir, features, out, batch_size=batch_size)
    except (DataError, InferenceError, ValueError, OSError) as exc:
        _fail(str(exc))
    seconds = time.perf_counter() - start
    rate = len(frame) / max(seconds, 1e-9)
    if as_json:
        _json({"submission": str(path), "rows": len(frame), "targets": frame.shape[1] - 1,
               "seconds": round(seconds, 3), "rows_per_second": round(rate, 1)})
        return
    _result(f"{len(frame)} rows x {frame.shape[1] - 1} targets -> {_p(path)}")
    _log(f"{seconds:.1f} s, {rate:.0f} rows/s")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-run"), "--out", help="Folder for the demo's data and run."),
    rows: int = typer.Option(3000, "--rows", min=100, help="Rows of simulated data."),
    config: str = typer.Option("blend_best_lb", "--config", help="Blend config to run."),
    profile: Profile = typer.Option(Profile.demo, "--profile", help="Profile of the blend and model configs."),
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Simulate data, run the 7-model best-LB blend (demo profile), print the scores.

    Writes OUT/data (the simulated lish-moa folder), OUT/models, OUT/blend,
    OUT/submission.csv and OUT/report/index.html; a rerun resumes."""
    from moakit.data.simulate import simulate as run_simulation

    _check_blend_config(config, profile.value, "demo")
    data_dir = out / "data"
    if not (data_dir / "train_features.csv").exists():
        try:
            run_simulation(data_dir, n_rows=rows, seed=0)
        except (FileExistsError, ValueError, OSError) as exc:
            _fail(str(exc))
        _log(f"simulated {rows} rows -> {_p(data_dir)}")
    _run_workflow(config, data_dir, out, profile.value, "local", quiet, as_json,
                  data_dir / "answers" / "test_targets_scored.csv")


@app.command()
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
    data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False,
                                        help="lish-moa data folder with the true targets "
                                        "(default: the one recorded in the runs' manifest.json)."),
    names: Optional[list[str]] = typer.Option(None, "--name", help="Model names, one per run (default: folder names)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Optuna sampler."),
    as_json: JsonOption = False,
) -> None:
    """Blend single-model runs: search OOF-optimal weights, write the blended submission,
    correlation heatmaps and blend.json."""
    from rich.table import Table

    from moakit.blend import BlendError, apply_preset, blend_runs
    from moakit.data.io import DataError, load

    methods = [m.value for m in (method or [BlendMethod.slsqp, BlendMethod.optuna]) if m is not BlendMethod.none]
    if not methods and preset is None:
        _usage("--method none needs a --preset", "--method", "blend")
    if names and len(names) != len(runs):
        _usage(f"{len(names)} --name value(s) for {len(runs)} run(s)", "--name", "blend")
    if preset is not None:
        try:
            apply_preset(names or [Path(r).name for r in runs], preset)
        except BlendError as exc:
            _usage(str(exc), "--preset", "blend")
    try:
        moa = load(data) if data is not None else None
        res = blend_runs(runs, out, names=names or None, methods=methods, n_trials=trials, storage=storage,
                         preset=preset, data=moa, seed=seed)
    except (BlendError, DataError, ValueError, OSError) as exc:
        _fail(str(exc))
    summary = res.summary
    if as_json:
        _json({"out": str(out), "submission": str(out / "submission.csv"), "method": res.method,
               "weights": summary["weights"], "log_loss": res.log_loss, "log_loss_treated": res.log_loss_treated,
               "best_single": summary["best_single"], "nested": summary.get("nested"),
               "models": {n: {"log_loss": summary["models"][n]["log_loss"],
                              "log_loss_treated": summary["models"][n]["log_loss_treated"]} for n in res.names}})
        return
    table = Table(title=f"blend -> {_p(out)}")
    table.add_column("model", no_wrap=True)
    table.add_column("OOF log loss", justify="right")
    table.add_column("treated rows", justify="right")
    for m in summary["methods"]:
        table.add_column(f"{m} weight", justify="right")
    if summary.get("preset"):
        table.add_column(f"preset {summary['preset']['name']}", justify="right")
    for name in res.names:
        sc = summary["models"][name]
        row = [_p(name), f"{sc['log_loss']:.6f}", f"{sc['log_loss_treated']:.6f}"]
        row += [f"{s['weights'][name]:.3f}" for s in summary["methods"].values()]
        if summary.get("preset"):
            row.append(f"{summary['preset']['weights'][name]:.3f}")
        table.add_row(*row)
    row = ["[bold]blend[/]", "", ""] + [f"{s['log_loss']:.6f}" for s in summary["methods"].values()]
    if summary.get("preset"):
        row.append(f"{summary['preset']['log_loss']:.6f}")
    table.add_row(*row)
    stdout = _stdout()
    stdout.print(table)
    stdout.print(f"chosen: [bold]{res.method}[/], blended OOF log loss [bold]{res.log_loss:.6f}[/] "
                 f"(treated rows {res.log_loss_treated:.6f}); best single model {_p(summary['best_single'])} "
                 f"{summary['models'][summary['best_single']]['log_loss']:.6f}")
    _print_nested(stdout, summary.get("nested"))
    stdout.print(f"submission: {_p(out / 'submission.csv')}")


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


@app.command()
def report(
    run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A run folder of `moakit train` or `moakit run`."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default RUN/report)."),
    data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False,
                                        help="The run's lish-moa data folder, if it moved (default: the one its "
                                             "manifest records); gives per-fold, per-target and test scores."),
) -> None:
    """Write an HTML report (index.html + PNGs + report.json) of a single-model or multi-model run."""
    from moakit.report import ReportError, write_report

    try:
        path = write_report(run_dir, out, data=data)
    except (ReportError, ValueError, OSError) as exc:
        _fail(str(exc))
    _result(f"report: {_p(path)}")


def main() -> None:  # pragma: no cover
    """The `moakit` console script and `python -m moakit`."""
    if not sys.stderr.isatty():  # plain usage errors and help: no boxes that wrap long paths
        app.rich_markup_mode = None
    app(prog_name="moakit")


if __name__ == "__main__":  # pragma: no cover
    main()
