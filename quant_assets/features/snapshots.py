"""feature_snapshots: per-coin return, volatility and volume features of 5m bars and of 1h bars.

Time rule. The row keyed (symbol, t) is a decision at t + 5m, when the 5m bar that OPENED at t has
closed. It uses 5m bars with ts <= t, fallback prices with ts <= t, and 1h bars whose hour has closed
by the decision time: the 1h bar opening at h is used on rows with h + 1h <= t + 5m, i.e. the row
at t reads the 1h bar opening at floor(t + 5m, 1h) - 1h (so the 10:55 row reads the 10:00 hour,
whose last 5m bar is the 10:55 bar itself; the 10:50 row still reads the 09:00 hour).
No row reads anything later than its own t.

Per bar family (5m columns unprefixed, 1h columns prefixed `h1_`; windows in bars of that family):
- `ret_n` = close_t / close_{t-n} - 1, n in RET_WINDOWS.
- `vol_n` = sample std (ddof 1) of 1-bar log returns over the last n bars, n in VOL_WINDOWS.
- `ret_accel_a_b` = ret_a / a - ret_b / b; `vol_term_a_b` = vol_a / vol_b.
- `log_volume` = log1p(volume) of the bar itself.
- `vol_z` = z-score of `log_volume` against the last VOLZ_WINDOW bars' mean and std (the current bar
  included): a volume surprise that is scale-free across coins and years.
- `volume_impact` = |1-bar log return| / log1p(quote_volume): price move per unit of (log) traded
  value, an Amihud-style illiquidity measure that stays finite on quiet bars.
Rolling statistics need MIN_WINDOW_FRACTION of their window present; otherwise null.

Missing bars: the grid is complete, so a missing bar is a row with `bar_missing_flag` = 1. Its close
comes from the `prices` table when a snapshot taken in (t - 5m, t] exists (`close_from_fallback` = 1;
for a 1h bar opening at h, one taken in (h + 50m, h + 55m]), so returns continue,
but volume is never filled: `volume`, `log_volume`, `vol_z` and `volume_impact` are null on that row.

Speed: the inputs are collected once, laid out on flat per-coin grids (grid.py), and every feature
is computed by numpy in cache-sized chunks of rows on two threads (numpy releases the GIL), each
chunk reading back MAX_BAR_WINDOW rows; rolling sums are exact per window (rolling.py), so a row's
value does not depend on the chunking or on how much history the input holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pyarrow as pa

from quant_assets.features.family import CHUNK, FAMILY_KEYS, LOOK, family_chunk, min_samples

__all__ = ["H1_FALLBACK_AT", "STEP", "compute_snapshots", "feature_snapshots", "h1_row_key", "min_samples"]
from quant_assets.features.grid import (
    COIN_NAMES,
    GROUP,
    HOUR_MS,
    STEP_MS,
    CoinLayout,
    Rows,
    alloc,
    coin_rows,
    layout,
    place,
    select_bars,
    select_prices,
)
from quant_assets.features.keys import BAR_FLAG_KEYS, H1_PREFIX, SNAPSHOT_FEATURE_KEYS
from quant_assets.universe import TIMEFRAMES

STEP = TIMEFRAMES["5m"]
HOUR = TIMEFRAMES["1h"]
# The 1h fallback close is the price snapshot at the hour's last 5m row, which that row may use.
H1_FALLBACK_AT = HOUR - STEP
H1_FLOATS = tuple(H1_PREFIX + k for k in FAMILY_KEYS)
H1_FLAGS = tuple(H1_PREFIX + k for k in BAR_FLAG_KEYS)
# A 5m row that reads no closed 1h bar: the hour's close is not from a fallback, the bar is missing.
H1_ABSENT_FLAGS = (0, 1)
FLOAT_OUTPUTS = ("close", "volume", *FAMILY_KEYS, *H1_FLOATS)
DAY_MS = 86_400_000
OUTPUT_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "ts": pl.Datetime("ms", "UTC"),
        "date": pl.Date,
        "close": pl.Float64,
        "volume": pl.Float64,
        **{k: pl.Int8 if k in (*BAR_FLAG_KEYS, *H1_FLAGS) else pl.Float64 for k in SNAPSHOT_FEATURE_KEYS},
    }
)


def h1_row_key(ts: pl.Expr) -> pl.Expr:
    """Open time of the last 1h bar closed by the decision time ts + 5m of the 5m row at ts."""
    return (ts + STEP).dt.truncate(HOUR) - HOUR


def in_chunks(pool: ThreadPoolExecutor, fn: Callable[[int, int], None], lo: int, hi: int) -> None:
    """fn(s, e) over [lo, hi) in CHUNK-row pieces on the pool's threads."""
    for f in [pool.submit(fn, s, min(s + CHUNK, hi)) for s in range(lo, hi, CHUNK)]:
        f.result()


def worker_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(2, pl.thread_pool_size())))


def place_5m(coins: list[CoinLayout], bars5: Rows, prices: Rows) -> dict[str, np.ndarray]:
    """The 5m canvas columns (grid.place); fallback closes reach PAD_ROWS rows before a coin's first bar."""
    pad_from = {c.seg5.rank: c.seg5.start + (c.out_lo - c.seg5.offset - LOOK) * STEP_MS for c in coins}
    return place([c.seg5 for c in coins], STEP_MS, bars5, prices, 0, pad_from, "market_bars (5m)")


