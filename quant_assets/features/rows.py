"""Raw bar and price rows as numpy columns, each coin's rows in one time-sorted slice.

The inputs are collected once (`select_bars`, `select_prices`); coins are found as runs of equal
symbols read straight from polars' 16-byte string views, so rows that come grouped by coin and
sorted by time (as the lake and the sources write them, in any coin order) need one pass and no
hashing, sorting or join; anything else is sorted first (stable, so ties keep input order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit

from quant_assets.features.kernels import JIT
from quant_assets.schemas import RAW_TABLES, TS
from quant_assets.universe import SYMBOLS

BAR_COLUMNS = ("symbol", "market", "timeframe", "ts", "close", "volume", "quote_volume")
BAR_VALUES = ("bar_close", "volume", "quote_volume")

# Coins are numbered by their position in the sorted universe: the order of the output rows.
COIN_NAMES: tuple[str, ...] = tuple(sorted(SYMBOLS))
COIN_ENUM = pl.Enum(COIN_NAMES)
_RANKS = {s: r for r, s in enumerate(COIN_NAMES)}


def _require(frame: pl.LazyFrame, table: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.collect_schema()]
    if missing:
        raise ValueError(f"{table}: missing columns {missing}; got {list(frame.collect_schema())}")


def select_bars(bars: pl.LazyFrame | None, timeframe: str, market: str) -> pl.LazyFrame:
    """Rows of one timeframe and market as (symbol, ts in epoch ms, bar_close, volume, quote_volume)."""
    if bars is None:
        raise ValueError("market_bars: no frame given (the table is missing); bar features need bars")
    _require(bars, "market_bars", BAR_COLUMNS)
    return bars.filter((pl.col("timeframe") == timeframe) & (pl.col("market") == market)).select(
        pl.col("symbol").cast(pl.String),
        pl.col("ts").cast(TS).dt.epoch("ms"),
        pl.col("close").cast(pl.Float64).alias("bar_close"),
        pl.col("volume").cast(pl.Float64),
        pl.col("quote_volume").cast(pl.Float64),
    )


def select_prices(prices: pl.LazyFrame | None) -> pl.LazyFrame:
    """Price snapshots as (symbol, ts in epoch ms, price)."""
    if prices is None:
        prices = RAW_TABLES["prices"].empty().lazy()
    _require(prices, "prices", ("symbol", "ts", "price"))
    return prices.select(
        pl.col("symbol").cast(pl.String),
        pl.col("ts").cast(TS).dt.epoch("ms"),
        pl.col("price").cast(pl.Float64),
    )


@dataclass(frozen=True)
class Rows:
    """A frame's columns as numpy arrays; `coins[rank]` is that coin's rows, contiguous and sorted
    by `ts` (epoch ms; ties in input order)."""

    ts: np.ndarray
    cols: dict[str, np.ndarray]
    coins: dict[int, slice]


def _symbol_runs(symbol: pl.Series) -> np.ndarray:
    """First rows of the runs of equal symbols, read from the 16-byte string views chunk by chunk,
    without hashing or copying (a string of up to 12 bytes is wholly inside its view). Longer
    strings may split a run in two; the caller merges runs of equal names."""
    starts, at, last = [], 0, None
    for chunk in symbol.get_chunks():
        arr = chunk.to_arrow(compat_level=pl.CompatLevel.newest())
        if arr.type != pa.string_view():
            return np.flatnonzero((symbol != symbol.shift(1)).fill_null(True).to_numpy())
        n = len(arr)
        if not n:
            continue
        views = np.frombuffer(arr.buffers()[1], dtype=np.uint64)[2 * arr.offset : 2 * (arr.offset + n)]
        views = views.reshape(-1, 2)
        starts.append(_runs(views, last is None or not (views[0] == last).all()) + at)
        at, last = at + n, views[-1]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


def coin_rows(df: pl.DataFrame, table: str, dedupe: bool) -> Rows:
    """`df` (symbol, ts, values...) as numpy columns with each coin's rows in one ts-sorted slice;
    with `dedupe`, the last row of each (symbol, ts) wins. Rows grouped by coin and sorted by time
    (in any coin order) cost one pass; anything else is sorted first (stable)."""
    for c in ("symbol", "ts"):
        if df.get_column(c).null_count():
            raise ValueError(f"{table}: null {c} in {df.get_column(c).null_count()} rows")
    if df.is_empty():
        return Rows(np.zeros(0, dtype=np.int64), {c: np.zeros(0) for c in df.columns[2:]}, {})
    starts = _symbol_runs(df.get_column("symbol"))
    names = df.get_column("symbol").gather(starts).to_list()
    keep = [i for i in range(len(names)) if i == 0 or names[i] != names[i - 1]]
    starts, names = starts[keep], [names[i] for i in keep]
    unknown = sorted(set(names) - _RANKS.keys())
    if unknown:
        raise ValueError(f"{table}: symbols not in the universe: {unknown[:5]}")
    ts = df.get_column("ts").to_numpy()
    order, low = _time_order(ts, starts)
    if len(set(names)) < len(names) or order == 2:
        return coin_rows(df.sort(pl.col("symbol").cast(COIN_ENUM), "ts", maintain_order=True), table, dedupe)
    if order == 1 and dedupe:
        last = np.ones(len(ts), dtype=bool)
        last[:-1] = ts[1:] != ts[:-1]
        last[starts[1:] - 1] = True
        return coin_rows(df.filter(pl.Series(last)), table, dedupe)
    if low < 0:
        raise ValueError(f"{table}: ts before 1970")
    stops = np.append(starts[1:], len(ts))
    coins = {_RANKS[n]: slice(int(s), int(e)) for n, s, e in zip(names, starts, stops, strict=True)}
    return Rows(ts, {c: df.get_column(c).to_numpy() for c in df.columns if c not in ("symbol", "ts")}, coins)


@njit(**JIT)
def _runs(views: np.ndarray, first: bool) -> np.ndarray:
    """Rows where a run of equal 16-byte string views (rows of two uint64) begins; row 0 counts
    as a beginning when `first`."""
    n = views.shape[0]
    starts = np.empty(n, dtype=np.int64)
    k = 0
    if first and n:
        starts[0] = 0
        k = 1
    for i in range(1, n):
        if views[i, 0] != views[i - 1, 0] or views[i, 1] != views[i - 1, 1]:
            starts[k] = i
            k += 1
    return starts[:k]


@njit(**JIT)
def _time_order(ts: np.ndarray, starts: np.ndarray) -> tuple[int, int]:
    """(order, min ts) of ts within the runs beginning at `starts` (starts[0] == 0): order 0 if
    strictly increasing in every run, 1 if non-decreasing with repeats, 2 otherwise."""
    down, flat, low = 0, 0, ts[0] if ts.size else 0
    for r in range(starts.size):
        run = ts[starts[r] : starts[r + 1] if r + 1 < starts.size else ts.size]
        now, before = run[1:], run[:-1]
        for i in range(now.size):
            down += now[i] < before[i]
            flat += now[i] == before[i]
        for i in range(run.size):
            low = min(low, run[i])
    return (2 if down else 1 if flat else 0), low
