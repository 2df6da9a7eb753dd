"""Signal and PnL metrics against scipy / numpy and hand-worked numbers."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from quant_assets.validation.metrics import (
    PERIODS_PER_YEAR_5M,
    annualised_return,
    calmar_ratio,
    equity_metrics,
    hit_rate,
    horizon_signal_metrics,
    information_coefficient,
    information_ratio,
    max_drawdown,
    pnl_metrics,
    rank_information_coefficient,
    sharpe_ratio,
    signal_metrics,
    turnover,
)


def test_a_year_of_5m_bars_on_a_24_7_market_is_105120_periods():
    assert PERIODS_PER_YEAR_5M == 105_120


def test_ic_equals_numpy_pearson_and_skips_missing_rows():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=500), rng.normal(size=500)
    y = 0.3 * x + y
    assert information_coefficient(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    x2, y2 = np.append(x, np.nan), np.append(y, 5.0)
    assert information_coefficient(x2, y2) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


def test_rank_ic_equals_scipy_spearman_with_ties():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 5, size=300).astype(float)  # heavy ties
    y = x + rng.integers(0, 3, size=300)
    assert rank_information_coefficient(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_constant_prediction_has_no_ic():
    assert math.isnan(information_coefficient(np.ones(10), np.arange(10.0)))


def test_icir_is_mean_over_sample_std_of_period_ics():
    ics = [0.1, 0.2, 0.0, 0.1]
    assert information_ratio(ics) == pytest.approx(0.1 / np.std(ics, ddof=1))
    assert information_ratio([0.1, np.nan, 0.3]) == pytest.approx(0.2 / np.std([0.1, 0.3], ddof=1))


def test_hit_rate_counts_sign_agreement_among_taken_positions():
    x = np.array([1.0, -2.0, 0.0, 3.0, -1.0])
    y = np.array([0.5, 0.1, 9.0, 0.0, -0.2])
    # taken rows 0,1,3,4: hits at 0 and 4; a zero return is a miss
    assert hit_rate(x, y) == 0.5


def test_turnover_is_mean_absolute_position_change_including_the_opening():
    assert turnover([1, 1, -1, -1, 0]) == pytest.approx((1 + 0 + 2 + 0 + 1) / 5)


def test_sharpe_annualises_with_sqrt_of_periods():
    r = np.array([0.01, -0.005, 0.002, 0.004])
    assert sharpe_ratio(r, 252) == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))


def test_max_drawdown_is_the_largest_fall_from_a_running_peak():
    assert max_drawdown([100, 120, 90, 130, 65, 140]) == pytest.approx(0.5)
    assert max_drawdown([1, 2, 3]) == 0.0


def test_calmar_is_compound_annual_return_over_max_drawdown():
    equity = [100.0, 80.0, 121.0]  # two periods, one per "year"
    assert annualised_return(equity, periods_per_year=1) == pytest.approx(0.1)
    assert calmar_ratio(equity, periods_per_year=1) == pytest.approx(0.1 / 0.2)
    m = equity_metrics(equity, periods_per_year=1)
    assert m["total_return"] == pytest.approx(0.21)


def test_pnl_metrics_on_fixed_capital_worked_by_hand():
    pnl = np.array([10.0, -30.0, 20.0, 5.0])  # equity 1010, 980, 1000, 1005 from 1000
    m = pnl_metrics(pnl, capital=1000.0, periods_per_year=4)
    assert m["total_pnl"] == 5.0
    assert m["total_return"] == pytest.approx(0.005)
    assert m["annualised_return"] == pytest.approx(1.25 / 1000 * 4)
    assert m["sharpe"] == pytest.approx(pnl.mean() / pnl.std(ddof=1) * 2)
    assert m["max_drawdown"] == pytest.approx(30 / 1010)
    assert m["calmar"] == pytest.approx(0.005 / (30 / 1010))


def _panel():
    rng = np.random.default_rng(3)
    ts = [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=h) for h in range(72)]
    rows = []
    for k, sym in enumerate(["AAA", "BBB"]):
        x = rng.normal(size=72)
        y = (0.2 + 0.3 * k) * x + rng.normal(size=72)
        rows.append(pl.DataFrame({"ts": ts, "symbol": sym, "pred": x, "fwd": y, "pos": np.sign(x)}))
    return pl.concat(rows)


def test_signal_metrics_per_symbol_and_pooled_match_direct_computation():
    df = _panel()
    out = signal_metrics(df, "pred", "fwd", position="pos")
    assert out["symbol"].to_list() == ["AAA", "BBB", "ALL"]
    for sym in ["AAA", "BBB"]:
        g = df.filter(pl.col("symbol") == sym)
        row = out.filter(pl.col("symbol") == sym).row(0, named=True)
        assert row["ic"] == pytest.approx(np.corrcoef(g["pred"], g["fwd"])[0, 1])
        assert row["rank_ic"] == pytest.approx(stats.spearmanr(g["pred"], g["fwd"]).statistic)
        daily = [np.corrcoef(d["pred"], d["fwd"])[0, 1] for _, d in g.group_by(pl.col("ts").dt.date())]
        assert row["icir"] == pytest.approx(np.mean(daily) / np.std(daily, ddof=1))
        assert row["turnover"] == pytest.approx(turnover(g["pos"].to_numpy()))
    pooled = out.filter(pl.col("symbol") == "ALL").row(0, named=True)
    assert pooled["n"] == 144
    assert pooled["ic"] == pytest.approx(np.corrcoef(df["pred"], df["fwd"])[0, 1])
    daily = [stats.spearmanr(d["pred"], d["fwd"]).statistic for _, d in df.group_by(pl.col("ts").dt.date())]
    assert pooled["rank_icir"] == pytest.approx(np.mean(daily) / np.std(daily, ddof=1))


def test_horizon_signal_metrics_labels_each_horizon():
    df = _panel().with_columns(fwd4=pl.col("fwd") * 2)
    out = horizon_signal_metrics(df, {"1h": ("pred", "fwd"), "4h": ("pred", "fwd4")})
    assert out.columns[0] == "horizon" and out.height == 6
    ic = out.filter(pl.col("symbol") == "ALL")["ic"].to_list()
    assert ic[0] == pytest.approx(ic[1])  # scaling the target leaves the IC unchanged


def test_signal_metrics_names_a_missing_column():
    with pytest.raises(ValueError, match="missing column 'nope'"):
        signal_metrics(_panel(), "nope", "fwd")
