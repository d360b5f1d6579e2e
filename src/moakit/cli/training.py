"""Training commands: ``train`` (one model), ``run`` (a blend config's models, then the blend)
and ``demo``; the table ``run`` and ``demo`` print."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from moakit.cli.common import (answers_in, check_blend_config, check_device, check_out, device_name,
                               executor_from_options, fail, markup_path, print_json, print_log, print_result,
                               stdout_console, usage_error)
from moakit.cli.options import (DEFAULT_DEVICE, DEFAULT_EXECUTOR, AddressOption, CVScheme, DataDirOption, Device,
                                DeviceOption, ExecutorOption, FeatureCacheMaxGbOption, FeatureCacheOption,
                                JobCpusOption, JobGpusOption, JsonOption, QuietOption, SelectionPolicy, profile_option)
from moakit.runs import layout


def train(
    config: str = typer.Argument(..., help="Model config: a YAML path or a shipped name (e.g. simple_nn)."),
    data: DataDirOption = ...,
    out: Path = typer.Option(..., "--out", help="Run folder (resumes if it holds an interrupted run of the same config)."),
    profile: Annotated[str, profile_option()] = "full",
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Use only the first N seeds."),
    n_folds: Optional[int] = typer.Option(None, "--folds", min=2, help="Override the number of folds."),
    cv: Optional[CVScheme] = typer.Option(None, "--cv", help="Override the CV scheme."),
    selection: Optional[SelectionPolicy] = typer.Option(
        None, "--selection", help="Which rows choose each fold's epoch: holdout (default; part of the training "
        "folds), holdout_refit (as holdout, then retrained on all the fold's training rows replaying the chosen "
        "schedule), last (the last epoch), oof (the fold itself, as the winners did: optimistic OOF)."),
    no_smoothing: bool = typer.Option(False, "--no-smoothing", help="Ablation: every label smoothing of the "
                                      "model set to 0."),
    executor: ExecutorOption = DEFAULT_EXECUTOR,
    address: AddressOption = None,
    job_cpus: JobCpusOption = 1.0,
    job_gpus: JobGpusOption = 0.0,
    device: DeviceOption = DEFAULT_DEVICE,
    feature_cache: FeatureCacheOption = None,
    feature_cache_max_gb: FeatureCacheMaxGbOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Train one model over seeds x folds; write OOF/test predictions, artifacts, metrics.json."""
    from moakit import runner
    from moakit.config import ConfigError, load_config
    from moakit.data.io import DataError, load
    from moakit.models.checks import check_config

    try:
        cfg = load_config(config, profile=profile, seeds=seeds, folds=n_folds, cv=cv.value if cv else None,
                          selection=selection.value if selection else None)
        if no_smoothing:
            from moakit.models.quality import config_without_smoothing

            cfg = config_without_smoothing(cfg)
        check_config(cfg)  # unknown model or invalid params / values: a config problem
    except (ConfigError, ValueError) as exc:
        usage_error(str(exc), "CONFIG", "train")
    check_out(out, "train")
    check_device(device, "train")
    cache = _feature_cache(feature_cache, feature_cache_max_gb, "train")
    exec_obj = executor_from_options(executor, address, job_cpus, job_gpus, "train")
    try:
        moa = load(data)
        from moakit.workflow import check_models

        check_models({config: cfg}, moa)  # the whole config (feature blocks too) before any work
        with cache:
            result = runner.train(cfg, moa, out, executor=exec_obj, show_progress=not quiet, device=device_name(device))
    except ConfigError as exc:  # the config does not fit this data (e.g. more clusters than rows)
        usage_error(str(exc), "CONFIG", "train")
    except (DataError, ValueError, ImportError, OSError) as exc:
        fail(str(exc))
    m = result.metrics
    if as_json:
        print_json({"run_dir": str(out), "model": cfg.model, "profile": cfg.profile, "seeds": cfg.seeds,
               "folds": cfg.cv.n_folds, "cv": cfg.cv.scheme, "selection": m.get("selection"), "log_loss": m["log_loss"],
               "log_loss_treated": m["log_loss_treated"], "prior_log_loss": m["prior"]["log_loss"],
               "prior_oof_log_loss": (m.get("prior_oof") or {}).get("log_loss"),
               "metrics": str(out / layout.METRICS), "oof_predictions": str(out / layout.OOF_PREDICTIONS),
               "test_predictions": str(out / layout.TEST_PREDICTIONS)})
        return
    prior_oof = (m.get("prior_oof") or {}).get("log_loss")
    print_result(f"{cfg.model}: OOF log loss {m['log_loss']:.6f} (treated rows {m['log_loss_treated']:.6f}); "
            + (f"out-of-fold prior {prior_oof:.6f}, " if prior_oof is not None else "")
            + f"in-sample prior {m['prior']['log_loss']:.6f} -> {markup_path(out / layout.METRICS)}")
    if prior_oof is not None and m["log_loss"] >= prior_oof:
        print_log(f"[yellow]warning[/]: {cfg.model}'s OOF log loss is no better than the out-of-fold prior (the "
             "training means of the other folds, on the same folds): it learned nothing usable")
    print_result(f"test predictions: {markup_path(out / layout.TEST_PREDICTIONS)}")


