"""Crypto's stylised facts, measured on the simulator's own tables (issue 2, point 6)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from scipy import stats

from quant_assets.sources import sim_bars, sim_params
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


def test_spot_prices_start_near_each_coins_listing_price_then_wander_freely():
    """Prices open at the coin's listing price; afterwards they are a martingale, not held in the real
    range (sim_daily's docstring: most coins end well below their start over years)."""
    seen = []
    for seed in (7, 123):
        sim = MarketSimulator(seed=seed, signal_strength=0.0)
        for c, params in zip(COINS, sim_params.COIN_PARAMS, strict=True):
            first = sim.fetch(["market_bars"], c.spot_listed, c.spot_listed + dt.timedelta(days=1), FAR)
            spot = first["market_bars"].filter(market="spot", timeframe="5m", symbol=c.symbol).sort("ts")
            assert spot["ts"][0] == dt.datetime.combine(c.spot_listed, dt.time(), dt.UTC)
            assert spot["open"][0] == pytest.approx(params.listing_price, rel=1e-4), (seed, c.symbol)
        for d in (dt.date(2021, 1, 15), dt.date(2023, 6, 15), dt.date(2026, 3, 15)):
            seen.append(sim.fetch(["market_bars"], d, d + dt.timedelta(days=1), FAR)["market_bars"])
    bars = pl.concat(seen).filter(market="spot")
    assert (bars["low"] > 0).all()
    # every price sits on a tick of at most 1e-5 of itself, however far below the real low it went
    own = pl.Series([int(d) for d in sim_bars.DECIMALS]).gather(
        bars["symbol"].replace_strict({c.symbol: i for i, c in enumerate(COINS)}, return_dtype=pl.Int64)
    )
    dec = pl.max_horizontal(pl.lit(own), 5 - pl.col("close").log10().floor()).cast(pl.Float64)
    ticks = bars.select(n=pl.col("close") * 10**dec, rel=10 ** (-dec) / pl.col("close"))
    assert ((ticks["n"] - ticks["n"].round()).abs() < 1e-6 * ticks["n"]).all()
    assert ticks["rel"].max() <= 1e-5
    low = {c.symbol: c.price_range[0] for c in COINS}
    below = bars.filter(pl.col("close") < pl.col("symbol").replace_strict(low, return_dtype=pl.Float64))
    assert below.height > 0  # the sample does leave the real range, so finer ticks were exercised
    spread = bars.group_by("symbol").agg((pl.col("close").max() / pl.col("close").min()).alias("x"))
    assert (spread["x"] > 2).all(), spread


def test_daily_simple_returns_average_zero_and_log_returns_drift_by_half_their_variance():
    """E[P_d / P_(d-1)] = 1: pooled over 6 seeds x 8,800 days x 10 coins, the mean daily simple return
    is within 3 day-clustered standard errors of 0, while a log-martingale (the old model, whose
    simple returns drift up by vol^2 / 2) is rejected by the same test."""
    ours, log_martingale = [], []
    for seed in range(6):
        d = daily_state(seed)
        step = np.diff(d.anchor, axis=1)
        ours.append(np.expm1(step).mean(axis=0))  # one value per day: the coins co-move
        log_martingale.append(np.expm1(step + 0.5 * d.vol[:, 1:] ** 2).mean(axis=0))
        assert np.allclose(step + 0.5 * d.vol[:, 1:] ** 2, d.vol[:, 1:] * (
            np.array([c.beta for c in sim_params.COIN_PARAMS])[:, None] * d.market_z[None, 1:]
            + np.sqrt(1 - np.array([c.beta for c in sim_params.COIN_PARAMS]) ** 2)[:, None] * d.idio_z[:, 1:]
        ))  # fmt: skip
    for days, ok in ((np.concatenate(ours), True), (np.concatenate(log_martingale), False)):
        t = days.mean() / (days.std() / np.sqrt(len(days)))
        assert (abs(t) < 3) == ok, t
