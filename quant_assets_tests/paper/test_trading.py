"""Paper trading of one book: hand-worked orders, fills and PnL; two days carried == one backtest."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.costs import CostModel
from quant_assets.backtest.engine import run_backtest
from quant_assets.paper.trading import FLAT, BookState, stop_signals, trade_book_day

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
FEE_ONLY = CostModel(taker_fee=0.001, slippage=0.0, impact_coef=0.0)
CFG = BacktestConfig(threshold=0.01, holding_bars=2, capital=1000.0, costs=FEE_ONLY, depth_column=None)


def bars(closes, scores, start=T0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [start + dt.timedelta(minutes=5 * i) for i in range(len(closes))],
            "close": [float(c) for c in closes],
            "score": [float(s) for s in scores],
        },
        schema={"ts": pl.Datetime("ms", "UTC"), "close": pl.Float64, "score": pl.Float64},
    )


def test_orders_fills_and_pnl_match_hand_worked_numbers():
    # bar0 +signal: buy 1000/100 = 10 units, fee 1000*0.001 = 1.00      pnl -1
    # bar1 hold (age 1 < 2): 10 * (110-100)                               pnl 100
    # bar2 age 2: exit, sell 10 at 121 (fee 1.21), move 10*(121-110)=110  pnl 108.79
    # bar3 -signal: sell 1000/99 units, fee 1.00                          pnl -1
    day = trade_book_day(bars([100, 110, 121, 99], [0.02, math.nan, 0.005, -0.05]), CFG)
    assert day.marks["pnl"].to_list() == pytest.approx([-1.0, 100.0, 108.79, -1.0])
    assert day.pnl == pytest.approx(206.79) and day.cost == pytest.approx(3.21)
    assert day.gross_pnl == pytest.approx(210.0) and day.funding == 0.0
    assert day.orders["side"].to_list() == ["buy", "sell", "sell"]
    assert day.orders["reason"].to_list() == ["entry", "exit: holding period over", "entry"]
    assert day.fills["qty"].to_list() == pytest.approx([10.0, -10.0, -1000 / 99])
    assert day.fills["price"].to_list() == [100.0, 121.0, 99.0]
    assert day.fills["cost"].to_list() == pytest.approx([1.0, 1.21, 1.0])
    assert day.orders["decided_at"][0] == T0 + dt.timedelta(minutes=5)  # traded at the bar's close
    s = day.state
    assert (s.level, s.age, s.units, s.last_close) == (-1.0, 0, pytest.approx(-1000 / 99), 99.0)
    assert s.cum_pnl == pytest.approx(206.79) and s.entry_score == -0.05


def test_the_next_day_continues_from_the_carried_state():
    day1 = trade_book_day(bars([100, 110, 121, 99], [0.02, math.nan, math.nan, -0.05]), CFG)
    # bar4 holds the short (age 1): -1000/99 * (90 - 99) = +90.909; bar5 age 2: exit at 100,
    # move -1000/99 * 10 = -101.010, fee 1000/99*100*0.001 = 1.0101
    day2 = trade_book_day(
        bars([90, 100], [math.nan, math.nan], T0 + dt.timedelta(minutes=20)), CFG, day1.state
    )
    assert day2.marks["pnl"].to_list() == pytest.approx([9000 / 99, -10000 / 99 - 100 / 99])
    assert day2.orders["reason"].to_list() == ["exit: holding period over"]
    assert day2.state.flat and day2.state.cum_pnl == pytest.approx(day1.pnl + day2.pnl)


def test_a_day_is_not_traded_twice_from_its_own_state():
    day1 = trade_book_day(bars([100, 110], [0.02, math.nan]), CFG)
    with pytest.raises(ValueError, match="is not after the carried state's last bar"):
        trade_book_day(bars([100, 110], [0.02, math.nan]), CFG, day1.state)


def test_funding_is_paid_by_the_position_held_at_the_settlement():
    funding = pl.DataFrame({"ts": [T0 + dt.timedelta(minutes=5)], "funding_rate": [0.0001]},
                           schema={"ts": pl.Datetime("ms", "UTC"), "funding_rate": pl.Float64})  # fmt: skip
    day = trade_book_day(bars([100, 110, 121], [0.02, math.nan, math.nan]), CFG, funding=funding)
    # long 10 units at 100 = 1000 USD held at 00:05: pays 1000 * 0.0001 = 0.1 on bar1
    assert day.marks["funding"].to_list() == pytest.approx([0.0, -0.1, 0.0])
    assert day.funding == pytest.approx(-0.1)


def test_stopped_signals_take_no_new_position_and_let_the_held_one_run_out():
    day1 = trade_book_day(bars([100], [0.02]), CFG)
    day2 = trade_book_day(stop_signals(bars([101, 102, 103], [0.5, 0.5, 0.5], T0 + dt.timedelta(minutes=5))),
                          CFG, day1.state)  # fmt: skip
    assert day2.orders["reason"].to_list() == ["exit: holding period over"]
    assert day2.state.flat


@pytest.mark.parametrize("sizing", ["sign", "score"])
def test_two_days_carried_equal_the_backtest_of_both_days(sizing):
    rng = np.random.default_rng(7)
    n = 2 * 288
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    score = rng.normal(0, 0.01, n)
    depth = rng.uniform(2e5, 2e6, n)
    ts = [T0 + dt.timedelta(minutes=5 * i) for i in range(n)]
    frame = pl.DataFrame({"ts": ts, "symbol": "BTCUSDT", "close": close, "score": score,
                          "cost_depth_notional": depth}).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))  # fmt: skip
    funding = pl.DataFrame({"symbol": "BTCUSDT", "ts": [T0 + dt.timedelta(hours=h) for h in (8, 16, 24, 32, 40)],
                            "funding_rate": [1e-4, -2e-4, 3e-4, 1e-4, 5e-5]}).with_columns(
        pl.col("ts").cast(pl.Datetime("ms", "UTC")))  # fmt: skip
    cfg = BacktestConfig.for_horizon("1h", threshold=0.012, sizing=sizing, score_scale=50.0)
    whole = run_backtest(frame, cfg, funding=funding)
    d1 = trade_book_day(
        frame[:288], cfg, FLAT, funding=funding.filter(pl.col("ts") < T0 + dt.timedelta(days=1))
    )
    d2 = trade_book_day(frame[288:], cfg, d1.state, funding=funding)
    pnl = np.concatenate([d1.marks["pnl"].to_numpy(), d2.marks["pnl"].to_numpy()])
    np.testing.assert_allclose(pnl, whole.pnl, rtol=1e-9, atol=1e-9)
    assert d1.orders.height + d2.orders.height == whole.metrics["n_trades"] > 10
    assert d1.cost + d2.cost == pytest.approx(whole.metrics["cost"])
    assert d1.funding + d2.funding == pytest.approx(whole.metrics["funding"]) != 0.0
    assert d2.state.cum_pnl == pytest.approx(whole.metrics["total_pnl"])


def test_a_state_is_flat_only_without_units_and_level():
    assert FLAT.flat and not BookState(level=1.0, units=2.0).flat
