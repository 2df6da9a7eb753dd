"""The per-coin bar grid every bar feature is computed on.

Rolling windows count rows, so they must count time: each coin gets a complete grid of bar
open times from its first bar to the end of the input, and a missing
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


def _sorted_by_symbol_ts(df: pl.DataFrame) -> pl.DataFrame:
    """Sort by (symbol, ts) unless already sorted: a sorted 8M-row input then costs one cheap scan."""
    sym, ts = pl.col("symbol"), pl.col("ts")
    ordered = (sym > sym.shift(1)) | ((sym == sym.shift(1)) & (ts >= ts.shift(1)))
    if df.height < 2 or df.select(ordered.slice(1).all()).item():
        return df
    return df.sort("symbol", "ts", maintain_order=True)


def sort_by_symbol_ts(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.map_batches(_sorted_by_symbol_ts, schema=frame.collect_schema(), streamable=False)


def _key(rank: pl.Expr, ts: pl.Expr) -> pl.Expr:
    """One sortable Int64 for (coin, ts): rank * 1e13 + epoch ms (epoch ms stays below 1e13 until 2286)."""
    return rank.cast(pl.Int64) * 10_000_000_000_000 + ts.dt.epoch("ms")


def bar_grid(
    bars: pl.LazyFrame,
    prices: pl.LazyFrame,
    step: dt.timedelta,
    end: dt.datetime | None,
    fallback_at: dt.timedelta,
) -> pl.LazyFrame:
    """Complete grid (symbol, ts, is_pad, bar_close, volume, quote_volume, close, close_from_fallback,
    bar_missing_flag), sorted by (symbol, ts), pad rows first in each coin.

    `bars` and `prices` come from `select_bars` / `select_prices`. A coin's grid runs from its first
    bar to `end` (exclusive) if given, else to the last bar of any coin, so every coin shares the
    clock's end; a coin without a bar in the input has no rows. Duplicate (symbol, ts) bars keep the
    last one in input order. Where a bar is missing, the fallback close is the last price snapshot
    taken in (ts + fallback_at - step, ts + fallback_at]; `fallback_at` keeps that at or before the
    row's decision time (0 for 5m rows: the snapshot at t; 55 min for 1h bars, read only once closed).

    Only the missing rows are built and joined (a few per thousand on real data): the bars are
    sorted once (skipped when already sorted), the gaps are generated from consecutive bar times, and
    the two sorted parts are merged on one integer key, so no join ever touches every row.
    """
    sym, ts = pl.col("symbol"), pl.col("ts")
    new_coin = (sym != sym.shift(1)).fill_null(True)
    b = (
        sort_by_symbol_ts(bars)
        .with_columns(new_coin.cum_sum().alias("_rank"), new_coin.alias("_new"))
        .with_columns(_key(pl.col("_rank"), ts).alias("_key"))
        # duplicates: keep the last row of each (symbol, ts) in input order
        .filter((pl.col("_key") != pl.col("_key").shift(-1)).fill_null(True))
        .with_columns((sym != sym.shift(-1)).fill_null(True).alias("_last"), ts.shift(1).alias("_prev"))
    )
    last = pl.lit(end, dtype=TS) - pl.duration(milliseconds=1) if end is not None else ts.max()
    b = b.with_columns(last.alias("_end"))
    gap = ~pl.col("_new") & (ts - pl.col("_prev") > step)
    before = b.filter(pl.col("_new") | gap).select(
        "symbol",
        "_rank",
        pl.col("_new").alias("is_pad"),
        pl.datetime_ranges(
            pl.when(pl.col("_new")).then(ts - step * PAD_ROWS).otherwise(pl.col("_prev") + step),
            ts - step,
            interval=step,
        ).alias("ts"),
    )
    after = b.filter(pl.col("_last")).select(
        "symbol",
        "_rank",
        pl.lit(False).alias("is_pad"),
        pl.datetime_ranges(ts + step, pl.col("_end"), interval=step).alias("ts"),
    )
    filler = pl.concat([before, after]).explode("ts").filter(ts.is_not_null()).with_columns(ts.cast(TS))
    wanted = filler.filter(~pl.col("is_pad")).select("symbol", "ts")
    snapshots = (
        prices.with_columns(ceil_to(ts - fallback_at, step).alias("_at"))
        .join(wanted.rename({"ts": "_at"}), on=["symbol", "_at"], how="semi")
        .sort("symbol", "_at", "ts", maintain_order=True)
        .group_by("symbol", "_at")
        .agg(pl.col("price").last().alias("_fallback"))
    )
    filler = (
        filler.join(snapshots.rename({"_at": "ts"}), on=["symbol", "ts"], how="left")
        .with_columns(_key(pl.col("_rank"), ts).alias("_key"))
        .sort("_key")
    )
    columns = ["symbol", "ts", "_key", "is_pad", "bar_close", "volume", "quote_volume", "_fallback"]
    dtypes = {"is_pad": pl.Boolean, "bar_close": pl.Float64, "volume": pl.Float64, "quote_volume": pl.Float64,
              "_fallback": pl.Float64}  # fmt: skip
    bar_part = b.with_columns(pl.lit(False).alias("is_pad"), pl.lit(None, pl.Float64).alias("_fallback"))
    fill_part = filler.with_columns(
        pl.lit(None, pl.Float64).alias(c) for c in ("bar_close", "volume", "quote_volume")
    )
    out = (
        bar_part.select(columns).cast(dtypes).merge_sorted(fill_part.select(columns).cast(dtypes), key="_key")
    )
    return out.with_columns(
        pl.coalesce("bar_close", "_fallback").alias("close"),
        (pl.col("bar_close").is_null() & pl.col("_fallback").is_not_null())
        .cast(pl.Int8)
        .alias("close_from_fallback"),
        pl.col("bar_close").is_null().cast(pl.Int8).alias("bar_missing_flag"),
    ).drop("_fallback", "_key")
