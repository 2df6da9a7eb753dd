"""The lake: one Delta table per asset under QUANT_ASSETS_LAKE.

- `write_window` replaces a window of whole days with ONE Delta commit (an overwrite
  whose predicate is on `date`): readers see the old window or the new one, never half;
  a re-run is idempotent; a crash mid-write leaves the previous version intact.
  It takes a frame or an iterator of frames, so a 2018->now backfill streams month by
  month into that one commit with flat memory.
- `scan` returns a LazyFrame pruned to a date range, usable from a notebook:
  `quant_assets.lake.scan("market_bars", start="2024-01-01")`.
- `version` gives the table's Delta version, which assets record as lineage.

The root is a local path (default `.lake` in the working directory) or an object-store
URI (`s3://bucket/lake`) with storage options as JSON in QUANT_ASSETS_LAKE_STORAGE_OPTIONS.
Tables are partitioned by a `month` column ("2021-05"): a partition per day makes
thousands of tiny files and reads ~30x slower.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator

import polars as pl
import polars.selectors as cs
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

PARTITION_COLUMN = "month"


def root() -> str:
    return os.environ.get("QUANT_ASSETS_LAKE", os.path.join(os.getcwd(), ".lake"))


def storage_options() -> dict[str, str] | None:
    raw = os.environ.get("QUANT_ASSETS_LAKE_STORAGE_OPTIONS")
    return json.loads(raw) if raw else None


def uri(table: str) -> str:
    base = root()
    return f"{base.rstrip('/')}/{table}" if "://" in base else os.path.join(os.path.abspath(base), table)


def _as_date(d: dt.date | dt.datetime | str | None) -> dt.date | None:
    if d is None or (isinstance(d, dt.date) and not isinstance(d, dt.datetime)):
        return d
    if isinstance(d, dt.datetime):
        return d.date()
    return dt.date.fromisoformat(d)


def exists(table: str) -> bool:
    try:
        DeltaTable(uri(table), storage_options=storage_options())
        return True
    except TableNotFoundError:
        return False


def version(table: str) -> int | None:
    """Current Delta version of `table`, or None when it has never been written."""
    try:
        return DeltaTable(uri(table), storage_options=storage_options()).version()
    except TableNotFoundError:
        return None


def _with_month(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col("date").dt.strftime("%Y-%m").alias(PARTITION_COLUMN))


def _check_window(df: pl.DataFrame, table: str, start: dt.date, end: dt.date) -> None:
    if "date" not in df.columns:
        raise ValueError(f"lake table {table!r}: frame has no 'date' column (columns: {df.columns})")
    bad = df.filter((pl.col("date") < start) | (pl.col("date") >= end) | pl.col("date").is_null())
    if bad.height:
        raise ValueError(
            f"lake table {table!r}: {bad.height} rows outside the window [{start}, {end}), e.g.\n{bad.head(3)}"
        )


def write_window(
    table: str,
    data: pl.DataFrame | Iterable[pl.DataFrame],
    start: dt.date | str,
    end: dt.date | str,
) -> int:
    """Replace rows with `start <= date < end` by `data`, in one commit. Returns rows written.

    `data` may be an iterator of frames with one schema (streamed: memory stays flat).
    An empty window deletes what the window held.
    """
    start, end = _as_date(start), _as_date(end)
    if start >= end:
        raise ValueError(f"lake table {table!r}: empty window [{start}, {end})")
    frames = [data] if isinstance(data, pl.DataFrame) else data
    predicate = f"date >= '{start.isoformat()}' AND date < '{end.isoformat()}'"
    written = 0

    def checked() -> Iterator[pl.DataFrame]:
        nonlocal written
        for df in frames:
            _check_window(df, table, start, end)
            written += df.height
            yield _with_month(df)

    _stream_overwrite(table, checked(), predicate)
    return written


def _stream_overwrite(table: str, frames: Iterator[pl.DataFrame], predicate: str) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    first = next(frames, None)
    if first is None:  # nothing to write: delete the window (no-op on a missing table)
        if exists(table):
            DeltaTable(uri(table), storage_options=storage_options()).delete(predicate)
        return
    schema = first.to_arrow().schema

    def batches() -> Iterator[pa.RecordBatch]:
        for df in _chain(first, frames):
            if df.height == 0:
                continue
            tbl = df.to_arrow()
            if tbl.schema != schema:
                tbl = tbl.cast(schema)
            yield from tbl.to_batches()

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    write_deltalake(
        uri(table),
        reader,
        mode="overwrite",
        predicate=predicate,
        partition_by=[PARTITION_COLUMN],
        storage_options=storage_options(),
    )


def _chain(first: pl.DataFrame, rest: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    yield first
    yield from rest


def scan(
    table: str,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    version: int | None = None,
) -> pl.LazyFrame:
    """Rows of `table` with `start <= date < end` (either bound optional), month partitions pruned."""
    start, end = _as_date(start), _as_date(end)
    lf = pl.scan_delta(uri(table), version=version, storage_options=storage_options())
    if start is not None:
        lf = lf.filter(pl.col(PARTITION_COLUMN) >= start.strftime("%Y-%m"), pl.col("date") >= start)
    if end is not None:
        last = end - dt.timedelta(days=1)
        lf = lf.filter(pl.col(PARTITION_COLUMN) <= last.strftime("%Y-%m"), pl.col("date") < end)
    return _ms(lf.drop(PARTITION_COLUMN))


def _ms(frame):
    """Delta stores timestamps in microseconds; the project's contract is milliseconds (schemas.TS)."""
    return frame.with_columns(cs.datetime().dt.cast_time_unit("ms"))


def read(table: str, start=None, end=None, version: int | None = None) -> pl.DataFrame:
    """`scan(...).collect()`; a table never written raises TableNotFoundError naming its URI."""
    return scan(table, start, end, version).collect()


def write_table(table: str, df: pl.DataFrame) -> None:
    """Replace a small, unpartitioned table (audits, reports) in one commit."""
    from deltalake import write_deltalake

    write_deltalake(
        uri(table),
        df.to_arrow(),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=storage_options(),
    )


def read_table(table: str, version: int | None = None) -> pl.DataFrame:
    """A whole unpartitioned table (see `write_table`)."""
    return _ms(pl.read_delta(uri(table), version=version, storage_options=storage_options()))
