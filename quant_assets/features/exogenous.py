"""Exogenous features joined as of publication time: order book, funding, on-chain flows, derivatives.

Time rule: the row (symbol, t) takes, per source, the latest row published at or before t
(`available_at <= t`; the order book has no `available_at`, its snapshot time `ts <= t` is when it
was seen). A source row older than that source's maximum staleness is not used: the features are null
and `<source>_missing_flag` = 1. Ties on publication time resolve to the latest `ts`, then input order.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from quant_assets.features.grid import empty_table, require_columns
from quant_assets.features.keys import DERIVATIVES_RAW
from quant_assets.schemas import TS

# Staleness limits: a little more than each source's publication interval, so one missed publication
# shows up as missing instead of silently reusing a stale value.
ORDERBOOK_MAX_STALENESS = dt.timedelta(minutes=15)  # snapshots every 5 minutes
FUNDING_MAX_STALENESS = dt.timedelta(hours=9)  # settlements every 8 hours
ONCHAIN_MAX_STALENESS = dt.timedelta(hours=3)  # hourly, published with a delay
DERIVATIVES_MAX_STALENESS = dt.timedelta(minutes=30)  # 5-minute metrics
# On-chain flows are USD amounts spanning orders of magnitude; tanh(flow / scale) keeps them in (-1, 1).
ONCHAIN_FLOW_SCALE = 1e6


def _asof(
    clock: pl.LazyFrame,
    table: pl.LazyFrame | None,
    name: str,
    published: str,
    values: list[pl.Expr],
    staleness: dt.timedelta,
    flag: str,
) -> pl.LazyFrame:
    """Backward as-of join of `values` (evaluated on `table`) onto clock rows by symbol."""
    if table is None:
        table = empty_table(name)
    used = sorted({root for v in values for root in v.meta.root_names()})
    require_columns(table, name, ["symbol", "ts", published, *used])
    right = (
        table.with_columns(pl.col("ts").cast(TS), pl.col(published).cast(TS).alias("_published"))
        .sort("symbol", "_published", "ts", maintain_order=True)
        .select("symbol", "_published", *values)
    )
    joined = clock.join_asof(
        right,
        left_on="ts",
        right_on="_published",
        by="symbol",
        strategy="backward",
        check_sortedness=False,
        tolerance=staleness,
    )
    return joined.with_columns(pl.col("_published").is_null().cast(pl.Int8).alias(flag)).drop("_published")


def orderbook_features(
    clock: pl.LazyFrame, orderbook: pl.LazyFrame | None, depth_band_pct: int = 1
) -> pl.LazyFrame:
    """orderbook_imbalance, spread_bps, log_depth_1pct, orderbook_missing_flag, and `cost_depth_notional`.

    - orderbook_imbalance = (bid - ask) / (bid + ask) of the quote notional within +-1% of mid.
    - spread_bps = (best_ask - best_bid) / mid * 1e4 (null where the source has no top of book).
    - log_depth_1pct = log1p(bid + ask notional within +-1%).
    - cost_depth_notional: the shallower side's notional within +-`depth_band_pct`% (the cost model's
      band), the depth a round trip must cross on one of its legs; labels' est_cost uses it.
    """
    bid, ask = pl.col("bid_notional_1pct"), pl.col("ask_notional_1pct")
    best_bid, best_ask = pl.col("best_bid"), pl.col("best_ask")
    total = bid + ask
    values = [
        pl.when(total > 0).then((bid - ask) / total).alias("orderbook_imbalance"),
        pl.when((best_bid > 0) & (best_ask >= best_bid))
        .then((best_ask - best_bid) / ((best_ask + best_bid) / 2) * 1e4)
        .alias("spread_bps"),
        pl.when(total >= 0).then(total.log1p()).alias("log_depth_1pct"),
        pl.min_horizontal(
            pl.col(f"bid_notional_{depth_band_pct}pct"), pl.col(f"ask_notional_{depth_band_pct}pct")
        ).alias("cost_depth_notional"),
    ]
    return _asof(
        clock, orderbook, "orderbook_l2", "ts", values, ORDERBOOK_MAX_STALENESS, "orderbook_missing_flag"
    )


def funding_features(clock: pl.LazyFrame, funding: pl.LazyFrame | None) -> pl.LazyFrame:
    """funding_rate: the last settled funding rate published by t; funding_missing_flag."""
    return _asof(
        clock,
        funding,
        "funding_rates",
        "available_at",
        [pl.col("funding_rate")],
        FUNDING_MAX_STALENESS,
        "funding_missing_flag",
    )


def onchain_features(clock: pl.LazyFrame, onchain: pl.LazyFrame | None) -> pl.LazyFrame:
    """onchain_norm = tanh(netflow / 1e6), onchain_exchange_norm = tanh(exchange_netflow / 1e6)."""
    values = [
        (pl.col("netflow") / ONCHAIN_FLOW_SCALE).tanh().alias("onchain_norm"),
        (pl.col("exchange_netflow") / ONCHAIN_FLOW_SCALE).tanh().alias("onchain_exchange_norm"),
    ]
    return _asof(
        clock,
        onchain,
        "onchain_signals",
        "available_at",
        values,
        ONCHAIN_MAX_STALENESS,
        "onchain_missing_flag",
    )


def derivatives_features(clock: pl.LazyFrame, derivatives: pl.LazyFrame | None) -> pl.LazyFrame:
    """The three long/short ratios, taker buy/sell ratio, basis and annualised basis, as published."""
    values = [pl.col(c).cast(pl.Float64) for c in DERIVATIVES_RAW]
    return _asof(
        clock,
        derivatives,
        "derivatives_metrics",
        "available_at",
        values,
        DERIVATIVES_MAX_STALENESS,
        "derivatives_missing_flag",
    )
