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
from quant_assets.universe import SYMBOLS

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


def select_bars(bars: pl.LazyFrame | None, timeframe: str, market: str) -> pl.LazyFrame:
    if bars is None:
        raise ValueError("market_bars: no frame given (the table is missing); bar features need bars")
    require_columns(bars, "market_bars", BAR_COLUMNS)
    return bars.filter((pl.col("timeframe") == timeframe) & (pl.col("market") == market)).select(
        pl.col("symbol"),
        pl.col("ts").cast(TS),
        pl.col("close").cast(pl.Float64).alias("bar_close"),
        pl.col("volume").cast(pl.Float64),
        pl.col("quote_volume").cast(pl.Float64),
    )


# Coins are numbered by their position in the sorted universe, so every frame (5m bars, 1h bars,
# prices) numbers a coin the same way without a join, and (coin, time) packs into one sortable Int64.
COIN_ENUM = pl.Enum(sorted(SYMBOLS))
_KEY_SCALE = 10_000_000_000_000  # > any epoch-ms timestamp before the year 2286
# A fallback price must have been taken within this long before the time it stands for.
FALLBACK_FRESHNESS = dt.timedelta(minutes=5)


def coin_rank(symbol: pl.Expr) -> pl.Expr:
    """Position of the symbol in the sorted universe; an unknown symbol fails naming it."""
    return symbol.cast(COIN_ENUM).to_physical().cast(pl.Int64)


def pack(rank: pl.Expr, ms: pl.Expr) -> pl.Expr:
    return rank * _KEY_SCALE + ms


def _sorted_by_key(df: pl.DataFrame, tie: str | None) -> pl.DataFrame:
    """Sort by (_key, tie) (stable: input order breaks remaining ties) unless already sorted."""
    key = df.get_column("_key")
    if df.height < 2 or (key.diff().slice(1) > 0).all():  # strictly increasing: sorted, no ties
        return df
    if tie is None:
        if key.is_sorted():
            return df
        return df.sort("_key", maintain_order=True)
    k, t = pl.col("_key"), pl.col(tie)
    if df.select(((k > k.shift(1)) | ((k == k.shift(1)) & (t >= t.shift(1)))).slice(1).all()).item():
        return df
    return df.sort("_key", tie, maintain_order=True)


def sorted_by_key(frame: pl.LazyFrame, tie: str | None = None) -> pl.LazyFrame:
    """`frame` sorted by its packed `_key` (then `tie`); a sorted input costs one vectorised check."""
    return frame.map_batches(
        lambda df: _sorted_by_key(df, tie), schema=frame.collect_schema(), streamable=False
    )


def _ms(step: dt.timedelta) -> int:
    return int(step / dt.timedelta(milliseconds=1))