def _validity(x: np.ndarray, bits: np.ndarray, s: int, e: int) -> None:
    """Arrow validity bits of x[s:e] (s a multiple of 8): set where x is not NaN."""
    packed = np.packbits(np.isnan(x[s:e]), bitorder="little")
    np.invert(packed, out=bits[s // 8 : s // 8 + packed.size])


def _float_series(name: str, values: np.ndarray, bits: np.ndarray) -> pl.Series:
    return pl.Series(
        name, pa.Array.from_buffers(pa.float64(), values.size, [pa.py_buffer(bits), pa.py_buffer(values)])
    )


def _hour_rows(coins: list[CoinLayout], groups: int) -> np.ndarray:
    """The 1h canvas row each 12-row group of the 5m canvas reads; -1 (the absent row) if none."""
    rows = np.full(groups, -1, dtype=np.int64)
    for c in coins:
        if c.seg1 is not None:
            g0 = c.seg5.offset // GROUP
            rows[g0 + c.g_lo : g0 + c.g_hi] = np.arange(c.h_lo, c.h_lo + c.g_hi - c.g_lo)
    return rows


def compute_snapshots(
    bars5: pl.DataFrame, bars1: pl.DataFrame, prices: pl.DataFrame, end: dt.datetime | None
) -> pl.DataFrame:
    """feature_snapshots on collected `select_bars` (5m, 1h) and `select_prices` frames."""
    b5, b1 = coin_rows(bars5, "market_bars", dedupe=True), coin_rows(bars1, "market_bars", dedupe=True)
    px = coin_rows(prices, "prices", dedupe=False)
    coins = layout(b5, b1, end)
    if not coins:
        return OUTPUT_SCHEMA.to_frame()
    segs5 = [c.seg5 for c in coins]
    segs1 = [c.seg1 for c in coins if c.seg1 is not None]
    c5 = place_5m(coins, b5, px)
    fallback_1h = H1_FALLBACK_AT // dt.timedelta(milliseconds=1)
    c1 = place(segs1, HOUR_MS, b1, px, fallback_1h, {s.rank: s.start for s in segs1}, "market_bars (1h)")
    n5 = segs5[-1].offset + segs5[-1].rows
    n1 = segs1[-1].offset + segs1[-1].rows if segs1 else 0
    # 1h canvas plus one trailing "absent" row, read by 5m rows that have no closed hour
    h1 = {k: alloc(n1 + 1) for k in H1_FLOATS}
    for k, flag, absent in zip(H1_FLAGS, BAR_FLAG_KEYS, H1_ABSENT_FLAGS, strict=True):
        h1[k] = np.append(c1[flag], np.int8(absent))
    hour_rows = _hour_rows(coins, n5 // GROUP)
    f5 = {k: alloc(n5) for k in (*FAMILY_KEYS, *H1_FLOATS)}
    f5 |= {k: alloc(n5, np.int8) for k in H1_FLAGS}
    f5 |= {"close": c5["close"], "volume": c5["volume"]}
    bits = {k: alloc((n5 + 7) // 8, np.uint8) for k in FLOAT_OUTPUTS}
    ts, date = alloc(n5, np.int64), alloc(n5, np.int32)
    for s in segs5:
        ts[s.offset : s.offset + s.rows] = np.arange(s.start, s.start + s.rows * STEP_MS, STEP_MS)

    def hourly(s: int, e: int) -> None:
        family_chunk(c1, h1, s, e, H1_PREFIX)

    def five_minute(s: int, e: int) -> None:
        family_chunk(c5, f5, s, e, "")
        reads = hour_rows[s // GROUP : e // GROUP]
        for k in (*H1_FLOATS, *H1_FLAGS):
            f5[k][s:e].reshape(-1, GROUP)[:] = np.take(h1[k], reads)[:, None]
        for k in FLOAT_OUTPUTS:
            _validity(f5[k], bits[k], s, e)
        np.floor_divide(ts[s:e], DAY_MS, out=date[s:e], casting="unsafe")

    with worker_pool() as pool:
        in_chunks(pool, hourly, LOOK, n1)
        for k in H1_FLOATS:
            h1[k][n1] = np.nan
        in_chunks(pool, five_minute, LOOK, n5)
    canvas = pl.DataFrame(
        [
            pl.Series("ts", ts).cast(pl.Datetime("ms", "UTC")),
            pl.Series("date", date).cast(pl.Date),
            *(_float_series(k, f5[k], bits[k]) for k in FLOAT_OUTPUTS),
            *(pl.Series(k, c5[k]) for k in BAR_FLAG_KEYS),
            *(pl.Series(k, f5[k]) for k in H1_FLAGS),
        ]
    )
    parts = [
        canvas.slice(c.out_lo, c.out_hi - c.out_lo).with_columns(symbol=pl.lit(COIN_NAMES[c.seg5.rank]))
        for c in coins
    ]
    return pl.concat(parts, rechunk=False).select(OUTPUT_SCHEMA.names())


def feature_snapshots(
    bars: pl.LazyFrame,
    prices: pl.LazyFrame | None = None,
    *,
    end: dt.datetime | None = None,
    market: str = "spot",
) -> pl.LazyFrame:
    """5m-clock rows (symbol, ts) for every coin from its first bar to the end of the input.

    `bars` is `market_bars` (5m and 1h rows; only `market` is used), `prices` the fallback closes.
    `end` (exclusive) fixes where the clock stops; without it the clock runs through the last 5m
    bar of any coin in the input. Symbols must be in `quant_assets.universe.SYMBOLS`. Output: symbol,
    ts, date, close, volume, then SNAPSHOT_FEATURE_KEYS, sorted by (symbol, ts). See the module
    docstring for the time rule and each feature. Lazy: the work runs when the result is collected.
    """
    queries = [select_bars(bars, "5m", market), select_bars(bars, "1h", market), select_prices(prices)]
    return pl.defer(lambda: compute_snapshots(*pl.collect_all(queries), end), schema=OUTPUT_SCHEMA)
