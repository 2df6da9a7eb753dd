"""Labels are forward returns on the 5m grid minus the cost model's est_cost, computed here by hand."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from features_rawdata import STEP, build_matrix, make_raw

from quant_assets.backtest.costs import DEFAULT_COSTS, CostModel
from quant_assets.features.keys import LABEL_COST_MULTIPLIER
from quant_assets.features.matrix import feature_matrix
from quant_assets.features.snapshots import feature_snapshots

START = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def test_labels_equal_hand_computed_forward_returns_minus_cost():
    raw = make_raw(11, START, 400, ("BTCUSDT", "ETHUSDT"), gap_fraction=0.05)
    m = build_matrix(raw)
    bars = raw["market_bars"].filter(pl.col("timeframe") == "5m")
    close = {(r["symbol"], r["ts"]): r["close"] for r in bars.iter_rows(named=True)}
    books = {(r["symbol"], r["ts"]): min(r["bid_notional_1pct"], r["ask_notional_1pct"])
             for r in raw["orderbook_l2"].iter_rows(named=True)}  # fmt: skip
    checked = {"1h": 0, "4h": 0}
    for row in m.iter_rows(named=True):
        sym, ts = row["symbol"], row["ts"]
        # the book as of ts: latest snapshot within 15 minutes
        depth = next(
            (books[(sym, ts - k * STEP)] for k in range(4) if (sym, ts - k * STEP) in books), math.nan
        )
        cost = float(DEFAULT_COSTS.one_way_cost(DEFAULT_COSTS.trade_notional, depth))
        assert row["est_cost"] == approx(cost)
        for h, n in (("1h", 12), ("4h", 48)):
            now, later = close.get((sym, ts)), close.get((sym, ts + n * STEP))
            if now is None or later is None:
                assert row[f"fwd_ret_{h}"] is None and row[f"label_{h}"] is None, (sym, ts, h)
                continue
            fwd = later / now - 1
            assert row[f"fwd_ret_{h}"] == approx(fwd)
            assert row[f"label_{h}"] == approx(fwd - LABEL_COST_MULTIPLIER[h] * cost)
            checked[h] += 1
    assert checked["1h"] > 400 and checked["4h"] > 300


def test_label_4h_pays_twice_the_one_way_cost_of_label_1h():
    raw = make_raw(3, START, 200)
    m = build_matrix(raw).drop_nulls(["label_1h", "label_4h"])
    assert m.height > 100
    cost_1h = (m["fwd_ret_1h"] - m["label_1h"]).to_numpy()
    cost_4h = (m["fwd_ret_4h"] - m["label_4h"]).to_numpy()
    np.testing.assert_allclose(cost_1h, m["est_cost"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(cost_4h, 2 * m["est_cost"].to_numpy(), rtol=1e-12)


def test_est_cost_follows_the_cost_model_passed_in():
    raw = make_raw(5, START, 100)
    snaps = feature_snapshots(raw["market_bars"].lazy(), raw["prices"].lazy())
    cheap = feature_matrix(
        snaps, orderbook=raw["orderbook_l2"].lazy(), costs=CostModel(taker_fee=0.0)
    ).collect()
    dear = feature_matrix(
        snaps, orderbook=raw["orderbook_l2"].lazy(), costs=CostModel(taker_fee=0.001)
    ).collect()
    np.testing.assert_allclose((dear["est_cost"] - cheap["est_cost"]).to_numpy(), 0.001, rtol=1e-9)


def test_missing_book_uses_the_cost_models_fallback_depth():
    raw = make_raw(5, START, 100)
    m = feature_matrix(feature_snapshots(raw["market_bars"].lazy())).collect()  # no order book at all
    expected = DEFAULT_COSTS.one_way_cost(DEFAULT_COSTS.trade_notional, math.nan)
    assert m["orderbook_missing_flag"].to_list() == [1] * m.height
    np.testing.assert_allclose(m["est_cost"].to_numpy(), expected, rtol=1e-12)


def test_fallback_price_never_makes_a_label():
    raw = make_raw(8, START, 120, ("BTCUSDT",), gap_fraction=0.0)
    hole = START + 60 * STEP
    bars = raw["market_bars"].filter(~((pl.col("timeframe") == "5m") & (pl.col("ts") == hole)))
    prices = (
        raw["prices"]
        .filter(pl.col("ts") != hole)
        .vstack(raw["prices"].head(1).with_columns(ts=pl.lit(hole).cast(pl.Datetime("ms", "UTC"))))
    )
    m = feature_matrix(feature_snapshots(bars.lazy(), prices.lazy())).collect()
    at = m.filter(pl.col("ts") == hole)
    assert at["close"][0] is not None  # the fallback filled the close ...
    assert at["fwd_ret_1h"][0] is None  # ... but a label needs real bars at both ends
    assert m.filter(pl.col("ts") == hole - 12 * STEP)["fwd_ret_1h"][0] is None
