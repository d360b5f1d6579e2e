"""The files of a LINCS L1000 folder (:mod:`moakit.data.l1000`): finding the matrix and the
siginfo / geneinfo / compoundinfo annotations (by pattern, or named), and reading the
annotations with their columns checked."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moakit.data.io import DataError

SIGINFO_COLUMNS = ("sig_id", "pert_id", "cmap_name", "cell_iname", "pert_type", "pert_time", "pert_time_unit",
                   "pert_dose", "pert_dose_unit")
_PATTERNS = {
    "siginfo": re.compile(r"sig_?info", re.I),
    "geneinfo": re.compile(r"gene_?info", re.I),
    "compoundinfo": re.compile(r"compound_?info", re.I),
}
_TIME_UNITS = {"h": 1.0, "hr": 1.0, "hrs": 1.0, "hour": 1.0, "hours": 1.0, "": 1.0, "d": 24.0, "day": 24.0,
               "days": 24.0, "m": 1 / 60, "min": 1 / 60, "minutes": 1 / 60}
EXAMPLES = 5  # ids shown in a report line



@dataclass
class L1000Files:
    """The four files of a LINCS folder."""

    matrix: Path
    siginfo: Path
    geneinfo: Path
    compoundinfo: Path


def find_files(src: Path, matrix: Path | None = None, siginfo: Path | None = None, geneinfo: Path | None = None,
               compoundinfo: Path | None = None) -> L1000Files:
    """The LINCS files of ``src`` (explicit paths win): exactly one match per kind."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: not a directory")
    names = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))

    def one(kind: str, given: Path | None, test) -> Path:
        if given is not None:
            if not Path(given).is_file():
                raise DataError(f"{given}: file not found")
            return Path(given)
        found = [p for p in names if test(p)]
        if len(found) != 1:
            what = "no file" if not found else f"{len(found)} files ({', '.join(p.name for p in found[:4])})"
            raise DataError(f"{src}: {what} for the {kind}; expected one (or name it with --{kind})")
        return found[0]

    return L1000Files(
        matrix=one("matrix", matrix, lambda p: p.suffix.lower() in (".gctx", ".gct")),
        siginfo=one("siginfo", siginfo, lambda p: bool(_PATTERNS["siginfo"].search(p.name)) and _is_text(p)),
        geneinfo=one("geneinfo", geneinfo, lambda p: bool(_PATTERNS["geneinfo"].search(p.name)) and _is_text(p)),
        compoundinfo=one("compoundinfo", compoundinfo,
                         lambda p: bool(_PATTERNS["compoundinfo"].search(p.name)) and _is_text(p)),
    )


def _is_text(path: Path) -> bool:
    return path.name.lower().endswith((".txt", ".tsv", ".txt.gz", ".tsv.gz"))


def _read_tsv(path: Path, required: Sequence[str], usecols: Sequence[str] | None = None) -> pd.DataFrame:
    """A tab-separated annotation file as strings, its required columns checked."""
    try:
        header = pd.read_csv(path, sep="\t", nrows=0).columns
        cols = [c for c in header if usecols is None or c in usecols]
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, usecols=cols)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except Exception as exc:  # parser errors
        raise DataError(f"{path}: cannot be read ({exc})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no {', '.join(repr(c) for c in missing)} column "
                        f"(columns: {', '.join(map(str, list(frame.columns)[:12]))})")
    return frame.apply(lambda s: s.str.strip())


def _first_duplicate(path: Path, frame: pd.DataFrame, column: str) -> None:
    dup = frame[column].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: row {row + 1}: {column} {frame[column].iloc[row]!r} appears more than once")


def shown_values(values) -> str:
    values = list(values)
    more = f", ... ({len(values)} in all)" if len(values) > EXAMPLES else ""
    return ", ".join(repr(str(v)) for v in values[:EXAMPLES]) + more


# --------------------------------------------------------------------------------------
# annotations


def read_siginfo(path: Path) -> pd.DataFrame:
    """siginfo with ``hours`` (float) and ``dose`` (a label such as "10 uM") added."""
    frame = _read_tsv(path, ("sig_id", "pert_id", "pert_type"), usecols=SIGINFO_COLUMNS)
    _first_duplicate(path, frame, "sig_id")
    for col in SIGINFO_COLUMNS:
        if col not in frame.columns:
            frame[col] = ""
    units = frame["pert_time_unit"].str.lower().map(_TIME_UNITS)
    if units.isna().any():
        row = int(np.flatnonzero(units.isna().to_numpy())[0])
        raise DataError(f"{path}: row {row + 1}: unknown pert_time_unit {frame['pert_time_unit'].iloc[row]!r}")
    frame["hours"] = pd.to_numeric(frame["pert_time"], errors="coerce") * units
    frame["dose"] = [dose_label(d, u) for d, u in zip(frame["pert_dose"], frame["pert_dose_unit"])]
    return frame


def dose_label(dose, unit) -> str:
    """"10 uM" from 10.0 and "uM" (the number rounded to 3 significant digits); "" when
    there is no dose; a dose that is not a number is kept as written."""
    text = str(dose).strip()
    if text in ("", "nan", "NaN", "-666", "-666.0"):
        return ""
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{float(f'{value:.3g}'):g} {str(unit).strip()}".strip()


def read_compound_moas(path: Path) -> dict[str, list[str]]:
    """pert_id -> its MoAs (union over the compound's rows, split on ``|``, in first-seen
    order; an empty list for a compound whose ``moa`` is empty)."""
    frame = _read_tsv(path, ("pert_id", "moa"), usecols=("pert_id", "moa"))
    out: dict[str, list[str]] = {}
    for pert, moa in zip(frame["pert_id"], frame["moa"]):
        items = out.setdefault(pert, [])
        for m in str(moa).split("|"):
            m = m.strip()
            if m and m not in items:
                items.append(m)
    return out


def read_geneinfo(path: Path) -> pd.DataFrame:
    frame = _read_tsv(path, ("gene_id",), usecols=("gene_id", "gene_symbol", "feature_space"))
    _first_duplicate(path, frame, "gene_id")
    return frame
