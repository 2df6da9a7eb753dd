"""Exogenous features joined as of publication time: order book, funding, on-chain flows, derivatives.

Time rule: the row (symbol, t) takes, per source, the latest row published at or before t
(`available_at <= t`; the order book has no `available_at`, its snapshot time `ts <= t` is when it
was seen). A source row older than that source's maximum staleness is not used: the features are null
and `<source>_missing_flag` = 1. Ties on publication time resolve to the latest `ts`, then input order.

Recency sums (keys.RECENCY_HORIZONS; `windows.recency_sums`): order-book imbalance, funding rate and
the scaled exchange netflow, each summed over the rows published in (t - h, t] for its horizon h (flat
and linearly decayed) and over (t - 24h, t]. A row counts from the first clock row at or after its
publication (snapshot time for the book). They carry what a published value says about the next hours
when it takes more than the latest row to say it: an hour of book pressure, a fresh funding
settlement versus one 7 hours old, a netflow that arrived 20 minutes ago versus 2 hours ago.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from quant_assets.features.grid import ceil_to, empty_table, require_columns
from quant_assets.features.keys import (
    DERIVATIVES_RAW,
    FUNDING_BASE_RATE,
    ONCHAIN_SCALE_WINDOW,
    RECENCY_HORIZONS,
    RECENCY_LONG_WINDOW,
    recency_keys,
)
from quant_assets.features.windows import recency_sums, trailing_sums
from quant_assets.schemas import TS
from quant_assets.universe import TIMEFRAMES

# Staleness limits: a little more than each source's publication interval, so one missed publication
# shows up as missing instead of silently reusing a stale value.
ORDERBOOK_MAX_STALENESS = dt.timedelta(minutes=15)  # snapshots every 5 minutes
FUNDING_MAX_STALENESS = dt.timedelta(hours=9)  # settlements every 8 hours
ONCHAIN_MAX_STALENESS = dt.timedelta(hours=3)  # hourly, published with a delay
DERIVATIVES_MAX_STALENESS = dt.timedelta(minutes=30)  # 5-minute metrics
# On-chain flows are USD amounts spanning orders of magnitude; tanh(flow / scale) keeps them in (-1, 1).
ONCHAIN_FLOW_SCALE = 1e6
STEP = TIMEFRAMES["5m"]


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


def _recency(
    clock: pl.LazyFrame, table: pl.LazyFrame | None, name: str, published: str, value: pl.Expr, signal: str
) -> pl.LazyFrame:
    """keys.recency_keys(signal) onto clock rows: sums of `value` over the rows of `table` published by t."""
    table = empty_table(name) if table is None else table
    items = table.select(
        "symbol", ceil_to(pl.col(published).cast(TS), STEP).alias("time"), value.cast(pl.Float64).alias("_v")
    ).drop_nulls("_v")
    return recency_sums(clock, items, RECENCY_HORIZONS[signal], RECENCY_LONG_WINDOW, recency_keys(signal))


def orderbook_features(
    clock: pl.LazyFrame, orderbook: pl.LazyFrame | None, depth_band_pct: int = 1
) -> pl.LazyFrame:
    """orderbook_imbalance, spread_bps, log_depth_1pct, orderbook_missing_flag, and `cost_depth_notional`.

    - orderbook_imbalance = (bid - ask) / (bid + ask) of the quote notional within +-1% of mid;
      orderbook_imbalance_sum_1h / _decay_1h / _sum_24h: its recency sums over the snapshots.
    - spread_bps = (best_ask - best_bid) / mid * 1e4 (null where the source has no top of book).
    - log_depth_1pct = log1p(bid + ask notional within +-1%).
    - cost_depth_notional: the shallower side's notional within +-`depth_band_pct`% (the cost model's
      band), the depth a round trip must cross on one of its legs; labels' est_cost uses it.
    """
    bid, ask = pl.col("bid_notional_1pct"), pl.col("ask_notional_1pct")
    best_bid, best_ask = pl.col("best_bid"), pl.col("best_ask")
    total = bid + ask
    imbalance = pl.when(total > 0).then((bid - ask) / total)
    values = [
        imbalance.alias("orderbook_imbalance"),
        pl.when((best_bid > 0) & (best_ask >= best_bid))
        .then((best_ask - best_bid) / ((best_ask + best_bid) / 2) * 1e4)
        .alias("spread_bps"),
        pl.when(total >= 0).then(total.log1p()).alias("log_depth_1pct"),
        pl.min_horizontal(
            pl.col(f"bid_notional_{depth_band_pct}pct"), pl.col(f"ask_notional_{depth_band_pct}pct")
        ).alias("cost_depth_notional"),
    ]
    clock = _asof(
        clock, orderbook, "orderbook_l2", "ts", values, ORDERBOOK_MAX_STALENESS, "orderbook_missing_flag"
    )
    return _recency(clock, orderbook, "orderbook_l2", "ts", imbalance, "orderbook_imbalance")


def funding_features(clock: pl.LazyFrame, funding: pl.LazyFrame | None) -> pl.LazyFrame:
    """funding_rate: the last settled funding rate published by t; funding_missing_flag.

    funding_premium_sum_4h / _decay_4h / _sum_24h: recency sums of the settled rates less the base
    rate FUNDING_BASE_RATE (a settlement counts in the 4h sums for 4 hours after its publication, so
    they also tell a fresh rate from a stale one; without the base rate every fresh settlement would
    add the same 0.01% to every coin, a clock pattern rather than a signal).
    """
    clock = _asof(
        clock,
        funding,
        "funding_rates",
        "available_at",
        [pl.col("funding_rate")],
        FUNDING_MAX_STALENESS,
        "funding_missing_flag",
    )
    premium = pl.col("funding_rate") - FUNDING_BASE_RATE
    return _recency(clock, funding, "funding_rates", "available_at", premium, "funding_premium")


def onchain_features(clock: pl.LazyFrame, onchain: pl.LazyFrame | None) -> pl.LazyFrame:
    """onchain_norm = tanh(netflow / 1e6), onchain_exchange_norm = tanh(exchange_netflow / 1e6).

    onchain_exchange_z_sum_2h / _decay_2h / _sum_24h: recency sums of exchange_netflow divided by its
    root mean square over the coin's rows published in the ONCHAIN_SCALE_WINDOW before (and with) it.
    tanh(flow / 1e6) saturates for the large coins, whose hourly flows are tens of millions; the scaled
    flow stays proportional to the flow whatever the coin's size.
    """
    values = [
        (pl.col("netflow") / ONCHAIN_FLOW_SCALE).tanh().alias("onchain_norm"),
        (pl.col("exchange_netflow") / ONCHAIN_FLOW_SCALE).tanh().alias("onchain_exchange_norm"),
    ]
    clock = _asof(
        clock,
        onchain,
        "onchain_signals",
        "available_at",
        values,
        ONCHAIN_MAX_STALENESS,
        "onchain_missing_flag",
    )
    return _recency(
        clock, _scaled_netflow(onchain), "onchain_signals", "available_at", pl.col("_z"), "onchain_exchange_z"
    )


def _scaled_netflow(onchain: pl.LazyFrame | None) -> pl.LazyFrame:
    """Rows (symbol, available_at, _z): exchange_netflow over its trailing RMS as of its own publication."""
    onchain = empty_table("onchain_signals") if onchain is None else onchain
    base = (
        onchain.select("symbol", pl.col("available_at").cast(TS), pl.col("exchange_netflow").cast(pl.Float64))
        .drop_nulls("exchange_netflow")
        .sort("symbol", "available_at", "exchange_netflow")  # ties in a fixed order: exact sums
        .collect()
    )
    window_ms = int(ONCHAIN_SCALE_WINDOW.total_seconds() * 1000)
    t = base["available_at"].dt.epoch("ms").to_numpy()
    x = base["exchange_netflow"].to_numpy()
    z = np.full(base.height, np.nan)
    symbols = base["symbol"].to_numpy()
    for symbol in np.unique(symbols):
        # each window summed on its own rows (no running totals): the value does not depend on how
        # much history precedes the window
        i = np.flatnonzero(symbols == symbol)
        rms = np.sqrt(
            trailing_sums(t[i], x[i] ** 2, window_ms) / trailing_sums(t[i], np.ones(i.size), window_ms)
        )
        z[i] = np.where(rms > 0, x[i] / np.where(rms > 0, rms, 1.0), np.nan)
    return base.select("symbol", "available_at", pl.Series("_z", z).fill_nan(None)).lazy()


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
