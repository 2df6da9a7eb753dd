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

import polars as pl


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
