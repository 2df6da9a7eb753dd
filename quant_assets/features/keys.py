"""The feature contract: every column name, window and horizon of the feature layer, defined once.

Models select columns with `LIQUID_FEATURE_KEYS` (market and exogenous features) or
`LIQUID_FULL_FEATURE_KEYS` (plus the text and event features, recognisable by the prefixes in
`TEXT_FEATURE_PREFIXES`). The feature functions build their column names from the constants here,
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
EXOGENOUS_KEYS = (*ORDERBOOK_KEYS, *FUNDING_KEYS, *ONCHAIN_KEYS, *DERIVATIVES_KEYS)

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
LIQUID_FULL_FEATURE_KEYS: tuple[str, ...] = (*LIQUID_FEATURE_KEYS, *EVENT_KEYS, *SOCIAL_KEYS)

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
# need MAX_BAR_WINDOW + LATENT_WINDOW 5m bars; events 24h. Exogenous staleness limits are below 10h.
REQUIRED_LOOKBACK = max(
    _H1 * (MAX_BAR_WINDOW + 2),
    _STEP * (MAX_BAR_WINDOW + LATENT_WINDOW + 1),
    EVENT_WINDOW,
    SOCIAL_WINDOW,
)
# Rounded up to whole days with slack: the lake reads events by the day of `ts`, and an item published
# late (available_at well after ts) must still be in the read when it becomes visible.
LOOKBACK = dt.timedelta(days=14)
# Labels read 48 bars past a row; the last row of a window opens 5 minutes before its end.
LOOKAHEAD = HORIZONS["4h"] + _STEP
assert LOOKBACK >= REQUIRED_LOOKBACK
assert _STEP * max(HORIZON_BARS.values()) <= LOOKAHEAD
