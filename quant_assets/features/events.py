"""Event features: news items about a coin in the trailing 24 hours, and news and social sentiment.

Time rule: the row (symbol, t) counts an event iff its `available_at` is in (t - 24h, t]. An item
published at 10:02 is first counted on the 10:05 row (`available_at` rounded up to the clock), never
on the 10:00 row. Events reach coins through `event_links` (an event linked to a coin through several
entities counts once). Social items (SOCIAL_EVENT_TYPES) are left to the social features.

- event_count_24h: events in the window; event_count_<type>: the same per news type.
- event_decay = sum of confidence_score * 2^(-age / EVENT_DECAY_HALF_LIFE), age = t - available_at.
- event_velocity = events in the last hour - event_count_24h / 24 (arrivals per hour above the day's rate).
- source_confidence = mean of confidence_score * tier weight, tier weight (6 - source_tier) / 5
  (tier 1 = 1.0 .. tier 5 = 0.2); 0 with no events.
- source_diversity = distinct sources in the window.

Sentiment recency sums (keys.SENTIMENT_KEYS, `windows.recency_sums`, same time rule): an item's
sentiment is the events table's `sentiment_score` (-1 .. 1) where the feed scores it, else the
lexicon score of its text (`text_sentiment`). News items weigh it by confidence_score * tier weight *
link relevance (the largest relevance among the item's links to the coin); social items by
log1p(engagement).
- event_sentiment_sum_4h / _decay_4h / _sum_24h: weighted news sentiment over 4 hours (flat and
  linearly decayed with age) and over the day;
- social_sentiment_sum_1h / _decay_1h / _sum_24h: the same for posts and comments over 1 hour.
"""

from __future__ import annotations

import datetime as dt
import math

import polars as pl

from quant_assets.features.grid import ceil_to, empty_table, require_columns
from quant_assets.features.keys import (
    EVENT_VELOCITY_WINDOW,
    EVENT_WINDOW,
    NEWS_EVENT_TYPES,
    RECENCY_HORIZONS,
    RECENCY_LONG_WINDOW,
    recency_keys,
)
from quant_assets.features.windows import change_point_aggregates, onto_clock, recency_sums, seconds
from quant_assets.schemas import SOCIAL_EVENT_TYPES, TS
from quant_assets.universe import TIMEFRAMES

EVENT_DECAY_HALF_LIFE = dt.timedelta(hours=6)
_LN2_PER_S = math.log(2.0) / EVENT_DECAY_HALF_LIFE.total_seconds()
STEP = TIMEFRAMES["5m"]
EVENT_COLUMNS = ("event_id", "ts", "available_at", "source", "source_tier", "event_type", "confidence_score",
                 "payload")  # fmt: skip

POSITIVE_WORDS = (
    "bull", "bullish", "moon", "pump", "pumping", "rally", "surge", "surging", "breakout", "gain", "gains",
    "up", "buy", "buying", "long", "green", "ath", "adoption", "partnership", "launch", "approved",
    "approval", "upgrade", "strong", "growth", "record", "win", "profit",
)  # fmt: skip
NEGATIVE_WORDS = (
    "bear", "bearish", "dump", "dumping", "crash", "crashing", "plunge", "drop", "down", "sell", "selling",
    "short", "red", "hack", "hacked", "exploit", "scam", "rug", "fud", "ban", "banned", "lawsuit",
    "delist", "delisted", "liquidation", "liquidated", "fear", "weak", "loss", "losses",
)  # fmt: skip


def sentiment_expr(text: pl.Expr) -> pl.Expr:
    """Lexicon sentiment of a text: (pos - neg) / (pos + neg) over the word lists above, 0 without hits."""
    words = text.fill_null("").str.to_lowercase().str.extract_all(r"[a-z]+")
    pos = words.list.eval(pl.element().is_in(list(POSITIVE_WORDS))).list.sum().cast(pl.Float64)
    neg = words.list.eval(pl.element().is_in(list(NEGATIVE_WORDS))).list.sum().cast(pl.Float64)
    hits = pos + neg
    return pl.when(hits > 0).then((pos - neg) / hits).otherwise(0.0)


def text_sentiment() -> pl.Expr:
    """An item's sentiment: the feed's sentiment_score, or the lexicon's reading of its text if unscored."""
    return pl.coalesce(pl.col("sentiment_score"), sentiment_expr(pl.col("payload").struct.field("text")))


