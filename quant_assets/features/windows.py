"""Trailing-window aggregates of sparse, timestamped items (events, social buckets) on the 5m clock.

Items are few compared to clock rows, so windows are evaluated only where their content changes:
at each item's time (it enters) and at its time + window (it leaves), plus any extra offsets a feature
needs (a shorter sub-window). Between two such change points the set of items in the window is
constant, so the clock takes the last change point at or before each row with a backward as-of join.
Cost is proportional to the number of items, not clock rows, and no Python loop touches rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl
from numba import njit


def change_point_aggregates(
    items: pl.LazyFrame,
    window: dt.timedelta,
    aggs: Sequence[pl.Expr],
    extra_offsets: Sequence[dt.timedelta] = (),
) -> pl.LazyFrame:
    """Evaluate `aggs` over items with time in (p - window, p] at every change point p, per symbol.

    `items` has `symbol` and `time` (the clock row from which the item is visible). Inside `aggs`,
    `pl.col("time").max()` is the change point p itself. Expiry rows added here carry nulls in every
    other column, so aggregations must ignore nulls (sum, n_unique of drop_nulls, ...).
    """
    offsets = (window, *extra_offsets)
    expiries = [items.select("symbol", (pl.col("time") + off).alias("time")) for off in offsets]
    return (
        pl.concat([items, *expiries], how="diagonal_relaxed")
        .sort("symbol", "time", maintain_order=True)
        .rolling("time", period=window, closed="right", group_by="symbol")
        .agg(*aggs)
        # every row at the same time has the same window: keep one
        .unique(subset=["symbol", "time"], keep="first", maintain_order=True)
    )


def onto_clock(clock: pl.LazyFrame, changes: pl.LazyFrame) -> pl.LazyFrame:
    """Each clock row (symbol, ts) gets the aggregates of the last change point p <= ts (column `_p`)."""
    return clock.join_asof(
        changes.rename({"time": "_p"}).sort("symbol", "_p"),
        left_on="ts",
        right_on="_p",
        by="symbol",
        strategy="backward",
        check_sortedness=False,
    )


def seconds(delta: pl.Expr) -> pl.Expr:
    return delta.dt.total_milliseconds() / 1000.0


def recency_sums(
    clock: pl.LazyFrame,
    items: pl.LazyFrame,
    horizon: dt.timedelta,
    long_window: dt.timedelta,
    names: tuple[str, str, str],
) -> pl.LazyFrame:
    """Add three trailing sums of the item values `_v` to each clock row t (see keys.RECENCY_HORIZONS).

    `items` has `symbol`, `time` (the first clock row that may see the item) and `_v` (nulls skipped).
    Columns `names`: the sum of `_v` over items with time in (t - horizon, t]; the same with each value
    weighted by 1 - (t - time) / horizon; the sum over (t - long_window, t]. 0 where no item is in the
    window. Each window is summed on its own items (a compiled loop over the sorted items, no running
    totals), so a row's value is bit-identical whatever history precedes it, and it does not depend on
    which clock rows exist: dense inputs such as 5m book snapshots cost rows x items per window.
    """
    frame = clock.collect()
    it = (
        items.select("symbol", pl.col("time").dt.epoch("ms").alias("_t"), pl.col("_v").cast(pl.Float64))
        .drop_nulls()
        # items at the same time in a fixed order (by value): float sums then do not depend on the
        # order the input came in, which differs between a month read alone and inside a longer run
        .sort("symbol", "_t", "_v")
        .collect()
    )
    n = frame.height
    out = np.zeros((3, n))
    sym = frame["symbol"].to_numpy()
    q_ms = frame["ts"].dt.epoch("ms").to_numpy()
    by_symbol = it.partition_by("symbol", as_dict=True, maintain_order=True)
    for (symbol,), part in by_symbol.items():
        rows = np.flatnonzero(sym == symbol)
        if rows.size == 0:
            continue
        rows = rows[np.argsort(q_ms[rows], kind="stable")]
        _trailing_sums(
            part["_t"].to_numpy(),
            part["_v"].to_numpy(),
            q_ms[rows],
            int(horizon.total_seconds() * 1000),
            int(long_window.total_seconds() * 1000),
            rows,
            out,
        )
    return frame.with_columns(pl.Series(name, out[k]) for k, name in enumerate(names)).lazy()


def trailing_sums(item_t: np.ndarray, item_v: np.ndarray, long_ms: int) -> np.ndarray:
    """At each item of one series (times ascending, ms), the sum of the values with time in (t - long_ms, t]."""
    out = np.zeros((3, item_t.shape[0]))
    _trailing_sums(item_t, item_v, item_t, 1, long_ms, np.arange(item_t.shape[0]), out)
    return out[2]


@njit(nogil=True, cache=True)
def _trailing_sums(item_t, item_v, query_t, h_ms, long_ms, rows, out):  # pragma: no cover - compiled
    lo, hi, n = 0, 0, item_t.shape[0]
    for i in range(query_t.shape[0]):
        t = query_t[i]
        while hi < n and item_t[hi] <= t:
            hi += 1
        while lo < hi and item_t[lo] <= t - long_ms:
            lo += 1
        flat, decayed, total = 0.0, 0.0, 0.0
        for k in range(lo, hi):
            v = item_v[k]
            total += v
            age = t - item_t[k]
            if age < h_ms:
                flat += v
                decayed += v * (1.0 - age / h_ms)
        out[0, rows[i]] = flat
        out[1, rows[i]] = decayed
        out[2, rows[i]] = total
