"""Funding only at settlement events and impact on the row's own depth, both passed by name; what is assumed is said."""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import polars as pl
import pytest

from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.costs import CostModel
from quant_assets.backtest.engine import run_backtest, run_horizons
from quant_assets.backtest.funding import settlement_events
from quant_assets.schemas import TS

BAR = dt.timedelta(minutes=5)
T0 = dt.datetime(2024, 1, 1, 7, 30, tzinfo=dt.UTC)  # 13 bars 07:30..08:30 span the 08:00 settlement
SETTLE = dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC)
NO_IMPACT = CostModel(taker_fee=0.0004, slippage=0.0002, impact_coef=0.0)


def bars(symbol, close, score, start=T0, **extra):
    n = len(close)
    return pl.DataFrame(
        {
            "ts": pl.Series([start + i * BAR for i in range(n)], dtype=TS),
            "symbol": symbol,
            "close": np.asarray(close, dtype=float),
            "score": np.asarray(score, dtype=float),
            **{k: np.asarray(v, dtype=float) for k, v in extra.items()},
        }
    )


def settlements(rows):
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "ts": pl.Series([r[1] for r in rows], dtype=TS),
            "funding_rate": [r[2] for r in rows],
        }
    )


def one_long(**extra):
    close = 100.0 + np.arange(13)  # 07:30 -> 100, 07:45 -> 103, 07:55 -> 105, 08:00 -> 106
    score = np.full(13, np.nan)
    score[3] = 1.0  # long from the 07:45 close for 12 bars (1h): held over 08:00
    return bars("BTCUSDT", close, score, **extra)


FUNDING = settlements(
    [
        ("BTCUSDT", SETTLE - 8 * dt.timedelta(hours=1), 0.003),  # before the bars: not placed
        ("BTCUSDT", SETTLE, 0.0001),
        ("BTCUSDT", SETTLE + dt.timedelta(hours=8), 0.003),  # after the bars: not placed
        ("ETHUSDT", SETTLE, 0.05),  # another coin's settlement
    ]
)


def test_a_position_held_over_one_settlement_pays_one_funding_payment_whatever_the_feature_columns_hold():
    cfg = BacktestConfig.for_horizon("1h", capital=10_000.0, costs=NO_IMPACT)
    # the feature matrix's funding_rate: a rate carried forward onto every row (here a different one each)
    feature = one_long(funding_rate=0.001 * (1 + np.arange(13)), cost_depth_notional=np.full(13, 1e6))
    r = run_backtest(feature, cfg, funding=FUNDING)
    units = 10_000 / 103  # entered at the 07:45 close
    payment = -units * 105 * 0.0001  # held at 08:00: the 07:55 bar's position, valued at its close
    assert r.metrics["funding"] == pytest.approx(payment, rel=1e-12)
    assert payment == pytest.approx(-1.0194174757, rel=1e-9)  # 10,194.17 USD long at 1 bp
    assert (r.metrics["n_settlements"], r.metrics["n_funding_payments"]) == (1, 1)
    funding_by_bar = r.equity["funding"].to_numpy()
    assert np.flatnonzero(funding_by_bar).tolist() == [6]  # booked on the bar that opens at 08:00
    assert funding_by_bar[6] == pytest.approx(payment, rel=1e-12)
    # the same run without the feature column: identical to the cent and beyond
    plain = run_backtest(feature.drop("funding_rate"), cfg, funding=FUNDING)
    assert r.pnl.tolist() == plain.pnl.tolist()
    assert r.assumptions == ()
    # through run_horizons, as the model issues call it
    h = run_horizons(
        feature.rename({"score": "score_1h"}), {"1h": cfg}, confidence=None, funding=FUNDING.lazy()
    )["1h"]
    assert h.metrics["funding"] == pytest.approx(payment, rel=1e-12)
    assert h.metrics["n_funding_payments"] == 1


