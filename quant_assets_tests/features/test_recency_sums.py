"""Recency sums (keys.RECENCY_HORIZONS): hand-computed values, the time rule, and history independence."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from test_text_and_events import T0, M, at, clock, events_frame

from quant_assets.features.events import event_features
from quant_assets.features.exogenous import funding_features, onchain_features, orderbook_features
from quant_assets.features.keys import FUNDING_BASE_RATE, recency_keys
from quant_assets.features.windows import recency_sums
from quant_assets.schemas import DEPTH_BANDS, RAW_TABLES

H = dt.timedelta(hours=1)
NEWS = recency_keys("event_sentiment")  # 4h flat, 4h decayed, 24h
SOCIAL = recency_keys("social_sentiment")  # 1h flat, 1h decayed, 24h


def test_news_and_social_sentiment_sums_match_hand_computation():
    a1, a2, a3 = T0 + 62 * M, T0 + 120 * M, T0 + 121 * M
    ev, links = events_frame([
        # scored news: score * confidence * tier weight (6 - tier) / 5 * relevance
        {"id": "n1", "at": a1, "score": 0.6, "conf": 0.8, "tier": 2, "relevance": 0.9, "type": "regulatory"},
        # unscored news: the lexicon reads "plunge ... hack" as -1
        {"id": "n2", "at": a2, "conf": 0.5, "tier": 1, "text": "BTC plunge after hack", "type": "market"},
        {"id": "s1", "at": a3, "score": -0.4, "eng": 20.0, "type": "social_post"},
        {"id": "x1", "at": a2, "score": 1.0, "symbol": "ETHUSDT"},  # another coin
    ])  # fmt: skip
    out = event_features(clock(), ev, links).collect()
    v1, v2, v3 = 0.6 * 0.8 * 0.8 * 0.9, -1.0 * 0.5 * 1.0 * 1.0, -0.4 * math.log1p(20.0)
    assert at(out, T0 + 60 * M)[NEWS[0]] == 0.0  # published at +62m: first seen on the +65m row
    r = at(out, T0 + 65 * M)
    assert (r[NEWS[0]], r[NEWS[1]], r[NEWS[2]]) == pytest.approx((v1, v1, v1), rel=1e-12)
    t = T0 + 125 * M  # n1 is 60 minutes old, n2 5 minutes, s1 (first row +125m) 0 minutes
    r = at(out, t)
    assert r[NEWS[0]] == pytest.approx(v1 + v2, rel=1e-12)
    assert r[NEWS[1]] == pytest.approx(v1 * (1 - 60 / 240) + v2 * (1 - 5 / 240), rel=1e-12)
    assert (r[SOCIAL[0]], r[SOCIAL[1]], r[SOCIAL[2]]) == pytest.approx((v3, v3, v3), rel=1e-12)
    r = at(out, t + 30 * M)  # social decays linearly over its 1h horizon
    assert r[SOCIAL[1]] == pytest.approx(v3 * 0.5, rel=1e-12) and r[SOCIAL[0]] == pytest.approx(v3)
    r = at(out, T0 + 185 * M)  # s1 left the 1h window, stays in the day's sum
    assert (r[SOCIAL[0]], r[SOCIAL[1]], r[SOCIAL[2]]) == pytest.approx((0.0, 0.0, v3), abs=1e-15)
    r = at(out, T0 + 65 * M + 4 * H)  # n1 left the 4h window
    assert r[NEWS[0]] == pytest.approx(v2) and r[NEWS[2]] == pytest.approx(v1 + v2)


def test_an_event_linked_twice_to_a_coin_counts_once_at_its_highest_relevance():
    ev, links = events_frame([{"id": "n1", "at": T0 + 5 * M, "score": 1.0, "conf": 1.0, "relevance": 0.5}])
    again = links.collect().with_columns(entity_id=pl.lit("other"), relevance=pl.lit(0.8))
    out = event_features(clock(10), ev, pl.concat([links.collect(), again]).lazy()).collect()
    assert at(out, T0 + 5 * M)[NEWS[0]] == pytest.approx(0.8)


def book(rows: list[tuple[dt.datetime, float, float]]) -> pl.LazyFrame:
    """Order-book snapshots (ts, bid notional, ask notional) within 1%; other bands alike."""
    df = pl.DataFrame({"ts": [r[0] for r in rows], "symbol": "BTCUSDT", "best_bid": 99.0, "best_ask": 101.0})
    for b in DEPTH_BANDS:
        df = df.with_columns(
            pl.Series(f"bid_notional_{b}pct", [r[1] * b for r in rows]),
            pl.Series(f"ask_notional_{b}pct", [r[2] * b for r in rows]),
            pl.lit(1.0).alias(f"bid_depth_{b}pct"),
            pl.lit(1.0).alias(f"ask_depth_{b}pct"),
        )
    return RAW_TABLES["orderbook_l2"].conform(df.with_columns(date=pl.col("ts").dt.date())).lazy()


def test_exogenous_recency_sums_match_hand_computation():
    keys = recency_keys("orderbook_imbalance")
    snaps = [(T0 + 5 * M * k, 100.0 + 10 * k, 100.0) for k in range(30)]  # imbalance 10k / (200 + 10k)
    out = orderbook_features(clock(40), book(snaps)).collect()
    imb = [10 * k / (200 + 10 * k) for k in range(30)]
    r = at(out, T0 + 5 * M * 20)
    assert r[keys[0]] == pytest.approx(sum(imb[9:21]), rel=1e-12)  # 12 snapshots in (t - 1h, t]
    assert r[keys[1]] == pytest.approx(sum(imb[20 - j] * (1 - j / 12) for j in range(12)), rel=1e-12)
    assert r[keys[2]] == pytest.approx(sum(imb[:21]), rel=1e-12)

    keys = recency_keys("funding_premium")
    rate, settled = 3e-4, T0 + 8 * H
    funding = RAW_TABLES["funding_rates"].conform(
        pl.DataFrame(
            {
                "date": [settled.date()],
                "ts": [settled],
                "symbol": "BTCUSDT",
                "funding_rate": [rate],
                "mark_price": [1.0],
                "available_at": [settled + 2 * M],
            }
        )  # fmt: skip
    )
    out = funding_features(clock(200), funding.lazy()).collect()
    assert at(out, settled)[keys[0]] == 0.0  # published 2 minutes after its ts
    r = at(out, settled + 5 * M + H)
    premium = rate - FUNDING_BASE_RATE
    assert (r[keys[0]], r[keys[1]]) == pytest.approx((premium, premium * (1 - 1 / 4)), rel=1e-12)
    assert at(out, settled + 5 * M + 4 * H)[keys[0]] == 0.0
    assert at(out, settled + 5 * M + 4 * H)[keys[2]] == pytest.approx(premium, rel=1e-12)

    keys = recency_keys("onchain_exchange_z")
    flows = [1e6, -3e6, 2e6]
    hours = [T0 + k * H for k in range(3)]
    onchain = RAW_TABLES["onchain_signals"].conform(
        pl.DataFrame(
            {
                "date": [h.date() for h in hours],
                "ts": hours,
                "symbol": "BTCUSDT",
                "netflow": 0.0,
                "exchange_netflow": flows,
                "net_inflow": 0.0,
                "available_at": [h + 20 * M for h in hours],
            }
        )  # fmt: skip
    )
    out = onchain_features(clock(100), onchain.lazy()).collect()
    # each flow over the RMS of the flows published up to and with it
    z = [f / math.sqrt(np.mean(np.square(flows[: k + 1]))) for k, f in enumerate(flows)]
    r = at(out, T0 + 2 * H + 20 * M)
    assert r[keys[0]] == pytest.approx(z[1] + z[2], rel=1e-12)  # the first left the 2h window
    assert r[keys[1]] == pytest.approx(z[1] * (1 - 60 / 120) + z[2], rel=1e-12)
    assert r[keys[2]] == pytest.approx(sum(z), rel=1e-12)


def test_a_window_is_summed_on_its_own_items_whatever_history_precedes_it():
    rng = np.random.default_rng(3)
    slots = np.sort(rng.choice(4000, 600, replace=False))
    times = [T0 + 5 * M * int(k) for k in slots]
    items = pl.DataFrame({"symbol": "BTCUSDT", "time": times, "_v": rng.normal(0, 1e3, 600)}).with_columns(
        pl.col("time").cast(pl.Datetime("ms", "UTC"))
    )
    rows = clock(4000).filter(pl.col("ts") >= T0 + 3000 * 5 * M)
    names = ("a", "b", "c")
    full = recency_sums(rows, items.lazy(), H, 24 * H, names).collect()
    recent = items.filter(pl.col("time") > T0 + (3000 - 300) * 5 * M)  # only the last day before the rows
    alone = recency_sums(rows, recent.lazy(), H, 24 * H, names).collect()
    assert full.equals(alone)  # bit for bit: no running totals carried from earlier items
    assert full["c"].abs().min() > 0
