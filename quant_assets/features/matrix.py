"""feature_matrix: every feature family on the 5m clock, plus the labels.

Clock: the rows of `feature_snapshots` (symbol, ts). Time rule for features: row (symbol, t) is a
decision at t + 5m and uses bars with ts <= t, order-book snapshots and fallback prices with ts <= t,
and every published row (funding, on-chain, derivatives, events, social) with available_at <= t.
Each family's module states its own detail; the columns are LIQUID_FULL_FEATURE_KEYS.

Labels look forward and never feed features:
- fwd_ret_1h = close[t + 12 bars] / close[t] - 1 and fwd_ret_4h with 48 bars, on the regular 5m grid,
  from real bar closes only: null if either bar is missing (a fallback price is not a fill).
- est_cost = `costs.est_cost_expr(cost_depth_notional)`: the ONE-WAY cost fraction (taker fee +
  slippage + impact_coef * sqrt(trade_notional / depth)) of a `costs.trade_notional` order against
  the shallower side's quote notional within +-`costs.depth_band_pct`% of mid in the book as of t;
  no book within its staleness -> the cost model's fallback depth.
- label_1h = fwd_ret_1h - est_cost, label_4h = fwd_ret_4h - 2 * est_cost (LABEL_COST_MULTIPLIER).

Each function returns rows for ALL input times; the caller computes on [start - LOOKBACK, end +
LOOKAHEAD) and keeps [start, end).
"""

from __future__ import annotations

import polars as pl

from quant_assets.backtest.costs import DEFAULT_COSTS, CostModel
from quant_assets.features.events import event_features
from quant_assets.features.exogenous import (
    derivatives_features,
    funding_features,
    onchain_features,
    orderbook_features,
)
from quant_assets.features.grid import require_columns
from quant_assets.features.keys import (
    LABEL_COST_MULTIPLIER,
    LABEL_EXTRA_COLUMNS,
    LABEL_KEYS,
    LIQUID_FULL_FEATURE_KEYS,
    MARKET_LATENT_KEYS,
    SNAPSHOT_FEATURE_KEYS,
    SOCIAL_N_FEATURES,
    SOCIAL_WINDOW,
)
from quant_assets.features.social import _empty as empty_social
from quant_assets.features.social import emb_columns
from quant_assets.features.windows import change_point_aggregates, onto_clock
from quant_assets.universe import HORIZON_BARS, TIMEFRAMES

# social_event_blend = alpha * log1p(social items in the last 6h) + (1 - alpha) * log1p(news events in
# the last 24h): one text-activity intensity mixing the two text sources, alpha the social share.
SOCIAL_AGG_BLEND_ALPHA = 0.5
STEP = TIMEFRAMES["5m"]


def social_window_features(clock: pl.LazyFrame, social: pl.LazyFrame | None) -> pl.LazyFrame:
    """The social buckets of (t - 6h, t] summarised onto each clock row (SOCIAL_KEYS but the blend).

    Counts, author activity (distinct authors per bucket, summed: an author active in k buckets counts
    k times) and engagement are sums; sentiment_mean_6h is the item-weighted mean sentiment and
    social_emb_i_6h the pooling-weight-weighted mean of the bucket vectors (exactly the pooled vector
    of all items in the window). Empty window: counts 0, sentiment and vectors 0.
    """
    social = empty_social(SOCIAL_N_FEATURES).lazy() if social is None else social
    embs = emb_columns(SOCIAL_N_FEATURES)
    schema = require_columns(social, "social_text_latent", ["symbol", "ts", "social_weight", *embs])
    extra = [c for c in schema if c.startswith("social_emb_") and c not in embs]
    if extra:
        raise ValueError(
            f"social_text_latent: expected {SOCIAL_N_FEATURES} social_emb_ columns, got extra {extra}"
        )
    sums = ("social_post_count", "social_comment_count", "social_unique_authors", "social_engagement",
            "social_items", "social_weight", "sentiment_sum")  # fmt: skip
    items = social.select(
        "symbol",
        pl.col("ts").alias("time"),
        *sums,
        *((pl.col(e) * pl.col("social_weight")).alias(e) for e in embs),
    )
    changes = change_point_aggregates(items, SOCIAL_WINDOW, [pl.col(c).sum() for c in (*sums, *embs)])
    joined = onto_clock(clock, changes)
    n, w = pl.col("social_items").fill_null(0.0), pl.col("social_weight").fill_null(0.0)
    return joined.with_columns(
        pl.col("social_post_count").fill_null(0.0).alias("social_post_count_6h"),
        pl.col("social_comment_count").fill_null(0.0).alias("social_comment_count_6h"),
        pl.col("social_unique_authors").fill_null(0.0).alias("social_author_activity_6h"),
        pl.col("social_engagement").fill_null(0.0).alias("social_engagement_6h"),
        pl.when(n > 0).then(pl.col("sentiment_sum") / n).otherwise(0.0).alias("sentiment_mean_6h"),
        *(pl.when(w > 0).then(pl.col(e) / w).otherwise(0.0).alias(f"{e}_6h") for e in embs),
        n.alias("_social_items_6h"),
    ).drop("_p", *sums, *embs)


