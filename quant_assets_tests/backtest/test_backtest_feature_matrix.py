"""The feature matrix -> backtest path on real Delta tables: funding at settlements only, impact on each row's depth."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from quant_assets import lake
from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.engine import run_backtest
from quant_assets.backtest.inputs import backtest_inputs, backtest_inputs_from_lake
from quant_assets_tests.features.features_rawdata import build_matrix, make_raw

START = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
BAR = dt.timedelta(minutes=5)


@pytest.fixture(scope="module")
def raw_and_matrix():
    # two days and five hours of 5m rows; ETHUSDT lists a few hours in (its first settlement is 08:00)
    raw = make_raw(7, START, 2 * 288 + 60, ("BTCUSDT", "ETHUSDT"))
    return raw, build_matrix(raw)


@pytest.fixture
def lake_tables(raw_and_matrix):
    raw, matrix = raw_and_matrix
    lake.write_window("feature_matrix_main", matrix, "2024-05-01", "2024-05-04")
    lake.write_window("funding_rates", raw["funding_rates"], "2024-05-01", "2024-05-04")
    return raw, matrix


def test_a_long_on_the_lakes_feature_matrix_pays_funding_at_each_settlement_only(lake_tables):
    raw, _ = lake_tables
    inputs = backtest_inputs_from_lake("2024-05-01", "2024-05-03", columns=["ret_12", "funding_rate"])
    frame = inputs.frame
    assert frame.columns == ["ts", "symbol", "close", "cost_depth_notional", "ret_12", "funding_rate"]
    assert frame["ts"].min() == START and frame["ts"].max() == START + 2 * dt.timedelta(days=1) - BAR
    assert (
        frame["funding_rate"].null_count() < frame.height
    )  # the feature is there, on every bar after a settlement
    settled = raw["funding_rates"].filter(pl.col("ts") < START + dt.timedelta(days=2))
    assert (
        inputs.funding.height == settled.height == 11
    )  # 00/08/16 UTC: 6 for BTC, 5 for ETH (listed at 03:00)

    assert 0 < inputs.dropped_no_price < 30  # rows with neither a bar nor a fallback price
    assert frame["close"].null_count() == 0

    # always long from each coin's first close: units fixed there, held to the end
    cfg = BacktestConfig(holding_bars=None, capital=10_000.0)
    r = run_backtest(frame.with_columns(score=pl.lit(1.0)), cfg, funding=inputs.funding)
    # by hand: the position held at settlement s is the one decided at the last close at or before s
    # (the row with ts <= s - 5m), valued at that close; none before a coin's first close or after its last
    rows = frame.select("symbol", "ts", "close").with_columns(
        units=10_000 / pl.col("close").first().over("symbol"),
        last=pl.col("ts") == pl.col("ts").max().over("symbol"),
        bar_ts=pl.col("ts"),
    )
    held = (
        settled.select("symbol", "ts", "funding_rate")
        .with_columns(decided_by=pl.col("ts") - BAR)
        .sort("decided_by")
        .join_asof(
            rows.sort("ts"),
            left_on="decided_by",
            right_on="ts",
            by="symbol",
            strategy="backward",
            check_sortedness=False,
        )
        .filter(pl.col("bar_ts").is_not_null() & ~pl.col("last"))
    )
    expected = (-held["units"] * held["close"] * held["funding_rate"]).to_list()
    assert len(expected) == 10  # BTC's settlement at 00:00 on May 1 comes before any close: nothing held
    assert r.metrics["n_settlements"] == r.metrics["n_funding_payments"] == 10
    assert r.metrics["funding"] == pytest.approx(sum(expected), rel=1e-12)
    assert r.per_symbol["funding"].sum() == pytest.approx(sum(expected), rel=1e-12)
    # whatever the feature column holds, the charge is the same
    scrambled = frame.with_columns(score=pl.lit(1.0), funding_rate=pl.lit(0.5))
    assert run_backtest(scrambled, cfg, funding=inputs.funding).pnl.tolist() == r.pnl.tolist()
    assert not [a for a in r.assumptions if a.startswith("funding")]


def test_each_trade_on_the_feature_matrix_pays_impact_on_its_own_rows_depth(raw_and_matrix):
    raw, matrix = raw_and_matrix
    inputs = backtest_inputs(matrix.lazy(), raw["funding_rates"], columns=["ret_12"])
    cfg = BacktestConfig.for_horizon("1h", threshold=0.002)
    r = run_backtest(inputs.frame.with_columns(score=-pl.col("ret_12")), cfg, funding=inputs.funding)
    trades = r.trades.join(inputs.frame.select("symbol", "ts", "cost_depth_notional"), on=["symbol", "ts"])
    assert trades.height == r.metrics["n_trades"] > 50
    book = trades["cost_depth_notional"].to_numpy()
    has_book = np.isfinite(book) & (book > 0)
    costs = cfg.costs
    assert np.array_equal(trades["depth"].to_numpy()[has_book], book[has_book])
    assert (trades["depth"].to_numpy()[~has_book] == costs.fallback_depth_notional).all()
    notional = np.abs(trades["notional"].to_numpy())
    formula = notional * (
        costs.taker_fee + costs.slippage + costs.impact_coef * np.sqrt(notional / trades["depth"])
    )
    np.testing.assert_allclose(trades["cost"].to_numpy(), formula, rtol=1e-12)
    assert r.metrics["n_trades_fallback_depth"] == int((~has_book).sum())
    # against one fixed default depth the costs would differ: the row's own book is what is charged
    flat = run_backtest(
        inputs.frame.with_columns(score=-pl.col("ret_12")),
        cfg.with_(depth_column=None),
        funding=inputs.funding,
    )
    assert flat.metrics["cost"] != pytest.approx(r.metrics["cost"], rel=1e-3)


def test_inputs_read_the_pinned_versions_and_require_the_funding_table(lake_tables):
    raw, _ = lake_tables
    v0 = lake.version("funding_rates")
    doubled = raw["funding_rates"].with_columns(pl.col("funding_rate") * 2)
    lake.write_window("funding_rates", doubled, "2024-05-01", "2024-05-04")
    pinned = backtest_inputs_from_lake("2024-05-01", "2024-05-02", versions={"funding_rates": v0}).funding
    latest = backtest_inputs_from_lake("2024-05-01", "2024-05-02").funding
    assert latest["funding_rate"].to_list() == pytest.approx(
        [2 * x for x in pinned["funding_rate"].to_list()]
    )
    assert pinned.height == 5


def test_inputs_without_a_funding_table_name_it(raw_and_matrix):
    _, matrix = raw_and_matrix
    lake.write_window("feature_matrix_main", matrix, "2024-05-01", "2024-05-04")
    with pytest.raises(ValueError, match="the lake has no 'funding_rates' table"):
        backtest_inputs_from_lake("2024-05-01", "2024-05-02")
    with pytest.raises(ValueError, match=r"the feature matrix has no columns \['score_1h'\]"):
        backtest_inputs(matrix, matrix.head(0).select("symbol", "ts", "funding_rate"), columns=["score_1h"])
