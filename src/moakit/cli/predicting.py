"""``moakit predict``: new rows through a run's saved artifacts."""

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from moakit import choices
from moakit.cli.common import fail, markup_path, print_json, print_log, print_result, usage_error
from moakit.cli.options import JsonOption, PredictBy, QuietOption, file_option
from moakit.runs import layout


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
                                             help="Rows of a prediction block and inference batch (default: "
                                             "blocks of 4096 rows, the saved batch sizes)."),
    chunk_rows: int = typer.Option(20_000, "--chunk-rows", min=0, help="Rows predicted at a time: memory is bounded "
                                   "by the chunk (0: all rows at once; the output is the same bit for bit)."),
    quiet: QuietOption = False,
    allow_missing_genes: bool = typer.Option(
        False, "--allow-missing-genes", help="GCTX / dataset input: fill genes the run needs but the input lacks with "
        "0 (the z-score of an unchanged gene); they are listed on stderr. Without it they are an error."),
    siginfo: Annotated[Optional[Path], file_option(
        "--siginfo", "GCTX input: its siginfo (default: the siginfo*.txt beside it).")] = None,
    cp_time: Optional[float] = typer.Option(None, "--cp-time", help="GCTX / dataset input: cp_time (hours) of every "
                                            "row, e.g. 24 for a lish-moa run (it knows 24 / 48 / 72)."),
    cp_dose: Optional[str] = typer.Option(None, "--cp-dose", help="GCTX / dataset input: cp_dose of every row, e.g. "
                                          "D1 for a lish-moa run (it knows D1 / D2, not L1000's uM doses)."),
    by: PredictBy = typer.Option(PredictBy(choices.PREDICT_BY[0]), "--by", help="compound: also write, per compound, the top "
                                 "MoAs by the mean probability of its signatures (OUT's name + _by_compound.csv)."),
    top: int = typer.Option(5, "--top", min=1, help="With --by compound: MoAs per compound."),
    groups_file: Annotated[Optional[Path], file_option(
        "--groups", "With --by compound: a table of sig_id and drug_id / pert_id (default: siginfo's pert_id, a "
        "dataset folder's drug ids).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Predict new rows from a run's saved artifacts (nothing is refitted); controls get 0.

    The input is read, predicted and written chunk by chunk (--chunk-rows): memory is
    bounded by the chunk, the output equals one pass bit for bit, and a bad row anywhere
    leaves nothing written."""
    from moakit.data.io import DataError
    from moakit.inference import InferenceError, PredictUsageError, predict_file

    if out.is_dir():
        usage_error(f"{out} is a folder; give the submission file to write", "--out", "predict")
    if out.resolve() == features.resolve() or (out.exists() and out.samefile(features)):
        usage_error(f"{out} is the --features file; the submission would overwrite its input", "--out", "predict")
    start = time.perf_counter()
    try:
        done = predict_file(run_dir, features, out, batch_size=batch_size, chunk_rows=chunk_rows,
                            progress=not (quiet or as_json), allow_missing_genes=allow_missing_genes, siginfo=siginfo,
                            cp_time=cp_time, cp_dose=cp_dose, by_compound=by is PredictBy.compound, top=top,
                            groups_file=groups_file, log=lambda note: print_log(escape(note)))
    except PredictUsageError as exc:
        usage_error(str(exc), exc.option, "predict")
    except (DataError, InferenceError, ValueError, OSError) as exc:
        fail(str(exc))
    seconds = time.perf_counter() - start
    rate = done["rows"] / max(seconds, 1e-9)
    path, calls_path = Path(done["submission"]), done.get("by_compound")
    if as_json:
        print_json({"submission": str(path), "rows": done["rows"], "targets": done["targets"],
               "seconds": round(seconds, 3), "rows_per_second": round(rate, 1),
               **({"by_compound": str(calls_path)} if calls_path else {})})
        return
    print_result(f"{done['rows']} rows x {done['targets']} targets -> {markup_path(path)}")
    if calls_path:
        print_result(f"top {top} MoAs per compound -> {markup_path(Path(calls_path))}")
    print_log(f"{seconds:.1f} s, {rate:.0f} rows/s")
