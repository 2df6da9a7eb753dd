"""The feature contract: every column name, window and horizon of the feature layer, defined once.

Models select columns with `LIQUID_FEATURE_KEYS` (market and exogenous features) or
`LIQUID_FULL_FEATURE_KEYS` (plus the text and event features: `TEXT_FEATURE_KEYS`, recognisable by
the prefixes in `TEXT_FEATURE_PREFIXES`; the `no_text` ablation zeroes exactly these). The feature functions build their column names from the constants here,
so a name can never drift between the code that makes a column and the code that reads it.

Windows are counted in bars of the frame's own clock (5m rows, or 1h rows for the `h1_` family)
on a complete per-coin grid, so a window of 12 always means one hour of 5m time, gaps included.
"""

from __future__ import annotations

import datetime as dt

from quant_assets.schemas import DERIVATIVES_METRIC_COLUMNS, EVENT_TYPES, SOCIAL_EVENT_TYPES
from quant_assets.universe import HORIZON_BARS, HORIZONS, TIMEFRAMES

TEXT_FEATURE_PREFIXES = ("social_", "event_", "source_", "sentiment_")

# --- bar family (5m clock, and the same on 1h bars with the H1 prefix) ------------------------------
RET_WINDOWS = (1, 3, 12, 48, 96, 288)
VOL_WINDOWS = (3, 12, 48, 96, 288)
# ret_accel_a_b = ret_a / a - ret_b / b: per-bar drift of the short window minus that of the long one.
ACCEL_PAIRS = ((3, 12), (12, 48), (48, 288))
# vol_term_a_b = vol_a / vol_b: short over long realised volatility (term structure of volatility).
TERM_PAIRS = ((3, 12), (12, 48), (48, 288))
VOLZ_WINDOW = 288
# A rolling statistic needs at least this share of its window present (missing bars are nulls).
MIN_WINDOW_FRACTION = 0.8
H1_PREFIX = "h1_"
MAX_BAR_WINDOW = max(*RET_WINDOWS, *VOL_WINDOWS, VOLZ_WINDOW)


def bar_family_keys(prefix: str = "") -> tuple[str, ...]:
    """Column names of one bar family: returns, volatilities, their ratios, volume features."""
    return (
        *(f"{prefix}ret_{n}" for n in RET_WINDOWS),
        *(f"{prefix}vol_{n}" for n in VOL_WINDOWS),
        *(f"{prefix}ret_accel_{a}_{b}" for a, b in ACCEL_PAIRS),
        *(f"{prefix}vol_term_{a}_{b}" for a, b in TERM_PAIRS),
        f"{prefix}log_volume",
        f"{prefix}vol_z",
        f"{prefix}volume_impact",
    )


BAR_FLAG_KEYS = ("close_from_fallback", "bar_missing_flag")
SNAPSHOT_FEATURE_KEYS: tuple[str, ...] = (
    *bar_family_keys(),
    *BAR_FLAG_KEYS,
    *bar_family_keys(H1_PREFIX),
    *(H1_PREFIX + k for k in BAR_FLAG_KEYS),
)

# --- market latent ------------------------------------------------------------------------------------
LATENT_WINDOW = 48  # 5m bars (4 hours) of normalised returns and volumes
LATENT_COEFS = 4  # DCT coefficients per sequence; returns give dims 0-3, volumes 4-7
MARKET_LATENT_KEYS = tuple(f"mkt_latent_{i}" for i in range(2 * LATENT_COEFS))

# --- exogenous, as of publication time -----------------------------------------------------------------
ORDERBOOK_KEYS = ("orderbook_imbalance", "spread_bps", "log_depth_1pct", "orderbook_missing_flag")
FUNDING_KEYS = ("funding_rate", "funding_missing_flag")
ONCHAIN_KEYS = ("onchain_norm", "onchain_exchange_norm", "onchain_missing_flag")
DERIVATIVES_RAW = DERIVATIVES_METRIC_COLUMNS
DERIVATIVES_KEYS = (*DERIVATIVES_RAW, "derivatives_missing_flag")

# --- recency sums: each published signal summed over its horizon and over a day -------------------------
# For a signal with values v published at times tau (visible on row t once tau <= t), three columns:
#   <name>_sum_<h>   = sum of v with t - tau < h
#   <name>_decay_<h> = sum of v * (1 - (t - tau) / h) over the same items (1 when first visible, 0 at age h)
#   <name>_sum_24h   = sum of v with t - tau < 24h
# A linear model combines them into any drift profile that is flat or linear over h and flat over the
# day after: how long a signal matters, and how much of it fades. The horizons are the signals' typical
# reach; the simulator plants its effects on exactly these (`sources.sim_effects`).
RECENCY_LONG_WINDOW = dt.timedelta(hours=24)
RECENCY_HORIZONS = {
    "orderbook_imbalance": dt.timedelta(hours=1),
    "funding_premium": dt.timedelta(hours=4),
    "onchain_exchange_z": dt.timedelta(hours=2),
    "event_sentiment": dt.timedelta(hours=4),
    "social_sentiment": dt.timedelta(hours=1),
}
# funding_premium = funding_rate - FUNDING_BASE_RATE: Binance's interest component, 0.01% per 8 hours, is
# what a perpetual pays with no premium at all; the rest is what the market leans.
FUNDING_BASE_RATE = 1.0e-4
# onchain_exchange_z = exchange_netflow / its root mean square over the last ONCHAIN_SCALE_WINDOW of
# published rows: flows in USD differ by orders of magnitude across coins and years.
ONCHAIN_SCALE_WINDOW = dt.timedelta(days=7)


