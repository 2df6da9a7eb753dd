"""The bar family of `feature_snapshots` in plain polars: the oracle the numba kernels are checked against.

Read this, not kernels.py, to see what a feature is; change a feature here first, then make the
kernels agree (test_bar_family_oracle.py). It is written for clarity, not speed (one coin-month is
fine, eight years are not), and it shares nothing with the kernel path but the constants of keys.py.

The rules, as in the docstring of quant_assets/features/snapshots.py:
- Grid: each coin's 5m rows run from its first 5m bar to the clock's end (`end`, exclusive, else the
  last 5m bar of any coin). A missing bar is a row with null close, volume and quote volume.
- Fallback close: a row at T without a bar close takes the latest price snapshot (by ts; of equal ts
  the last in input order) taken at or before F = T + fallback_at, if it was taken after F - 5m.
  fallback_at is 0 on 5m rows and 55m on 1h rows (the hour's last 5m row). Fallbacks reach
  MAX_BAR_WINDOW rows before the first bar, so a window starting before the listing can see them.
- The family on a grid (per coin, windows in rows): ret_n, vol_n (ddof 1, at least
  MIN_WINDOW_FRACTION of the window present), ret_accel, vol_term (null where the long vol is 0),
  log_volume, vol_z (null where the std is 0), volume_impact (null where quote volume <= 0).
- 1h family: the same on 1h bars (grid from the coin's first 1h bar to `end` or the last 1h bar of
  any coin), read on the 5m row at t from the hour opening at floor(t + 5m, 1h) - 1h, the last hour
  closed by the decision at t + 5m. A row whose hour is not on the coin's 1h grid reads nulls, with
  h1_close_from_fallback 0 and h1_bar_missing_flag 1.
- Duplicate bars (same symbol, timeframe, ts): the last in input order wins. Output has nulls, never NaN.
"""

from __future__ import annotations

import datetime as dt
import math

import polars as pl

from quant_assets.features.keys import (
    ACCEL_PAIRS,
    BAR_FLAG_KEYS,
    H1_PREFIX,
    MAX_BAR_WINDOW,
    MIN_WINDOW_FRACTION,
    RET_WINDOWS,
    SNAPSHOT_FEATURE_KEYS,
    TERM_PAIRS,
    VOL_WINDOWS,
    VOLZ_WINDOW,
    bar_family_keys,
)

TS = pl.Datetime("ms", "UTC")
STEP, HOUR = dt.timedelta(minutes=5), dt.timedelta(hours=1)
FRESHNESS = dt.timedelta(minutes=5)


def min_samples(window: int) -> int:
    """Present values a rolling statistic over `window` rows needs (else null)."""
    return max(2, math.ceil(MIN_WINDOW_FRACTION * window))


def _bars(bars: pl.DataFrame, timeframe: str, market: str) -> pl.DataFrame:
    return (
        bars.filter((pl.col("timeframe") == timeframe) & (pl.col("market") == market))
        .select(
            pl.col("symbol").cast(pl.String),
            pl.col("ts").cast(TS),
            *(pl.col(c).cast(pl.Float64).fill_nan(None) for c in ("close", "volume", "quote_volume")),
        )
        .unique(["symbol", "ts"], keep="last", maintain_order=True)
    )


def grid(
    bars: pl.DataFrame, prices: pl.DataFrame, step: dt.timedelta, fallback_at: dt.timedelta, last: dt.datetime
) -> pl.DataFrame:
    """Every coin's complete grid from MAX_BAR_WINDOW rows before its first bar to `last`, with
    bar columns, fallback closes and the two flags."""
    firsts = bars.group_by("symbol").agg(first=pl.col("ts").min())
    rows = firsts.select(
        "symbol",
        "first",
        ts=pl.datetime_ranges(pl.col("first") - step * MAX_BAR_WINDOW, pl.lit(last, TS), step),
    ).explode("ts")
    rows = rows.join(bars, on=["symbol", "ts"], how="left").sort("symbol", "ts")
    snapshots = prices.rename({"ts": "price_ts"}).sort("symbol", "price_ts")
    rows = (
        rows.with_columns(fallback_time=pl.col("ts") + fallback_at)
        .join_asof(
            snapshots, left_on="fallback_time", right_on="price_ts", by="symbol", check_sortedness=False
        )
        .with_columns(
            price=pl.when(pl.col("price_ts") > pl.col("fallback_time") - FRESHNESS).then(pl.col("price"))
        )
    )
    return rows.select(
        "symbol",
        "ts",
        "first",
        close=pl.coalesce("close", "price"),
        volume="volume",
        quote_volume="quote_volume",
        close_from_fallback=(pl.col("close").is_null() & pl.col("price").is_not_null()).cast(pl.Int8),
        bar_missing_flag=pl.col("close").is_null().cast(pl.Int8),
    )


