"""The per-coin bar grid every bar feature is computed on, laid out as flat numpy arrays ("canvas").

Rolling windows count rows, so they must count time: each coin gets a complete grid of bar open
times from its first bar to the end of the input, and a missing bar is a row whose bar columns are
null (NaN here), never a skipped row and never a forward-filled one. Where a bar is missing, the
close falls back to the latest price snapshot taken in (F - 5m, F], F = the row's fallback time.

Canvas. All coins' grids sit end to end in one array per column, in universe order. Each coin's
segment starts with at least `PAD_ROWS` rows before its first bar ("pad" rows: no bar, a fallback
close only within the last `PAD_ROWS`), as many as the longest window, so a window that reaches
before a coin's first bar sees nulls, exactly as if the coin had no earlier data, never the
previous coin's rows, and whole-array kernels need no per-coin boundaries. Positions are arithmetic
on the packed (coin, time) key: a bar's row is (ts - segment start) / step, so bars are placed
by one scatter and fallback prices are found by binary search, with no join or hash.

A 5m segment starts at a :55 minute and holds a whole number of 12-row groups, so group g is the
5m rows [h + 55m, h + 1h + 50m] that all read the 1h bar opening at h (see snapshots.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from quant_assets.features.keys import LATENT_WINDOW, MAX_BAR_WINDOW
from quant_assets.schemas import RAW_TABLES, TS
from quant_assets.universe import SYMBOLS

PAD_ROWS = MAX_BAR_WINDOW
# Empty rows before a coin's pad rows on the 5m canvas: market_latent reads LATENT_WINDOW rows of
# pad-row features, whose own windows must end before the previous coin's rows.
LEAD_ROWS = PAD_ROWS + LATENT_WINDOW
BAR_COLUMNS = ("symbol", "market", "timeframe", "ts", "close", "volume", "quote_volume")
STEP_MS = 300_000
HOUR_MS = 3_600_000
GROUP = HOUR_MS // STEP_MS  # 5m rows per 1h bar
# A fallback price must have been taken within this long before the time it stands for.
FALLBACK_FRESHNESS = dt.timedelta(minutes=5)
_FRESH_MS = int(FALLBACK_FRESHNESS / dt.timedelta(milliseconds=1))


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


# Coins are numbered by their position in the sorted universe: the order of the output rows.
COIN_NAMES: tuple[str, ...] = tuple(sorted(SYMBOLS))
COIN_ENUM = pl.Enum(COIN_NAMES)
_RANKS = {s: r for r, s in enumerate(COIN_NAMES)}


def epoch_ms(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def select_bars(bars: pl.LazyFrame | None, timeframe: str, market: str) -> pl.LazyFrame:
    """Rows of one timeframe and market as (symbol, ts in epoch ms, bar_close, volume, quote_volume)."""
    if bars is None:
        raise ValueError("market_bars: no frame given (the table is missing); bar features need bars")
    require_columns(bars, "market_bars", BAR_COLUMNS)
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
        prices = empty_table("prices")
    require_columns(prices, "prices", ("symbol", "ts", "price"))
    return prices.select(
        pl.col("symbol").cast(pl.String),
        pl.col("ts").cast(TS).dt.epoch("ms"),
        pl.col("price").cast(pl.Float64),
    )


def alloc(shape: int | tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """An uninitialised array from Arrow's memory pool, which keeps freed pages for reuse: the
    large canvas and output columns of one call then do not page-fault fresh memory in again on
    the next (and they reach polars as Arrow buffers without a copy)."""
    item, size = np.dtype(dtype), int(np.prod(shape))
    return np.frombuffer(pa.allocate_buffer(size * item.itemsize), dtype=item, count=size).reshape(shape)


@dataclass(frozen=True)
class Rows:
    """A frame's columns as numpy arrays; `coins[rank]` is that coin's rows, contiguous and sorted
    by `ts` (epoch ms; ties in input order)."""

    ts: np.ndarray
    cols: dict[str, np.ndarray]
    coins: dict[int, slice]


def _symbol_runs(symbol: pl.Series) -> np.ndarray:
    """First rows of the runs of equal symbols, read from the 16-byte string views without hashing
    (a string of up to 12 bytes is wholly inside its view). Longer strings may split a run in two;
    the caller merges runs of equal names."""
    arr = symbol.rechunk().to_arrow(compat_level=pl.CompatLevel.newest())
    if arr.type != pa.string_view() or len(arr) < 2:
        change = (symbol != symbol.shift(1)).fill_null(True).to_numpy()[1:]
    else:
        views = np.frombuffer(arr.buffers()[1], dtype=np.uint64)[2 * arr.offset : 2 * (arr.offset + len(arr))]
        views = views.reshape(-1, 2)
        change = views[1:, 0] != views[:-1, 0]
        change |= views[1:, 1] != views[:-1, 1]
    return np.append(0, np.flatnonzero(change) + 1)


def coin_rows(df: pl.DataFrame, table: str, dedupe: bool) -> Rows:
    """`df` (symbol, ts, values...) as numpy columns with each coin's rows in one ts-sorted slice;
    with `dedupe`, the last row of each (symbol, ts) wins. Rows grouped by coin and sorted by time
    (in any coin order) cost a few vectorised checks; anything else is sorted first (stable)."""
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
    stops = np.append(starts[1:], len(ts)).astype(np.int64)
    step_up = ts[1:] > ts[:-1]
    step_up[stops[:-1] - 1] = True  # a new coin may start at any time
    if len(set(names)) < len(names) or not step_up.all():
        flat = ts[1:] == ts[:-1]
        flat[stops[:-1] - 1] = False
        if len(set(names)) < len(names) or not (step_up | flat).all():
            ordered = df.sort(pl.col("symbol").cast(COIN_ENUM), "ts", maintain_order=True)
            return coin_rows(ordered, table, dedupe)
        if dedupe:
            last = np.ones(len(ts), dtype=bool)
            last[:-1] = ~flat
            return coin_rows(df.filter(pl.Series(last)), table, dedupe)
    if len(ts) and ts.min() < 0:
        raise ValueError(f"{table}: ts before 1970")
    coins = {_RANKS[n]: slice(int(s), int(e)) for n, s, e in zip(names, starts, stops, strict=True)}
    return Rows(ts, {c: df.get_column(c).to_numpy() for c in df.columns if c not in ("symbol", "ts")}, coins)


@dataclass(frozen=True)
class Segment:
    """One coin's rows on a canvas: [offset, offset + rows), row i at time start + i * step (ms)."""

    rank: int
    start: int
    offset: int
    rows: int


