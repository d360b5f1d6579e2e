"""Reading and validating a lish-moa folder.

Every problem is reported as a :class:`DataError` whose message names the file, and where
it applies the column and the (1-based, header excluded) row, so that a user can open the
file and see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moakit.data import schema
from moakit.data.dataset import Dataset, MoAData


class DataError(ValueError):
    """Invalid or inconsistent input data; the message says where."""


def find_file(folder: Path, stem: str, required: bool = True) -> Path | None:
    """The file ``stem`` in ``folder`` with one of the supported extensions."""
    found = [folder / f"{stem}{ext}" for ext in schema.EXTENSIONS if (folder / f"{stem}{ext}").exists()]
    if len(found) > 1:
        raise DataError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep one")
    if not found:
        if required:
            allowed = ", ".join(f"{stem}{ext}" for ext in schema.EXTENSIONS)
            raise DataError(f"{folder}: missing {stem} (expected one of {allowed})")
        return None
    return found[0]


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV / zipped CSV / parquet file, with errors that name the file."""
    path = Path(path)
    try:
        if path.name.endswith(".parquet"):
            frame = pd.read_parquet(path)
        else:
            # The raw header is read first: pandas would silently rename a duplicated
            # column "x" to "x.1".
            raw_header = pd.read_csv(path, nrows=1, header=None, dtype=str).iloc[0].tolist()
            check_duplicates(path, [str(c) for c in raw_header])
            frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    except DataError:
        raise
    except Exception as exc:  # parser errors, bad zip, bad parquet
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    check_duplicates(path, [str(c) for c in frame.columns])
    if frame.shape[0] == 0:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def _show(value) -> str:
    """A cell value as a user would write it (no numpy type names)."""
    if hasattr(value, "item"):
        value = value.item()
    return repr(value)


def check_duplicates(path: Path, columns: list[str]) -> None:
    seen: set[str] = set()
    for col in columns:
        if col in seen:
            raise DataError(f"{path}: column {col!r} appears more than once")
        seen.add(col)


def require_columns(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{path}: missing column(s) {shown}{more}")


def check_ids(path: Path, frame: pd.DataFrame) -> np.ndarray:
    require_columns(path, frame, [schema.ID_COLUMN])
    ids = frame[schema.ID_COLUMN].astype(str).to_numpy()
    dup = pd.Series(ids).duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: row {row + 1}: sig_id {ids[row]!r} appears more than once")
    return ids


def numeric_block(path: Path, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """float32 matrix of ``columns``; non-numeric, NaN and inf values are errors."""
    for col in columns:
        series = frame[col]
        if not pd.api.types.is_numeric_dtype(series):
            converted = pd.to_numeric(series, errors="coerce")
            bad = converted.isna() & series.notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"{path}: column {col!r}, row {row + 1}: non-numeric value {_show(series.iloc[row])}")
    numeric = frame[columns]
    if not all(pd.api.types.is_numeric_dtype(numeric[c]) for c in columns):
        numeric = numeric.apply(pd.to_numeric, errors="coerce")
    values = numeric.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row, j = (int(v[0]) for v in np.nonzero(~finite))
        raise DataError(f"{path}: column {columns[j]!r}, row {row + 1}: value {values[row, j]} is not finite (NaN or inf)")
    return values.astype(np.float32)


def _encode(path: Path, frame: pd.DataFrame, column: str, allowed: tuple) -> np.ndarray:
    values = _meta_values(frame, column)
    lookup = {v: i for i, v in enumerate(allowed)}
    codes = values.map(lookup)
    if codes.isna().any():
        row = int(np.flatnonzero(codes.isna().to_numpy())[0])
        raise DataError(
            f"{path}: column {column!r}, row {row + 1}: unknown value {_show(frame[column].iloc[row])} "
            f"(allowed: {', '.join(map(str, allowed))})"
        )
    return codes.to_numpy(dtype=np.int8 if len(allowed) < 128 else np.int16)


def _meta_values(frame: pd.DataFrame, column: str) -> pd.Series:
    """A meta column's values as the vocabularies hold them: cp_time numbers (whole numbers
    as int), cp_dose / cp_type strings."""
    values = frame[column]
    if column != "cp_time":  # labels: a numeric dose column (10.0) reads as its text ("10.0")
        return values if values.dtype == object else values.where(values.isna(), values.astype(str))
    numbers = pd.to_numeric(values, errors="coerce")
    whole = numbers.notna() & (numbers == numbers.round())
    return numbers.astype(object).where(~whole, numbers.where(whole).astype("Int64").astype(object))


def _sort_key(value):
    """Doses such as "10 uM" / "0.3 uM" sort by their number, then by the rest."""
    text = str(value).strip()
    head = text.split()[0] if text else ""
    try:
        return (0, float(head), text)
    except ValueError:
        return (1, 0.0, text)


def build_vocab(path, frame: pd.DataFrame, column: str) -> tuple:
    """The vocabulary of a cp_time / cp_dose column: lish-moa's when the values are among
    lish-moa's, else the sorted distinct values (times by number, doses by leading number)."""
    values = _meta_values(frame, column)
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{path}: column {column!r}, row {row + 1}: missing or non-numeric value "
                        f"{_show(frame[column].iloc[row])}")
    distinct = list(pd.unique(values))
    default = schema.LISH_MOA_VOCAB[column]
    if set(distinct) <= set(default):
        return tuple(default)
    if column == "cp_time":
        return tuple(sorted(distinct, key=float))
    return tuple(sorted((str(v) for v in distinct), key=_sort_key))


