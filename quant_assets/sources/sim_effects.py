"""How published signals move prices when signal_strength > 0, and the best IC that allows.

Effect model. A signal of effect e with standardised value z, first visible at time tau,
adds a drift of
    strength * scale_e * z * sigma_5m   per 5m bar
to the coin's log price during `horizon_bars` bars starting with the first bar that
opens at or after tau + 5 minutes (so a trader who saw the signal at tau can act on
the whole move), where sigma_5m = daily_vol / sqrt(288) of the signal's day. The
impact then decays linearly to zero over the next `REVERT_BARS` bars (24 hours).
Being transient is what keeps the model per-day: the price at any moment depends on
signals of the last two days only, so any day can still be computed alone.

| effect | signal z as published | horizon | sign | feature columns that carry it |
|---|---|---|---|---|
| book_imbalance | orderbook_l2: (bid - ask) / (bid + ask) notional at 1% = tanh(0.35 z), at ts | 1h | + | orderbook_imbalance, orderbook_imbalance_{sum,decay}_1h, _sum_24h |
| funding | funding_rates: (funding_rate - 1e-4) / 2e-4, at available_at = ts | 4h | - | funding_rate, funding_premium_{sum,decay}_4h, _sum_24h |
| exchange_netflow | onchain_signals.exchange_netflow / the coin-day's flow scale, at available_at | 2h | - | onchain_exchange_z_{sum,decay}_2h, _sum_24h |
| news_sentiment | events (not social): sentiment_score * confidence_score * tier weight * link relevance, at available_at | 4h | + | event_sentiment_{sum,decay}_4h, _sum_24h |
| social_sentiment | events social_post / social_comment: sentiment_score * min(log1p(engagement) / 5, 2), at available_at | 1h | + | social_sentiment_{sum,decay}_1h, _sum_24h |

Tier weight is `sim_events.TIER_WEIGHT`. Every z is a function of the columns as stored (the
events' z is computed from the rounded published values; the book's is tanh-inverted up to the
rounding of notionals), so what the tables publish by a time is all there is to know about the
drift to come: `oracle_forecast` with lag_bars = 1 is the conditional expectation given the
feature matrix's rows (`MarketSimulator.reachable_ic`). The feature columns are linear sums of the
published values over each horizon and a day; the best linear combination of them, scaled by the
coin's trailing volatility (effects scale with it), correlates 0.97 with that forecast (per effect
0.95 funding and news, 0.98-0.99 the others: the tier weights, the netflow scale and the 4h drift
profile are approximated, not copied). Effects not named in `planted` are published all the same
and move nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quant_assets.sources import sim_params as p
from quant_assets.sources.sim_daily import DailyState
from quant_assets.sources.sim_events import DayEvents
from quant_assets.sources.sim_signals import FUNDING_POINTS, Signals
from quant_assets.universe import BARS_PER_DAY


@dataclass(frozen=True)
class Effect:
    name: str
    horizon_bars: int
    scale: float  # drift per bar per unit z, in units of the coin's typical 5m std


EFFECTS = (
    Effect("book_imbalance", 12, 0.0045),
    Effect("funding", 48, -0.0100),
    Effect("exchange_netflow", 24, -0.0090),
    Effect("news_sentiment", 48, 0.2000),
    Effect("social_sentiment", 12, 0.0350),
)
EFFECT_NAMES = frozenset(e.name for e in EFFECTS)
REVERT_BARS = BARS_PER_DAY
SLOTS = BARS_PER_DAY + 12  # a day's signals start at most 1h after its end (delays + one bar)
SUPPORT = SLOTS + max(e.horizon_bars for e in EFFECTS) + REVERT_BARS
SPAN = 3 * BARS_PER_DAY  # a source day's impact reaches into the two days after it
SOURCE_DAYS_BEFORE = 2


def start_slot(avail_ms_in_day: np.ndarray) -> np.ndarray:
    """First bar (local to the signal's day) opening at or after availability + 5 minutes."""
    return -((-avail_ms_in_day) // p.BAR_MS) + 1


def amplitudes(
    daily: DailyState,
    cal_days: np.ndarray,
    sig: Signals,
    events: list[DayEvents],
    spot: np.ndarray,
    perp: np.ndarray,
    strength: float,
    planted: frozenset[str] = EFFECT_NAMES,
) -> np.ndarray:
    """Per-bar drift of each effect by start slot, (E, C, nD, SLOTS), in log-price units.

    Effects not in `planted` get zero drift (their signals are still published, and predict nothing).
    """
    n_days = len(cal_days)
    amp = np.zeros((len(EFFECTS), p.N_COINS, n_days, SLOTS))
    amp[0, :, :, 1 : BARS_PER_DAY + 1] = sig.book_z * spot[:, :, None]
    amp[1][:, :, FUNDING_POINTS + 1] = sig.funding_z * perp[:, :, None]
    hour_ms = np.arange(p.HOURS) * p.BARS_PER_HOUR * p.BAR_MS
    slots = start_slot(hour_ms + sig.onchain_delay_ms)
    ci, di, _ = np.indices(slots.shape)
    np.add.at(amp[2], (ci, di, slots), sig.netflow_z * spot[:, :, None])
    day0_ms = (p.CAL_START.toordinal() - 719_163) * p.DAY_MS  # 719163 = date(1970, 1, 1).toordinal()
    for i, ev in enumerate(events):
        day_ms = day0_ms + int(cal_days[i]) * p.DAY_MS
        slot = start_slot(ev.avail_ms - day_ms)
        np.add.at(amp, (3 + ev.social.astype(np.int64), ev.coin, np.full(len(slot), i), slot), ev.z)
    scale = np.array([e.scale if e.name in planted else 0.0 for e in EFFECTS])[:, None, None, None]
    sigma_5m = (daily.vol[:, cal_days] / math.sqrt(BARS_PER_DAY))[None, :, :, None]
    return strength * scale * sigma_5m * amp


def _kernel(e: Effect) -> tuple[int, float, float]:
    return e.horizon_bars, 1.0 + e.horizon_bars / REVERT_BARS, e.horizon_bars / REVERT_BARS


def source_impacts(amp: np.ndarray) -> np.ndarray:
    """Cumulative log-price impact of each source day's signals, (C, nD, SPAN + 1) boundaries.

    Computed from that day's signals alone and exactly zero once every effect has decayed,
    so summing three source days gives the same bits whatever window they came from.
    """
    delta = np.zeros(amp.shape[1:3] + (SPAN,))
    for e, a in zip(EFFECTS, amp, strict=True):
        h, down, back = _kernel(e)
        delta[..., :SLOTS] += a
        delta[..., h : h + SLOTS] -= a * down
        delta[..., h + REVERT_BARS : h + REVERT_BARS + SLOTS] += a * back
    out = np.zeros(amp.shape[1:3] + (SPAN + 1,))
    out[..., 1:] = np.cumsum(np.cumsum(delta, axis=-1), axis=-1)
    out[..., SUPPORT:] = 0.0
    return out


def day_impacts(src: np.ndarray) -> np.ndarray:
    """Impact on each target day from its own and the two previous source days, (C, nD - 2, 289).

    The summation order is the same for a day's last boundary and the next day's first
    (the source day three back contributes an exact zero), so prices stay continuous.
    """
    b = BARS_PER_DAY
    return (src[:, :-2, 2 * b :] + src[:, 1:-1, b : 2 * b + 1]) + src[:, 2:, : b + 1]


def oracle_forecast(amp: np.ndarray, horizon_bars: int, lag_bars: int = 0) -> np.ndarray:
    """The best forecast from published signals of the forward log return, (C, n_bars).

    At a decision time T (the boundary opening bar j) it is the drift over bars
    [j, j + horizon) of every signal visible by T - lag_bars * 5m (start slot <= j + 1 -
    lag_bars), including the decay of older ones: exactly the part of the return the tables
    can predict. lag_bars = 1 is the feature matrix's view: its row t decides at T = t + 5m
    but reads rows published by t. `amp` spans the target days plus the two source days
    before them; bars are the target days'.
    """
    n_coins, n_src, _ = amp.shape[1:]
    n_bars = (n_src - SOURCE_DAYS_BEFORE) * BARS_PER_DAY
    offset = SOURCE_DAYS_BEFORE * BARS_PER_DAY
    forecast = np.zeros((n_coins, n_bars))
    for e, a in zip(EFFECTS, amp, strict=True):
        glob = np.zeros((n_coins, n_src * BARS_PER_DAY + SLOTS))
        for x in range(n_src):
            glob[:, x * BARS_PER_DAY : x * BARS_PER_DAY + SLOTS] += a[:, x]
        h, _, back = _kernel(e)
        drift = np.zeros(h + REVERT_BARS + horizon_bars + 1)
        drift[:h] = 1.0
        drift[h : h + REVERT_BARS] = -back
        # kern[m + 1] = drift over [T, T + horizon) of a signal starting m bars before T's bar (m >= -1)
        csum = np.concatenate([[0.0], np.cumsum(drift)])
        m = np.arange(-1, h + REVERT_BARS)
        kern = csum[np.clip(m + horizon_bars, 0, len(drift))] - csum[np.maximum(m, 0)]
        kern[:lag_bars] = 0.0  # signals published in the last lag_bars bars before T are not seen
        for c in range(n_coins):
            forecast[c] += np.convolve(glob[c], kern)[offset + 1 : offset + 1 + n_bars]
    return forecast


def _glob(x: np.ndarray) -> np.ndarray:
    """(C, nD, 289) boundary values -> (C, nD * 288 + 1) on one time line."""
    return np.concatenate([x[:, :, :BARS_PER_DAY].reshape(x.shape[0], -1), x[:, -1:, -1]], axis=1)


def expected_ic(
    forecast: np.ndarray, impact: np.ndarray, bar_sigma: np.ndarray, listed: np.ndarray, horizon_bars: int
) -> float:
    """Population correlation of the forecast F with the forward return R, pooled over the sample.

    R = D + M where D is the total signal drift over the horizon (known here: `impact`,
    including signals published later) and M the martingale part with variance
    sum(bar_sigma^2) over the horizon, independent of everything published. So
    corr(F, R) = cov(F, D) / sqrt(var(F) * (var(D) + E[var M])), free of the noise of
    one realisation of M that a plain sample correlation would carry (+-0.02 at 4h).
    """
    n = forecast.shape[1] - horizon_bars + 1
    d = _glob(impact)
    drift = d[:, horizon_bars:] - d[:, :-horizon_bars]
    cs = np.concatenate(
        [
            np.zeros((bar_sigma.shape[0], 1)),
            np.cumsum(bar_sigma.reshape(bar_sigma.shape[0], -1) ** 2, axis=1),
        ],
        axis=1,
    )
    noise = cs[:, horizon_bars:] - cs[:, :-horizon_bars]
    # rows without a forecast (NaN) are left out, as a model that abstains would be
    live = np.repeat(listed, BARS_PER_DAY, axis=1)[:, :n] & np.isfinite(forecast[:, :n])
    f, dr, v = forecast[:, :n][live], drift[:, :n][live], noise[:, :n][live]
    if not np.any(f):
        return 0.0
    cov = np.mean((f - f.mean()) * (dr - dr.mean()))
    return float(cov / np.sqrt(f.var() * (dr.var() + v.mean())))


def realised_rank_ic(
    forecast: np.ndarray, log_price: np.ndarray, listed: np.ndarray, horizon_bars: int
) -> float:
    """Spearman correlation of the forecast with the realised forward log return (one draw of M)."""
    path = _glob(log_price)
    fwd = path[:, horizon_bars:] - path[:, :-horizon_bars]
    n = min(fwd.shape[1], forecast.shape[1])
    live = np.repeat(listed, BARS_PER_DAY, axis=1)[:, :n]
    x, y = forecast[:, :n][live], fwd[:, :n][live]
    return _rank_corr(x, y) if np.any(x) else 0.0


def _rank_corr(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])
