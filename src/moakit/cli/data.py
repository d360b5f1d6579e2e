"""Data commands: ``simulate``, ``folds``, ``score`` and ``dataset l1000``."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from moakit import choices
from moakit.cli.common import fail, markup_path, print_json, print_log, print_result, usage_error
from moakit.cli.options import (CVScheme, FileFormat, GeneSet, JsonOption, ProfileGenerator, SimulateLayout,
                                file_option, seed_option)


def simulate(
    out: Path = typer.Argument(..., help="Folder to create (must not exist or be empty)."),
    rows: int = typer.Option(6000, "--rows", min=100, help="Total rows (train + test); ignored with --labels-from."),
    seed: Annotated[int, seed_option("Random seed: same seed, same files.")] = 0,
    labels_from: Optional[Path] = typer.Option(
        None, "--labels-from", exists=True, file_okay=False,
        help="Folder with the real lish-moa label files (train_targets_*.csv.zip, train_drug.csv.zip): "
        "simulate profiles on top of the real labels."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", min=0.0, max=1.0,
                                        help="Share of rows (whole drugs) held out as test."),
    file_format: FileFormat = typer.Option(FileFormat(choices.FILE_FORMATS[0]), "--format", help="File format."),
    layout: SimulateLayout = typer.Option(
        SimulateLayout.lish_moa, "--layout",
        help="lish-moa: the competition's folder; l1000: a LINCS-style folder (GCTX + siginfo / geneinfo / "
        "compoundinfo, 978 landmark genes, its own MoAs; --rows = signatures) for `moakit dataset l1000`."),
    generator: ProfileGenerator = typer.Option(
        ProfileGenerator(choices.DEFAULT_PROFILE_GENERATOR), "--generator",
        help="How the profiles are made: pathway (latent pathways, the default) or factor (low-rank factors, "
        "plate batch effects, per-MoA time courses; moakit.data.generators). Labels, drugs and split do not change."),
    effect_scale: float = typer.Option(1.0, "--effect-scale", min=0.0,
                                       help="Multiplies the MoA-caused part of the profiles (1: calibrated)."),
) -> None:
    """Write a complete, MoA-like lish-moa folder (plus answers/ with the test labels), or a LINCS-style one."""
    if layout is SimulateLayout.l1000:
        from moakit.data.simulate_l1000 import simulate_l1000

        if labels_from is not None:
            usage_error("--labels-from works with --layout lish-moa only", "--labels-from", "simulate")
        if generator is not ProfileGenerator.pathway or effect_scale != 1.0:
            usage_error("--generator / --effect-scale work with --layout lish-moa only", "--generator", "simulate")
        try:
            path = simulate_l1000(out, n_signatures=rows, seed=seed)
        except (FileExistsError, ValueError, OSError) as exc:
            fail(str(exc))
        print_result(f"wrote simulated LINCS L1000 data to {markup_path(path)}")
        return
    from moakit.data.simulate import simulate as run_simulation

    try:
        path = run_simulation(out, n_rows=rows, seed=seed, labels_from=labels_from,
                              test_fraction=test_fraction, file_format=file_format.value,
                              generator=generator.value, effect_scale=effect_scale)
    except (FileExistsError, FileNotFoundError, ValueError, OSError) as exc:
        fail(str(exc))
    print_result(f"wrote simulated lish-moa data to {markup_path(path)}")


def folds(
    data: Path = typer.Argument(..., exists=True, file_okay=False, help="lish-moa data folder."),
    out: Path = typer.Option(Path("folds.csv"), "--out", help="CSV to write: sig_id, drug_id, fold."),
    cv: CVScheme = typer.Option(CVScheme(choices.DEFAULT_CV_SCHEME), "--cv",
                                help="old (multilabel stratified) or drug (drug-aware)."),
    n_folds: int = typer.Option(5, "--folds", min=2, help="Number of folds."),
    seed: Annotated[int, seed_option("Seed of the split.")] = 42,
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
        fail(str(exc))
    sizes = np.bincount(fold_ids, minlength=n_folds)
    print_result(f"{cv.value} CV, {n_folds} folds, rows per fold {sizes.tolist()} -> {markup_path(out)}")


def score(
    submission: Path = typer.Argument(..., exists=True, dir_okay=False,
                                      help="Submission CSV: sig_id + the 206 scored targets."),
    answers: Path = typer.Argument(..., exists=True, dir_okay=False,
                                   help="Answers CSV with the true 0/1 targets (e.g. answers/test_targets_scored.csv)."),
    features: Annotated[Optional[Path], file_option(
        "--features", "test_features file, to also score treated rows only and zero control rows.")] = None,
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
        fail(str(exc))
    if as_json:
        out = {"submission": str(submission), "answers": str(answers), "rows": len(sub.sig_id),
               "targets": len(sub.names), "log_loss": result["log_loss"]}
        if features is not None:
            out["log_loss_treated"] = result["log_loss_treated"]
        print_json(out)
        return
    print_result(f"log loss {result['log_loss']:.6f}")
    if features is not None:
        print_result(f"log loss (treated rows) {result['log_loss_treated']:.6f}")


dataset_app = typer.Typer(help="Build a moakit dataset folder from other data (e.g. LINCS L1000).",
                          no_args_is_help=True)


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
    genes: GeneSet = typer.Option(GeneSet(choices.GENE_SETS[0]), "--genes", help="landmark (978) or all genes of the matrix."),
    min_compounds: int = typer.Option(5, "--min-compounds", min=1,
                                      help="Drop MoAs with fewer compounds from the scored targets (listed on stderr "
                                      "and in dataset.json); those with a training signature become the non-scored "
                                      "(auxiliary) targets."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", min=0.0, max=0.99,
                                        help="Share of treated signatures held out, as whole compounds."),
    seed: Annotated[int, seed_option("Seed of the train / test split.")] = 0,
    matrix: Annotated[Optional[Path], file_option("--matrix", "The .gctx / .gct file, when SRC holds several.")] = None,
    siginfo: Annotated[Optional[Path], file_option(
        "--siginfo", "The signature annotations (default: SRC's siginfo*.txt).")] = None,
    geneinfo: Annotated[Optional[Path], file_option(
        "--geneinfo", "The gene annotations (default: SRC's geneinfo*.txt).")] = None,
    compoundinfo: Annotated[Optional[Path], file_option(
        "--compoundinfo", "The compound annotations with the moa column (default: SRC's compoundinfo*.txt).")] = None,
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
        info = build_l1000_dataset(src, out, filters, files=files, log=lambda line: print_log(escape(line)))
    except (DataError, FileExistsError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        print_json({"dataset": str(out), **info})
        return
    print_result(f"{info['train_signatures']} train / {info['test_signatures']} test signatures "
            f"({info['train_compounds']} / {info['test_compounds']} compounds), {info['genes']} genes, "
            f"{len(info['targets'])} MoA targets ({len(info.get('nonscored_targets') or {})} non-scored) "
            f"-> {markup_path(out)}")