def _rename_aliases(path, frame: pd.DataFrame) -> pd.DataFrame:
    """pert_type / pert_time / pert_dose (LINCS) read as cp_type / cp_time / cp_dose."""
    renames = {}
    for alias, name in schema.META_ALIASES.items():
        if alias in frame.columns:
            if name in frame.columns:
                raise DataError(f"{path}: has both {name!r} and its alias {alias!r}; keep one")
            renames[alias] = name
    return frame.rename(columns=renames) if renames else frame


def table_layout(frame: pd.DataFrame) -> str:
    """The layout a features table without a stated one is read under: lish-moa's when it
    has cell (``c-``) columns, else a general panel."""
    has_cells = any(str(c).startswith(schema.CELL_PREFIX) for c in frame.columns)
    return schema.LISH_MOA_LAYOUT if has_cells else schema.PANEL_LAYOUT


def parse_features(path: Path, frame: pd.DataFrame, layout: str | None = None,
                   vocab: dict[str, tuple] | None = None) -> Dataset:
    """Validate a features table and turn it into a Dataset without targets.

    ``layout``: ``lish-moa`` (every lish-moa column required, lish-moa's vocabularies) or
    ``panel`` (gene columns required; cell columns, cp_type, cp_time, cp_dose optional, also
    as pert_type / pert_time / pert_dose); None: :func:`table_layout`. ``vocab`` encodes
    cp_time / cp_dose of a panel (a value outside it is an error); None: built from the data."""
    layout = layout or table_layout(frame)
    if layout == schema.PANEL_LAYOUT:
        frame = _rename_aliases(path, frame)
    from moakit.validate import check_misnamed_columns

    check_misnamed_columns(path, frame.columns)  # 'G-5' would be silently left out
    gene_cols = [c for c in frame.columns if str(c).startswith(schema.GENE_PREFIX)]
    cell_cols = [c for c in frame.columns if str(c).startswith(schema.CELL_PREFIX)]
    lish_moa = layout == schema.LISH_MOA_LAYOUT
    require_columns(path, frame, [schema.ID_COLUMN, *(schema.META_COLUMNS if lish_moa else [])])
    if not gene_cols:
        raise DataError(f"{path}: no gene expression columns (names starting with {schema.GENE_PREFIX!r})")
    if lish_moa and not cell_cols:
        raise DataError(f"{path}: no cell viability columns (names starting with {schema.CELL_PREFIX!r})")
    ids = check_ids(path, frame)
    meta = tuple(c for c in schema.META_COLUMNS if c in frame.columns)
    codes, used = {}, {}
    for column in ("cp_time", "cp_dose"):
        if column not in meta:
            codes[column], used[column] = np.zeros(len(frame), np.int8), ()
            continue
        allowed = schema.LISH_MOA_VOCAB[column] if lish_moa else (
            tuple((vocab or {}).get(column) or ()) or build_vocab(path, frame, column))
        codes[column], used[column] = _encode(path, frame, column, allowed), allowed
    cp_type = (_encode(path, frame, "cp_type", schema.CP_TYPES) if "cp_type" in meta
               else np.zeros(len(frame), np.int8))
    return Dataset(
        sig_id=ids,
        genes=numeric_block(path, frame, gene_cols),
        cells=(numeric_block(path, frame, cell_cols) if cell_cols
               else np.zeros((len(frame), 0), np.float32)),
        cp_type=cp_type,
        cp_time=codes["cp_time"],
        cp_dose=codes["cp_dose"],
        gene_names=[str(c) for c in gene_cols],
        cell_names=[str(c) for c in cell_cols],
        vocab=used,
        meta=meta,
    )