def labels(frame: pl.LazyFrame, costs: CostModel) -> pl.LazyFrame:
    """fwd_ret_*, est_cost, label_* on a frame sorted by (symbol, ts) with close, close_from_fallback."""
    bar_close = pl.when(pl.col("close_from_fallback") == 0).then(pl.col("close"))
    est_cost = costs.est_cost_expr(pl.col("cost_depth_notional"))
    fwd = []
    for h, n in HORIZON_BARS.items():
        # shift by rows is a shift in time only if the row n ahead is the same coin, n bars later
        same = (pl.col("symbol").shift(-n) == pl.col("symbol")) & (
            pl.col("ts").shift(-n) == pl.col("ts") + STEP * n
        )
        fwd.append(pl.when(same).then(bar_close.shift(-n) / bar_close - 1).alias(f"fwd_ret_{h}"))
    frame = frame.with_columns(*fwd, est_cost.alias("est_cost"))
    return frame.with_columns(
        (pl.col(f"fwd_ret_{h}") - LABEL_COST_MULTIPLIER[h] * pl.col("est_cost")).alias(f"label_{h}")
        for h in HORIZON_BARS
    )


def feature_matrix(
    snapshots: pl.LazyFrame,
    social: pl.LazyFrame | None = None,
    market_lat: pl.LazyFrame | None = None,
    orderbook: pl.LazyFrame | None = None,
    funding: pl.LazyFrame | None = None,
    onchain: pl.LazyFrame | None = None,
    derivatives: pl.LazyFrame | None = None,
    events: pl.LazyFrame | None = None,
    event_links: pl.LazyFrame | None = None,
    costs: CostModel = DEFAULT_COSTS,
) -> pl.LazyFrame:
    """Rows of `snapshots` with symbol, ts, date, LIQUID_FULL_FEATURE_KEYS, close and the labels.

    Inputs other than `snapshots` may be None (no such data: their features are flagged missing or 0).
    Raw tables are as in quant_assets.schemas; `social` is social_text_latent's output and `market_lat`
    market_latent's. Output is sorted by (symbol, ts); see the module docstring for time rules and labels.
    """
    require_columns(snapshots, "feature_snapshots", ["symbol", "ts", "close", *SNAPSHOT_FEATURE_KEYS])
    clock = snapshots.select("symbol", "ts", "close", *SNAPSHOT_FEATURE_KEYS).sort("symbol", "ts")
    if market_lat is not None:
        require_columns(market_lat, "market_latent", ["symbol", "ts", *MARKET_LATENT_KEYS])
        clock = clock.join(
            market_lat.select("symbol", "ts", *MARKET_LATENT_KEYS),
            on=["symbol", "ts"],
            how="left",
            maintain_order="left",
        )
    else:
        clock = clock.with_columns(pl.lit(None, pl.Float64).alias(k) for k in MARKET_LATENT_KEYS)
    clock = orderbook_features(clock, orderbook, costs.depth_band_pct)
    clock = funding_features(clock, funding)
    clock = onchain_features(clock, onchain)
    clock = derivatives_features(clock, derivatives)
    clock = event_features(clock, events, event_links)
    clock = social_window_features(clock, social)
    a = SOCIAL_AGG_BLEND_ALPHA
    clock = clock.with_columns(
        (a * pl.col("_social_items_6h").log1p() + (1 - a) * pl.col("event_count_24h").log1p()).alias(
            "social_event_blend"
        )
    )
    clock = labels(clock, costs)
    return clock.select(
        "symbol",
        "ts",
        pl.col("ts").dt.date().alias("date"),
        *LIQUID_FULL_FEATURE_KEYS,
        "close",
        *LABEL_EXTRA_COLUMNS,
        *LABEL_KEYS,
    )
