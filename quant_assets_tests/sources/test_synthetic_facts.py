"""Crypto's stylised facts, measured on the simulator's own tables (issue 2, point 6)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from scipy import stats

from quant_assets.sources import sim_params
from quant_assets.sources.sim_daily import daily_state
from quant_assets.sources.synthetic import MarketSimulator
from quant_assets.universe import COINS

FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def spot_5m() -> pl.DataFrame:
    """Two months of spot 5m bars for all 10 coins, with log returns between consecutive bars."""
    bars = MarketSimulator(seed=7, signal_strength=0.0).fetch(
        ["market_bars"], dt.date(2024, 3, 1), dt.date(2024, 5, 1), FAR
    )["market_bars"]
    return (
        bars.filter(market="spot", timeframe="5m")
        .sort("symbol", "ts")
        .with_columns(
            r=pl.col("close").log().diff().over("symbol"),
            gap=pl.col("ts").diff().over("symbol"),
        )
        .filter(pl.col("gap") == dt.timedelta(minutes=5))
    )


def test_5m_log_returns_have_fat_tails(spot_5m):
    assert stats.kurtosis(spot_5m["r"].to_numpy(), fisher=False) > 5
    for sym, g in spot_5m.group_by("symbol"):
        assert stats.kurtosis(g["r"].to_numpy(), fisher=False) > 5, sym


def test_absolute_returns_cluster(spot_5m):
    acf = []
    for _, g in spot_5m.group_by("symbol"):
        a = np.abs(g["r"].to_numpy())
        acf.append(np.corrcoef(a[1:], a[:-1])[0, 1])
    assert np.mean(acf) > 0.1 and min(acf) > 0.05, acf


def test_a_common_market_factor_correlates_coins_between_0_3_and_0_8(spot_5m):
    wide = spot_5m.pivot(on="symbol", index="ts", values="r").drop("ts").drop_nulls()
    corr = np.corrcoef(wide.to_numpy().T)
    pairs = corr[np.triu_indices_from(corr, 1)]
    assert 0.3 < pairs.mean() < 0.8, pairs.mean()
    assert pairs.min() > 0.2 and pairs.max() < 0.85


def test_volume_follows_the_hour_of_day_and_the_weekday(spot_5m):
    by_hour = spot_5m.group_by(pl.col("ts").dt.hour()).agg(pl.col("quote_volume").mean())["quote_volume"]
    assert by_hour.max() / by_hour.min() > 1.2
    weekend = spot_5m.group_by(pl.col("ts").dt.weekday() >= 6).agg(pl.col("quote_volume").mean()).sort("ts")
    weekday_mean, weekend_mean = weekend["quote_volume"].to_list()
    assert weekend_mean < 0.85 * weekday_mean


def test_volume_rises_with_the_absolute_return(spot_5m):
    for sym, g in spot_5m.group_by("symbol"):
        rho = stats.spearmanr(np.abs(g["r"].to_numpy()), g["volume"].to_numpy())[0]
        assert rho > 0.2, (sym, rho)


def test_spot_prices_stay_in_each_coins_real_range_from_2018_to_2026():
    ranges = pl.DataFrame(
        {"symbol": [c.symbol for c in COINS], "lo": [c.price_range[0] for c in COINS],
         "hi": [c.price_range[1] for c in COINS]}
    )  # fmt: skip
    days = [
        dt.date(y, m, 15)
        for y in range(2018, 2027)
        for m in (1, 5, 9)
        if dt.date(y, m, 15) < dt.date(2026, 6, 1)
    ]
    seen = []
    for seed in (7, 123):
        sim = MarketSimulator(seed=seed, signal_strength=1.0)
        for d in days:
            bars = sim.fetch(["market_bars"], d, d + dt.timedelta(days=1), FAR)["market_bars"]
            seen.append(bars.filter(market="spot").join(ranges, on="symbol"))
    bars = pl.concat(seen)
    assert bars.filter((pl.col("low") < pl.col("lo")) | (pl.col("high") > pl.col("hi"))).height == 0
    # and the levels move through the range over the years rather than sitting still
    spread = bars.group_by("symbol").agg((pl.col("close").max() / pl.col("close").min()).alias("x"))
    assert (spread["x"] > 2).all(), spread


def test_daily_anchors_never_leave_three_to_97_percent_of_the_log_range_for_any_seed():
    for seed in range(6):
        level = daily_state(seed).level[:, sim_params.cal_index(dt.date(2017, 8, 17)) :]
        assert level.min() >= sim_params.SQUASH_LIMIT and level.max() <= 1 - sim_params.SQUASH_LIMIT
