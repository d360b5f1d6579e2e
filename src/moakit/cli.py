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

from moakit import choices
from moakit._version import __version__
from moakit.progress import console  # stderr: progress and logs
from moakit.runs import layout

app = typer.Typer(
    name="moakit",
    help="Predict drug mechanisms of action from L1000/PRISM cell profiles "
    "(the 1st-place lish-moa solution as a toolkit). Results go to stdout, progress to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# --------------------------------------------------------------------------- choices


# The vocabularies of moakit.choices as option enums (declared there once). --profile takes
# any name: every shipped config has choices.PROFILES, a user's YAML may define more under
# 'profiles'; the config loaders refuse one the config lacks (exit 2, listing those it has).
PROFILE_HELP = (f"{', '.join(choices.PROFILES)} (every shipped config has these; full: the write-up's numbers, "
                "cpu: 2 CPU cores, demo / smoke: seconds on small data), or a profile your own config YAML "
                "defines under 'profiles'.")
CVScheme = choices.cli_enum("CVScheme", choices.CV_SCHEMES)
SelectionPolicy = choices.cli_enum("SelectionPolicy", choices.SELECTION_POLICIES)
ExecutorName = choices.cli_enum("ExecutorName", choices.EXECUTORS)
Device = choices.cli_enum("Device", choices.DEVICES)
BlendMethod = choices.cli_enum("BlendMethod", (*choices.BLEND_METHODS, "none"))


class FileFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


class SimulateLayout(str, Enum):
    lish_moa = "lish-moa"
    l1000 = "l1000"


class ProfileGenerator(str, Enum):
    pathway = "pathway"
    factor = "factor"


class PredictBy(str, Enum):
    signature = "signature"
    compound = "compound"


class CalibrationMethod(str, Enum):
    platt = "platt"
    isotonic = "isotonic"


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


def _p(path: Path | str) -> str:
    return escape(str(path))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moakit {__version__}")
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
    layout: SimulateLayout = typer.Option(
        SimulateLayout.lish_moa, "--layout",
        help="lish-moa: the competition's folder; l1000: a LINCS-style folder (GCTX + siginfo / geneinfo / "
        "compoundinfo, 978 landmark genes, its own MoAs; --rows = signatures) for `moakit dataset l1000`."),
    generator: ProfileGenerator = typer.Option(
        ProfileGenerator.pathway, "--generator",
        help="How the profiles are made: pathway (latent pathways, the default) or factor (low-rank factors, "
        "plate batch effects, per-MoA time courses; moakit.data.generators). Labels, drugs and split do not change."),
    effect_scale: float = typer.Option(1.0, "--effect-scale", min=0.0,
                                       help="Multiplies the MoA-caused part of the profiles (1: calibrated)."),
) -> None:
    """Write a complete, MoA-like lish-moa folder (plus answers/ with the test labels), or a LINCS-style one."""
    if layout is SimulateLayout.l1000:
        from moakit.data.simulate_l1000 import simulate_l1000

        if labels_from is not None:
            _usage("--labels-from works with --layout lish-moa only", "--labels-from", "simulate")
        if generator is not ProfileGenerator.pathway or effect_scale != 1.0:
            _usage("--generator / --effect-scale work with --layout lish-moa only", "--generator", "simulate")
        try:
            path = simulate_l1000(out, n_signatures=rows, seed=seed)
        except (FileExistsError, ValueError, OSError) as exc:
            _fail(str(exc))
        _result(f"wrote simulated LINCS L1000 data to {_p(path)}")
        return
    from moakit.data.simulate import simulate as run_simulation

    try:
        path = run_simulation(out, n_rows=rows, seed=seed, labels_from=labels_from,
                              test_fraction=test_fraction, file_format=file_format.value,
                              generator=generator.value, effect_scale=effect_scale)
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
    from moakit.data.io import DataError, read_features, read_submission

    try:
        from moakit.validate import answers_for

        sub = read_submission(submission)
        truth = answers_for(submission, sub, answers)  # a column / sig_id the submission lacks blames it
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
    profile: str = typer.Option("full", "--profile", metavar="PROFILE", help=PROFILE_HELP),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Use only the first N seeds."),
    n_folds: Optional[int] = typer.Option(None, "--folds", min=2, help="Override the number of folds."),
    cv: Optional[CVScheme] = typer.Option(None, "--cv", help="Override the CV scheme."),
    selection: Optional[SelectionPolicy] = typer.Option(
        None, "--selection", help="Which rows choose each fold's epoch: holdout (default; part of the training "
        "folds), holdout_refit (as holdout, then retrained on all the fold's training rows replaying the chosen "
        "schedule), last (the last epoch), oof (the fold itself, as the winners did: optimistic OOF)."),
    no_smoothing: bool = typer.Option(False, "--no-smoothing", help="Ablation: every label smoothing of the "
                                      "model set to 0."),
    executor: ExecutorOption = ExecutorName.local,
    address: AddressOption = None,
    job_cpus: JobCpusOption = 1.0,
    job_gpus: JobGpusOption = 0.0,
    device: DeviceOption = Device.auto,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Train one model over seeds x folds; write OOF/test predictions, artifacts, metrics.json."""
    from moakit import runner
    from moakit.config import ConfigError, load_config
    from moakit.data.io import DataError, load

    try:
        cfg = load_config(config, profile=profile, seeds=seeds, folds=n_folds, cv=cv.value if cv else None,
                          selection=selection.value if selection else None)
        if no_smoothing:
            from moakit.models.quality import config_without_smoothing

            cfg = config_without_smoothing(cfg)
        runner.check_config(cfg)  # unknown model or invalid params / values: a config problem
    except (ConfigError, ValueError) as exc:
        _usage(str(exc), "CONFIG", "train")
    _check_out(out, "train")
    _check_device(device, "train")
    exec_obj = _executor(executor, address, job_cpus, job_gpus, "train")
    try:
        moa = load(data)
        from moakit.workflow import check_models

        check_models({config: cfg}, moa)  # the whole config (feature blocks too) before any work
        result = runner.train(cfg, moa, out, executor=exec_obj, show_progress=not quiet, device=_device(device))
    except ConfigError as exc:  # the config does not fit this data (e.g. more clusters than rows)
        _usage(str(exc), "CONFIG", "train")
    except (DataError, ValueError, ImportError, OSError) as exc:
        _fail(str(exc))
    m = result.metrics
    if as_json:
        _json({"run_dir": str(out), "model": cfg.model, "profile": cfg.profile, "seeds": cfg.seeds,
               "folds": cfg.cv.n_folds, "cv": cfg.cv.scheme, "selection": m.get("selection"), "log_loss": m["log_loss"],
               "log_loss_treated": m["log_loss_treated"], "prior_log_loss": m["prior"]["log_loss"],
               "prior_oof_log_loss": (m.get("prior_oof") or {}).get("log_loss"),
               "metrics": str(out / layout.METRICS), "oof_predictions": str(out / layout.OOF_PREDICTIONS),
               "test_predictions": str(out / layout.TEST_PREDICTIONS)})
        return
    prior_oof = (m.get("prior_oof") or {}).get("log_loss")
    _result(f"{cfg.model}: OOF log loss {m['log_loss']:.6f} (treated rows {m['log_loss_treated']:.6f}); "
            + (f"out-of-fold prior {prior_oof:.6f}, " if prior_oof is not None else "")
            + f"in-sample prior {m['prior']['log_loss']:.6f} -> {_p(out / layout.METRICS)}")
    if prior_oof is not None and m["log_loss"] >= prior_oof:
        _log(f"[yellow]warning[/]: {cfg.model}'s OOF log loss is no better than the out-of-fold prior (the "
             "training means of the other folds, on the same folds): it learned nothing usable")
    _result(f"test predictions: {_p(out / layout.TEST_PREDICTIONS)}")


def _test_answers(data_dir: Path) -> Optional[Path]:
    """The data folder's test answers (.csv, .csv.zip or .parquet), None without (or when
    unclear: the run then shows no test losses)."""
    from moakit.data.io import DataError
    from moakit.runs.records import find_test_answers

    try:
        return find_test_answers(data_dir)
    except DataError:
        return None


def _workflow_summary(result, answers: Optional[Path] = None) -> dict:
    """Per-model and blended OOF log loss (and holdout log loss when test answers exist)."""
    from moakit import metrics
    from moakit.headline import nested_scores
    from moakit.data.io import DataError, load, read_answers, read_submission

    weights = result.manifest.get("blend", {}).get("weights", {})
    holdout = None
    if answers is not None and answers.exists():
        holdout = {}
        try:
            from moakit.artifacts import resolve_recorded

            source = resolve_recorded(result.manifest["data_source"], result.run_dir)
            moa = load(Path(source))
            test_ds = moa.test
            for name in result.models:
                sub = read_submission(layout.model_dir(result.run_dir, name) / layout.TEST_PREDICTIONS)
                truth = read_answers(answers, sub.sig_id, sub.names)
                holdout[name] = metrics.score(truth, sub.values, test_ds.is_control)["log_loss"]
            sub = read_submission(result.submission)
            truth = read_answers(answers, sub.sig_id, sub.names)
            holdout["blend"] = metrics.score(truth, sub.values, test_ds.is_control)["log_loss"]
            # test numbers are compared with the training means (the in-sample prior)
            cols = [list(moa.train.scored_names).index(n) for n in sub.names]
            prior = metrics.prior_predictions(moa.train.scored[:, cols], moa.train.is_control, len(truth))
            holdout["prior"] = metrics.score(truth, prior, test_ds.is_control)["log_loss"]
        except (DataError, KeyError, OSError):
            holdout = None
    models = {}
    for name, res in result.models.items():
        info = result.manifest["models"][name]
        models[name] = {"model": info["model"], "profile": info["profile"], "seeds": len(info["seeds"]),
                        "folds": info["folds"], "cv": info.get("cv"), "oof_log_loss": res.metrics["log_loss"],
                        "prior_oof_log_loss": (res.metrics.get("prior_oof") or {}).get("log_loss"),
                        "weight": weights.get(name)}
        if holdout is not None:
            models[name]["test_log_loss"] = holdout[name]
    blend = {"oof_log_loss": result.manifest.get("blend", {}).get("log_loss"),
             "method": result.manifest.get("blend", {}).get("method")}
    if result.blend_summary.get("nested"):
        blend["nested"] = result.blend_summary["nested"]
        blend.update(nested_scores(result.blend_summary))
    for key in ("choice", "note", "skipped"):  # preset or search and why; profile notes; entries left out
        if result.blend_summary.get(key):
            blend[key] = result.blend_summary[key]
    if result.blend_summary.get("preset"):  # a preset blend still reports the searched weights
        blend["searched"] = {m: {"weights": s["weights"], "oof_log_loss": s["log_loss"]}
                             for m, s in (result.blend_summary.get("methods") or {}).items()}
    if holdout is not None:
        blend["test_log_loss"] = holdout["blend"]
        blend["prior_test_log_loss"] = holdout["prior"]
    return {"run_dir": str(result.run_dir), "submission": str(result.submission),
            "report": str(result.report) if result.report else None, "models": models, "blend": blend,
            # the blend's OOF is compared with the out-of-fold prior (the models' priors on their own
            # folds, blended); the in-sample prior (training means) is kept for reference
            "prior_oof_log_loss": (result.blend_summary.get("prior_oof") or {}).get("log_loss"),
            # test numbers are compared with the training means' test log loss
            "prior_test_log_loss": holdout["prior"] if holdout is not None else None,
            "prior_log_loss": (result.blend_summary.get("prior") or {}).get("log_loss")}


def _print_workflow(summary: dict) -> None:
    from rich.table import Table

    holdout = any("test_log_loss" in m for m in summary["models"].values())
    table = Table(title=f"moakit run: {_p(summary['run_dir'])}",
                  caption="prior: per-target training means; OOF numbers are compared with the prior OUT OF FOLD "
                  "(each model's own folds; blended with the blend's weights for the blend), test numbers with "
                  "the means of all training rows. Red: no better than its out-of-fold prior.")
    table.add_column("model", no_wrap=True, min_width=24)
    table.add_column("profile")
    table.add_column("seeds×folds", justify="right")
    table.add_column("CV")  # the CV scheme each OOF number comes from (old / drug)
    table.add_column("OOF loss", justify="right")
    table.add_column("OOF prior", justify="right")  # each model's prior out of fold on its own folds
    table.add_column("weight", justify="right")
    searched = summary["blend"].get("searched") or {}
    for method in searched:
        table.add_column(f"{method} weight", justify="right")
    if holdout:
        table.add_column("test loss", justify="right")
    for name, m in summary["models"].items():
        p_oof = m.get("prior_oof_log_loss")
        worse = p_oof is not None and m["oof_log_loss"] >= p_oof  # no better than its out-of-fold prior
        row = [_p(name), m["profile"], f"{m['seeds']} x {m['folds']}", m.get("cv") or "-",
               f"[red]{m['oof_log_loss']:.6f}[/]" if worse else f"{m['oof_log_loss']:.6f}",
               f"{p_oof:.6f}" if p_oof is not None else "-", f"{m['weight']:.3f}" if m["weight"] is not None else "-"]
        row += [f"{s['weights'].get(name, 0.0):.3f}" for s in searched.values()]
        if holdout:
            t, pt = m["test_log_loss"], summary["blend"].get("prior_test_log_loss")
            row.append(f"[red]{t:.6f}[/]" if pt is not None and t >= pt else f"{t:.6f}")
        table.add_row(*row)
    prior = summary.get("prior_oof_log_loss")
    prior_test = summary["blend"].get("prior_test_log_loss")
    if prior is not None or prior_test is not None:  # the per-target mean: what a model must beat
        table.add_row("[dim]prior[/]", "", "", "",
                      f"[dim]{prior:.6f}[/]" if prior is not None else "-", "", "", *[""] * len(searched),
                      *([f"[dim]{prior_test:.6f}[/]" if prior_test is not None else "-"] if holdout else []))
    blended = summary["blend"]["oof_log_loss"]
    row = ["[bold]blend[/]", "", "", "", f"[bold]{blended:.6f}[/]" if blended is not None else "-",
           f"{prior:.6f}" if prior is not None else "-", "1.000"]
    row += [f"OOF {s['oof_log_loss']:.6f}" for s in searched.values()]
    if holdout:
        row.append(f"[bold]{summary['blend']['test_log_loss']:.6f}[/]")
    table.add_row(*row)
    out = _stdout()
    out.print(table)
    from moakit.headline import headline

    for line in headline(summary["models"], summary["blend"], summary["blend"].get("prior_test_log_loss")):
        out.print(escape(line))
    out.print(f"submission: {_p(summary['submission'])}")
    out.print(f"report: {_p(summary['report'])}")


_OUT_KIND = {"train": "model", "run": "workflow", "demo": "workflow", "blend": "blend", "report": "report"}


def _check_out(out: Path, command: str) -> None:
    """--out must be a folder or not exist yet, and not hold another kind of folder (a model
    run into a workflow's, a report over a run...): checked before any work, exit 2."""
    from moakit.runner import check_out_dir
    from moakit.validate import check_folder_kind, check_report_dir

    try:
        check_out_dir(out)
        if command == "report":
            check_report_dir(out)
        else:
            check_folder_kind(out, _OUT_KIND[command])
    except ValueError as exc:
        _usage(str(exc), "--out", command)


def _check_blend_config(config: str, profile: str, command: str) -> None:
    """A blend config (and its model configs) that cannot be used is a usage error."""
    from moakit.config import ConfigError
    from moakit.workflow import load_blend_config, resolve_models

    from moakit.runner import check_config

    try:
        for name, cfg in resolve_models(load_blend_config(config, profile)).items():
            try:
                check_config(cfg)  # params and values of every entry, before any work
            except (ConfigError, ValueError) as exc:
                raise ConfigError(f"model entry {name!r}: {exc}") from None
    except ConfigError as exc:
        _usage(str(exc), "CONFIG", command)


def _check_device(device: Device, command: str) -> None:
    """--device cuda without a GPU is a usage error, before any work."""
    from moakit.validate import device_problem

    problem = device_problem(_device(device))
    if problem is not None:
        _usage(problem, "--device", command)


def _device(device: Device) -> str | None:
    return None if device is Device.auto else device.value


def _run_workflow(config: str, data: Path, out: Path, profile: str, executor, quiet: bool, as_json: bool,
                  answers: Path, device: Device = Device.auto) -> None:
    from moakit.config import ConfigError
    from moakit.data.io import DataError
    from moakit.workflow import load_blend_config, run_workflow, skip_message

    if quiet:  # with progress on, run_workflow prints it
        try:
            note = skip_message(load_blend_config(config, profile))
        except ConfigError:
            note = None  # reported by run_workflow below
        if note:
            _log(f"note: {escape(note)}")
    try:
        result = run_workflow(config, data, out, profile=profile, executor=executor, show_progress=not quiet,
                              device=_device(device))
    except ConfigError as exc:  # a model entry's config does not fit this data
        _usage(str(exc), "CONFIG", "run")
    except (DataError, ValueError, ImportError, OSError) as exc:
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
    profile: str = typer.Option("full", "--profile", metavar="PROFILE", help="Applied to the blend config and to "
                                "every model config: " + PROFILE_HELP),
    executor: ExecutorOption = ExecutorName.local,
    address: AddressOption = None,
    job_cpus: JobCpusOption = 1.0,
    job_gpus: JobGpusOption = 0.0,
    device: DeviceOption = Device.auto,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Train every model of a blend config, blend them, write submission.csv and report/."""
    _check_blend_config(config, profile, "run")
    _check_out(out, "run")
    _check_device(device, "run")
    exec_obj = _executor(executor, address, job_cpus, job_gpus, "run")
    _run_workflow(config, data, out, profile, exec_obj, quiet, as_json, _test_answers(data), device)


@app.command()
def predict(
    run_dir: Path = typer.Option(..., "--run", exists=True, file_okay=False,
                                 help="A run folder of `moakit train` or `moakit run`, or a blend folder of `moakit blend`."),
    features: Path = typer.Option(..., "--features", exists=True,
                                  help="Features file (test_features layout: .csv, .csv.zip, .parquet), a GCTX / "
                                  "GCT file (genes matched to the run's by Entrez id), or a dataset folder (its "
                                  "test_features)."),
    out: Path = typer.Option(Path(layout.SUBMISSION), "--out", help="Submission to write: CSV, or Parquet when "
                             "it ends in .parquet (.csv.gz / .csv.zip: compressed CSV)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1,
                                             help="Inference batch size (default: the saved one; 2048 NN, 512 CNN)."),
    chunk_rows: int = typer.Option(20_000, "--chunk-rows", min=0, help="Rows predicted at a time: memory is bounded "
                                   "by the chunk (0: all rows at once; the output is the same bit for bit)."),
    quiet: QuietOption = False,
    allow_missing_genes: bool = typer.Option(
        False, "--allow-missing-genes", help="GCTX / dataset input: fill genes the run needs but the input lacks with "
        "0 (the z-score of an unchanged gene); they are listed on stderr. Without it they are an error."),
    siginfo: Optional[Path] = typer.Option(None, "--siginfo", exists=True, dir_okay=False,
                                           help="GCTX input: its siginfo (default: the siginfo*.txt beside it)."),
    cp_time: Optional[float] = typer.Option(None, "--cp-time", help="GCTX / dataset input: cp_time (hours) of every "
                                            "row, e.g. 24 for a lish-moa run (it knows 24 / 48 / 72)."),
    cp_dose: Optional[str] = typer.Option(None, "--cp-dose", help="GCTX / dataset input: cp_dose of every row, e.g. "
                                          "D1 for a lish-moa run (it knows D1 / D2, not L1000's uM doses)."),
    by: PredictBy = typer.Option(PredictBy.signature, "--by", help="compound: also write, per compound, the top "
                                 "MoAs by the mean probability of its signatures (OUT's name + _by_compound.csv)."),
    top: int = typer.Option(5, "--top", min=1, help="With --by compound: MoAs per compound."),
    groups_file: Optional[Path] = typer.Option(None, "--groups", exists=True, dir_okay=False,
                                               help="With --by compound: a table of sig_id and drug_id / pert_id "
                                               "(default: siginfo's pert_id, a dataset folder's drug ids)."),
    as_json: JsonOption = False,
) -> None:
    """Predict new rows from a run's saved artifacts (nothing is refitted); controls get 0."""
    from moakit.data.io import DataError
    from moakit.inference import InferenceError, predict_to_file
    from moakit.predict_inputs import is_matrix_file, load_input, read_groups

    if out.is_dir():
        _usage(f"{out} is a folder; give the submission file to write", "--out", "predict")
    if out.resolve() == features.resolve() or (out.exists() and out.samefile(features)):
        _usage(f"{out} is the --features file; the submission would overwrite its input", "--out", "predict")
    start = time.perf_counter()
    aligned = None
    try:
        if features.is_dir() or is_matrix_file(features):
            aligned = load_input(features, run_dir, allow_missing_genes=allow_missing_genes, siginfo=siginfo,
                                 cp_time=cp_time, cp_dose=cp_dose)
            for note in aligned.notes:
                _log(escape(note))
        elif cp_time is not None or cp_dose is not None:
            _usage("only with a GCTX / GCT file or a dataset folder as --features", "--cp-time / --cp-dose", "predict")
        if by is PredictBy.compound and groups_file is None and (aligned is None or aligned.groups is None):
            _usage("no compound id for the signatures (no siginfo pert_id, no drug ids in the folder); give "
                   "--groups FILE (sig_id, drug_id)", "--by", "predict")
        groups = None
        if by is PredictBy.compound and aligned is not None:  # checked before any work
            groups = read_groups(groups_file, aligned.dataset.sig_id) if groups_file else aligned.groups
        path, frame = predict_to_file(run_dir, aligned.dataset if aligned else features, out, batch_size=batch_size,
                                      chunk_rows=chunk_rows, progress=not (quiet or as_json))
        calls_path = None
        if by is PredictBy.compound:
            if groups is None:
                groups = read_groups(groups_file, frame["sig_id"].to_numpy())
            calls_path = _compound_calls(frame, groups, aligned, top, out)
    except (DataError, InferenceError, ValueError, OSError) as exc:
        _fail(str(exc))
    seconds = time.perf_counter() - start
    rate = len(frame) / max(seconds, 1e-9)
    if as_json:
        _json({"submission": str(path), "rows": len(frame), "targets": frame.shape[1] - 1,
               "seconds": round(seconds, 3), "rows_per_second": round(rate, 1),
               **({"by_compound": str(calls_path)} if calls_path else {})})
        return
    _result(f"{len(frame)} rows x {frame.shape[1] - 1} targets -> {_p(path)}")
    if calls_path:
        _result(f"top {top} MoAs per compound -> {_p(calls_path)}")
    _log(f"{seconds:.1f} s, {rate:.0f} rows/s")


def _compound_calls(frame, groups, aligned, top: int, out: Path) -> Path:
    """predict --by compound: the compound file beside the per-signature one."""
    from moakit.artifacts import atomic_file
    from moakit.predict_inputs import compound_calls, compound_file

    calls = compound_calls(frame, groups, top, aligned.dataset.is_control if aligned else None)
    path = compound_file(out)
    with atomic_file(path, "w") as fh:
        calls.to_csv(fh, index=False, float_format="%.6g")
    return path


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-run"), "--out", help="Folder for the demo's data and run."),
    rows: int = typer.Option(6000, "--rows", min=100, help="Rows of simulated data (6000: every demo model "
                             "beats the prior on the unseen-drug test; BENCHMARKS.md)."),
    config: str = typer.Option("blend_best_lb", "--config", help="Blend config to run."),
    profile: str = typer.Option("demo", "--profile", metavar="PROFILE", help="Profile of the blend and model "
                                "configs: " + PROFILE_HELP),
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Simulate data, run the best-LB blend at the demo profile, print the scores.

    The demo profile trains its five tabular models (the DeepInsight CNNs need a GPU: left
    out, with the reason printed) and lets the nested score choose the weights; the table
    gives each model's, the prior's and the blend's test log loss on unseen drugs. Writes
    OUT/data (the simulated lish-moa folder), OUT/models, OUT/blend, OUT/submission.csv and
    OUT/report/index.html; a rerun resumes."""
    from moakit.data.simulate import simulate as run_simulation

    _check_blend_config(config, profile, "demo")
    _check_out(out, "demo")
    data_dir = out / "data"
    if not (data_dir / "train_features.csv").exists():
        try:
            run_simulation(data_dir, n_rows=rows, seed=0)
        except (FileExistsError, ValueError, OSError) as exc:
            _fail(str(exc))
        _log(f"simulated {rows} rows -> {_p(data_dir)}")
    _run_workflow(config, data_dir, out, profile, "local", quiet, as_json, _test_answers(data_dir))


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

    _check_out(out, "blend")
    chosen = [m.value for m in method] if method else list(choices.DEFAULT_BLEND_METHODS)
    methods = [m for m in chosen if m != BlendMethod.none.value]
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
        from moakit.validate import check_finished

        for run in runs:
            check_finished(run, "blend")  # running, interrupted or failed: say which
        moa = load(data) if data is not None else None
        res = blend_runs(runs, out, names=names or None, methods=methods, n_trials=trials, storage=storage,
                         preset=preset, data=moa, seed=seed, calibrate=calibrate.value if calibrate else None)
    except (BlendError, DataError, ValueError, OSError) as exc:
        _fail(str(exc))
    summary = res.summary
    if as_json:
        _json({"out": str(out), "submission": str(out / layout.BLEND_TEST), "method": res.method,
               "weights": summary["weights"], "log_loss": res.log_loss, "log_loss_treated": res.log_loss_treated,
               "best_single": summary["best_single"], "nested": summary.get("nested"),
               "prior_oof_log_loss": (summary.get("prior_oof") or {}).get("log_loss"),
               "prior_log_loss": (summary.get("prior") or {}).get("log_loss"),
               "calibration": summary.get("calibration"),
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
    cal = summary.get("calibration")
    if cal:
        stdout.print(f"calibration {cal['method']}: nested log loss {cal['nested_log_loss']['on']:.6f} calibrated vs "
                     f"{cal['nested_log_loss']['off']:.6f} not: {'kept' if cal['kept'] else 'not kept'}")
    if summary.get("prior_oof"):
        stdout.print(f"per-target prior out of fold (the models' own folds, blended): "
                     f"{summary['prior_oof']['log_loss']:.6f}; the blend's OOF must beat it")
    stdout.print(f"submission: {_p(out / layout.BLEND_TEST)}")


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

    _check_out(out if out is not None else layout.report_dir(run_dir), "report")
    try:
        from moakit.validate import check_finished

        check_finished(run_dir, "report")  # running, interrupted or failed: say which
        path = write_report(run_dir, out, data=data)
    except (ReportError, ValueError, OSError) as exc:
        _fail(str(exc))
    _result(f"report: {_p(path)}")


dataset_app = typer.Typer(help="Build a moakit dataset folder from other data (e.g. LINCS L1000).",
                          no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


class GeneSet(str, Enum):
    landmark = "landmark"
    all = "all"


@dataset_app.command("l1000")
def dataset_l1000(
    src: Path = typer.Argument(..., exists=True, file_okay=False,
                               help="LINCS folder: a level-5 .gctx (or .gct), siginfo*.txt, geneinfo*.txt, "
                               "compoundinfo*.txt (found by name; or name them below)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to create (must not exist or be empty)."),
    cell: Optional[list[str]] = typer.Option(None, "--cell", metavar="CELL", help="Keep this cell line (cell_iname); repeatable. "
                                             "Default: all."),
    keep_controls: bool = typer.Option(False, "--keep-controls", help="Keep vehicle controls (ctl_vehicle) too."),
    time_h: Optional[list[float]] = typer.Option(None, "--time", metavar="HOURS", help="Keep this time point, hours; repeatable."),
    dose: Optional[list[str]] = typer.Option(None, "--dose", metavar="DOSE", help="Keep this dose, e.g. '10 uM' or 10; repeatable."),
    genes: GeneSet = typer.Option(GeneSet.landmark, "--genes", help="landmark (978) or all genes of the matrix."),
    min_compounds: int = typer.Option(5, "--min-compounds", min=1,
                                      help="Drop MoAs with fewer compounds (listed on stderr and in dataset.json)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", min=0.0, max=0.99,
                                        help="Share of treated signatures held out, as whole compounds."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train / test split."),
    matrix: Optional[Path] = typer.Option(None, "--matrix", exists=True, dir_okay=False,
                                          help="The .gctx / .gct file, when SRC holds several."),
    siginfo: Optional[Path] = typer.Option(None, "--siginfo", exists=True, dir_okay=False,
                                           help="The signature annotations (default: SRC's siginfo*.txt)."),
    geneinfo: Optional[Path] = typer.Option(None, "--geneinfo", exists=True, dir_okay=False,
                                            help="The gene annotations (default: SRC's geneinfo*.txt)."),
    compoundinfo: Optional[Path] = typer.Option(None, "--compoundinfo", exists=True, dir_okay=False,
                                                help="The compound annotations with the moa column (default: SRC's "
                                                "compoundinfo*.txt)."),
    as_json: JsonOption = False,
) -> None:
    """LINCS L1000 signatures -> a moakit dataset folder (Parquet): MoAs as targets, compounds as groups."""
    from moakit.data.io import DataError
    from moakit.data.l1000 import Filters, build_l1000_dataset, find_files

    filters = Filters(cells=list(cell or []), keep_controls=keep_controls, times=list(time_h or []),
                      doses=list(dose or []), genes=genes.value, min_compounds=min_compounds,
                      test_fraction=test_fraction, seed=seed)
    try:
        files = find_files(src, matrix, siginfo, geneinfo, compoundinfo)
        info = build_l1000_dataset(src, out, filters, files=files, log=lambda line: _log(escape(line)))
    except (DataError, FileExistsError, ValueError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        _json({"dataset": str(out), **info})
        return
    _result(f"{info['train_signatures']} train / {info['test_signatures']} test signatures "
            f"({info['train_compounds']} / {info['test_compounds']} compounds), {info['genes']} genes, "
            f"{len(info['targets'])} MoA targets -> {_p(out)}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., exists=True, file_okay=False,
                                   help="A run folder of `moakit train` or `moakit run`, or a blend folder of "
                                   "`moakit blend` (its blended OOF / test predictions are evaluated)."),
    data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False,
                                        help="The run's data folder (default: the one its manifest records); its "
                                        "answers/ (test targets) give the test rows."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the per-target table to this CSV file."),
    shuffled_baseline: bool = typer.Option(False, "--shuffled-baseline",
                                           help="Train the label-shuffled baseline first (the same config(s) on the "
                                           "same folds, training labels permuted; whole drugs under the drug-aware "
                                           "CV), stored in RUN/shuffled/ and reused. Without it, a baseline already "
                                           "there is used."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Permutation seeds of the shuffled baseline."),
    device: DeviceOption = Device.auto,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Per-MoA trust: per target, on honest rows (OOF; test answers), PR-AUC, ROC-AUC, log loss,
    Brier, calibration error beside the prior and a label-shuffled baseline; writes RUN/evaluation/."""
    from moakit.blend import BlendError
    from moakit.data.io import DataError
    from moakit.evaluate import EvaluateError, evaluate as run_evaluation, write_csv

    if out is not None and out.is_dir():
        _usage(f"{out} is a folder; give the CSV file to write", "--out", "evaluate")
    try:
        result = run_evaluation(run_dir, data=data, shuffled_baseline=seeds if shuffled_baseline else 0,
                                show_progress=not quiet, device=_device(device))
        if out is not None:
            write_csv(result, out)
    except (EvaluateError, BlendError, DataError, ValueError, OSError) as exc:
        _fail(str(exc))
    from moakit.runs import layout

    files = {"evaluation": str(result.out_dir / layout.EVALUATION), "csv": str(result.out_dir / layout.EVALUATION_CSV),
             "plot": str(result.out_dir / layout.EVALUATION_PNG), **({"out": str(out)} if out is not None else {})}
    if as_json:
        from moakit.evaluate import _records

        _json({**result.summary, "files": files,
               "per_target": {k: _records(t) for k, t in result.tables.items()}})
        return
    _print_evaluation(result)
    _stdout().print(f"files: {_p(files['evaluation'])}, {_p(files['csv'])}, {_p(files['plot'])}"
                    + (f", {_p(out)}" if out is not None else ""))


def _print_evaluation(result) -> None:
    """One table per set of honest rows (targets with positives, best PR-AUC first), then its summary."""
    from rich.table import Table

    stdout = _stdout()
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
        if base:
            line += (f"; beats the shuffled baseline on {s['beats_shuffled']}, no better on "
                     f"{s['no_better_than_shuffled']}")
        stdout.print(line)
        if s["note"]:
            stdout.print(f"  note: {s['note']}")
    if not result.summary["shuffled"]["seeds"]:
        stdout.print("no shuffled baseline yet: run with --shuffled-baseline to train it (flags need it)")
    stdout.print(f"rule: {result.summary['rule']}; calibration error: {result.summary['calibration_bins']}")


class ExplainMethod(str, Enum):
    ig = "ig"
    permutation = "permutation"


@app.command()
def explain(
    run_dir: Path = typer.Argument(..., exists=True, file_okay=False,
                                   help="A run folder of `moakit train` or `moakit run`, or a blend folder."),
    target: str = typer.Option(..., "--target", help="The scored target (MoA) to explain."),
    features: Optional[Path] = typer.Option(None, "--features", exists=True, dir_okay=False,
                                            help="Rows to explain: a features file (labels: --labels)."),
    labels: Optional[Path] = typer.Option(None, "--labels", exists=True, dir_okay=False,
                                          help="With --features: their 0/1 targets (held-out rows only)."),
    data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False,
                                        help="A data folder: its test rows with answers/ (unseen drugs), else its "
                                        "training rows; baseline from its controls (default: the run's data)."),
    method: ExplainMethod = typer.Option(ExplainMethod.ig, "--method", help="ig: Integrated Gradients (networks); "
                                         "permutation: any model, on held-out labelled rows."),
    top: int = typer.Option(50, "--top", min=1, help="Columns listed."),
    rows: int = typer.Option(64, "--rows", min=1, help="ig: at most this many rows attributed (the positives)."),
    steps: int = typer.Option(32, "--steps", min=2, help="ig: integration steps."),
    repeats: int = typer.Option(2, "--repeats", min=1, help="permutation: shuffles per column."),
    negatives: int = typer.Option(200, "--negatives", min=0, help="permutation and deletion curve: negative rows "
                                  "sampled beside every positive (0: all rows)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the row samples and shuffles."),
    save: bool = typer.Option(True, "--save/--no-save", help="Write RUN/explain/<target>.<method>.json."),
    as_json: JsonOption = False,
) -> None:
    """Which raw columns (genes, cell lines, cp_time / cp_dose) drive a run's call of one target."""
    from moakit import explain as ex
    from moakit.data.io import DataError
    from moakit.inference import InferenceError

    if features is not None and data is not None:
        _usage("give --features or --data, not both", "--features / --data", "explain")
    if labels is not None and features is None:
        _usage("--labels goes with --features", "--labels", "explain")
    try:
        run = ex.open_run(run_dir)
        ex.resolve_target(run, target)
        inputs = ex.load_inputs(run, data=data, features=features, labels=labels)
        result = ex.explain(run, target, inputs.ds, inputs.y, inputs.reference, method=method.value, top=top,
                            max_rows=rows, n_steps=steps, n_repeats=repeats, seed=seed,
                            negatives=negatives or None, gene_info=inputs.gene_info, rows_note=inputs.note)
        path = ex.save(result, run_dir) if save else None
    except (ex.ExplainError, DataError, InferenceError, ValueError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        _json({**result, "saved": str(path) if path else None})
        return
    for line in ex.summary_lines(result, top):
        _result(escape(line))
    if path:
        _log(f"saved: {_p(path)}")


def main() -> None:  # pragma: no cover
    """The `moakit` console script and `python -m moakit`."""
    if not sys.stderr.isatty():  # plain usage errors and help: no boxes that wrap long paths
        app.rich_markup_mode = None
    app(prog_name="moakit")


if __name__ == "__main__":  # pragma: no cover
    main()
