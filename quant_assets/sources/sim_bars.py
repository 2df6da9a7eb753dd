"""OHLCV of spot and USD-M perpetual bars from the simulated paths, 5m and their exact 1h aggregate.

Prices sit on a tick grid: about 5 significant digits at the coin's real low, and 5
significant digits of the price itself once it falls below that low (simulated prices
are not held in the real range, see `sim_daily`). The tick is a function of the price
alone, so the close of a bar and the open of the next are the same number. Volumes are whole
lots of a power-of-two size (`sim_params.volume_quantum`) and quote volumes whole
multiples of 2^-10 USD: sums of such numbers are exact in float64, so the 1h bar's
volumes equal the sums of its twelve 5m bars bit for bit, in any summation order.

Volume follows the hour-of-day and weekday activity profile, the day's volatility
regime and the coin's price level, and rises with the bar's absolute return.
"""

from __future__ import annotations

import math

import numpy as np

from quant_assets.sources import sim_params as p
from quant_assets.sources.sim_daily import DailyState
from quant_assets.sources.sim_paths import Draws, Paths
from quant_assets.universe import BARS_PER_DAY, COINS

DECIMALS = np.array([p.tick_decimals(c.price_range[0]) for c in COINS])
REAL_LOW = np.array([c.price_range[0] for c in COINS])
LOT = np.array([p.volume_quantum(c.price_range[1]) for c in COINS])[:, None, None]
TICKET = np.array([c.ticket_usd for c in p.COIN_PARAMS])[:, None, None]
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "trades", "taker_buy_volume",
               "taker_buy_quote_volume")  # fmt: skip


def tick_decimals(x: np.ndarray) -> np.ndarray:
    """(C, ...) decimals of the tick at prices `x`: the coin's own, more below its real low."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    d = DECIMALS.reshape(shape)
    if not np.any(x < REAL_LOW.reshape(shape)):  # at or above the low 5 - floor(log10 x) <= d
        return np.broadcast_to(d, x.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        own = 5 - np.floor(np.log10(x))
    return np.maximum(d, np.where(np.isfinite(own), own, d)).astype(np.int64)


def tick_size(x: np.ndarray) -> np.ndarray:
    """(C, ...) tick at prices `x`."""
    return 10.0 ** -tick_decimals(x).astype(float)


def round_price(x: np.ndarray, *, how: str = "round") -> np.ndarray:
    """Round (C, ...) prices to each coin's tick at that price; `how` = round, floor or ceil."""
    f = 10.0 ** tick_decimals(x).astype(float)
    fn = {"round": np.rint, "floor": np.floor, "ceil": np.ceil}[how]
    return fn(x * f) / f


def _lots(x: np.ndarray, lot: np.ndarray | float) -> np.ndarray:
    return np.floor(x / lot) * lot


def size_factor(daily: DailyState, cal_days: np.ndarray) -> np.ndarray:
    """(C, nD, 1) market-size multiplier (volumes, depth, flows, open interest): larger when the
    coin trades high in its real range, held at the range's ends beyond them. It reads yesterday's
    close, never the day's own, which would tell the day's direction to anyone looking at volumes."""
    level = np.clip(daily.level[:, cal_days - 1], 0.0, 1.0)
    return np.exp(1.5 * (level - 0.5))[:, :, None]


def dollar_volume(daily: DailyState, cal_days: np.ndarray) -> np.ndarray:
    """Expected spot quote volume per 5m bar before intraday effects, (C, nD, 1)."""
    base = np.array([c.dollar_volume for c in p.COIN_PARAMS])[:, None, None]
    dow = (cal_days + p.CAL_START.weekday()) % 7
    week = np.where(dow >= 5, p.WEEKEND_VOLUME, 1.0)[None, :, None]
    activity = daily.activity[:, cal_days][:, :, None]
    return base / BARS_PER_DAY * size_factor(daily, cal_days) * activity * week


def spot_and_perp(daily: DailyState, cal_days: np.ndarray, dr: Draws, paths: Paths) -> dict[str, dict]:
    """{"spot": cols, "usdm": cols}, each column (C, nD, 288); prices on each coin's tick."""
    n = dr.normals
    spot_pts = round_price(np.exp(paths.log_price))
    perp_pts = round_price(np.exp(paths.log_price) * (1.0 + paths.basis))
    ret = np.diff(paths.log_price, axis=-1)
    z = np.abs(ret) / paths.bar_sigma
    usd = (
        dollar_volume(daily, cal_days)
        * p.BAR_VOLUME_SEASON
        * (0.5 + 0.6 * z)
        * np.exp(0.45 * n[:, :, p.N_VOL_SPOT] - 0.1)
    )
    excursion_hi = np.exp(0.5 * np.abs(n[:, :, p.N_HIGH]) * paths.bar_sigma)
    excursion_lo = np.exp(-0.5 * np.abs(n[:, :, p.N_LOW]) * paths.bar_sigma)
    drive = np.tanh(ret / paths.bar_sigma)
    out = {}
    for market, pts in (("spot", spot_pts), ("usdm", perp_pts)):
        o, c = pts[..., :-1], pts[..., 1:]
        top, bottom = np.maximum(o, c), np.minimum(o, c)
        high = np.maximum(round_price(top * excursion_hi), top)
        low = np.minimum(round_price(bottom * excursion_lo), bottom)
        if market == "spot":
            bar_usd, taker_noise, trade_size = usd, n[:, :, p.N_TAKER_SPOT], TICKET
        else:
            bar_usd = usd * p.PERP_VOLUME * np.exp(0.3 * n[:, :, p.N_VOL_PERP] - 0.045)
            taker_noise, trade_size = n[:, :, p.N_TAKER_PERP], 1.5 * TICKET
        vwap = (o + high + low + c) / 4.0
        volume = np.maximum(_lots(bar_usd / vwap, LOT), LOT)
        taker = np.clip(0.5 + 0.18 * drive + 0.05 * taker_noise, 0.03, 0.97)
        tb = _lots(volume * taker, LOT)
        out[market] = {
            "open": o, "high": high, "low": low, "close": c, "volume": volume,
            "quote_volume": _lots(volume * vwap, p.QUOTE_QUANTUM),
            "trades": np.maximum(1, np.round(bar_usd / trade_size * np.exp(0.3 * n[:, :, p.N_TRADES]))).astype(np.int64),
            "taker_buy_volume": tb, "taker_buy_quote_volume": _lots(tb * vwap, p.QUOTE_QUANTUM),
        }  # fmt: skip
    return out


def hourly(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exact 1h aggregate of 5m columns (C, nD, 288) -> (C, nD, 24)."""
    r = {k: v.reshape(v.shape[:2] + (p.HOURS, p.BARS_PER_HOUR)) for k, v in bars.items()}
    out = {
        "open": r["open"][..., 0],
        "high": r["high"].max(-1),
        "low": r["low"].min(-1),
        "close": r["close"][..., -1],
    }
    for k in ("volume", "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume"):
        out[k] = r[k].sum(-1)
    return out


def typical_bar_sigma() -> np.ndarray:
    """(C, 1, 1) average 5m log-return std of each coin."""
    return np.array([c.daily_vol / math.sqrt(BARS_PER_DAY) for c in p.COIN_PARAMS])[:, None, None]