def read_features(path: str | Path, layout: str | None = None, vocab: dict[str, tuple] | None = None) -> Dataset:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return parse_features(path, read_table(path), layout=layout, vocab=vocab)


def _values(ds: Dataset, column: str) -> np.ndarray:
    vocab = list(ds.vocab.get(column, ()))
    return np.asarray(vocab, dtype=object)[ds.cp_time.astype(np.int64) if column == "cp_time"
                                            else ds.cp_dose.astype(np.int64)]


def apply_panel(ds: Dataset, panel: dict, where: str) -> Dataset:
    """``ds`` encoded as a trained run's ``panel`` (:attr:`Dataset.panel`): the same meta
    columns and vocabularies, so the rows become the inputs the run was trained on. A
    cp_time / cp_dose the run needs but ``ds`` lacks, or a value it never saw, is a DataError
    naming the column (and the value); meta columns the run did not use are ignored; a run's
    cp_type absent from ``ds`` reads as every row treated."""
    want_meta = tuple(panel.get("meta", schema.META_COLUMNS))
    want_vocab = {k: tuple(v) for k, v in panel.get("vocab", schema.LISH_MOA_VOCAB).items()}
    if tuple(ds.meta) == want_meta and {k: tuple(v) for k, v in ds.vocab.items()} == want_vocab:
        return ds
    codes = {}
    for column in ("cp_time", "cp_dose"):
        allowed = want_vocab.get(column, ())
        if not allowed:
            codes[column] = np.zeros(len(ds), np.int8)
            continue
        if column not in ds.meta:
            raise DataError(f"{where}: column {column!r} is missing; the run was trained with it "
                            f"(values {', '.join(map(str, allowed))})")
        lookup = {v: i for i, v in enumerate(allowed)}
        values = _values(ds, column)
        mapped = pd.Series(values, dtype=object).map(lookup)
        if mapped.isna().any():
            row = int(np.flatnonzero(mapped.isna().to_numpy())[0])
            raise DataError(f"{where}: column {column!r}, row {row + 1}: value {_show(values[row])} was not seen in "
                            f"training (the run knows: {', '.join(map(str, allowed))})")
        codes[column] = mapped.to_numpy(dtype=np.int8 if len(allowed) < 128 else np.int16)
    out = ds.subset(np.arange(len(ds)))
    out.cp_time, out.cp_dose = codes["cp_time"], codes["cp_dose"]
    out.vocab, out.meta = want_vocab, want_meta
    return out


def unify_panels(train: Dataset, test: Dataset, where: str) -> tuple[Dataset, Dataset]:
    """Train and test splits encoded with one vocabulary per column: the union of their
    values (lish-moa's when all are lish-moa's). Both must have the same meta columns."""
    if tuple(train.meta) != tuple(test.meta):
        if len(test) == 0:
            return train, train.subset(np.zeros(len(train), bool))
        raise DataError(f"{where}: meta columns {list(test.meta)} differ from the training rows' {list(train.meta)}")
    if train.vocab == test.vocab:
        return train, test
    vocab = {}
    for column in ("cp_time", "cp_dose"):
        values = list(dict.fromkeys([*_values(train, column), *_values(test, column)]))
        frame = pd.DataFrame({column: values})
        vocab[column] = build_vocab(where, frame, column) if values else ()
    panel = {"meta": list(train.meta), "vocab": vocab}
    return apply_panel(train, panel, where), apply_panel(test, panel, where)


def target_columns(where, columns) -> list[str]:
    """The target column names of a targets table (every column but sig_id), as str."""
    names = [str(c) for c in columns if c != schema.ID_COLUMN]
    if not names:
        raise DataError(f"{where}: no target columns besides sig_id")
    return names


