"""A features table (CSV, compressed CSV, Parquet) read and validated chunk by chunk, each
row as :func:`moakit.data.io.read_features` reads it in one pass.

What a one-pass read decides from the whole file is read first, from the few columns it
needs: the ``sig_id`` and meta columns (cp_type / cp_time / cp_dose and their LINCS
aliases) whole, so that their types are pandas' inference over the whole column (a numeric
dose column of ``10`` and ``0.5`` reads as ``"10.0"`` / ``"0.5"`` in every chunk, as in one
pass), the row count, and the duplicate ``sig_id`` check (a set of ids, not the matrix).
Then the rows come ``chunk_rows`` at a time (pandas' chunked CSV reader, pyarrow's Parquet
batches), each parsed by :func:`moakit.data.io.parse_features` with that chunk of the meta
columns. An error names the file, column and row as a one-pass read does: the row number
counts from the top of the file, not of the chunk. (With several bad rows, the first bad
chunk's error is reported, where one pass reports by kind of check: ids, then meta, then
numbers.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pandas as pd

from moakit.data import schema
from moakit.data.dataset import Dataset
from moakit.data.io import DataError, check_duplicates, check_ids, parse_features, read_table, table_layout

T = TypeVar("T")
# the columns read whole before the chunks: ids and meta (small, and typed over the whole file)
WHOLE_COLUMNS = (schema.ID_COLUMN, *schema.META_COLUMNS, *schema.META_ALIASES)
_ROW = re.compile(r"((?:^|[:,] )row )(\d+)(?=:)")


def offset_rows(exc: Exception, offset: int, where: str | None = None) -> Exception:
    """``exc`` (a DataError or the like naming ``row N`` of a chunk) as the same error naming
    row ``N + offset``: the row in the whole input. Only the first ``row N:`` after the file
    name (``where: ``) is renumbered."""
    if not offset:
        return exc
    text = str(exc)
    head = ""
    if where is not None and text.startswith(f"{where}: "):
        head, text = text[: len(where) + 2], text[len(where) + 2:]
    match = _ROW.search(text)
    if match is None:
        return exc
    fixed = text[: match.start(2)] + str(int(match.group(2)) + offset) + text[match.end(2):]
    return type(exc)(head + fixed)


def at_rows(offset: int, where: str | None, work: Callable[[], T]) -> T:
    """``work()``, with a ValueError it raises renumbered to rows of the whole input."""
    try:
        return work()
    except ValueError as exc:
        raise offset_rows(exc, offset, where) from None


def chunk_slices(n_rows: int, chunk_rows: int | None) -> list[slice]:
    """Row slices of ``chunk_rows`` rows (one slice for None / 0); at least one. A last
    slice of one row joins the one before (:func:`no_single_row_tail`)."""
    if not chunk_rows or n_rows <= chunk_rows:
        return [slice(0, n_rows)]
    out = [slice(i, min(i + chunk_rows, n_rows)) for i in range(0, n_rows, chunk_rows)]
    if out[-1].stop - out[-1].start == 1:
        out[-2:] = [slice(out[-2].start, n_rows)]
    return out


def no_single_row_tail(parts: Iterator[T], rows: Callable[[T], int], join: Callable[[T, T], T]) -> Iterator[T]:
    """``parts`` (chunks of rows, in order) with a last chunk of one row joined to the one
    before: a matrix product of one row may round differently (a BLAS matrix-vector
    kernel) from the same row among others, as it is in one pass."""
    held = None
    for part in parts:
        if held is not None and rows(part) == 1:
            part = join(held, part)
        elif held is not None:
            yield held
        held = part
    if held is not None:
        yield held


class TableChunks:
    """A features file read chunk by chunk. ``n_rows``, ``sig_id`` (every row's, as str) and
    ``columns`` are known after construction (which reads only the id and meta columns and
    checks the ids); :meth:`datasets` yields (first row, Dataset) per chunk."""

    def __init__(self, path: str | Path, layout: str | None = None) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        if not self.path.exists():
            raise DataError(f"{self.path}: file not found")
        self.parquet = self.path.name.endswith(".parquet")
        self.columns = self._header()
        self.layout = layout or table_layout(pd.DataFrame(columns=self.columns))
        self.whole = self._read_whole([c for c in self.columns if c in WHOLE_COLUMNS])
        self.n_rows = len(self.whole)
        if schema.ID_COLUMN in self.whole.columns:
            self.sig_id = check_ids(self.path, self.whole)
        else:
            self.sig_id = None  # parse_features names the missing column on the first chunk

    def _header(self) -> list[str]:
        try:
            if self.parquet:
                import pyarrow.parquet as pq

                schema_ = pq.ParquetFile(self.path).schema_arrow
                index = (schema_.pandas_metadata or {}).get("index_columns") or []  # names, or dicts of a range
                names = [n for n in schema_.names if n not in {i for i in index if isinstance(i, str)}]
            else:
                names = [str(c) for c in pd.read_csv(self.path, nrows=1, header=None, dtype=str).iloc[0].tolist()]
        except pd.errors.EmptyDataError as exc:
            raise DataError(f"{self.path}: file is empty") from exc
        except Exception as exc:  # parser errors, bad zip, bad parquet
            raise DataError(f"{self.path}: cannot be read ({exc})") from exc
        check_duplicates(self.path, names)
        return names

    def _read_whole(self, columns: list[str]) -> pd.DataFrame:
        """The id / meta columns of every row, read as a one-pass read_table reads them."""
        try:
            if self.parquet:
                frame = pd.read_parquet(self.path, columns=columns or self.columns[:1]).reset_index(drop=True)
            else:
                frame = pd.read_csv(self.path, usecols=columns or [0], low_memory=False)
        except Exception as exc:
            raise DataError(f"{self.path}: cannot be read ({exc})") from exc
        if frame.shape[0] == 0:
            raise DataError(f"{self.path}: file has a header but no rows")
        return frame[columns]

    def frames(self, chunk_rows: int | None) -> Iterator[tuple[int, pd.DataFrame]]:
        """(first row, the rows' table) per chunk; ``chunk_rows`` None / 0: the whole table."""
        if not chunk_rows or chunk_rows >= self.n_rows:
            yield 0, read_table(self.path)
            return
        start = 0
        joined = no_single_row_tail(self._raw_chunks(chunk_rows), len,
                                    lambda a, b: pd.concat([a, b], ignore_index=True))
        for raw in joined:
            frame = raw.reset_index(drop=True)
            stop = start + len(frame)
            for column in self.whole.columns:  # typed over the whole file
                frame[column] = self.whole[column].iloc[start:stop].reset_index(drop=True)
            yield start, frame
            start = stop
        if start != self.n_rows:
            raise DataError(f"{self.path}: changed while it was read ({start} rows, {self.n_rows} before)")

    def _raw_chunks(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        try:
            if self.parquet:
                import pyarrow as pa
                import pyarrow.parquet as pq

                handle = pq.ParquetFile(self.path)
                for batch in handle.iter_batches(batch_size=chunk_rows):
                    yield pa.Table.from_batches([batch], schema=handle.schema_arrow).to_pandas()
            else:
                with pd.read_csv(self.path, chunksize=chunk_rows) as reader:
                    yield from reader
        except DataError:
            raise
        except Exception as exc:  # parser errors in a later chunk
            raise DataError(f"{self.path}: cannot be read ({exc})") from exc

    def datasets(self, chunk_rows: int | None, vocab: dict[str, tuple] | None = None
                 ) -> Iterator[tuple[int, Dataset]]:
        """(first row, Dataset) per chunk, each validated as :func:`parse_features` does."""
        for start, frame in self.frames(chunk_rows):
            yield start, at_rows(start, str(self.path),
                                 lambda: parse_features(self.path, frame, layout=self.layout, vocab=vocab))
