"""The vectorised backtest: hand-worked PnL, a bar-by-bar reference, no look-ahead, and cost of no edge."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.costs import CostModel
from quant_assets.backtest.engine import run_backtest, run_horizons
from quant_assets.schemas import TS

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
BAR = dt.timedelta(minutes=5)


def bars(symbol, close, score, start=T0, step=BAR, **extra):
    n = len(close)
    return pl.DataFrame(
        {
            "ts": pl.Series([start + i * step for i in range(n)], dtype=TS),
            "symbol": symbol,
            "close": np.asarray(close, dtype=float),
            "score": np.asarray(score, dtype=float),
            **{k: np.asarray(v, dtype=float) for k, v in extra.items()},
        }
    )


FLAT_COSTS = CostModel(taker_fee=0.001, slippage=0.0005, impact_coef=0.0)


def settlements(symbol, times, rates):
    return pl.DataFrame({"symbol": symbol, "ts": pl.Series(times, dtype=TS), "funding_rate": rates})


def test_known_positions_prices_fees_and_funding_give_the_hand_worked_pnl():
    nan = np.nan
    hour = dt.timedelta(hours=1)  # hourly bars, so that two settlements (>= 1h apart) fit in six bars
    df = bars(
        "BTCUSDT",
        close=[100, 102, 101, 104, 103, 105],
        score=[1.0, nan, nan, -1.0, nan, 0.1],  # the last score is below the threshold
        step=hour,
    )
    funding = settlements("BTCUSDT", [T0 + 2 * hour, T0 + 5 * hour], [0.0001, -0.0002])
    cfg = BacktestConfig(threshold=0.5, holding_bars=2, capital=1000.0, costs=FLAT_COSTS)
    r = run_backtest(df, cfg, funding=funding)
    short = -1000 / 104
    expected = [
        -1000 * 0.0015,  # bar 0: buy 10 at 100
        10 * 2,  # bar 1: hold
        10 * -1 - 1010 * 0.0015 - 10 * 102 * 0.0001,  # bar 2: held over the funding time, sell 10 at 101
        -1000 * 0.0015,  # bar 3: sell 1000/104 at 104
        short * -1,  # bar 4: hold the short
        short * 2
        - (-short * 105) * 0.0015
        - (short * 103) * -0.0002,  # bar 5: cover; a short pays negative funding
    ]
    assert r.pnl == pytest.approx(expected, abs=1e-9)
    assert r.units == pytest.approx([10, 10, 0, short, short, 0])
    assert r.metrics["total_pnl"] == pytest.approx(sum(expected))
    assert r.metrics["funding"] == pytest.approx(-0.102 - 0.0002 * 1000 / 104 * 103)
    assert r.metrics["cost"] == pytest.approx(0.0015 * (1000 + 1010 + 1000 + 1000 / 104 * 105))
    assert r.trades["qty"].to_list() == pytest.approx([10, -10, short, -short])
    assert r.trades["ts"].to_list() == [T0, T0 + 2 * hour, T0 + 3 * hour, T0 + 5 * hour]
    assert r.equity["equity"].to_list() == pytest.approx(1000 + np.cumsum(expected))
    assert r.equity["funding"].to_list() == pytest.approx([0, 0, -0.102, 0, 0, 0.0002 * short * 103])
    assert (r.metrics["n_settlements"], r.metrics["n_funding_payments"]) == (2, 2)
    assert r.assumptions == ()  # impact_coef 0: depth changes nothing; funding given


def test_impact_grows_with_trade_size_over_depth_and_falls_back_without_a_book():
    costs = CostModel(taker_fee=0.0004, slippage=0.0002, impact_coef=0.001, fallback_depth_notional=4e6)
    df = pl.concat(
        [
            bars("A", [100, 100], [1, np.nan], cost_depth_notional=[1e6, 1e6]),
            bars("B", [100, 100], [1, np.nan], cost_depth_notional=[np.nan, np.nan]),
        ]
    )
    r = run_backtest(df, BacktestConfig(holding_bars=None, capital=10_000, costs=costs, instrument="spot"))
    # 10,000 against 1,000,000 of depth: sqrt(0.01) * 0.001 = 1 bp of impact; missing depth uses 4,000,000
    assert r.trades["cost"].to_list() == pytest.approx([10_000 * 0.0007, 10_000 * 0.00065])
    assert r.trades["depth"].to_list() == [1e6, 4e6]
    assert r.metrics["n_trades_fallback_depth"] == 1
    assert r.assumptions == (
        "impact: 1 of 2 trades have no depth in 'cost_depth_notional' (no book at that bar) and use the "
        "fallback depth of 4,000,000 USD (CostModel.fallback_depth_notional)",
    )


def test_each_entry_is_held_for_the_horizon_in_bars():
    score = np.full(40, np.nan)
    score[3] = 2.0
    r = run_backtest(bars("A", np.full(40, 50.0), score), BacktestConfig.for_horizon("1h", capital=500.0))
    held = np.flatnonzero(r.units)
    assert held.tolist() == list(range(3, 15))  # 12 bars of 5 minutes
    assert BacktestConfig.for_horizon("4h").holding_bars == 48


def test_a_new_signal_renews_the_holding_period_and_can_flip_it():
    score = [1.0, np.nan, 1.0, np.nan, np.nan, -1.0, np.nan, np.nan, np.nan]
    r = run_backtest(bars("A", np.full(9, 10.0), score), BacktestConfig(holding_bars=3, capital=10.0))
    assert np.sign(r.units).tolist() == [1, 1, 1, 1, 1, -1, -1, -1, 0]
    assert r.metrics["n_trades"] == 3  # open, flip, close; the renewal is not a trade


def test_threshold_confidence_and_cap_decide_entries_and_sizes():
    score = [0.2, 0.6, -3.0, 0.9, np.nan]
    conf = [0.9, 0.9, 0.9, 0.1, 0.9]
    df = bars("A", np.full(5, 100.0), score, confidence=conf)
    sign = run_backtest(df, BacktestConfig(threshold=0.5, min_confidence=0.5, max_position=0.5, capital=1000))
    assert sign.units.tolist() == [0, 5, -5, 0, 0]
    scaled = run_backtest(
        df, BacktestConfig(threshold=0.5, min_confidence=0.5, sizing="score", max_position=2.0, capital=1000)
    )
    assert scaled.units.tolist() == [0, 6, -20, 0, 0]


def test_a_symbol_never_inherits_the_previous_symbols_position():
    df = pl.concat([bars("A", [1, 2, 3], [np.nan, np.nan, 1.0]), bars("B", [5, 6, 7], [np.nan] * 3)])
    r = run_backtest(df, BacktestConfig(holding_bars=None, capital=3.0))
    assert r.units.tolist() == [0, 0, 1, 0, 0, 0]
    assert r.per_symbol["n_trades"].to_list() == [1, 0]


def test_pnl_up_to_t_ignores_prices_and_scores_after_t():
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    score = rng.normal(size=200)
    base = run_backtest(bars("A", close, score), BacktestConfig(threshold=0.5, holding_bars=6))
    close2, score2 = close.copy(), score.copy()
    close2[121:] *= 1.7
    score2[121:] = -score2[121:]
    moved = run_backtest(bars("A", close2, score2), BacktestConfig(threshold=0.5, holding_bars=6))
    assert moved.pnl[:121] == pytest.approx(base.pnl[:121], abs=1e-12)
    assert not np.allclose(moved.pnl[121:], base.pnl[121:])


def test_no_edge_strategy_on_a_martingale_loses_about_its_costs():
    rng = np.random.default_rng(11)
    n_sym, n = 5, 20_000
    sigma = 0.002
    frames = []
    for k in range(n_sym):
        close = 100 * np.cumprod(1 + rng.normal(0, sigma, n))  # E[close_t+1 | past] = close_t
        frames.append(bars(f"S{k}", close, rng.normal(size=n)))  # scores independent of the future
    cfg = BacktestConfig(threshold=1.0, holding_bars=12, capital=10_000)
    r = run_backtest(pl.concat(frames), cfg)
    cost, pnl = r.metrics["cost"], r.metrics["total_pnl"]
    # E[price PnL] = 0, so E[total] = -cost; its sd given the positions is sigma * sqrt(sum of held notional^2)
    held = r.units * r.panel.close
    sd = sigma * np.sqrt(np.sum(held**2))
    assert cost > 20 * sd  # the test can tell costs from noise
    assert abs(pnl + cost) < 4 * sd
    traded = np.abs(r.trades["notional"].to_numpy())
    assert cost == pytest.approx(np.sum(traded * (0.0006 + 0.001 * np.sqrt(traded / 1e6))), rel=1e-9)


def reference_backtest(close, score, cfg):
    """Bar-by-bar loop of the documented rules, for one symbol."""
    n = len(close)
    units = np.zeros(n)
    pnl = np.zeros(n)
    level, age, held_units = 0.0, 0, 0.0
    for t in range(n):
        if t > 0:
            pnl[t] += held_units * (close[t] - close[t - 1])
        s = score[t]
        new = level
        if np.isfinite(s) and s != 0 and abs(s) >= cfg.threshold:
            new, age = np.sign(s) * cfg.max_position, 0
        elif level != 0:
            age += 1
            if cfg.holding_bars is not None and age >= cfg.holding_bars:
                new = 0.0
        target = held_units if new == level else new * cfg.capital / close[t]
        if target != held_units:
            notional = (target - held_units) * close[t]
            pnl[t] -= cfg.costs.trade_cost(notional, np.nan)
        level, held_units = new, target
        units[t] = held_units
    return units, pnl


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 80),
    threshold=st.sampled_from([0.0, 0.5, 1.5]),
    holding=st.sampled_from([None, 1, 3, 12]),
)
def test_vectorised_backtest_equals_a_bar_by_bar_loop(seed, n, threshold, holding):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    score = np.where(rng.random(n) < 0.3, rng.normal(size=n), np.nan)
    cfg = BacktestConfig(threshold=threshold, holding_bars=holding, capital=1000.0)
    r = run_backtest(bars("A", close, score), cfg)
    units, pnl = reference_backtest(close, score, cfg)
    assert r.units == pytest.approx(units, abs=1e-9)
    assert r.pnl == pytest.approx(pnl, abs=1e-9)


def test_coin_units_trade_a_fixed_quantity_like_vectorbt_size_one():
    close = [10.0, 11.0, 12.0, 11.0]
    r = run_backtest(
        bars("A", close, [1, -1, np.nan, 1]),
        BacktestConfig(holding_bars=None, units="coin", costs=FLAT_COSTS),
    )
    assert r.units.tolist() == [1, -1, -1, 1]
    assert r.trades["qty"].to_list() == [1, -2, 2]
    assert r.metrics["total_pnl"] == pytest.approx(1 - 1 + 1 - 0.0015 * (10 + 22 + 22))


def test_portfolio_equity_sums_symbols_on_the_union_of_their_times():
    a = bars("A", [10, 11, 12, 13], [1, np.nan, np.nan, np.nan])
    b = bars("B", [20, 22], [1, np.nan], start=T0 + 2 * BAR)  # listed two bars later
    r = run_backtest(pl.concat([b, a]), BacktestConfig(holding_bars=None, units="coin", costs=FLAT_COSTS))
    assert r.equity["ts"].to_list() == [T0 + i * BAR for i in range(4)]
    assert r.equity["pnl"].to_list() == pytest.approx([-0.015, 1, 1 - 0.03, 1 + 2])
    assert r.per_symbol["symbol"].to_list() == ["A", "B"]


def test_run_row_records_config_period_and_metrics_deterministically():
    rng = np.random.default_rng(0)
    df = bars("A", 100 + rng.normal(size=50).cumsum(), rng.normal(size=50))
    cfg = BacktestConfig.for_horizon("1h", threshold=0.5)
    row1 = run_backtest(df, cfg).run_row()
    row2 = run_backtest(df, cfg).run_row()
    assert row1.equals(row2)
    rec = row1.row(0, named=True)
    assert rec["horizon"] == "1h"
    assert json.loads(rec["config"])["holding_bars"] == 12
    assert json.loads(rec["config"])["costs"]["taker_fee"] == 0.0004
    assert (rec["period_start"], rec["period_end"]) == (T0, T0 + 49 * BAR)
    assert rec["total_pnl"] == pytest.approx(json.loads(rec["metrics"])["total_pnl"])
    other = run_backtest(df, cfg.with_(threshold=1.0)).run_row()
    assert other["run_id"][0] != rec["run_id"]


def test_each_horizon_trades_its_own_score_threshold_and_confidence():
    nan = np.nan
    df = bars(
        "A",
        np.full(60, 10.0),
        np.full(60, nan),
        score_1h=[0.9] + [nan] * 59,
        confidence_1h=[0.9] + [nan] * 59,
        score_4h=[0.9] + [nan] * 59,
        confidence_4h=[0.2] + [nan] * 59,
    ).drop("score")
    out = run_horizons(
        df,
        {
            "1h": BacktestConfig.for_horizon("1h", threshold=0.5, min_confidence=0.5),
            "4h": BacktestConfig.for_horizon("4h", threshold=0.5, min_confidence=0.5),
        },
    )
    assert np.count_nonzero(out["1h"].units) == 12
    assert np.count_nonzero(out["4h"].units) == 0  # confidence 0.2 is below the 4h minimum
    rows = pl.concat([r.run_row() for r in out.values()])
    assert rows["horizon"].to_list() == ["1h", "4h"]


def test_min_confidence_without_a_confidence_column_is_an_error():
    with pytest.raises(ValueError, match="needs a 'confidence' column"):
        run_backtest(bars("A", [1.0, 2.0], [1.0, 1.0]), BacktestConfig(min_confidence=0.5))
