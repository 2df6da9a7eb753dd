"""Column schemas of the feature tables with a description of every column, for the UI.

The columns come from the feature contract (features/keys.py) and the functions' output schemas; the
descriptions follow the definitions in features/snapshots.py, exogenous.py, events.py, social.py and
matrix.py. Each asset carries the schema in its definition (`dagster/column_schema`, shown before
anything is built) and each materialisation the schema of the table it actually wrote, described the
same way; a column without a description is named by `undescribed` (tested).

Time rule, for every row: the row keyed (symbol, ts) is a decision at ts + 5m and reads nothing
published after it; only `fwd_ret_*` and `label_*` look ahead, by design (they are the targets).
"""

from __future__ import annotations

import re

import dagster as dg
import polars as pl

from quant_assets.features.keys import (
    FUNDING_BASE_RATE,
    H1_PREFIX,
    LABEL_EXTRA_COLUMNS,
    LABEL_KEYS,
    LIQUID_FULL_FEATURE_KEYS,
    MARKET_LATENT_KEYS,
    SOCIAL_N_FEATURES,
    VOLZ_WINDOW,
)
from quant_assets.features.snapshots import OUTPUT_SCHEMA as SNAPSHOT_SCHEMA
from quant_assets.features.social import BUCKET_AGG_COLUMNS, emb_columns

TS = pl.Datetime("ms", "UTC")
_ROW_KEY = {"symbol": pl.String, "ts": TS, "date": pl.Date}

TABLE_SCHEMAS: dict[str, pl.Schema] = {
    "feature_snapshots_main": SNAPSHOT_SCHEMA,
    "market_latent": pl.Schema({**_ROW_KEY, **{k: pl.Float64 for k in MARKET_LATENT_KEYS}}),
    "social_text_latent": pl.Schema(
        {**_ROW_KEY, **{c: pl.Float64 for c in (*BUCKET_AGG_COLUMNS, *emb_columns(SOCIAL_N_FEATURES))}}
    ),
    "feature_matrix_main": pl.Schema(
        {
            **_ROW_KEY,
            "close": pl.Float64,
            **{
                k: pl.Int8 if k.endswith("_flag") or k.endswith("_fallback") else pl.Float64
                for k in LIQUID_FULL_FEATURE_KEYS
            },
            **{k: pl.Float64 for k in (*LABEL_EXTRA_COLUMNS, *LABEL_KEYS)},
        }
    ),  # fmt: skip
}

