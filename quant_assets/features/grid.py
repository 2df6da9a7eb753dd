"""The per-coin bar grid every bar feature is computed on.

Rolling windows count rows, so they must count time: each coin gets a complete grid of bar
open times from its first bar (or first fallback price) to the end of the input, and a missing
bar is a row whose bar columns are null, never a skipped row and never a forward-filled one.

Speed: features are computed with plain (global) rolling and shift kernels over the whole
frame sorted by (symbol, ts) instead of per-group windows (`.over("symbol")` is ~5x slower here).
To keep one coin's windows from reading the previous coin's rows, each coin's grid starts with
`PAD_ROWS` all-null rows ("pad" rows), as many as the longest window; a window that reaches
before a coin's first bar then sees nulls, exactly as it would if the coin had no earlier data,
so a month computed from a shorter history equals the same month inside a longer one.
Pad rows are dropped before anything is returned.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from quant_assets.features.keys import MAX_BAR_WINDOW
from quant_assets.schemas import RAW_TABLES, TS

PAD_ROWS = MAX_BAR_WINDOW
# A fallback price is a last-trade snapshot taken at most this long before the row's time. With the
# prices table on the 5m grid this takes the snapshot at exactly t, or at t - 5m when that one is missing.
FALLBACK_MAX_STALENESS = dt.timedelta(minutes=5)
BAR_COLUMNS = ("symbol", "market", "timeframe", "ts", "close", "volume", "quote_volume")


def require_columns(frame: pl.LazyFrame, table: str, columns: tuple[str, ...] | list[str]) -> pl.Schema:
    """Schema of `frame`; raise naming the table and the missing columns if any are absent."""
    schema = frame.collect_schema()
    missing = [c for c in columns if c not in schema]
    if missing:
        raise ValueError(f"{table}: missing columns {missing}; got {list(schema)}")
    return schema


def empty_table(table: str) -> pl.LazyFrame:
    return RAW_TABLES[table].empty().lazy()


def ceil_to(col: pl.Expr, step: dt.timedelta) -> pl.Expr:
    """Smallest multiple of `step` >= col: an item published at 10:02 is first usable on the 10:05 row."""
    floor = col.dt.truncate(step)
    return pl.when(floor == col).then(col).otherwise(floor + step)


def select_bars(bars: pl.LazyFrame, timeframe: str, market: str) -> pl.LazyFrame:
    require_columns(bars, "market_bars", BAR_COLUMNS)
    return bars.filter((pl.col("timeframe") == timeframe) & (pl.col("market") == market)).select(
        pl.col("symbol"),
        pl.col("ts").cast(TS),
        pl.col("close").cast(pl.Float64).alias("bar_close"),
        pl.col("volume").cast(pl.Float64),
        pl.col("quote_volume").cast(pl.Float64),
    )


def select_prices(prices: pl.LazyFrame | None) -> pl.LazyFrame:
    if prices is None:
        prices = empty_table("prices")
    require_columns(prices, "prices", ("symbol", "ts", "price"))
    return prices.select(pl.col("symbol"), pl.col("ts").cast(TS), pl.col("price").cast(pl.Float64))


def bar_grid(
    bars: pl.LazyFrame,
    prices: pl.LazyFrame,
    step: dt.timedelta,
    end: dt.datetime | None,
    fallback_at: dt.timedelta,
) -> pl.LazyFrame:
    """Complete grid (symbol, ts, is_pad, bar_close, volume, quote_volume, close, close_from_fallback).

    `bars` and `prices` come from `select_bars` / `select_prices`. A coin's grid runs from its first
    bar (or first fallback price, floored to `step`) to `end` (exclusive) if given, else to the last
    bar or price of any coin, so every coin shares the clock's end. The fallback close of the bar
    opening at ts is the last price snapshot with `ts + fallback_at - FALLBACK_MAX_STALENESS <=
    snapshot ts <= ts + fallback_at`; `fallback_at` must keep that at or before the row's decision
    time (0 for 5m rows; 55 min for 1h bars, whose row is only used once the hour has closed).
    """
    price_starts = prices.select("symbol", (pl.col("ts") - fallback_at).dt.truncate(step).alias("ts"))
    starts = (
        pl.concat([bars.select("symbol", "ts"), price_starts])
        .group_by("symbol")
        .agg(pl.col("ts").min().alias("first"))
    )
    if end is not None:
        last = pl.lit(end, dtype=TS) - pl.duration(milliseconds=1)
        ends = starts.select("symbol", last.alias("last"))
    else:
        all_last = pl.concat([bars.select("ts"), price_starts.select("ts")]).select(pl.col("ts").max())
        ends = starts.select("symbol").join(all_last.select(pl.col("ts").alias("last")), how="cross")
    grid = (
        starts.join(ends, on="symbol")
        .sort("symbol")
        .select(
            "symbol",
            "first",
            pl.datetime_ranges(
                pl.col("first") - step * PAD_ROWS, pl.col("last"), interval=step, closed="both"
            ).alias("ts"),
        )
        .explode("ts")
        .filter(pl.col("ts").is_not_null())
        .select("symbol", pl.col("ts").cast(TS), (pl.col("ts") < pl.col("first")).alias("is_pad"))
    )
    out = grid.join(bars, on=["symbol", "ts"], how="left", maintain_order="left")
    fallback = prices.sort("symbol", "ts").select(
        "symbol", (pl.col("ts") - fallback_at).alias("_price_key"), pl.col("price").alias("_fallback")
    )
    out = out.join_asof(
        fallback,
        left_on="ts",
        right_on="_price_key",
        by="symbol",
        strategy="backward",
        check_sortedness=False,
        tolerance=FALLBACK_MAX_STALENESS,
    )
    return out.with_columns(
        pl.coalesce("bar_close", "_fallback").alias("close"),
        (pl.col("bar_close").is_null() & pl.col("_fallback").is_not_null())
        .cast(pl.Int8)
        .alias("close_from_fallback"),
        pl.col("bar_close").is_null().cast(pl.Int8).alias("bar_missing_flag"),
    ).drop("_fallback", "_price_key", strict=False)
