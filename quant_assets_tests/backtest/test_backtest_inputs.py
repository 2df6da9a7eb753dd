"""Backtest input checks and the shared cost model."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.costs import DEFAULT_COSTS, CostModel
from quant_assets.backtest.engine import run_backtest
from quant_assets.schemas import TS

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def frame(n=6, symbol="A", **over):
    cols = {
        "ts": pl.Series([T0 + dt.timedelta(minutes=5 * i) for i in range(n)], dtype=TS),
        "symbol": [symbol] * n,
        "close": np.linspace(100, 105, n),
        "score": np.tile([1.0, -1.0], n // 2 + 1)[:n],
    }
    cols.update(over)
    return pl.DataFrame(cols)


def test_missing_column_is_named():
    with pytest.raises(ValueError, match=r"missing columns \['score'\]"):
        run_backtest(frame().drop("score"))


def test_non_positive_close_names_symbol_and_time():
    close = np.linspace(100, 105, 6)
    close[3] = 0.0
    with pytest.raises(ValueError, match="symbol 'A' ts 2024-01-01 00:15:00"):
        run_backtest(frame(close=close))


def test_null_close_names_the_row():
    with pytest.raises(ValueError, match="null 'close' values, first at row 2"):
        run_backtest(frame(close=[1.0, 2.0, None, 4.0, 5.0, 6.0]))


def test_duplicate_bar_is_rejected():
    df = pl.concat([frame(), frame().slice(2, 1)])
    with pytest.raises(ValueError, match="duplicate bar for symbol 'A'"):
        run_backtest(df)


def test_naive_timestamps_are_rejected():
    with pytest.raises(ValueError, match="ts must be a UTC Datetime"):
        run_backtest(frame().with_columns(pl.col("ts").dt.replace_time_zone(None)))


def test_row_order_does_not_change_the_result():
    df = pl.concat([frame(symbol="B"), frame(symbol="A", close=np.linspace(50, 40, 6))])
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=3)
    a = run_backtest(df, BacktestConfig(holding_bars=2))
    b = run_backtest(shuffled.lazy(), BacktestConfig(holding_bars=2))
    assert a.metrics == b.metrics
    assert a.trades.equals(b.trades)
    assert a.trades["symbol"].to_list()[0] == "A"


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="holding_bars"):
        BacktestConfig(holding_bars=0)
    with pytest.raises(KeyError, match="unknown horizon"):
        BacktestConfig.for_horizon("2h")


def test_funding_is_paid_by_longs_on_positive_rates_and_received_by_shorts():
    assert CostModel.funding_payment(1000.0, 0.0001) == pytest.approx(-0.1)
    assert CostModel.funding_payment(-1000.0, 0.0001) == pytest.approx(0.1)
    assert CostModel.funding_payment(-1000.0, -0.0003) == pytest.approx(-0.3)


def test_trade_cost_is_notional_times_one_way_cost_on_either_side():
    c = CostModel(taker_fee=0.0004, slippage=0.0002, impact_coef=0.001)
    assert c.trade_cost(-10_000.0, 1e6) == pytest.approx(10_000 * 0.0007)
    assert c.trade_cost(10_000.0, 0.0) == pytest.approx(
        10_000 * (0.0006 + 0.001 * 0.1)
    )  # no book: fallback 1e6


def test_labels_est_cost_and_backtest_share_one_cost_definition():
    depth = np.array([2e5, 1e6, np.nan])
    expr = pl.DataFrame({"d": depth}).select(DEFAULT_COSTS.est_cost_expr(pl.col("d"))).to_series().to_numpy()
    direct = DEFAULT_COSTS.one_way_cost(DEFAULT_COSTS.trade_notional, depth)
    assert expr == pytest.approx(direct)