def run(
    config: str = typer.Argument(..., help="Blend config: a YAML path or a shipped name (blend_best_lb, blend_best_cv)."),
    data: DataDirOption = ...,
    out: Path = typer.Option(..., "--out", help="Run folder (resumes an interrupted run of the same config)."),
    profile: Annotated[str, profile_option("Applied to the blend config and to every model config: ")] = "full",
    executor: ExecutorOption = DEFAULT_EXECUTOR,
    address: AddressOption = None,
    job_cpus: JobCpusOption = 1.0,
    job_gpus: JobGpusOption = 0.0,
    device: DeviceOption = DEFAULT_DEVICE,
    feature_cache: FeatureCacheOption = None,
    feature_cache_max_gb: FeatureCacheMaxGbOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Train every model of a blend config, blend them, write submission.csv and report/."""
    check_blend_config(config, profile, "run")
    check_out(out, "run")
    check_device(device, "run")
    cache = _feature_cache(feature_cache, feature_cache_max_gb, "run")
    exec_obj = executor_from_options(executor, address, job_cpus, job_gpus, "run")
    with cache:
        _run_workflow(config, data, out, profile, exec_obj, quiet, as_json, answers_in(data), device)


def _feature_cache(folder: Optional[Path], max_gb: Optional[float], command: str):
    """The --feature-cache / --feature-cache-max-gb setting for the run (context manager); a
    bad MOAKIT_FEATURE_CACHE_MAX_GB is a usage error, before any work."""
    import os

    from moakit import feature_cache

    if max_gb is None:
        try:
            feature_cache.check_max_gb(os.environ.get(feature_cache.ENV_MAX_GB))
        except ValueError as exc:
            usage_error(f"{feature_cache.ENV_MAX_GB}: {exc}", "--feature-cache-max-gb", command)
    return feature_cache.using(folder, max_gb)


def demo(
    out: Path = typer.Option(Path("demo-run"), "--out", help="Folder for the demo's data and run."),
    rows: int = typer.Option(6000, "--rows", min=100, help="Rows of simulated data (6000: every demo model "
                             "beats the prior on the unseen-drug test; BENCHMARKS.md)."),
    config: str = typer.Option("blend_best_lb", "--config", help="Blend config to run."),
    profile: Annotated[str, profile_option("Profile of the blend and model configs: ")] = "demo",
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

    check_blend_config(config, profile, "demo")
    check_out(out, "demo")
    data_dir = out / "data"
    if not (data_dir / "train_features.csv").exists():
        try:
            run_simulation(data_dir, n_rows=rows, seed=0)
        except (FileExistsError, ValueError, OSError) as exc:
            fail(str(exc))
        print_log(f"simulated {rows} rows -> {markup_path(data_dir)}")
    _run_workflow(config, data_dir, out, profile, "local", quiet, as_json, answers_in(data_dir))


def _run_workflow(config: str, data: Path, out: Path, profile: str, executor, quiet: bool, as_json: bool,
                  answers: Path, device: Device = DEFAULT_DEVICE) -> None:
    from moakit.config import ConfigError
    from moakit.data.io import DataError
    from moakit.workflow import load_blend_config, run_workflow, skip_message

    if quiet:  # with progress on, run_workflow prints it
        try:
            note = skip_message(load_blend_config(config, profile))
        except ConfigError:
            note = None  # reported by run_workflow below
        if note:
            print_log(f"note: {escape(note)}")
    try:
        result = run_workflow(config, data, out, profile=profile, executor=executor, show_progress=not quiet,
                              device=device_name(device))
    except ConfigError as exc:  # a model entry's config does not fit this data
        usage_error(str(exc), "CONFIG", "run")
    except (DataError, ValueError, ImportError, OSError) as exc:
        fail(str(exc))
    summary = workflow_summary(result, answers)
    if as_json:
        print_json(summary)
    else:
        print_workflow(summary)


def workflow_summary(result, answers: Optional[Path] = None) -> dict:
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


def print_workflow(summary: dict) -> None:
    from rich.table import Table

    holdout = any("test_log_loss" in m for m in summary["models"].values())
    table = Table(title=f"moakit run: {markup_path(summary['run_dir'])}",
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
        row = [markup_path(name), m["profile"], f"{m['seeds']} x {m['folds']}", m.get("cv") or "-",
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
    out = stdout_console()
    out.print(table)
    from moakit.headline import headline

    for line in headline(summary["models"], summary["blend"], summary["blend"].get("prior_test_log_loss")):
        out.print(escape(line))
    out.print(f"submission: {markup_path(summary['submission'])}")
    out.print(f"report: {markup_path(summary['report'])}")
