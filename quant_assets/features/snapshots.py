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
"""

from __future__ import annotations

import datetime as dt
import math

import polars as pl

from quant_assets.features.grid import bar_grid, drop_pad_rows, pack, select_bars, select_prices
from quant_assets.features.keys import (
    ACCEL_PAIRS,
    BAR_FLAG_KEYS,
    H1_PREFIX,
    MIN_WINDOW_FRACTION,
    RET_WINDOWS,
    TERM_PAIRS,
    VOL_WINDOWS,
    VOLZ_WINDOW,
    bar_family_keys,
)
from quant_assets.universe import TIMEFRAMES

STEP = TIMEFRAMES["5m"]
HOUR = TIMEFRAMES["1h"]
# The 1h fallback close is the price snapshot at the hour's last 5m row, which that row may use.
H1_FALLBACK_AT = HOUR - STEP


def min_samples(window: int) -> int:
    return max(2, math.ceil(MIN_WINDOW_FRACTION * window))


def _positive(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr > 0).then(expr)


def bar_family(frame: pl.LazyFrame, prefix: str = "") -> pl.LazyFrame:
    """Add the bar family to a grid frame sorted by (symbol, ts) with pad rows (see grid.py)."""
    close = pl.col("close")
    frame = frame.with_columns(
        (close / close.shift(1)).log().alias("_lr"),
        pl.col("volume").log1p().alias(f"{prefix}log_volume"),
    )
    lr, lv = pl.col("_lr"), pl.col(f"{prefix}log_volume")
    frame = frame.with_columns(
        lv.rolling_mean(VOLZ_WINDOW, min_samples=min_samples(VOLZ_WINDOW)).alias("_lv_mean"),
        lv.rolling_std(VOLZ_WINDOW, min_samples=min_samples(VOLZ_WINDOW)).alias("_lv_std"),
        *(lr.rolling_std(n, min_samples=min_samples(n)).alias(f"{prefix}vol_{n}") for n in VOL_WINDOWS),
    )
    frame = frame.with_columns(
        *((close / close.shift(n) - 1).alias(f"{prefix}ret_{n}") for n in RET_WINDOWS),
        ((lv - pl.col("_lv_mean")) / _positive(pl.col("_lv_std"))).alias(f"{prefix}vol_z"),
        (lr.abs() / _positive(pl.col("quote_volume")).log1p()).alias(f"{prefix}volume_impact"),
    )
    return frame.with_columns(
        *(
            (pl.col(f"{prefix}ret_{a}") / a - pl.col(f"{prefix}ret_{b}") / b).alias(
                f"{prefix}ret_accel_{a}_{b}"
            )
            for a, b in ACCEL_PAIRS
        ),
        *(
            (pl.col(f"{prefix}vol_{a}") / _positive(pl.col(f"{prefix}vol_{b}"))).alias(
                f"{prefix}vol_term_{a}_{b}"
            )
            for a, b in TERM_PAIRS
        ),
    )


def h1_row_key(ts: pl.Expr) -> pl.Expr:
    """Open time of the last 1h bar closed by the decision time ts + 5m of the 5m row at ts."""
    return (ts + STEP).dt.truncate(HOUR) - HOUR


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
    bar of any coin in the input. Symbols must be in `quant_assets.universe.SYMBOLS`. Output: symbol, ts, date, close, volume, then SNAPSHOT_FEATURE_KEYS,
    sorted by (symbol, ts). See the module docstring for the time rule and each feature.
    """
    p = select_prices(prices)
    g5 = bar_grid(select_bars(bars, "5m", market), p, STEP, end, dt.timedelta(0))
    f5 = bar_family(g5)
    g1 = bar_grid(select_bars(bars, "1h", market), p, HOUR, end, H1_FALLBACK_AT)
    h1_cols = (*bar_family_keys(H1_PREFIX), *BAR_FLAG_KEYS)
    f1 = (
        bar_family(g1, H1_PREFIX)
        .filter(~pl.col("is_pad"))
        .select("_key", *(pl.col(c).alias(c if c.startswith(H1_PREFIX) else H1_PREFIX + c) for c in h1_cols))
    )
    # each 5m row takes the 1h row of its last closed hour: an exact match on the packed (coin, hour) key
    h1_key = pack(pl.col("_rank"), h1_row_key(pl.col("ts")).dt.epoch("ms"))
    out = f5.with_columns(h1_key.alias("_key")).join_asof(
        f1, on="_key", strategy="backward", tolerance=0, check_sortedness=False
    )
    out = out.select(
        "is_pad",
        "symbol",
        "ts",
        pl.col("ts").dt.date().alias("date"),
        "close",
        "volume",
        *bar_family_keys(),
        *BAR_FLAG_KEYS,
        *bar_family_keys(H1_PREFIX),
        # Rows before a coin's first 1h bar have no hour to read: flagged missing, not fallback.
        pl.col(H1_PREFIX + "close_from_fallback").fill_null(0),
        pl.col(H1_PREFIX + "bar_missing_flag").fill_null(1),
    )
    return drop_pad_rows(out).drop("is_pad")