def check_binary(where, values: np.ndarray, names: list[str]) -> None:
    """Targets are 0 or 1: the first other value is a DataError naming column and row."""
    not_binary = (values != 0) & (values != 1)
    if not_binary.any():
        row, j = (int(v[0]) for v in np.nonzero(not_binary))
        raise DataError(f"{where}: column {names[j]!r}, row {row + 1}: target {values[row, j]} is not 0 or 1")


def _id_and_target_columns(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(sig_ids, target column names, numeric values) of a targets or submission file."""
    frame = read_table(path)
    ids = check_ids(path, frame)
    names = target_columns(path, frame.columns)
    return ids, names, numeric_block(path, frame, names)


def _read_targets(path: Path, sig_ids: np.ndarray, features_path: Path) -> tuple[np.ndarray, list[str]]:
    """Target matrix aligned to ``sig_ids`` (the features' order)."""
    ids, names, values = _id_and_target_columns(path)
    check_binary(path, values, names)
    return align_to_ids(path, ids, values, sig_ids, features_path), names


def align_to_ids(path: Path, ids: np.ndarray, values: np.ndarray, sig_ids: np.ndarray,
                 features_path: Path) -> np.ndarray:
    """Reorder ``values`` (rows keyed by ``ids``) into the order of ``sig_ids``."""
    position = pd.Index(ids)
    order = position.get_indexer(sig_ids)
    if (order < 0).any():
        missing = sig_ids[order < 0]
        raise DataError(
            f"{path}: {len(missing)} sig_id(s) of {features_path.name} have no row here, e.g. {missing[0]!r}"
        )
    if len(ids) != len(sig_ids):
        extra = np.setdiff1d(ids, sig_ids)
        raise DataError(f"{path}: {len(extra)} sig_id(s) are not in {features_path.name}, e.g. {extra[0]!r}")
    return values[order]


def read_info(folder: Path) -> dict:
    """The folder's dataset.json (``{}`` when it has none)."""
    import json

    path = folder / schema.DATASET_INFO
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: not a JSON object")
    return info


def folder_layout(folder: Path, info: dict, train_path: Path) -> str:
    """lish-moa for a folder whose dataset.json says so, or has none and cell columns;
    else the general panel layout."""
    layout = info.get("layout")
    if layout is None:
        try:
            if train_path.name.endswith(".parquet"):
                import pyarrow.parquet as pq

                header = pq.read_schema(train_path).names
            else:
                header = pd.read_csv(train_path, nrows=0).columns
        except Exception as exc:  # read_features below reports it with the file's name
            header = []
            del exc
        return table_layout(pd.DataFrame(columns=list(header)))
    return schema.LISH_MOA_LAYOUT if str(layout) == schema.LISH_MOA_LAYOUT else schema.PANEL_LAYOUT


def read_gene_info(folder: Path, gene_names: list[str]) -> pd.DataFrame | None:
    """column, entrez_id, symbol of each gene column: genes.csv when the folder has one
    (one row per gene column, in column order), else for lish-moa's g-0 .. g-771 the
    organisers' mapping (no symbols), else None."""
    path = folder / schema.GENE_INFO
    if path.exists():
        frame = read_table(path)
        require_columns(path, frame, ["column", "entrez_id"])
        columns = frame["column"].astype(str).tolist()
        if columns != list(gene_names):
            j = next((i for i, (a, b) in enumerate(zip(columns, gene_names)) if a != b), min(len(columns),
                                                                                            len(gene_names)))
            raise DataError(f"{path}: lists {len(columns)} gene columns, the features have {len(gene_names)}; "
                            f"row {j + 1} differs ({columns[j] if j < len(columns) else 'none'!r} vs "
                            f"{gene_names[j] if j < len(gene_names) else 'none'!r})")
        symbols = frame["symbol"] if "symbol" in frame.columns else pd.Series([None] * len(frame))
        return pd.DataFrame({"column": columns, "entrez_id": frame["entrez_id"].astype(str).tolist(),
                             "symbol": [None if pd.isna(v) else str(v) for v in symbols]})
    from moakit.data.column_maps import lish_moa_gene_ids

    ids = lish_moa_gene_ids()
    if gene_names and all(g in ids for g in gene_names):
        return pd.DataFrame({"column": list(gene_names), "entrez_id": [ids[g] for g in gene_names],
                             "symbol": [None] * len(gene_names)})
    return None


def load(folder: str | Path) -> MoAData:
    """Read and validate a lish-moa folder, or a moakit dataset folder of any panel, into
    train and test Datasets.

    Targets and drug ids are aligned to the feature files' row order by sig_id. A panel
    folder (dataset.json with another layout, or no cell columns) may lack test_features
    (the test split then has 0 rows); its cp_time / cp_dose vocabularies are built from the
    train and test rows together.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    info = read_info(folder)
    train_path = find_file(folder, "train_features")
    layout = folder_layout(folder, info, train_path)
    panel = layout == schema.PANEL_LAYOUT
    test_path = find_file(folder, "test_features", required=not panel)
    train = read_features(train_path, layout=layout)
    if test_path is not None:
        from moakit.validate import same_columns

        test = read_features(test_path, layout=layout)
        test = same_columns(test, train, str(test_path), str(train_path))  # by name; names the file lacking one
        if panel:
            train, test = unify_panels(train, test, str(test_path))
    else:
        test = train.subset(np.zeros(len(train), bool))

    scored_path = find_file(folder, "train_targets_scored")
    train.scored, train.scored_names = _read_targets(scored_path, train.sig_id, train_path)
    nonscored_path = find_file(folder, "train_targets_nonscored", required=False)
    if nonscored_path is not None:
        train.nonscored, train.nonscored_names = _read_targets(nonscored_path, train.sig_id, train_path)
    drug_path = find_file(folder, "train_drug", required=False)
    if drug_path is not None:
        frame = read_table(drug_path)
        require_columns(drug_path, frame, [schema.ID_COLUMN, schema.DRUG_COLUMN])
        ids = check_ids(drug_path, frame)
        drugs = frame[schema.DRUG_COLUMN].astype(str).to_numpy()
        train.drug_id = align_to_ids(drug_path, ids, drugs, train.sig_id, train_path)
    submission_path = find_file(folder, "sample_submission", required=False)
    if submission_path is not None:
        frame = read_table(submission_path)
        columns = [str(c) for c in frame.columns if c != schema.ID_COLUMN]
        if columns != train.scored_names:
            from moakit.validate import name_differences

            raise DataError(name_differences(str(submission_path), columns, str(scored_path), train.scored_names,
                                             "target") or f"{submission_path}: target columns are in another order "
                            f"than in {scored_path.name}")
    test.scored_names = list(train.scored_names)
    test.nonscored_names = list(train.nonscored_names)
    return MoAData(train=train, test=test, source=str(folder), genes=read_gene_info(folder, train.gene_names),
                   info=info)


def read_drugs(path: Path, sig_ids: np.ndarray, features_what: str) -> np.ndarray:
    """The drug_id column of a sig_id + drug_id table (train_drug, answers/test_drug),
    aligned to ``sig_ids``."""
    frame = read_table(path)
    require_columns(path, frame, [schema.ID_COLUMN, schema.DRUG_COLUMN])
    ids = check_ids(path, frame)
    return align_to_ids(path, ids, frame[schema.DRUG_COLUMN].astype(str).to_numpy(), sig_ids, Path(features_what))


def read_answers(path: str | Path, sig_ids: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """A 0/1 target table (e.g. answers/test_targets_scored.csv) aligned to ``sig_ids``."""
    path = Path(path)
    values, file_names = _read_targets(path, sig_ids, path)
    if names is not None and file_names != names:
        raise DataError(f"{path}: target columns differ from the expected scored targets")
    return values


class Submission:
    """A parsed submission file: sig_ids, target names and a float matrix."""

    def __init__(self, sig_id: np.ndarray, names: list[str], values: np.ndarray) -> None:
        self.sig_id, self.names, self.values = sig_id, names, values


def read_submission(path: str | Path) -> Submission:
    """Read and validate a submission: unique sig_ids, numeric finite values in [0, 1]."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    ids, names, values = _id_and_target_columns(path)
    outside = (values < 0) | (values > 1)
    if outside.any():
        row, j = (int(v[0]) for v in np.nonzero(outside))
        raise DataError(f"{path}: column {names[j]!r}, row {row + 1}: probability {values[row, j]} outside [0, 1]")
    return Submission(ids, names, values)