def test_the_old_per_row_funding_column_would_have_charged_every_bar():
    """What the issue saw: the feature column as 'events' is refused, not charged 12 times."""
    feature = one_long(funding_rate=np.full(13, 0.0001))
    as_events = feature.select("symbol", "ts", "funding_rate")
    with pytest.raises(
        ValueError, match=r"settlement 0:05:00 after the previous one .* must be settlement rows"
    ):
        run_backtest(feature, BacktestConfig.for_horizon("1h"), funding=as_events)


def test_a_settlement_inside_a_gap_in_the_bars_is_charged_once_on_the_next_bar():
    frame = one_long().filter(
        ~pl.col("ts").is_in([SETTLE - BAR, SETTLE, SETTLE + BAR])
    )  # 07:55-08:05 missing
    r = run_backtest(frame, BacktestConfig(holding_bars=None, costs=NO_IMPACT), funding=FUNDING)
    # held at 08:00: the position decided at the 07:50 close (the last one before 08:00), at that close
    assert r.metrics["funding"] == pytest.approx(-10_000 / 103 * 104 * 0.0001, rel=1e-12)
    assert r.metrics["n_funding_payments"] == 1
    booked = r.equity.filter(pl.col("funding") != 0)["ts"].to_list()
    assert booked == [SETTLE + 2 * BAR]


def test_no_position_at_the_settlement_pays_nothing_and_a_short_receives_a_positive_rate():
    flat = run_backtest(bars("BTCUSDT", np.full(13, 100.0), np.full(13, np.nan)), funding=FUNDING)
    assert (flat.metrics["n_settlements"], flat.metrics["n_funding_payments"], flat.metrics["funding"]) == (
        1,
        0,
        0,
    )
    score = np.full(13, np.nan)
    score[0] = -1.0
    short = run_backtest(
        bars("BTCUSDT", np.full(13, 100.0), score), BacktestConfig(holding_bars=None), funding=FUNDING
    )
    assert short.metrics["funding"] == pytest.approx(10_000 * 0.0001)


def test_a_row_with_small_depth_pays_more_impact_than_the_same_row_with_large_depth():
    costs = CostModel(taker_fee=0.0004, slippage=0.0002, impact_coef=0.001)
    score = [np.nan, 1.0, np.nan, np.nan, np.nan]
    close = [100.0] * 5
    # each coin's depth differs from row to row: the trade must use its own row's (rows 1 and 3)
    thin = bars("THIN", close, score, cost_depth_notional=[9e9, 2.5e5, 9e9, 6.25e6, 9e9])
    deep = bars("DEEP", close, score, cost_depth_notional=[1.0, 4e6, 1.0, 4e6, 1.0])
    r = run_backtest(pl.concat([thin, deep]), BacktestConfig(holding_bars=2, costs=costs, instrument="spot"))
    by = {s: t for (s,), t in r.trades.group_by("symbol", maintain_order=True)}
    # cost = 10,000 * (4 bp + 2 bp + 0.001 * sqrt(10,000 / depth))
    assert by["THIN"]["cost"].to_list() == pytest.approx(
        [10_000 * (0.0006 + 0.001 * 0.2), 10_000 * (0.0006 + 0.001 * 0.04)]
    )
    assert by["DEEP"]["cost"].to_list() == pytest.approx([10_000 * (0.0006 + 0.001 * 0.05)] * 2)
    assert by["THIN"]["cost"][0] == pytest.approx(8.0) and by["DEEP"]["cost"][0] == pytest.approx(6.5)
    assert by["THIN"]["depth"].to_list() == [2.5e5, 6.25e6]
    assert r.assumptions == ()