def select_prices(prices: pl.LazyFrame | None) -> pl.LazyFrame:
    """Price snapshots keyed by (coin, 5m clock row from which each is visible), sorted by that key.

    A snapshot taken at s is visible from the row ceil(s, 5m); several in one bucket: the latest
    comes last, so a backward as-of join on the key takes it. Columns: _key, _fallback.
    """
    if prices is None:
        prices = empty_table("prices")
    require_columns(prices, "prices", ("symbol", "ts", "price"))
    ts_ms = pl.col("ts").cast(TS).dt.epoch("ms")
    step_ms = _ms(FALLBACK_FRESHNESS)
    return (
        prices.select(
            pack(coin_rank(pl.col("symbol")), (ts_ms + step_ms - 1) // step_ms * step_ms).alias("_key"),
            ts_ms.alias("_tie"),
            pl.col("price").cast(pl.Float64).alias("_fallback"),
        )
        .pipe(sorted_by_key, "_tie")
        .drop("_tie")
    )


def bar_grid(
    bars: pl.LazyFrame,
    prices: pl.LazyFrame,
    step: dt.timedelta,
    end: dt.datetime | None,
    fallback_at: dt.timedelta,
) -> pl.LazyFrame:
    """Complete grid (symbol, ts, _rank, _key, is_pad, bar_close, volume, quote_volume, close,
    close_from_fallback, bar_missing_flag), sorted by (symbol, ts), pad rows first in each coin.

    `bars` and `prices` come from `select_bars` / `select_prices`; symbols must be in the universe.
    A coin's grid runs from its first bar to `end` (exclusive) if given, else to the last bar of
    any coin, so every coin shares the clock's end; a coin without a bar in the input has no rows.
    Duplicate (symbol, ts) bars: the last one in input order wins. Where a bar is missing, the
    fallback close is the latest price snapshot taken in (F - 5m, F], F = ts + fallback_at, which
    must be at or before the row's decision time (fallback_at 0 for 5m rows: on a 5m price grid,
    the snapshot at t; 55 min for 1h bars, which are read only once the hour has closed).

    Speed: (coin, time) is packed into one Int64 key, so the grid is an integer range per coin and
    bars and prices are attached by exact as-of joins on sorted keys (linear merges, no hashing);
    inputs are sorted only if they are not already.
    """
    step_ms = _ms(step)
    ts_ms = pl.col("ts").dt.epoch("ms")
    keyed = (
        bars.select(
            pack(coin_rank(pl.col("symbol")), ts_ms).alias("_key"), "bar_close", "volume", "quote_volume"
        ).pipe(sorted_by_key)  # duplicates keep input order, so the as-of join below takes the last
    )
    last_ms = pl.lit(_ms(end - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) - 1) if end is not None else None
    coins = keyed.group_by((pl.col("_key") // _KEY_SCALE).alias("_rank")).agg(
        pl.col("_key").min().alias("_first"), (pl.col("_key") % _KEY_SCALE).max().alias("_last")
    )
    if last_ms is None:
        coins = coins.with_columns(pl.col("_last").max())
    else:
        coins = coins.with_columns(last_ms.alias("_last"))
    grid = (
        coins.sort("_rank")
        .select(
            "_rank",
            "_first",
            pl.int_ranges(
                pl.col("_first") - step_ms * PAD_ROWS, pack(pl.col("_rank"), pl.col("_last")) + 1, step_ms
            ).alias("_key"),
        )
        .explode("_key")
        .filter(pl.col("_key").is_not_null())
        .select("_rank", "_key", (pl.col("_key") < pl.col("_first")).alias("is_pad"))
    )
    grid = grid.join_asof(keyed, on="_key", strategy="backward", tolerance=0, check_sortedness=False)
    # the row's fallback time F = ts + fallback_at is a 5m clock row: it takes the snapshot bucketed at F
    snapshots = prices
    if fallback_at or step != FALLBACK_FRESHNESS:
        at = pl.col("_key") - _ms(fallback_at)
        snapshots = prices.filter(at % _KEY_SCALE % step_ms == 0).with_columns(at.alias("_key"))
    grid = grid.join_asof(snapshots, on="_key", strategy="backward", tolerance=0, check_sortedness=False)
    return grid.with_columns(
        pl.col("_rank")
        .replace_strict(range(len(COIN_ENUM.categories)), COIN_ENUM.categories, return_dtype=pl.String)
        .alias("symbol"),
        (pl.col("_key") % _KEY_SCALE).cast(pl.Datetime("ms", "UTC")).alias("ts"),
        pl.coalesce("bar_close", "_fallback").alias("close"),
        (pl.col("bar_close").is_null() & pl.col("_fallback").is_not_null())
        .cast(pl.Int8)
        .alias("close_from_fallback"),
        pl.col("bar_close").is_null().cast(pl.Int8).alias("bar_missing_flag"),
    ).drop("_fallback")


def _drop_pad_rows(df: pl.DataFrame) -> pl.DataFrame:
    # pad rows sit in one block before each coin: slicing around them shares memory instead of copying
    # every column the way a filter would
    pad = df.get_column("is_pad")
    starts = (pad & ~pad.shift(1, fill_value=False)).arg_true().to_list()
    ends = (pad & ~pad.shift(-1, fill_value=False)).arg_true().to_list()
    keep, at = [], 0
    for s, e in zip(starts, ends, strict=True):
        if s > at:
            keep.append(df.slice(at, s - at))
        at = e + 1
    if at < df.height:
        keep.append(df.slice(at))
    return pl.concat(keep, rechunk=False) if keep else df.clear()


def drop_pad_rows(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Remove the pad rows (see the module docstring) without copying the other rows."""
    return frame.map_batches(_drop_pad_rows, schema=frame.collect_schema(), streamable=False)
