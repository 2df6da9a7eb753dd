"""The per-coin bar grid every bar feature is computed on, laid out as flat numpy arrays ("canvas").

Rolling windows count rows, so they must count time: each coin gets a complete grid of bar open
times from its first bar to the end of the input, and a missing bar is a row whose bar columns are
null (NaN here), never a skipped row and never a forward-filled one. Where a bar is missing, the
close falls back to the latest price snapshot taken in (F - 5m, F], F = the row's fallback time.

Canvas. All coins' grids sit end to end in one array per column, in universe order. Each coin's
segment starts with at least `PAD_ROWS` rows before its first bar ("pad" rows: no bar, a fallback
close only within the last `PAD_ROWS`), as many as the longest window, so a window that reaches
before a coin's first bar sees nulls, exactly as if the coin had no earlier data, never the
previous coin's rows, and whole-array kernels need no per-coin boundaries. A bar's row is
arithmetic, (ts - segment start) / step, so a coin's segment is filled by one merge of its sorted
bars and fallback prices (rows.py), with no join or hash.

A 5m segment starts at a :55 minute and holds a whole number of 12-row groups, so group g is the
5m rows [h + 55m, h + 1h + 50m] that all read the 1h bar opening at h (see snapshots.py).
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit

from quant_assets.features.kernels import JIT
from quant_assets.features.keys import LATENT_WINDOW, MAX_BAR_WINDOW
from quant_assets.features.rows import BAR_VALUES, COIN_NAMES, Rows
from quant_assets.schemas import RAW_TABLES, TS

PAD_ROWS = MAX_BAR_WINDOW
# Empty rows before a coin's pad rows on the 5m canvas: market_latent reads LATENT_WINDOW rows of
# pad-row features, whose own windows must end before the previous coin's rows.
LEAD_ROWS = PAD_ROWS + LATENT_WINDOW
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


def epoch_ms(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def alloc(shape: int | tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """An uninitialised array from Arrow's memory pool, which keeps freed pages for reuse: the
    large canvas and output columns of one call then do not page-fault fresh memory in again on
    the next (and they reach polars as Arrow buffers without a copy)."""
    item, size = np.dtype(dtype), int(np.prod(shape))
    return np.frombuffer(pa.allocate_buffer(size * item.itemsize), dtype=item, count=size).reshape(shape)


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


@njit(**JIT)
def _place_segment(
    ts,
    close,
    volume,
    quote,
    lo,
    hi,
    start,
    step,
    out,
    missing,
    fallback,
    pts,
    pprice,
    pad_row,
    fallback_at,
    fresh,
):  # noqa: E501
    """One coin's canvas rows (row r at time start + r * step): out rows close, volume and
    quote_volume from the bars ts[lo:hi] (sorted, unique) that fall on them, NaN elsewhere;
    missing = 1 without a bar. From row pad_row on, a missing bar's close is the price of the
    latest snapshot (pts sorted, ties in input order) taken in (F - fresh, F], F = its time +
    fallback_at, and fallback = 1 if that price is not null. Returns the index of a bar between
    two rows (off the grid), or -1."""
    rows = missing.size
    j = lo
    while j < hi and ts[j] < start:
        j += 1
    k = -1  # the latest snapshot at or before F
    at = start
    for r in range(rows):
        fallback[r] = 0
        if j < hi and ts[j] == at:
            out[0, r], out[1, r], out[2, r] = close[j], volume[j], quote[j]
            missing[r] = close[j] != close[j]
            j += 1
        else:
            if j < hi and ts[j] < at:
                return j
            out[0, r], out[1, r], out[2, r] = np.nan, np.nan, np.nan
            missing[r] = 1
        if missing[r] and r >= pad_row:
            f = at + fallback_at
            while k + 1 < pts.size and pts[k + 1] <= f:
                k += 1
            if k >= 0 and pts[k] > f - fresh:
                out[0, r] = pprice[k]
                fallback[r] = pprice[k] == pprice[k]
        at += step
    return -1


def place(
    segments: list[Segment],
    step: int,
    bars: Rows,
    prices: Rows,
    fallback_at: int,
    pad_from: dict[int, int],
    table: str,
    pool: Executor | None = None,
) -> Canvas:
    """The canvas of `segments` (placed on `pool`'s threads if given). A row at time T whose bar
    is missing takes the latest snapshot with ts in (F - 5m, F], F = T + fallback_at, if
    T >= pad_from[rank] (earlier rows are never read, see the module docstring). Bars must sit on
    the `step` grid."""
    n = segments[-1].offset + segments[-1].rows if segments else 0
    canvas = Canvas(alloc((3, n)), alloc(n, np.int8), alloc(n, np.int8))

    def one(seg: Segment) -> None:
        sl = bars.coins.get(seg.rank, slice(0, 0))
        ps = prices.coins.get(seg.rank, slice(0, 0))
        rows = slice(seg.offset, seg.offset + seg.rows)
        bad = _place_segment(
            bars.ts, *(bars.cols[c] for c in BAR_VALUES),
            sl.start, sl.stop, seg.start, step, canvas.bars[:, rows], canvas.bar_missing_flag[rows],
            canvas.close_from_fallback[rows], prices.ts[ps], prices.cols["price"][ps],
            max(0, (pad_from[seg.rank] - seg.start) // step), fallback_at, _FRESH_MS,
        )  # fmt: skip
        if bad >= 0:
            raise off_grid(table, seg.rank, int(bars.ts[bad]), step)

    list(pool.map(one, segments) if pool is not None else map(one, segments))
    return canvas


def place_5m(coins: list[CoinLayout], bars5: Rows, prices: Rows, pool: Executor | None = None) -> Canvas:
    """The 5m canvas of `coins` (see `place`); fallback closes reach PAD_ROWS rows before a coin's
    first bar."""
    pad_from = {c.seg5.rank: c.seg5.start + (c.out_lo - c.seg5.offset - PAD_ROWS) * STEP_MS for c in coins}
    return place([c.seg5 for c in coins], STEP_MS, bars5, prices, 0, pad_from, "market_bars (5m)", pool)


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
