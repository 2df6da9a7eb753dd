"""Coverage of the raw tables: expected time buckets per coin against those present.

Pure polars on lazy frames (the audit assets pass lake scans in). A bucket is expected
from the later of the window start and the coin's listing (the perpetual's, for
futures tables) up to the last bucket that could have been published by `as_of`.
Each table's cadence, perp-only flag and publication lag are facts of its schema
(`quant_assets.schemas.TableSchema`); this module only reads them.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from quant_assets.periods import months
from quant_assets.schemas import RAW_TABLES
from quant_assets.universe import COINS

# Training needs every table with a cadence; events are sparse by nature and are not gated on.
REQUIRED_TABLES: tuple[str, ...] = tuple(t for t, spec in RAW_TABLES.items() if spec.cadence is not None)
MIN_REQUIRED_COVERAGE = 0.99
READINESS_WINDOW_DAYS = 420


def _floor(ts: dt.datetime, step: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + ((ts - epoch) // step) * step


def _cadence(table: str) -> dt.timedelta:
    step = RAW_TABLES[table].cadence
    if step is None:
        raise ValueError(f"{table}: has no cadence in its schema, so coverage does not apply to it")
    return step


def _listed(table: str, coin) -> dt.date:
    return coin.perp_listed if RAW_TABLES[table].perp_only else coin.spot_listed


def expected_buckets(table: str, symbol_listed: dt.date, start: dt.datetime, as_of: dt.datetime) -> int:
    """Buckets of `table` from max(start, listing) whose rows could be published by `as_of`."""
    step = _cadence(table)
    first = max(start, dt.datetime.combine(symbol_listed, dt.time(), dt.UTC))
    first = _floor(first + step - dt.timedelta(microseconds=1), step)  # first bucket at or after `first`
    last_published = as_of - RAW_TABLES[table].publication_lag
    last = _floor(last_published, step)
    if last_published == last:  # a bucket starting exactly at as_of-lag is not published yet
        last -= step
    return max(0, (last - first) // step + 1) if last >= first else 0


def table_coverage(table: str, rows: pl.LazyFrame, start: dt.datetime, as_of: dt.datetime) -> pl.DataFrame:
    """One row per coin: expected, present (distinct buckets with a row) and their ratio."""
    step = _cadence(table)
    lf = rows.filter((pl.col("ts") >= start) & (pl.col("ts") < as_of))
    if table == "market_bars":
        lf = lf.filter((pl.col("market") == "spot") & (pl.col("timeframe") == "5m"))
    every = f"{int(step.total_seconds())}s"
    present = (
        lf.select("symbol", pl.col("ts").dt.truncate(every).alias("bucket"))
        .unique()
        .group_by("symbol")
        .agg(pl.len().alias("present"))
        .collect()
    )
    expected = pl.DataFrame(
        {
            "symbol": [c.symbol for c in COINS],
            "expected": [expected_buckets(table, _listed(table, c), start, as_of) for c in COINS],
        },
        schema={"symbol": pl.String, "expected": pl.Int64},
    )
    return (
        expected.join(present, on="symbol", how="left")
        .with_columns(pl.col("present").fill_null(0).cast(pl.Int64), pl.lit(table).alias("table"))
        .with_columns(
            pl.when(pl.col("expected") > 0)
            .then(pl.min_horizontal(pl.col("present") / pl.col("expected"), pl.lit(1.0)))
            .otherwise(None)
            .alias("coverage")
        )
        .select("table", "symbol", "expected", "present", "coverage")
    )


def readiness(
    scans: dict[str, pl.LazyFrame | None],
    as_of: dt.datetime,
    window_days: int = READINESS_WINDOW_DAYS,
    min_coverage: float = MIN_REQUIRED_COVERAGE,
) -> pl.DataFrame:
    """Coverage of every required table per coin over the trailing window; `ready` per row."""
    start = as_of - dt.timedelta(days=window_days)
    parts = []
    for table in REQUIRED_TABLES:
        scan = scans.get(table)
        if scan is None:  # never materialised: everything expected is missing
            scan = pl.LazyFrame(
                schema={
                    "ts": pl.Datetime("ms", "UTC"),
                    "symbol": pl.String,
                    "market": pl.String,
                    "timeframe": pl.String,
                }
            )
        parts.append(table_coverage(table, scan, start, as_of))
    out = pl.concat(parts)
    return out.with_columns(
        # a coin with nothing expected in the window (not listed yet) does not block readiness
        (pl.col("coverage").is_null() | (pl.col("coverage") >= min_coverage)).alias("ready"),
        pl.lit(as_of).alias("as_of"),
        pl.lit(window_days).alias("window_days"),
    )


def monthly_coverage(table: str, rows: pl.LazyFrame, start: dt.datetime, as_of: dt.datetime) -> pl.DataFrame:
    """Per coin and calendar month: expected, present, coverage (for the history heatmap)."""
    parts = []
    for d0, d1 in months(start.date(), as_of.date() + dt.timedelta(days=1)):
        # month slices of [start, as_of): whole UTC days, clipped to the two ends
        m0 = max(start, dt.datetime.combine(d0, dt.time(), dt.UTC))
        m1 = min(as_of, dt.datetime.combine(d1, dt.time(), dt.UTC))
        if m0 < m1:
            cov = table_coverage(table, rows, m0, m1)
            parts.append(cov.with_columns(pl.lit(d0.strftime("%Y-%m")).alias("month")))
    return pl.concat(parts)
