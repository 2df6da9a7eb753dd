"""Event, social and market-latent features on tiny hand-made inputs, checked value by value."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from sklearn.feature_extraction.text import HashingVectorizer

from quant_assets.features.events import EVENT_DECAY_HALF_LIFE, event_features
from quant_assets.features.keys import (
    LIQUID_FEATURE_KEYS,
    LIQUID_FULL_FEATURE_KEYS,
    MARKET_LATENT_KEYS,
    TEXT_FEATURE_PREFIXES,
)
from quant_assets.features.market_latent import dct_basis, market_latent
from quant_assets.features.matrix import SOCIAL_AGG_BLEND_ALPHA, feature_matrix, social_window_features
from quant_assets.features.snapshots import feature_snapshots
from quant_assets.features.social import sentiment_expr, social_text_latent
from quant_assets.schemas import RAW_TABLES

T0 = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
M = dt.timedelta(minutes=1)


def clock(n: int = 400, symbol: str = "BTCUSDT") -> pl.LazyFrame:
    ts = pl.datetime_range(T0, T0 + (n - 1) * 5 * M, "5m", eager=True, time_zone="UTC").cast(
        pl.Datetime("ms", "UTC")
    )
    return pl.DataFrame({"symbol": symbol, "ts": ts}).lazy()


def events_frame(rows: list[dict]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    ev = pl.DataFrame([
        {"date": r["at"].date(), "event_id": r["id"], "ts": r.get("ts", r["at"]), "available_at": r["at"],
         "source": r.get("source", "reuters"), "source_tier": r.get("tier", 1), "event_type": r.get("type", "market"),
         "confidence_score": r.get("conf", 1.0), "sentiment_score": r.get("score"),
         "payload": {"text": r.get("text", ""), "engagement": r.get("eng", 0.0), "author": r.get("author"),
                     "platform": "x", "url": None}}
        for r in rows
    ])  # fmt: skip
    links = pl.DataFrame([{"date": r["at"].date(), "event_id": r["id"], "entity_id": "c", "symbol": r.get("symbol", "BTCUSDT"),
                           "relevance": r.get("relevance", 1.0)} for r in rows])  # fmt: skip
    return RAW_TABLES["events"].conform(ev).lazy(), RAW_TABLES["event_links"].conform(links).lazy()


def at(df: pl.DataFrame, ts: dt.datetime) -> dict:
    return df.filter(pl.col("ts") == ts).row(0, named=True)


def test_event_features_match_hand_computation():
    a1, a2, a3 = T0 + 62 * M, T0 + 300 * M, T0 + 302 * M
    ev, links = events_frame([
        {"id": "1", "at": a1, "conf": 0.8, "tier": 1, "source": "reuters", "type": "regulatory"},
        {"id": "2", "at": a2, "conf": 0.5, "tier": 5, "source": "twitter", "type": "market"},
        {"id": "3", "at": a3, "conf": 1.0, "tier": 3, "source": "reuters", "type": "market"},
        {"id": "4", "at": a2, "symbol": "ETHUSDT"},  # another coin
        {"id": "5", "at": a2, "type": "social_post"},  # social items are not news events
    ])  # fmt: skip
    out = event_features(clock(), ev, links).collect()
    hl = EVENT_DECAY_HALF_LIFE.total_seconds()

    def decay(t, items):
        return sum(c * 2 ** (-(t - a).total_seconds() / hl) for a, c in items)

    # 10:00 row (T0 + 60m): event 1, published at +62m, is not visible yet; the +65m row sees it
    assert at(out, T0 + 60 * M)["event_count_24h"] == 0
    r = at(out, T0 + 65 * M)
    assert r["event_count_24h"] == 1 and r["event_count_regulatory"] == 1
    assert r["event_decay"] == pytest.approx(decay(T0 + 65 * M, [(a1, 0.8)]), rel=1e-12)
    assert r["source_confidence"] == pytest.approx(0.8 * 1.0)
    assert r["event_velocity"] == pytest.approx(1 - 1 / 24)
    t = T0 + 305 * M
    r = at(out, t)
    assert r["event_count_24h"] == 3 and r["event_count_market"] == 2 and r["source_diversity"] == 2
    assert r["event_decay"] == pytest.approx(decay(t, [(a1, 0.8), (a2, 0.5), (a3, 1.0)]), rel=1e-12)
    assert r["source_confidence"] == pytest.approx((0.8 * 1.0 + 0.5 * 0.2 + 1.0 * 0.6) / 3)
    assert r["event_velocity"] == pytest.approx(2 - 3 / 24)  # events 2 and 3 in the last hour
    # an hour after event 3 only the day-rate term is left
    assert at(out, T0 + 365 * M)["event_velocity"] == pytest.approx(0 - 3 / 24)


def test_event_leaves_the_window_after_24_hours():
    a = T0 + 5 * M
    ev, links = events_frame([{"id": "1", "at": a}])
    out = event_features(clock(300), ev, links).collect()
    assert at(out, a + dt.timedelta(hours=24) - 5 * M)["event_count_24h"] == 1
    assert at(out, a + dt.timedelta(hours=24))["event_count_24h"] == 0
    assert at(out, a + dt.timedelta(hours=24))["event_decay"] == 0


def test_social_buckets_hold_only_items_visible_at_their_row():
    ev, links = events_frame([
        {"id": "p1", "at": T0 + 2 * M, "type": "social_post", "text": "BTC moon rally", "eng": 10.0, "author": "a"},
        {"id": "c1", "at": T0 + 5 * M, "type": "social_comment", "text": "dump incoming", "eng": 0.0, "author": "b"},
        {"id": "c2", "at": T0 + 6 * M, "type": "social_comment", "text": "hack fud", "eng": 3.0, "author": "a"},
        {"id": "n1", "at": T0 + 6 * M, "type": "market", "text": "ignored"},
    ])  # fmt: skip
    s = social_text_latent(ev, links, n_features=32).collect()
    assert s["ts"].to_list() == [T0 + 5 * M, T0 + 10 * M]  # 10:02 and 10:05 -> 10:05; 10:06 -> 10:10
    b = s.row(0, named=True)
    assert (b["social_post_count"], b["social_comment_count"], b["social_unique_authors"]) == (1, 1, 2)
    assert b["sentiment_mean"] == pytest.approx((1.0 + -1.0) / 2)
    w = np.array([1 + math.log1p(10.0), 1.0])
    x = HashingVectorizer(n_features=32, alternate_sign=False, norm="l2").transform(
        ["BTC moon rally", "dump incoming"]
    )
    expected = (w[:, None] * x.toarray()).sum(axis=0) / w.sum()
    got = np.array([b[f"social_emb_{i}"] for i in range(32)])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert b["social_weight"] == pytest.approx(w.sum())


def test_social_six_hour_summary_pools_exactly_and_expires():
    ev, links = events_frame([
        {"id": "p1", "at": T0 + 5 * M, "type": "social_post", "text": "moon", "eng": 1.0, "author": "a"},
        {"id": "p2", "at": T0 + 60 * M, "type": "social_post", "text": "crash", "eng": 5.0, "author": "b"},
    ])  # fmt: skip
    s = social_text_latent(ev, links)
    out = social_window_features(clock(), s).collect()
    r = at(out, T0 + 60 * M)
    assert r["social_post_count_6h"] == 2 and r["sentiment_mean_6h"] == 0.0
    w1, w2 = 1 + math.log1p(1.0), 1 + math.log1p(5.0)
    x = (
        HashingVectorizer(n_features=32, alternate_sign=False, norm="l2")
        .transform(["moon", "crash"])
        .toarray()
    )
    expected = (w1 * x[0] + w2 * x[1]) / (w1 + w2)
    np.testing.assert_allclose([r[f"social_emb_{i}_6h"] for i in range(32)], expected, rtol=1e-12)
    r = at(out, T0 + 5 * M + dt.timedelta(hours=6))  # p1 has left the window
    assert r["social_post_count_6h"] == 1 and r["sentiment_mean_6h"] == -1.0
    assert at(out, T0)["social_post_count_6h"] == 0


def test_sentiment_lexicon_scores():
    df = pl.DataFrame(
        {"t": ["Moon! pump", "crash and dump, hack", "nothing here", None, "bullish but bearish"]}
    )
    assert df.select(sentiment_expr(pl.col("t")))["t"].to_list() == [1.0, -1.0, 0.0, 0.0, 0.0]


def test_market_latent_is_a_fixed_dct_projection_of_the_last_48_bars():
    n = 500
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    vol = np.exp(rng.normal(3, 0.5, n))
    ts = pl.datetime_range(T0, T0 + (n - 1) * 5 * M, "5m", eager=True, time_zone="UTC").cast(
        pl.Datetime("ms", "UTC")
    )
    bars = pl.DataFrame({"symbol": "BTCUSDT", "market": "spot", "timeframe": "5m", "ts": ts, "close": close,
                         "volume": vol, "quote_volume": vol * close}).lazy()  # fmt: skip
    lat = market_latent(bars).collect()
    snap = feature_snapshots(bars).collect()
    i = 450
    lr = np.log(snap["close"].to_numpy()[1:] / snap["close"].to_numpy()[:-1])
    zr = np.clip(lr[i - 48 : i] / snap["vol_288"].to_numpy()[i - 47 : i + 1], -10, 10)
    zv = np.clip(snap["vol_z"].to_numpy()[i - 47 : i + 1], -10, 10)
    basis = dct_basis(48, 4)
    np.testing.assert_allclose(basis @ basis.T, np.eye(4), atol=1e-12)
    expected = np.concatenate([basis @ zr, basis @ zv])
    np.testing.assert_allclose([lat[k][i] for k in MARKET_LATENT_KEYS], expected, rtol=1e-9)
    assert lat["mkt_latent_0"][: 288 + 10].null_count() > 0  # vol_288 needs history first


def test_feature_keys_are_the_matrix_columns_and_text_is_recognisable_by_prefix():
    assert len(set(LIQUID_FULL_FEATURE_KEYS)) == len(LIQUID_FULL_FEATURE_KEYS)
    text = [k for k in LIQUID_FULL_FEATURE_KEYS if k.startswith(TEXT_FEATURE_PREFIXES)]
    assert set(text) == set(LIQUID_FULL_FEATURE_KEYS) - set(LIQUID_FEATURE_KEYS)
    assert not [k for k in LIQUID_FEATURE_KEYS if k.startswith(TEXT_FEATURE_PREFIXES)]
    m = feature_matrix(feature_snapshots(clock(20).with_columns(
        market=pl.lit("spot"), timeframe=pl.lit("5m"), close=pl.lit(1.0), volume=pl.lit(1.0),
        quote_volume=pl.lit(1.0)))).collect()  # fmt: skip
    assert m.columns[3 : 3 + len(LIQUID_FULL_FEATURE_KEYS)] == list(LIQUID_FULL_FEATURE_KEYS)
    assert m["social_event_blend"][0] == SOCIAL_AGG_BLEND_ALPHA * 0.0


def test_bad_input_names_the_table_and_column():
    with pytest.raises(ValueError, match=r"market_bars: missing columns \['quote_volume'\]"):
        feature_snapshots(clock(5).with_columns(market=pl.lit("spot"), timeframe=pl.lit("5m"), close=pl.lit(1.0),
                                                volume=pl.lit(1.0))).collect()  # fmt: skip
