"""What every command shares: the result / log / error output and the checks made before any work.

Results (tables, scores, paths written) go to stdout, progress and logs to stderr; ``fail``
ends a command with exit code 1, ``usage_error`` with 2 (see :mod:`moakit.cli`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from moakit.cli.options import Device, ExecutorName
from moakit.progress import console  # stderr: progress and logs

# --------------------------------------------------------------------------- output


def stdout_console() -> Console:
    """Results console: stdout; never wraps long lines (paths) when it is not a terminal."""
    return Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 10_000)


def print_result(text: str) -> None:
    stdout_console().print(text)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_log(text: str) -> None:
    console.print(text, soft_wrap=True, highlight=False)


def fail(message: str) -> NoReturn:
    """A runtime failure: one line on stderr, exit 1."""
    console.print(f"[bold red]error:[/] {escape(str(message))}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=1)


def usage_error(message: str, param: str, command: str) -> NoReturn:
    """A usage error found by moakit (a config or option value it cannot use): one unwrapped
    line on stderr and a pointer to --help, exit 2 (click's own usage errors exit 2 too)."""
    console.print(f"[bold red]error:[/] invalid value for {param}: {escape(str(message))}", soft_wrap=True,
                  highlight=False)
    console.print(f"Try 'moakit {command} --help' for help.", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def markup_path(path: Path | str) -> str:
    """``path`` as literal text inside Rich markup (its square brackets escaped)."""
    return escape(str(path))


# --------------------------------------------------------------------------- checks before any work


def executor_from_options(name: ExecutorName, address: Optional[str], job_cpus: float, job_gpus: float, command: str):
    """An executor object for --executor / --address (Ray is imported only when asked for)."""
    from moakit.executors import make_executor

    if name is ExecutorName.ray:
        try:
            return make_executor("ray", address=address, num_cpus_per_job=job_cpus, num_gpus_per_job=job_gpus)
        except ImportError as exc:
            fail(str(exc))
    if address or job_cpus != 1.0 or job_gpus != 0.0:
        usage_error("--address, --job-cpus and --job-gpus are only used with --executor ray", "--executor", command)
    return make_executor(name.value)


def answers_in(data_dir: Path) -> Optional[Path]:
    """The data folder's test answers (.csv, .csv.zip or .parquet), None without (or when
    unclear: the run then shows no test losses)."""
    from moakit.data.io import DataError
    from moakit.runs.records import find_test_answers

    try:
        return find_test_answers(data_dir)
    except DataError:
        return None


_OUT_KIND = {"train": "model", "run": "workflow", "demo": "workflow", "blend": "blend", "report": "report"}


def check_out(out: Path, command: str) -> None:
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
        usage_error(str(exc), "--out", command)


def check_blend_config(config: str, profile: str, command: str) -> None:
    """A blend config (and its model configs) that cannot be used is a usage error."""
    from moakit.config import ConfigError
    from moakit.workflow import load_blend_config, resolve_models

    from moakit.models.checks import check_config

    try:
        for name, cfg in resolve_models(load_blend_config(config, profile)).items():
            try:
                check_config(cfg)  # params and values of every entry, before any work
            except (ConfigError, ValueError) as exc:
                raise ConfigError(f"model entry {name!r}: {exc}") from None
    except ConfigError as exc:
        usage_error(str(exc), "CONFIG", command)


def check_device(device: Device, command: str) -> None:
    """--device cuda without a GPU is a usage error, before any work."""
    from moakit.validate import device_problem

    problem = device_problem(device_name(device))
    if problem is not None:
        usage_error(problem, "--device", command)


def device_name(device: Device) -> str | None:
    return None if device is Device.auto else device.value