def _hours(d: dt.timedelta) -> str:
    return f"{int(d.total_seconds() // 3600)}h"


def recency_keys(name: str) -> tuple[str, str, str]:
    h = _hours(RECENCY_HORIZONS[name])
    return f"{name}_sum_{h}", f"{name}_decay_{h}", f"{name}_sum_{_hours(RECENCY_LONG_WINDOW)}"


EXOGENOUS_KEYS = (
    *ORDERBOOK_KEYS,
    *recency_keys("orderbook_imbalance"),
    *FUNDING_KEYS,
    *recency_keys("funding_premium"),
    *ONCHAIN_KEYS,
    *recency_keys("onchain_exchange_z"),
    *DERIVATIVES_KEYS,
)

# --- events (news, trailing 24h) and social text (trailing 6h) ------------------------------------------
EVENT_WINDOW = dt.timedelta(hours=24)
EVENT_VELOCITY_WINDOW = dt.timedelta(hours=1)
NEWS_EVENT_TYPES = tuple(t for t in EVENT_TYPES if t not in SOCIAL_EVENT_TYPES)
EVENT_KEYS = (
    "event_count_24h",
    "event_decay",
    "event_velocity",
    "source_confidence",
    "source_diversity",
    *(f"event_count_{t}" for t in NEWS_EVENT_TYPES),
)
# Sentiment of the items linked to a coin (the events table's sentiment_score, else the text lexicon):
# news weighted by confidence_score * tier weight * link relevance, social by log1p(engagement).
SENTIMENT_KEYS = (*recency_keys("event_sentiment"), *recency_keys("social_sentiment"))
SOCIAL_WINDOW = dt.timedelta(hours=6)
SOCIAL_N_FEATURES = 32  # HashingVectorizer width; the matrix insists on it so the key list is fixed
SOCIAL_KEYS = (
    "social_post_count_6h",
    "social_comment_count_6h",
    "social_author_activity_6h",
    "social_engagement_6h",
    "sentiment_mean_6h",
    "social_event_blend",
    *(f"social_emb_{i}_6h" for i in range(SOCIAL_N_FEATURES)),
)

# --- the two lists models use ------------------------------------------------------------------------------
LIQUID_FEATURE_KEYS: tuple[str, ...] = (*SNAPSHOT_FEATURE_KEYS, *MARKET_LATENT_KEYS, *EXOGENOUS_KEYS)
LIQUID_FULL_FEATURE_KEYS: tuple[str, ...] = (*LIQUID_FEATURE_KEYS, *EVENT_KEYS, *SENTIMENT_KEYS, *SOCIAL_KEYS)
# What the no_text ablation zeroes: every column made from news or social items.
TEXT_FEATURE_KEYS: tuple[str, ...] = (*EVENT_KEYS, *SENTIMENT_KEYS, *SOCIAL_KEYS)

# --- labels --------------------------------------------------------------------------------------------------
LABEL_KEYS = ("label_1h", "label_4h")
FWD_RETURN_KEYS = tuple(f"fwd_ret_{h}" for h in HORIZONS)
# How many one-way `est_cost`s each label pays, as issue 4 states it: label_1h = fwd_ret_1h - est_cost,
# label_4h = fwd_ret_4h - 2 * est_cost.
LABEL_COST_MULTIPLIER = {"1h": 1.0, "4h": 2.0}
LABEL_EXTRA_COLUMNS = (*FWD_RETURN_KEYS, "cost_depth_notional", "est_cost")

# --- partition edges -----------------------------------------------------------------------------------------
_STEP = TIMEFRAMES["5m"]
_H1 = TIMEFRAMES["1h"]
# What a row at t reads before t: the 1h family uses the last closed hour (opened up to 1h before t)
# and windows of MAX_BAR_WINDOW 1h returns behind it (one more close); the 5m family and the latent
# need MAX_BAR_WINDOW + LATENT_WINDOW 5m bars; events 24h; recency sums a day of published rows, and the
# on-chain ones a week more for their scale. Exogenous staleness limits are below 10h.
REQUIRED_LOOKBACK = max(
    _H1 * (MAX_BAR_WINDOW + 2),
    _STEP * (MAX_BAR_WINDOW + LATENT_WINDOW + 1),
    EVENT_WINDOW,
    SOCIAL_WINDOW,
    RECENCY_LONG_WINDOW + ONCHAIN_SCALE_WINDOW,
)
# Rounded up to whole days with slack: the lake reads events by the day of `ts`, and an item published
# late (available_at well after ts) must still be in the read when it becomes visible.
LOOKBACK = dt.timedelta(days=14)
# Labels read 48 bars past a row; the last row of a window opens 5 minutes before its end.
LOOKAHEAD = HORIZONS["4h"] + _STEP
assert LOOKBACK >= REQUIRED_LOOKBACK
assert _STEP * max(HORIZON_BARS.values()) <= LOOKAHEAD
assert set(TEXT_FEATURE_KEYS) == {k for k in LIQUID_FULL_FEATURE_KEYS if k.startswith(TEXT_FEATURE_PREFIXES)}