def off_grid(table: str, rank: int, ts_ms: int, step: int) -> ValueError:
    return ValueError(
        f"{table}: {COIN_NAMES[rank]} bar at {pl.Series([ts_ms]).cast(TS)[0]} is not on the "
        f"{step // 60_000}-minute grid (bar ts must be open times)"
    )


@dataclass(frozen=True)
class Canvas:
    """Bar columns on a canvas: `bars` rows close (the bar's, else the fallback), volume and
    quote_volume (never filled); NaN where absent."""

    bars: np.ndarray
    close_from_fallback: np.ndarray  # Int8
    bar_missing_flag: np.ndarray  # Int8


def place(
    segments: list[Segment],
    step: int,
    bars: Rows,
    prices: Rows,
    fallback_at: int,
    pad_from: dict[int, int],
    table: str,
) -> Canvas:
    """The canvas of `segments`. A row at time T whose bar is missing takes the latest snapshot
    with ts in (F - 5m, F], F = T + fallback_at, if T >= pad_from[rank] (earlier rows are never
    read, see the module docstring). Bars must sit on the `step` grid."""
    n = segments[-1].offset + segments[-1].rows if segments else 0
    cols = alloc((3, n))
    cols.fill(np.nan)
    for seg in segments:
        sl = bars.coins.get(seg.rank)
        if sl is None:
            continue
        ts = bars.ts[sl]
        lo, hi = np.searchsorted(ts, [seg.start, seg.start + seg.rows * step])
        pos, off = np.divmod(ts[lo:hi] - seg.start, step)
        if off.any():
            raise off_grid(table, seg.rank, int(ts[lo + np.flatnonzero(off)[0]]), step)
        pos += seg.offset
        src = slice(sl.start + lo, sl.start + hi)
        for i, c in enumerate(("bar_close", "volume", "quote_volume")):
            cols[i][pos] = bars.cols[c][src]
    close = cols[0]
    missing = np.isnan(close)
    from_fallback = alloc(n, np.int8)
    from_fallback.fill(0)
    for seg in segments:
        sl = prices.coins.get(seg.rank)
        if sl is None:
            continue
        first = seg.offset + max(0, (pad_from[seg.rank] - seg.start) // step)
        rows = np.flatnonzero(missing[first : seg.offset + seg.rows]) + first
        if not rows.size:
            continue
        taken = prices.ts[sl]
        at = seg.start + (rows - seg.offset) * step + fallback_at
        i = np.searchsorted(taken, at, side="right") - 1  # the latest snapshot at or before F
        ok = i >= 0
        ok[ok] = taken[i[ok]] > at[ok] - _FRESH_MS
        price = prices.cols["price"][sl][i[ok]]
        close[rows[ok]] = price
        from_fallback[rows[ok]] = ~np.isnan(price)
    return Canvas(cols, from_fallback, missing.view(np.int8))


@dataclass(frozen=True)
class CoinLayout:
    """Where one coin sits on the 5m and 1h canvases."""

    seg5: Segment
    out_lo: int  # 5m canvas rows [out_lo, out_hi) are the coin's grid without its pad rows
    out_hi: int
    seg1: Segment | None = None  # None: the coin's rows never read a closed 1h bar
    g_lo: int = 0  # the coin's 12-row groups [g_lo, g_hi) read its 1h rows from h_lo on
    g_hi: int = 0
    h_lo: int = 0


def _first(rows: Rows, rank: int, step: int, table: str) -> int:
    first = int(rows.ts[rows.coins[rank].start])
    if first % step:
        raise off_grid(table, rank, first, step)
    return first


def _last(rows: Rows, end: dt.datetime | None) -> int:
    if end is not None:
        return epoch_ms(end) - 1
    return max((int(rows.ts[sl.stop - 1]) for sl in rows.coins.values()), default=0)


def layout(bars5: Rows, bars1: Rows, end: dt.datetime | None) -> list[CoinLayout]:
    """Canvas segments of every coin with 5m rows.

    A coin's 5m grid runs from its first 5m bar to the clock's last row: `end` (exclusive) if given,
    else the last 5m bar of any coin. Its 1h grid likewise from its first 1h bar to `end` or the
    last 1h bar of any coin; the 1h segment holds just the hours the coin's 5m rows read, plus
    PAD_ROWS hours before them. The 5m row at t reads the hour opening at floor(t + 5m, 1h) - 1h.
    """
    last5, last1 = _last(bars5, end), _last(bars1, end)
    coins, off5, off1 = [], 0, 0
    for r in sorted(bars5.coins):
        first = _first(bars5, r, STEP_MS, "market_bars (5m)")
        if last5 < first:
            continue
        last = first + (last5 - first) // STEP_MS * STEP_MS
        start = (first - LEAD_ROWS * STEP_MS + STEP_MS) // HOUR_MS * HOUR_MS - STEP_MS  # a :55 row
        rows = -(-((last - start) // STEP_MS + 1) // GROUP) * GROUP
        seg5 = Segment(r, start, off5, rows)
        coin = CoinLayout(seg5, off5 + (first - start) // STEP_MS, off5 + (last - start) // STEP_MS + 1)
        off5 += rows
        if r in bars1.coins:
            first1 = _first(bars1, r, HOUR_MS, "market_bars (1h)")
            hour0 = start + STEP_MS - HOUR_MS  # the hour group 0 reads
            h_lo = max(first1, (first + STEP_MS) // HOUR_MS * HOUR_MS - HOUR_MS)
            h_hi = (last + STEP_MS) // HOUR_MS * HOUR_MS - HOUR_MS
            if last1 >= first1:
                h_hi = min(h_hi, first1 + (last1 - first1) // HOUR_MS * HOUR_MS)
            if first1 <= last1 and h_lo <= h_hi:
                seg1 = Segment(r, h_lo - PAD_ROWS * HOUR_MS, off1, (h_hi - h_lo) // HOUR_MS + PAD_ROWS + 1)
                off1 += seg1.rows
                g_lo, g_hi = (h_lo - hour0) // HOUR_MS, (h_hi - hour0) // HOUR_MS + 1
                coin = CoinLayout(seg5, coin.out_lo, coin.out_hi, seg1, g_lo, g_hi, seg1.offset + PAD_ROWS)
        coins.append(coin)
    return coins
