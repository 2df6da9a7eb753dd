"""Intraday 5m price paths: stochastic volatility, a common factor, fat tails, a martingale bridge.

Coin c's 5m log return in bar k of day d is
    r_k = s_d * (beta * phi_k + sqrt(1 - beta^2) * psi_k) - v_k / 2,
    v_k = s_d^2 * (beta^2 * u_k + (1 - beta^2) * q_k),
where phi (the market, seeded by (seed, day)) and psi (the coin, seeded by (seed, coin,
day)) are Gaussian given their variance paths u and q (each summing to 1 over the day):
u_k is proportional to season_k^2 * e^{2 m_k} * lambda_k^2, with m a log-volatility AR(1)
restarted each day (so a day needs nothing from the day before, yet volatility clusters
within it) and lambda_k^2 = (T_DF - 2) / chi2(T_DF), which makes each shock a
standardised Student-t (fat tails); q likewise with the coin's own draws.

Bridge. Each Gaussian path x (phi or psi, raw increments N(0, u_k)) is tied to its
daily total X (M_d or E_cd of `sim_daily`, an independent standard normal) by
x_k + u_k * (X - sum x). Given the variance paths this has exactly the law of the raw
increments (independent N(0, u_k)) and sums to X. So, given everything published and
even the whole day's variance paths, each bar's returns (all coins together) are
Gaussian with mean -v_k / 2 and independent of the past: E[P_k / P_{k-1} | past] = 1
bar by bar (the simple price is a martingale at signal_strength = 0), the bars sum
to the daily anchor step, and the close of the last bar of day d is the open of day
d+1 bit for bit. The market and the coin parts are bridged separately so that no
coin's bridge leans on another coin's path (which would create lead-lag). Nothing
clips prices to the coin's real range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant_assets.sources import sim_params as p
from quant_assets.sources.sim_daily import DailyState, ar1
from quant_assets.universe import BARS_PER_DAY, COINS


@dataclass(frozen=True)
class Draws:
    """Random blocks for a run of days: everything else is a deterministic function of these."""

    normals: np.ndarray  # (C, nD, N_ROWS, 288)
    shocks: np.ndarray  # (C, nD, 288) standard normal, the coin's price shocks
    shock_mix: np.ndarray  # (C, nD, 288) their variance mixing lambda^2 (mean 1)
    uniforms: np.ndarray  # (C, nD, N_UNIFORM)
    market_shocks: np.ndarray  # (nD, 288) standard normal
    market_mix: np.ndarray  # (nD, 288) variance mixing of the market shocks
    market_sv: np.ndarray  # (nD, 288) standard normal


def draw(seed: int, cal_days: np.ndarray) -> Draws:
    n_days = len(cal_days)
    normals = np.empty((p.N_COINS, n_days, p.N_ROWS, BARS_PER_DAY))
    shocks = np.empty((p.N_COINS, n_days, BARS_PER_DAY))
    shock_mix = np.empty((p.N_COINS, n_days, BARS_PER_DAY))
    uniforms = np.empty((p.N_COINS, n_days, p.N_UNIFORM))
    market_shocks = np.empty((n_days, BARS_PER_DAY))
    market_mix = np.empty((n_days, BARS_PER_DAY))
    market_sv = np.empty((n_days, BARS_PER_DAY))
    ordinal0 = p.CAL_START.toordinal()
    for i, d in enumerate(cal_days.tolist()):
        g = p.day_rng(seed, p.MARKET, ordinal0 + d, p.S_INTRADAY)
        market_shocks[i] = g.standard_normal(BARS_PER_DAY)
        market_mix[i] = (p.T_DF - 2.0) / g.chisquare(p.T_DF, BARS_PER_DAY)
        market_sv[i] = g.standard_normal(BARS_PER_DAY)
        for c in range(p.N_COINS):
            g = p.day_rng(seed, c, ordinal0 + d, p.S_INTRADAY)
            normals[c, i] = g.standard_normal((p.N_ROWS, BARS_PER_DAY))
            shocks[c, i] = g.standard_normal(BARS_PER_DAY)
            shock_mix[c, i] = (p.T_DF - 2.0) / g.chisquare(p.T_DF, BARS_PER_DAY)
            uniforms[c, i] = g.random(p.N_UNIFORM)
    return Draws(normals, shocks, shock_mix, uniforms, market_shocks, market_mix, market_sv)


@dataclass(frozen=True)
class Paths:
    log_price: np.ndarray  # (C, nD, 289) spot log price at each 5m boundary; [..., 0] = previous close
    bar_sigma: np.ndarray  # (C, nD, 288) std of each bar's log return
    basis: np.ndarray  # (C, nD, 289) perpetual basis at each boundary


def bridge(shocks: np.ndarray, raw_var: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A day's Gaussian path with variances prop. to `raw_var` (summing to 1), tied to sum to `total`.

    Returns (increments, their variances), both shaped like `shocks`; `total` has one value per
    day (shape of `shocks` without the last axis). Given `raw_var`, the increments are
    independent N(0, var_k) when `total` is an independent standard normal (module docstring).
    """
    var = raw_var / raw_var.sum(axis=-1, keepdims=True)
    x = shocks * np.sqrt(var)
    return x + var * (total[..., None] - x.sum(axis=-1, keepdims=True)), var


def returns(daily: DailyState, cal_days: np.ndarray, dr: Draws) -> tuple[np.ndarray, np.ndarray]:
    """Bridged 5m log returns and their variances, (C, nD, 288) each; each day sums to its anchor step."""
    beta = np.array([c.beta for c in p.COIN_PARAMS])[:, None, None]
    season2 = p.BAR_VOL_SEASON**2
    m = p.SV_STD_MARKET * ar1(dr.market_sv, p.SV_PHI)
    g = p.SV_STD_IDIO * ar1(dr.normals[:, :, p.N_IDIO_SV], p.SV_PHI)
    phi, u = bridge(dr.market_shocks, season2 * np.exp(2 * m) * dr.market_mix, daily.market_z[cal_days])
    psi, q = bridge(dr.shocks, season2 * np.exp(2 * g) * dr.shock_mix, daily.idio_z[:, cal_days])
    s_d = daily.vol[:, cal_days][:, :, None]
    idio = np.sqrt(1.0 - beta**2)
    var = s_d**2 * (beta**2 * u[None] + idio**2 * q)
    return s_d * (beta * phi[None] + idio * psi) - 0.5 * var, var


def paths(
    daily: DailyState, cal_days: np.ndarray, dr: Draws, basis: np.ndarray, impact: np.ndarray | None
) -> Paths:
    """Each day's path between its anchors, plus the signal impacts.

    `impact` (C, nD, 289) is the cumulative log-price effect of published signals (zero
    at signal_strength 0); its value at a day's last boundary equals the next day's first,
    so adding it keeps the open of each day equal to the previous close.
    """
    r, var = returns(daily, cal_days, dr)
    prev, last = daily.anchor[:, cal_days - 1], daily.anchor[:, cal_days]
    logp = np.empty(r.shape[:2] + (BARS_PER_DAY + 1,))
    logp[..., 0] = prev
    logp[..., 1:] = prev[:, :, None] + np.cumsum(r, axis=-1)
    # the bars sum to the anchor step up to float rounding; pin the end so days join bit for bit
    logp[..., -1] = last
    if impact is not None:
        logp = logp + impact
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
