"""The CLI's option types, declared once and reused by every command.

The choice enums are built from :mod:`moakit.choices` (one vocabulary per choice; defaults
too). An option that several commands take is one ``Annotated`` type here; where the commands
word its help differently, a function returns the option with its flag and checks fixed and
the help given (``Annotated[Optional[Path], data_option("...")]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from moakit import choices

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
FileFormat = choices.cli_enum("FileFormat", choices.FILE_FORMATS)
SimulateLayout = choices.cli_enum("SimulateLayout", choices.SIMULATE_LAYOUTS)
ProfileGenerator = choices.cli_enum("ProfileGenerator", choices.PROFILE_GENERATORS)
GeneSet = choices.cli_enum("GeneSet", choices.GENE_SETS)
PredictBy = choices.cli_enum("PredictBy", choices.PREDICT_BY)
CalibrationMethod = choices.cli_enum("CalibrationMethod", choices.CALIBRATION_METHODS)
ExplainMethod = choices.cli_enum("ExplainMethod", choices.EXPLAIN_METHODS)
DEFAULT_DEVICE = Device(choices.DEFAULT_DEVICE)
DEFAULT_EXECUTOR = ExecutorName(choices.DEFAULT_EXECUTOR)


# Options taken by several commands with the same help.
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
FeatureCacheOption = Annotated[Optional[Path], typer.Option(
    "--feature-cache", file_okay=False, help="Folder of fitted feature states kept across runs: a state whose "
    "content key is there is reused, a new fit is stored (same results as without it). Default: the "
    "MOAKIT_FEATURE_CACHE environment variable, else no cache.")]
FeatureCacheMaxGbOption = Annotated[Optional[float], typer.Option(
    "--feature-cache-max-gb", min=0.001, help="Size bound of --feature-cache; least-recently-used states are "
    "removed beyond it. Default: MOAKIT_FEATURE_CACHE_MAX_GB, else 5.")]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the results as one JSON object on stdout.")]
DataDirOption = Annotated[Path, typer.Option("--data", exists=True, file_okay=False, help="lish-moa data folder.")]


# Options taken by several commands, each with its own help: the flag and its checks here,
# the type and the help at the command (``Annotated[Optional[Path], data_option("...")] = None``).
def profile_option(lead: str = "") -> Any:
    """--profile (str): any profile name (the config loaders check it); help ``lead`` + PROFILE_HELP."""
    return typer.Option("--profile", metavar="PROFILE", help=lead + PROFILE_HELP)


def run_dir_argument(help: str) -> Any:
    """RUN_DIR (Path): an existing run, workflow or blend folder."""
    return typer.Argument(exists=True, file_okay=False, help=help)


def data_option(help: str) -> Any:
    """--data (Optional[Path]): an existing data folder (default: the one the run records)."""
    return typer.Option("--data", exists=True, file_okay=False, help=help)


def seed_option(help: str) -> Any:
    """--seed (int)."""
    return typer.Option("--seed", help=help)


def file_option(flag: str, help: str) -> Any:
    """An optional existing file (Optional[Path]): --features, --siginfo, --groups ..."""
    return typer.Option(flag, exists=True, dir_okay=False, help=help)