def family(g: pl.DataFrame) -> pl.DataFrame:
    """The bar family of each row of a grid (sorted by symbol, ts), windows per coin in rows."""
    close, volume, quote = pl.col("close"), pl.col("volume"), pl.col("quote_volume")
    g = g.with_columns(
        lr=(close / close.shift(1)).log().over("symbol"),
        log_volume=volume.log1p(),
        **{f"ret_{n}": (close / close.shift(n) - 1).over("symbol") for n in RET_WINDOWS},
    )
    lr, lv = pl.col("lr"), pl.col("log_volume")
    z_mean = lv.rolling_mean(VOLZ_WINDOW, min_samples=min_samples(VOLZ_WINDOW)).over("symbol")
    z_std = lv.rolling_std(VOLZ_WINDOW, min_samples=min_samples(VOLZ_WINDOW)).over("symbol")
    g = g.with_columns(
        **{f"vol_{n}": lr.rolling_std(n, min_samples=min_samples(n)).over("symbol") for n in VOL_WINDOWS},
        vol_z=pl.when(z_std != 0).then((lv - z_mean) / z_std),
        volume_impact=pl.when(quote > 0).then(lr.abs() / quote.log1p()),
    )
    return g.with_columns(
        **{f"ret_accel_{a}_{b}": pl.col(f"ret_{a}") / a - pl.col(f"ret_{b}") / b for a, b in ACCEL_PAIRS},
        **{
            f"vol_term_{a}_{b}": pl.when(pl.col(f"vol_{b}") != 0).then(
                pl.col(f"vol_{a}") / pl.col(f"vol_{b}")
            )
            for a, b in TERM_PAIRS
        },
    )


def _last(bars: pl.DataFrame, end: dt.datetime | None) -> dt.datetime:
    """The clock's last instant: just before `end`, else the last bar of any coin."""
    return end - dt.timedelta(milliseconds=1) if end is not None else bars["ts"].max()


def oracle_snapshots(
    bars: pl.DataFrame,
    prices: pl.DataFrame | None = None,
    end: dt.datetime | None = None,
    market: str = "spot",
) -> pl.DataFrame:
    """What feature_snapshots(bars, prices, end=end, market=market) must return."""
    prices = (
        pl.DataFrame(schema={"symbol": pl.String, "ts": TS, "price": pl.Float64})
        if prices is None
        else prices.select(
            pl.col("symbol").cast(pl.String),
            pl.col("ts").cast(TS),
            pl.col("price").cast(pl.Float64).fill_nan(None),
        )
    ).unique(["symbol", "ts"], keep="last", maintain_order=True)
    b5, b1 = _bars(bars, "5m", market), _bars(bars, "1h", market)
    five = family(grid(b5, prices, STEP, dt.timedelta(0), _last(b5, end))).filter(
        pl.col("ts") >= pl.col("first")
    )
    hour_keys = (*bar_family_keys(), *BAR_FLAG_KEYS)
    hours = (
        family(grid(b1, prices, HOUR, HOUR - STEP, _last(b1, end)))
        .filter(pl.col("ts") >= pl.col("first"))
        .select("symbol", pl.col("ts").alias("hour"), *(pl.col(k).alias(H1_PREFIX + k) for k in hour_keys))
    )
    out = five.with_columns(hour=(pl.col("ts") + STEP).dt.truncate("1h") - HOUR).join(
        hours, on=["symbol", "hour"], how="left"
    )
    floats = [k for k in ("close", "volume", *SNAPSHOT_FEATURE_KEYS) if out.schema[k] == pl.Float64]
    return (
        out.with_columns(
            pl.col(floats).fill_nan(None),
            pl.col(f"{H1_PREFIX}close_from_fallback").fill_null(0),
            pl.col(f"{H1_PREFIX}bar_missing_flag").fill_null(1),
        )
        .select(
            "symbol", "ts", pl.col("ts").dt.date().alias("date"), "close", "volume", *SNAPSHOT_FEATURE_KEYS
        )
        .sort("symbol", "ts")
    )
