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

Speed: the inputs are collected once and laid out on flat per-coin grids (grid.py); every feature,
the 1h-to-5m alignment and the null bitmaps are computed by compiled kernels (kernels.py) in
cache-sized chunks of rows on all cores, each chunk reading back MAX_BAR_WINDOW rows. Rolling sums
are exact per window, so a row's value depends neither on the chunking nor on how much history the
input holds. The output columns are the kernels' buffers, handed to polars without a copy.

The same rules in a few lines of plain polars: quant_assets_tests/features/bar_family_oracle.py, the
oracle the kernels are tested against (test_bar_family_oracle.py). Change a feature there first.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pyarrow as pa

from quant_assets.features import kernels
from quant_assets.features.family import (
    FAMILY_KEYS,
    LOOK,
    PARAMS,
    family_rows,
    in_ranges,
    min_samples,
    worker_pool,
)
from quant_assets.features.grid import (
    GROUP,
    HOUR_MS,
    STEP_MS,
    Canvas,
    CoinLayout,
    alloc,
    layout,
    place,
    place_5m,
)
from quant_assets.features.keys import BAR_FLAG_KEYS, H1_PREFIX, SNAPSHOT_FEATURE_KEYS
from quant_assets.features.rows import COIN_NAMES, coin_rows, select_bars, select_prices
from quant_assets.universe import TIMEFRAMES

__all__ = ["H1_FALLBACK_AT", "STEP", "compute_snapshots", "feature_snapshots", "min_samples"]

STEP = TIMEFRAMES["5m"]
HOUR = TIMEFRAMES["1h"]
# The 1h fallback close is the price snapshot at the hour's last 5m row, which that row may use.
H1_FALLBACK_AT = HOUR - STEP
H1_FLOATS = tuple(H1_PREFIX + k for k in FAMILY_KEYS)
H1_FLAGS = tuple(H1_PREFIX + k for k in BAR_FLAG_KEYS)
# A 5m row that reads no closed 1h bar: the hour's close is not from a fallback, the bar is missing.
H1_ABSENT_FLAGS = (0, 1)
FLOAT_OUTPUTS = ("close", "volume", *FAMILY_KEYS, *H1_FLOATS)
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


def _hour_rows(coins: list[CoinLayout], groups: int, absent: int) -> np.ndarray:
    """The 1h canvas row each 12-row group of the 5m canvas reads; `absent` where none is closed."""
    rows = np.full(groups, absent, dtype=np.uint64)
    for c in coins:
        if c.seg1 is not None:
            g0 = c.seg5.offset // GROUP
            rows[g0 + c.g_lo : g0 + c.g_hi] = np.arange(c.h_lo, c.h_lo + c.g_hi - c.g_lo)
    return rows


def _hourly(
    c1: Canvas, n1: int, hour_rows: np.ndarray, p: kernels.Params, pool: ThreadPoolExecutor
) -> kernels.Hourly:
    """The 1h family on the 1h canvas plus one trailing absent row (all null, flags H1_ABSENT_FLAGS),
    as the 5m rows read it (hour_rows: see `_hour_rows`)."""
    fam = alloc((len(FAMILY_KEYS), n1 + 1))
    fam[:, :LOOK] = np.nan  # the first coin's pad rows: never read, but defined
    in_ranges(pool, lambda s, e: family_rows(c1.bars, fam, s, e, p=p), LOOK, n1)
    fam[:, n1] = np.nan
    valid = np.empty(fam.shape, dtype=np.uint8)
    for k in range(fam.shape[0]):
        kernels.validity(fam[k], valid[k])
    flags = np.empty((2, n1 + 1), dtype=np.int8)
    flags[0, :n1], flags[1, :n1] = c1.close_from_fallback, c1.bar_missing_flag
    flags[:, n1] = H1_ABSENT_FLAGS
    return kernels.Hourly(fam, valid, flags, hour_rows, GROUP)


def _float_series(name: str, values: np.ndarray, bits: np.ndarray) -> pl.Series:
    return pl.Series(
        name, pa.Array.from_buffers(pa.float64(), values.size, [pa.py_buffer(bits), pa.py_buffer(values)])
    )


def compute_snapshots(
    bars5: pl.DataFrame,
    bars1: pl.DataFrame,
    prices: pl.DataFrame,
    end: dt.datetime | None,
    params: kernels.Params = PARAMS,
) -> pl.DataFrame:
    """feature_snapshots on collected `select_bars` (5m, 1h) and `select_prices` frames. `params`:
    the kernels' windows; the default is keys.py's, which name the columns (tests alter a window to
    show the oracle comparison catches it)."""
    with worker_pool() as pool:
        b5, b1, px = (
            f.result()
            for f in [
                pool.submit(coin_rows, bars5, "market_bars", True),
                pool.submit(coin_rows, bars1, "market_bars", True),
                pool.submit(coin_rows, prices, "prices", False),
            ]
        )
        coins = layout(b5, b1, end)
        if not coins:
            return OUTPUT_SCHEMA.to_frame()
        segs1 = [c.seg1 for c in coins if c.seg1 is not None]
        c5 = place_5m(coins, b5, px, pool)
        fallback_1h = H1_FALLBACK_AT // dt.timedelta(milliseconds=1)
        c1 = place(
            segs1, HOUR_MS, b1, px, fallback_1h, {s.rank: s.start for s in segs1}, "market_bars (1h)", pool
        )
        n5, n1 = c5.bars.shape[1], c1.bars.shape[1]
        out = kernels.FiveMinuteOut(
            family=alloc((len(FAMILY_KEYS), n5)),
            h1=alloc((len(H1_FLOATS), n5)),
            h1_flags=alloc((len(H1_FLAGS), n5), np.int8),
            date=alloc(n5, np.int32),
            bits=alloc((len(FLOAT_OUTPUTS), (n5 + 7) // 8), np.uint8),
        )
        out.bits[:, : LOOK // 8] = 0
        ts = alloc(n5, np.int64)
        for c in coins:
            s = c.seg5
            ts[s.offset : s.offset + s.rows] = np.arange(s.start, s.start + s.rows * STEP_MS, STEP_MS)
        hourly = _hourly(c1, n1, _hour_rows(coins, n5 // GROUP, n1), params, pool)
        in_ranges(pool, lambda s, e: kernels.five_minute(c5.bars, ts, hourly, out, params, s, e), LOOK, n5)
    floats = (c5.bars[0], c5.bars[1], *out.family, *out.h1)
    canvas = pl.DataFrame(
        [
            pl.Series("ts", ts).cast(pl.Datetime("ms", "UTC")),
            pl.Series("date", out.date).cast(pl.Date),
            *(_float_series(k, v, b) for k, v, b in zip(FLOAT_OUTPUTS, floats, out.bits, strict=True)),
            pl.Series(BAR_FLAG_KEYS[0], c5.close_from_fallback),
            pl.Series(BAR_FLAG_KEYS[1], c5.bar_missing_flag),
            *(pl.Series(k, v) for k, v in zip(H1_FLAGS, out.h1_flags, strict=True)),
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