def linked_events(
    events: pl.LazyFrame | None, event_links: pl.LazyFrame | None, social: bool
) -> pl.LazyFrame:
    """Events (social or news) joined to the coins they are about, one row per (event, coin).

    `relevance` is the largest among the event's links to that coin; `time` its first clock row.
    """
    events = empty_table("events") if events is None else events
    event_links = empty_table("event_links") if event_links is None else event_links
    schema = require_columns(events, "events", EVENT_COLUMNS)
    if "sentiment_score" not in schema:  # written before the column existed: every item unscored
        events = events.with_columns(pl.lit(None, pl.Float64).alias("sentiment_score"))
    require_columns(event_links, "event_links", ("event_id", "symbol", "relevance"))
    kind = pl.col("event_type").is_in(list(SOCIAL_EVENT_TYPES))
    links = (
        event_links.filter(pl.col("symbol").is_not_null())
        .group_by("event_id", "symbol")
        .agg(pl.col("relevance").max())
    )
    return (
        events.filter(kind if social else ~kind)
        .with_columns(pl.col("available_at").cast(TS))
        .join(links, on="event_id", how="inner")
        .with_columns(ceil_to(pl.col("available_at"), STEP).alias("time"))
    )


def event_features(
    clock: pl.LazyFrame, events: pl.LazyFrame | None, event_links: pl.LazyFrame | None
) -> pl.LazyFrame:
    """Add the EVENT_KEYS and SENTIMENT_KEYS columns to clock rows (symbol, ts)."""
    ev = linked_events(events, event_links, social=False)
    tier_weight = (6 - pl.col("source_tier").cast(pl.Float64).clip(1, 5)) / 5
    items = ev.select(
        "symbol",
        "time",
        pl.lit(1, pl.Int32).alias("_n"),
        (pl.col("confidence_score") * tier_weight).alias("_tierconf"),
        # decay already applied from publication to the item's clock row; the rest is applied below
        (
            pl.col("confidence_score")
            * (-_LN2_PER_S * seconds(pl.col("time") - pl.col("available_at"))).exp()
        ).alias("_decay"),
        "source",
        "event_type",
    )
    p = pl.col("time").max()
    aggs = [
        pl.col("_n").sum().alias("_count"),
        pl.col("_n").filter(pl.col("time") > p - EVENT_VELOCITY_WINDOW).sum().alias("_count_1h"),
        pl.col("_tierconf").sum().alias("_tierconf_sum"),
        (pl.col("_decay") * (-_LN2_PER_S * seconds(p - pl.col("time"))).exp()).sum().alias("_decay_p"),
        pl.col("source").drop_nulls().n_unique().alias("source_diversity"),
        *((pl.col("event_type") == t).sum().alias(f"event_count_{t}") for t in NEWS_EVENT_TYPES),
    ]
    changes = change_point_aggregates(items, EVENT_WINDOW, aggs, extra_offsets=(EVENT_VELOCITY_WINDOW,))
    joined = onto_clock(clock, changes)
    count = pl.col("_count").fill_null(0).cast(pl.Float64)
    joined = joined.with_columns(
        count.alias("event_count_24h"),
        (pl.col("_decay_p") * (-_LN2_PER_S * seconds(pl.col("ts") - pl.col("_p"))).exp())
        .fill_null(0.0)
        .alias("event_decay"),
        (pl.col("_count_1h").fill_null(0) - count * (EVENT_VELOCITY_WINDOW / EVENT_WINDOW)).alias(
            "event_velocity"
        ),
        pl.when(count > 0).then(pl.col("_tierconf_sum") / count).otherwise(0.0).alias("source_confidence"),
        pl.col("source_diversity").fill_null(0).cast(pl.Float64),
        *(pl.col(f"event_count_{t}").fill_null(0).cast(pl.Float64) for t in NEWS_EVENT_TYPES),
    ).drop("_p", "_count", "_count_1h", "_tierconf_sum", "_decay_p")
    news = ev.select(
        "symbol",
        "time",
        (
            text_sentiment() * pl.col("confidence_score") * tier_weight * pl.col("relevance").fill_null(1.0)
        ).alias("_v"),
    )
    social = linked_events(events, event_links, social=True).select(
        "symbol",
        "time",
        (
            text_sentiment() * pl.col("payload").struct.field("engagement").fill_null(0.0).clip(0.0).log1p()
        ).alias("_v"),
    )
    for name, items in (("event_sentiment", news), ("social_sentiment", social)):
        joined = recency_sums(joined, items, RECENCY_HORIZONS[name], RECENCY_LONG_WINDOW, recency_keys(name))
    return joined