def test_the_depth_column_is_the_one_the_config_names():
    costs = CostModel(taker_fee=0.0, slippage=0.0, impact_coef=0.001, fallback_depth_notional=1e8)
    frame = bars("A", [100.0, 100.0], [1.0, np.nan], depth_notional=[1e4, 1e4], book=[1e6, 1e6])
    cfg = BacktestConfig(holding_bars=None, costs=costs, instrument="spot")
    assert run_backtest(frame, cfg.with_(depth_column="book")).metrics["cost"] == pytest.approx(
        10_000 * 0.001 * 0.1
    )
    assert run_backtest(frame, cfg.with_(depth_column="depth_notional")).metrics["cost"] == pytest.approx(
        10_000 * 0.001
    )
    # the default names the feature matrix's column, which this frame lacks: fallback, and said so
    fallback = run_backtest(frame, cfg)
    assert fallback.metrics["cost"] == pytest.approx(10_000 * 0.001 * 0.01)
    assert fallback.metrics["n_trades_fallback_depth"] == 1
    assert fallback.assumptions == (
        "impact: the frame has no column 'cost_depth_notional' (BacktestConfig.depth_column); every trade uses "
        "the fallback depth of 100,000,000 USD (CostModel.fallback_depth_notional)",
    )


def test_what_the_run_assumes_is_logged_and_recorded(caplog):
    frame = one_long()
    with caplog.at_level(logging.WARNING, logger="quant_assets.backtest.engine"):
        r = run_backtest(frame, BacktestConfig(depth_column=None))
    assert [n.split(":")[0] for n in r.assumptions] == ["impact", "funding"]
    assert "no depth column configured (depth_column=None)" in r.assumptions[0]
    assert "no settlement events given" in r.assumptions[1] and "charged no funding" in r.assumptions[1]
    assert [rec.getMessage() for rec in caplog.records] == [f"backtest: {n}" for n in r.assumptions]
    row = r.run_row().row(0, named=True)
    assert json.loads(row["assumptions"]) == list(r.assumptions)
    # spot positions pay no funding: nothing to assume, and funding events are a contradiction
    spot = BacktestConfig(instrument="spot", costs=NO_IMPACT)
    assert run_backtest(frame, spot).assumptions == ()
    with pytest.raises(ValueError, match="instrument='spot' pays no funding"):
        run_backtest(frame, spot, funding=FUNDING)


def test_a_symbol_with_a_whole_funding_interval_of_bars_and_no_settlement_is_reported():
    day = bars(
        "SOLUSDT", np.full(288, 20.0), np.full(288, np.nan), start=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    )
    r = run_backtest(day, BacktestConfig(costs=NO_IMPACT), funding=FUNDING)
    assert r.assumptions == (
        "funding: no settlements for SOLUSDT between 2024-01-01 00:00:00+00:00 and 2024-01-01 23:55:00+00:00; "
        "it is charged none",
    )
    # an hour of bars need not contain one
    hour = one_long().with_columns(symbol=pl.lit("SOLUSDT"))
    assert run_backtest(hour, BacktestConfig(costs=NO_IMPACT), funding=FUNDING).assumptions == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop("funding_rate"), r"missing columns \['funding_rate'\]"),
        (lambda f: f.with_columns(pl.col("ts").dt.replace_time_zone(None)), "ts must be a UTC Datetime"),
        (
            lambda f: pl.concat([f, f.slice(1, 1)]),
            r"duplicate settlement at row 2 \(symbol 'BTCUSDT', ts 2024-01-01 08:00",
        ),
        (
            lambda f: f.with_columns(funding_rate=pl.Series([0.1, None, 0.1, 0.1])),
            r"funding_rate None is not a finite rate at row 1 \(symbol 'BTCUSDT'",
        ),
        (
            lambda f: f.with_columns(funding_rate=pl.lit(float("nan"))),
            "funding_rate nan is not a finite rate at row 0",
        ),
    ],
)
def test_bad_settlement_rows_are_errors_naming_the_row(change, message):
    with pytest.raises(ValueError, match=message):
        settlement_events(change(FUNDING))


def test_settlement_events_keep_three_columns_sorted():
    extra = FUNDING.with_columns(mark_price=pl.lit(1.0)).reverse()
    out = settlement_events(extra)
    assert out.columns == ["symbol", "ts", "funding_rate"]
    assert out.equals(settlement_events(FUNDING))
    assert out["funding_rate"].to_list() == [0.003, 0.0001, 0.003, 0.05]