_EXACT = {
    "symbol": "Coin symbol (BTC, ETH, ...).",
    "ts": "Open time of the 5m bar the row is keyed by (UTC); the row is a decision at ts + 5m.",
    "date": "UTC day of ts; the Delta partition column (monthly windows are replaced by it).",
    "close": "Close of the 5m bar; the `prices` snapshot in (ts - 5m, ts] when the bar is missing.",
    "volume": "Base volume of the 5m bar; null when the bar is missing (never filled).",
    "close_from_fallback": "1 when the close came from the `prices` snapshot because the bar is missing.",
    "bar_missing_flag": "1 when no bar exists at ts (the grid is complete; volume features are null).",
    "log_volume": "log1p(volume) of the bar itself.",
    "vol_z": f"z-score of log_volume against the last {VOLZ_WINDOW} bars' mean and std: a scale-free "
    "volume surprise.",
    "volume_impact": "|1-bar log return| / log1p(quote_volume): price move per unit of traded value "
    "(Amihud-style illiquidity).",
    "orderbook_imbalance": "(bid - ask) / (bid + ask) depth within 1% of mid, latest snapshot at or before ts.",
    "spread_bps": "Best ask - best bid over mid, in basis points (null when the book has no top of book).",
    "log_depth_1pct": "log1p of bid + ask depth (base units) within 1% of mid.",
    "orderbook_missing_flag": "1 when no book snapshot is recent enough: the book features are null.",
    "funding_rate": "Latest published funding rate of the perpetual (per 8 hours).",
    "funding_missing_flag": "1 when no funding settlement is recent enough (spot-only coin or a gap).",
    "onchain_norm": "tanh of the latest published on-chain netflow over a fixed USD scale.",
    "onchain_exchange_norm": "tanh of the latest published exchange netflow over a fixed USD scale.",
    "onchain_missing_flag": "1 when no on-chain row is published recently enough.",
    "derivatives_missing_flag": "1 when no futures-metrics row is published recently enough.",
    "long_short_ratio_global": "Latest published long/short account ratio, all accounts.",
    "long_short_ratio_top_accounts": "Latest published long/short ratio of top traders' accounts.",
    "long_short_ratio_top_positions": "Latest published long/short ratio of top traders' positions.",
    "taker_buy_sell_ratio": "Latest published taker buy / sell volume ratio.",
    "basis": "Latest published perpetual minus index price.",
    "annualized_basis": "Latest published basis, annualised.",
    "event_count_24h": "News items linked to the coin and visible at the decision time, last 24 hours.",
    "event_decay": "News items of the last 24 hours, each weighted down linearly with its age.",
    "event_velocity": "News items of the last hour against the 24-hour hourly rate.",
    "source_confidence": "Mean tier-weighted confidence of the last 24 hours' news sources.",
    "source_diversity": "Distinct news sources in the last 24 hours.",
    "social_post_count": "Social posts linked to the coin in the 5m bucket.",
    "social_comment_count": "Social comments linked to the coin in the 5m bucket.",
    "social_unique_authors": "Distinct authors in the 5m bucket.",
    "social_engagement": "Summed engagement of the bucket's items.",
    "social_items": "Posts and comments in the bucket.",
    "social_weight": "Sum of the items' weights 1 + log1p(engagement) (the pooling weights).",
    "sentiment_sum": "Summed lexicon sentiment of the bucket's texts.",
    "sentiment_mean": "Mean lexicon sentiment of the bucket's texts.",
    "social_post_count_6h": "Social posts linked to the coin, last 6 hours.",
    "social_comment_count_6h": "Social comments linked to the coin, last 6 hours.",
    "social_author_activity_6h": "Distinct authors of the coin's social items, last 6 hours.",
    "social_engagement_6h": "Summed engagement of the coin's social items, last 6 hours.",
    "sentiment_mean_6h": "Mean sentiment of the coin's social items, last 6 hours.",
    "social_event_blend": "Blend of log1p(social items, 6h) and log1p(news events, 24h).",
    "cost_depth_notional": "Quote notional within 1% of mid used for the cost estimate.",
    "est_cost": "Estimated one-way trading cost (fees + half spread + impact for the book's depth).",
}
_SIGNALS = {
    "orderbook_imbalance": "order-book imbalance",
    "funding_premium": f"funding premium (funding_rate - {FUNDING_BASE_RATE:g})",
    "onchain_exchange_z": "exchange netflow over its 7-day root mean square",
    "event_sentiment": "news sentiment (confidence x tier x relevance weighted)",
    "social_sentiment": "social sentiment (log1p(engagement) weighted)",
}
_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"ret_(\d+)"), "Return close_t / close_(t-{0}) - 1 over the last {0} bars."),
    (re.compile(r"vol_(\d+)"), "Sample std of 1-bar log returns over the last {0} bars."),
    (re.compile(r"ret_accel_(\d+)_(\d+)"), "ret_{0} / {0} - ret_{1} / {1}: short minus long per-bar drift."),
    (re.compile(r"vol_term_(\d+)_(\d+)"), "vol_{0} / vol_{1}: short over long realised volatility."),
    (re.compile(r"mkt_latent_(\d+)"), "Fixed DCT projection of the last 4 hours of normalised returns "
     "(dims 0-3) and volumes (4-7): dim {0}."),
    (re.compile(r"social_emb_(\d+)(_6h)?"), "Hashed text vector of the coin's social items, dim {0} "
     "(engagement-pooled)."),
    (re.compile(r"event_count_(\w+)"), "News items of type `{0}` linked to the coin, last 24 hours."),
    (re.compile(r"(\w+)_sum_(\d+h)"), "Sum of {0} published in the last {1} (visible at the decision time)."),
    (re.compile(r"(\w+)_decay_(\d+h)"), "Sum of {0} of the last {1}, each weighted 1 - age / {1}."),
    (re.compile(r"fwd_ret_(\w+)"), "Forward return over the next {0} after the decision time (target, "
     "looks ahead)."),
    (re.compile(r"label_(\w+)"), "Training label: fwd_ret_{0} net of the estimated trading cost (looks ahead)."),
]  # fmt: skip


def describe(column: str) -> str | None:
    """The description of a feature-table column; None when it has none."""
    if column in _EXACT:
        return _EXACT[column]
    if column.startswith(H1_PREFIX):
        inner = describe(column.removeprefix(H1_PREFIX))
        return None if inner is None else f"1h bars as of the last closed hour: {inner}"
    for pattern, text in _PATTERNS:
        m = pattern.fullmatch(column)
        if m:
            groups = [_SIGNALS.get(g, g) for g in m.groups() if g is not None]
            return text.format(*groups)
    return None


def undescribed(schema: pl.Schema) -> list[str]:
    return [c for c in schema.names() if describe(c) is None]


def column_schema(schema: pl.Schema) -> dg.TableSchema:
    """`dagster/column_schema` of a table: every column with its polars dtype and description."""
    return dg.TableSchema(
        columns=[dg.TableColumn(c, str(t), description=describe(c)) for c, t in schema.items()]
    )
