"""Intraday 5m price paths: stochastic volatility, a common factor, Student-t shocks, a bridge.

For coin c on day d, raw 5m log returns are
    r_k = s_d * season_k * (beta * e^{m_k} * f_k + sqrt(1 - beta^2) * e^{g_k} * e_k) / norm
with f (market, seeded by (seed, day)) and e (coin, seeded by (seed, coin, day)) standardised
Student-t(4) shocks, m and g log-volatility AR(1)s restarted from their stationary law each
day (so a day's volatility needs nothing from the day before, yet clusters within it),
and `norm` making the day's variance sum equal the anchor's daily variance s_d^2.

The bridge then adds w_k * (Z - sum r) with w_k = Var(r_k) / s_d^2 and Z = A[d] - A[d-1]
drawn independently with variance s_d^2: for Gaussian shocks the bridged returns have
exactly the law of the raw ones (independent, variances Var(r_k)), so fixing the
day's endpoints adds no predictability inside the day, while the close of the last
bar of day d is the open of day d+1 bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quant_assets.sources import sim_params as p
from quant_assets.sources.sim_daily import DailyState, ar1
from quant_assets.universe import BARS_PER_DAY, COINS


@dataclass(frozen=True)
class Draws:
    """Random blocks for a run of days: everything else is a deterministic function of these."""

    normals: np.ndarray  # (C, nD, N_ROWS, 288)
    shocks: np.ndarray  # (C, nD, 288) standardised Student-t
    uniforms: np.ndarray  # (C, nD, N_UNIFORM)
    market_shocks: np.ndarray  # (nD, 288) standardised Student-t
    market_sv: np.ndarray  # (nD, 288) standard normal


def draw(seed: int, cal_days: np.ndarray) -> Draws:
    n_days = len(cal_days)
    normals = np.empty((p.N_COINS, n_days, p.N_ROWS, BARS_PER_DAY))
    shocks = np.empty((p.N_COINS, n_days, BARS_PER_DAY))
    uniforms = np.empty((p.N_COINS, n_days, p.N_UNIFORM))
    market_shocks = np.empty((n_days, BARS_PER_DAY))
    market_sv = np.empty((n_days, BARS_PER_DAY))
    t_scale = 1.0 / math.sqrt(p.T_DF / (p.T_DF - 2.0))
    ordinal0 = p.CAL_START.toordinal()
    for i, d in enumerate(cal_days.tolist()):
        g = p.day_rng(seed, p.MARKET, ordinal0 + d, p.S_INTRADAY)
        market_shocks[i] = g.standard_t(p.T_DF, BARS_PER_DAY) * t_scale
        market_sv[i] = g.standard_normal(BARS_PER_DAY)
        for c in range(p.N_COINS):
            g = p.day_rng(seed, c, ordinal0 + d, p.S_INTRADAY)
            normals[c, i] = g.standard_normal((p.N_ROWS, BARS_PER_DAY))
            shocks[c, i] = g.standard_t(p.T_DF, BARS_PER_DAY) * t_scale
            uniforms[c, i] = g.random(p.N_UNIFORM)
    return Draws(normals, shocks, uniforms, market_shocks, market_sv)


@dataclass(frozen=True)
class Paths:
    log_price: np.ndarray  # (C, nD, 289) spot log price at each 5m boundary; [..., 0] = previous close
    bar_sigma: np.ndarray  # (C, nD, 288) std of each bar's log return
    basis: np.ndarray  # (C, nD, 289) perpetual basis at each boundary


def raw_returns(daily: DailyState, cal_days: np.ndarray, dr: Draws) -> tuple[np.ndarray, np.ndarray]:
    """Unbridged 5m log returns and their variances, (C, nD, 288) each."""
    beta = np.array([c.beta for c in p.COIN_PARAMS])[:, None, None]
    m = p.SV_STD_MARKET * ar1(dr.market_sv, p.SV_PHI)[None]
    g = p.SV_STD_IDIO * ar1(dr.normals[:, :, p.N_IDIO_SV], p.SV_PHI)
    loading_m, loading_i = beta * np.exp(m), np.sqrt(1.0 - beta**2) * np.exp(g)
    season = p.BAR_VOL_SEASON
    var_unit = season**2 * (loading_m**2 + loading_i**2)
    s_d = daily.vol[:, cal_days][:, :, None]
    scale = s_d / np.sqrt(var_unit.sum(axis=-1, keepdims=True))
    r = scale * season * (loading_m * dr.market_shocks[None] + loading_i * dr.shocks)
    return r, scale**2 * var_unit


def paths(
    daily: DailyState, cal_days: np.ndarray, dr: Draws, basis: np.ndarray, impact: np.ndarray | None
) -> Paths:
    """Bridge each day between its anchors, add the signal impacts, keep prices in the real range.

    `impact` (C, nD, 289) is the cumulative log-price effect of published signals (zero
    at signal_strength 0); its value at a day's last boundary equals the next day's first,
    so adding it keeps the open of each day equal to the previous close.
    """
    r, var = raw_returns(daily, cal_days, dr)
    prev, last = daily.anchor[:, cal_days - 1], daily.anchor[:, cal_days]
    w = var / var.sum(axis=-1, keepdims=True)
    r = r + w * ((last - prev)[:, :, None] - r.sum(axis=-1, keepdims=True))
    logp = np.empty(r.shape[:2] + (BARS_PER_DAY + 1,))
    logp[..., 0] = prev
    logp[..., 1:] = prev[:, :, None] + np.cumsum(r, axis=-1)
    logp[..., -1] = last
    if impact is not None:
        logp = logp + impact
    # The anchors sit inside [3%, 97%] of the log range; this clip only binds on the rare
    # intraday excursion beyond the real range and never moves a day's endpoints.
    logp = np.clip(logp, daily.log_lo[:, None, None], daily.log_hi[:, None, None])
    return Paths(logp, np.sqrt(var), basis)


def basis_path(daily: DailyState, cal_days: np.ndarray, dr: Draws) -> np.ndarray:
    """Basis bridged between daily anchors with an AR(1) wiggle pinned to zero at both ends."""
    prev, last = daily.basis[:, cal_days - 1][:, :, None], daily.basis[:, cal_days][:, :, None]
    frac = np.arange(BARS_PER_DAY + 1) / BARS_PER_DAY
    eps = 0.5 * p.BASIS_STD * ar1(dr.normals[:, :, p.N_BASIS], 0.95)
    eps = np.concatenate([eps, eps[..., -1:]], axis=-1)
    wiggle = eps - eps[..., :1] * (1.0 - frac) - eps[..., -1:] * frac
    b = prev + (last - prev) * frac + wiggle
    b[..., 0], b[..., -1] = prev[..., 0], last[..., 0]
    return b


def listed_mask(cal_days: np.ndarray, *, perp: bool) -> np.ndarray:
    """(C, nD) True where the coin trades (spot, or the perpetual) on that day."""
    first = np.array([p.cal_index(c.perp_listed if perp else c.spot_listed) for c in COINS])
    return cal_days[None, :] >= first[:, None]
