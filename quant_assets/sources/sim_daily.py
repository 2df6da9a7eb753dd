"""Daily processes of the simulator over its fixed calendar: price anchors and regimes.

The anchor `A[c, d]` is coin c's log close at the end of day d. It is a random walk:
    A[c, d] - A[c, d-1] = s_cd * (beta_c * M_d + sqrt(1 - beta_c^2) * E_cd) - s_cd^2 / 2
with M_d (market, shared by the coins) and E_cd (coin) independent standard normals and
s_cd the day's volatility (a regime AR(1) in log, partly shared across coins). Given
s_cd the daily simple return has mean exactly zero, E[P_d / P_{d-1}] = 1: the simple
price is a martingale. With no pull towards a trend, no clip and no squash, nothing
published (price level, position in the coin's real range, long returns) says
anything about the next return at signal_strength = 0. The intraday path of day d is
a bridge from `A[c, d-1]` to `A[c, d]` that keeps the martingale bar by bar (see
`sim_paths`), so prices are continuous across days and months.

Plausible prices. Each coin's walk is pinned so that the close before its first spot
day is `CoinParams.listing_price`, about its real price then. After that nothing holds
prices in the coin's real range (`universe.Coin.price_range`): a driftless martingale
with 3-6% daily volatility has a median that falls by vol^2 / 2 a day (by 16-43%
a year) while its mean stays put, so over years most coins end far below their start and
a few above it. Measured over 200 seeds, by 2026-06 a coin's median price is 4-24% of its
listing price and the middle 90% spans about 1/2000x to 4x; only 7-44% of paths end
inside the real range. Ticks get finer below the real low (`sim_bars.round_price`), and
dollar volumes and book depth see the price only through `level` (yesterday's close's
position in the real log range), clipped to [0, 1] (`sim_bars.size_factor`).

Everything here is drawn once per seed over the whole calendar (about 8,800 days, a
few milliseconds), never per fetched window, so no window can change a day's anchor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import lfilter

from quant_assets.sources import sim_params as p
from quant_assets.universe import COINS


def ar1(eps: np.ndarray, phi: float) -> np.ndarray:
    """Unit-variance stationary AR(1) along the last axis, started from its stationary law."""
    x = eps * math.sqrt(1.0 - phi * phi)
    x[..., 0] = eps[..., 0]
    return lfilter([1.0], [1.0, -phi], x, axis=-1)


@dataclass(frozen=True)
class DailyState:
    anchor: np.ndarray  # (C, N_CAL) log close at the end of each day
    vol: np.ndarray  # (C, N_CAL) std of the day's log return
    market_z: np.ndarray  # (N_CAL,) the day's standardised market shock M_d
    idio_z: np.ndarray  # (C, N_CAL) the coin's own standardised daily shock E_cd
    activity: np.ndarray  # (C, N_CAL) volume multiplier of the day's volatility regime
    level: np.ndarray  # (C, N_CAL) anchor's position in the coin's real log range (may leave 0..1)
    basis: np.ndarray  # (C, N_CAL) perpetual basis at the end of each day
    oi: np.ndarray  # (C, N_CAL) log open-interest multiplier at the end of each day
    log_lo: np.ndarray  # (C,) log of the coin's real low (reference only: prices may go below)
    log_hi: np.ndarray  # (C,)


@lru_cache(maxsize=8)
def daily_state(seed: int) -> DailyState:
    n, cal = p.N_COINS, p.N_CAL
    mk = p.day_rng(seed, p.MARKET, 0, p.S_DAILY)
    market_regime = ar1(mk.standard_normal(cal), p.REGIME_PHI)
    market_shock = mk.standard_normal(cal)

    dow = (np.arange(cal) + p.CAL_START.weekday()) % 7
    weekend = np.where(dow >= 5, p.WEEKEND_VOL, 1.0)

    out = {k: np.empty((n, cal)) for k in ("anchor", "vol", "idio_z", "activity", "level", "basis", "oi")}
    log_lo = np.log([c.price_range[0] for c in COINS])
    log_hi = np.log([c.price_range[1] for c in COINS])
    for c in range(n):
        g = p.day_rng(seed, c, 0, p.S_DAILY)
        z = g.standard_normal((4, cal))
        regime = p.REGIME_STD * (0.7 * market_regime + math.sqrt(1 - 0.49) * ar1(z[0], p.REGIME_PHI))
        vol = p.COIN_PARAMS[c].daily_vol * np.exp(regime - p.REGIME_STD**2) * weekend
        beta = p.COIN_PARAMS[c].beta
        # -vol^2 / 2 makes exp(step) average exactly 1 given the day's vol: no drift in simple price
        step = vol * (beta * market_shock + math.sqrt(1 - beta * beta) * z[1]) - 0.5 * vol**2
        walk = np.cumsum(step)
        first = p.cal_index(COINS[c].spot_listed)
        anchor = math.log(p.COIN_PARAMS[c].listing_price) + (walk - walk[first - 1])
        out["anchor"][c] = anchor
        out["vol"][c] = vol
        out["idio_z"][c] = z[1]
        out["level"][c] = (anchor - log_lo[c]) / (log_hi[c] - log_lo[c])
        out["activity"][c] = np.exp(regime)
        out["basis"][c] = p.BASIS_MEAN + p.BASIS_STD * ar1(z[2], p.BASIS_PHI)
        out["oi"][c] = 0.3 * ar1(z[3], 0.97)
    out["market_z"] = market_shock
    for v in out.values():
        v.setflags(write=False)
    return DailyState(**out, log_lo=log_lo, log_hi=log_hi)
