"""The `moakit` command line: one Typer app for every job.

Conventions: results (tables, scores, paths written) go to stdout, progress and logs to
stderr; ``--json`` prints a command's results as one JSON object instead. Exit code 0 on
success, 1 when the work failed (bad data, a failed training, an unreadable file), 2 for a
usage error (an unknown option or choice, a missing argument, a config or option value that
cannot be used). Handled errors print one line, no traceback.

The commands live in modules by job (:mod:`.data`, :mod:`.training`, :mod:`.predicting`,
:mod:`.blending`, :mod:`.trust`); their shared option types in :mod:`.options`, the output
and the checks before any work in :mod:`.common`. They are registered here, in the order
``moakit --help`` lists them.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from moakit._version import __version__
from moakit.cli import blending, data, predicting, training, trust
from moakit.cli.training import print_workflow, workflow_summary  # tests use them

__all__ = ["COMMANDS", "app", "main", "print_workflow", "workflow_summary"]

app = typer.Typer(
    name="moakit",
    help="Predict drug mechanisms of action from L1000/PRISM cell profiles "
    "(the 1st-place lish-moa solution as a toolkit). Results go to stdout, progress to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


COMMANDS = (  # in the order of `moakit --help`; a new command: its module's function, added here
    data.simulate, data.folds, data.score, training.train, training.run, predicting.predict, training.demo,
    blending.blend, trust.report, trust.evaluate, trust.explain,
)
for _command in COMMANDS:
    app.command()(_command)
app.add_typer(data.dataset_app, name="dataset")


def main() -> None:  # pragma: no cover
    """The `moakit` console script and `python -m moakit`."""
    if not sys.stderr.isatty():  # plain usage errors and help: no boxes that wrap long paths
        app.rich_markup_mode = None
    app(prog_name="moakit")
