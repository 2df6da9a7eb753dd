"""Social text features: 5-minute buckets of posts and comments per coin, and their 6-hour summary.

Time rule: an item belongs to the bucket of the first clock row that may see it, `ceil(available_at,
5m)`: the bucket keyed t holds items with available_at in (t - 5m, t], so every item in it was
visible by t. The 6h summary on row t reads buckets in (t - 6h, t].

Text vectors: scikit-learn's HashingVectorizer (stateless, so nothing is fitted, on future data or
otherwise) with `n_features` columns, word unigrams, lowercase, `alternate_sign=False` (pooled
vectors are non-negative term mass; a signed hash would let colliding words cancel inside a bucket)
and l2 row norm. Pooling is engagement-weighted: weight = 1 + log1p(engagement), so a silent post
still counts and a viral one counts more without drowning the bucket.
Sentiment: per item the events table's sentiment_score, or where the feed leaves it null the lexicon
score (pos - neg) / (pos + neg) of the text over `events.POSITIVE_WORDS` / `NEGATIVE_WORDS`.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

# the lexicon lives with the event features (news and social share it); re-exported here
from quant_assets.features.events import (
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    linked_events,
    sentiment_expr,
    text_sentiment,
)
from quant_assets.features.keys import SOCIAL_N_FEATURES

__all__ = ["NEGATIVE_WORDS", "POSITIVE_WORDS", "emb_columns", "sentiment_expr", "social_text_latent"]

BUCKET_AGG_COLUMNS = (
    "social_post_count",
    "social_comment_count",
    "social_unique_authors",
    "social_engagement",
    "social_items",
    "social_weight",
    "sentiment_sum",
    "sentiment_mean",
)


def emb_columns(n_features: int) -> list[str]:
    return [f"social_emb_{i}" for i in range(n_features)]


def _empty(n_features: int) -> pl.DataFrame:
    schema = {"symbol": pl.String, "ts": pl.Datetime("ms", "UTC"), "date": pl.Date}
    schema |= {c: pl.Float64 for c in BUCKET_AGG_COLUMNS}
    schema |= {c: pl.Float64 for c in emb_columns(n_features)}
    return pl.DataFrame(schema=schema)


def social_text_latent(
    events: pl.LazyFrame | None, event_links: pl.LazyFrame | None, n_features: int = SOCIAL_N_FEATURES
) -> pl.LazyFrame:
    """One row per (symbol, 5m bucket) holding at least one social item linked to the coin.

    Columns: symbol, ts (the bucket's clock row), date, social_post_count, social_comment_count,
    social_unique_authors, social_engagement (sum), social_items, social_weight (sum of pooling
    weights, so buckets can be pooled again exactly), sentiment_sum, sentiment_mean, and
    social_emb_0 .. social_emb_{n_features-1} (engagement-weighted mean of the hashed text vectors).
    """
    items = (
        linked_events(events, event_links, social=True)
        .select(
            "symbol",
            pl.col("time").alias("ts"),
            "event_id",
            "event_type",
            pl.col("payload").struct.field("text").fill_null("").alias("text"),
            pl.col("payload").struct.field("author").alias("author"),
            pl.col("payload").struct.field("engagement").fill_null(0.0).clip(0.0).alias("engagement"),
            text_sentiment().alias("_sent"),
        )
        .with_columns((1.0 + pl.col("engagement").log1p()).alias("_w"))
        .sort("symbol", "ts", "event_id")
        .collect()
    )
    if items.height == 0:
        return _empty(n_features).lazy()
    items = items.with_columns(
        ((pl.col("symbol") != pl.col("symbol").shift(1)) | (pl.col("ts") != pl.col("ts").shift(1)))
        .fill_null(True)
        .cum_sum()
        .sub(1)
        .alias("_g")
    )
    aggs = items.group_by("_g", maintain_order=True).agg(
        pl.col("symbol").first(),
        pl.col("ts").first(),
        (pl.col("event_type") == "social_post").sum().cast(pl.Float64).alias("social_post_count"),
        (pl.col("event_type") == "social_comment").sum().cast(pl.Float64).alias("social_comment_count"),
        pl.col("author").drop_nulls().n_unique().cast(pl.Float64).alias("social_unique_authors"),
        pl.col("engagement").sum().alias("social_engagement"),
        pl.len().cast(pl.Float64).alias("social_items"),
        pl.col("_w").sum().alias("social_weight"),
        pl.col("_sent").sum().alias("sentiment_sum"),
        pl.col("_sent").mean().alias("sentiment_mean"),
    )
    vectorizer = HashingVectorizer(
        n_features=n_features, alternate_sign=False, norm="l2", lowercase=True, ngram_range=(1, 1)
    )
    x = vectorizer.transform(items["text"].to_list())
    w = items["_w"].to_numpy()
    g = items["_g"].to_numpy()
    pool = sp.csr_matrix((w, (g, np.arange(items.height))), shape=(aggs.height, items.height))
    pooled = np.asarray((pool @ x).todense()) / aggs["social_weight"].to_numpy()[:, None]
    emb = pl.DataFrame(pooled, schema=emb_columns(n_features), orient="row")
    out = pl.concat([aggs.drop("_g"), emb], how="horizontal").with_columns(
        pl.col("ts").dt.date().alias("date")
    )
    return out.select(_empty(n_features).columns).lazy()
