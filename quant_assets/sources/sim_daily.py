"""Daily processes of the simulator over its fixed calendar: price anchors and regimes.

The anchor `A[c, d]` is coin c's log close at the end of day d. It is an AR(1)
deviation around a log-linear trend through the coin's real price range, squashed
smoothly so it never leaves [3%, 97%] of that range in log terms. The intraday
path of day d is a bridge from `A[c, d-1]` to `A[c, d]` (see `sim_paths`), so prices
are continuous across days and months and stay in each coin's real range.

Everything here is drawn once per seed over the whole calendar (about 8,800 days, a
few milliseconds), never per fetched window, so no window can change a day's anchor.

The pull back towards the trend is the one thing in prices that is predictable at
signal_strength = 0. Its size is known: the drift it adds has a daily std of
daily_vol * sqrt((1 - phi) / (1 + phi)), an information coefficient at 1h of
`TREND_PULL_IC_1H` at most over the coins (below 0.012), against the bridge's
otherwise martingale returns.
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


def _squash(u: np.ndarray) -> np.ndarray:
    """Identity on [a, 1-a]; beyond, an exponential approach to [m, 1-m] with slope 1 at the joins."""
    a, m = p.SQUASH_LINEAR, p.SQUASH_LIMIT
    w = a - m
    low = m + w * np.exp(np.minimum(u - a, 0.0) / w)
    high = 1.0 - m - w * np.exp(np.minimum(1.0 - a - u, 0.0) / w)
    return np.where(u < a, low, np.where(u > 1.0 - a, high, u))


def _phi(c: int) -> float:
    lo, hi = (math.log(v) for v in COINS[c].price_range)
    sigma_x = p.DEVIATION_SHARE * (hi - lo)
    return math.sqrt(1.0 - (p.COIN_PARAMS[c].daily_vol / sigma_x) ** 2)


TREND_PULL_IC_1H = max(
    math.sqrt((1 - _phi(c)) / (1 + _phi(c))) / math.sqrt(p.HOURS) for c in range(p.N_COINS)
)


@dataclass(frozen=True)
class DailyState:
    anchor: np.ndarray  # (C, N_CAL) log close at the end of each day
    vol: np.ndarray  # (C, N_CAL) std of the day's log return
    activity: np.ndarray  # (C, N_CAL) volume multiplier of the day's volatility regime
    level: np.ndarray  # (C, N_CAL) anchor's share of the coin's log range, 0..1
    basis: np.ndarray  # (C, N_CAL) perpetual basis at the end of each day
    oi: np.ndarray  # (C, N_CAL) log open-interest multiplier at the end of each day
    log_lo: np.ndarray  # (C,)
    log_hi: np.ndarray  # (C,)


@lru_cache(maxsize=8)
def daily_state(seed: int) -> DailyState:
    n, cal = p.N_COINS, p.N_CAL
    mk = p.day_rng(seed, p.MARKET, 0, p.S_DAILY)
    market_regime = ar1(mk.standard_normal(cal), p.REGIME_PHI)
    market_shock = mk.standard_normal(cal)

    dow = (np.arange(cal) + p.CAL_START.weekday()) % 7
    weekend = np.where(dow >= 5, p.WEEKEND_VOL, 1.0)
    days = np.arange(cal, dtype=float)
    trend_days = (p.TREND_TO_DATE - p.CAL_START).days
    share = np.clip(p.TREND_FROM + (p.TREND_TO - p.TREND_FROM) * days / trend_days, p.TREND_FROM, p.TREND_TO)

    out = {k: np.empty((n, cal)) for k in ("anchor", "vol", "activity", "level", "basis", "oi")}
    log_lo = np.log([c.price_range[0] for c in COINS])
    log_hi = np.log([c.price_range[1] for c in COINS])
    for c in range(n):
        g = p.day_rng(seed, c, 0, p.S_DAILY)
        z = g.standard_normal((5, cal))
        regime = p.REGIME_STD * (0.7 * market_regime + math.sqrt(1 - 0.49) * ar1(z[0], p.REGIME_PHI))
        vol = p.COIN_PARAMS[c].daily_vol * np.exp(regime - p.REGIME_STD**2) * weekend
        beta = p.COIN_PARAMS[c].beta
        innov = vol * (beta * market_shock + math.sqrt(1 - beta * beta) * z[1])
        phi = _phi(c)
        rng_ = log_hi[c] - log_lo[c]
        innov[0] = p.DEVIATION_SHARE * rng_ * z[2, 0]  # start the deviation from its stationary law
        deviation = lfilter([1.0], [1.0, -phi], innov)
        level = _squash(share + deviation / rng_)
        out["anchor"][c] = log_lo[c] + rng_ * level
        out["level"][c] = level
        out["vol"][c] = vol
        out["activity"][c] = np.exp(regime)
        out["basis"][c] = p.BASIS_MEAN + p.BASIS_STD * ar1(z[3], p.BASIS_PHI)
        out["oi"][c] = 0.3 * ar1(z[4], 0.97)
    for v in out.values():
        v.setflags(write=False)
    return DailyState(**out, log_lo=log_lo, log_hi=log_hi)
