"""Constants and random streams of the market simulator (see `synthetic.py` for the model).

Every random number the simulator uses comes from a stream keyed by
`SeedSequence([seed, owner, day_ordinal, stream])`, where `owner` is a coin's index
in `universe.COINS`, `MARKET` for the common factor or `NEWS` for events. A day is
therefore computable alone, which is what makes a month built alone equal the same
month inside a long backfill.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from quant_assets.universe import BARS_PER_DAY, COINS

# The fixed calendar of the daily processes. Anchors are computed over all of it at
# once, so a day's anchor never depends on the window being fetched.
CAL_START = dt.date(2017, 1, 1)
CAL_END = dt.date(2040, 12, 31)
N_CAL = (CAL_END - CAL_START).days + 1
BAR_MS = 5 * 60 * 1000
DAY_MS = 86_400_000
HOURS = 24
BARS_PER_HOUR = BARS_PER_DAY // HOURS

# Stream owners beyond the coin indices 0..9.
MARKET = 1_000
NEWS = 2_000
# Stream ids.
S_DAILY, S_INTRADAY, S_EVENTS = 0, 1, 2

# Per coin-day random block layout (rows of standard normals, 288 wide).
N_IDIO_SV, N_BASIS, N_VOL_SPOT, N_VOL_PERP, N_TAKER_SPOT, N_TAKER_PERP = range(6)
N_OB_IMB, N_OB_DEPTH, N_OI, N_LS_GLOBAL, N_LS_ACCOUNTS, N_LS_POSITIONS = range(6, 12)
N_TRADES, N_HIGH, N_LOW, N_ONCHAIN, N_FUNDING = range(12, 17)
N_ROWS = 17
N_UNIFORM = 2 * HOURS  # outage draw per hour, on-chain publication delay per hour

# Intraday volatility: log-vol AR(1) per 5m bar, restarted from its stationary law each day.
SV_PHI = 0.98
SV_STD_IDIO = 0.50
SV_STD_MARKET = 0.45
T_DF = 4.0  # 5m shocks are Gaussian scale mixtures with Student-t(4) marginals (fat tails)
# Daily volatility regime: AR(1) of log daily vol, a market part shared by all coins.
REGIME_PHI = 0.93
REGIME_STD = 0.35
WEEKEND_VOL = 0.85
WEEKEND_VOLUME = 0.70
# Prices start at each coin's listing (the close before its first Binance spot day) and then
# follow a random walk in log price with drift -vol^2 / 2 per day, so the simple price is a
# martingale: no level, range or trend says anything about the next return (see `sim_daily`).
OUTAGE_P = 0.001  # chance a coin's whole hour of bars is missing (exchange outage)
FUNDING_HOURS = (0, 8, 16)
FUNDING_MEAN, FUNDING_SD, FUNDING_CAP = 1.0e-4, 2.0e-4, 3.0e-3
BASIS_MEAN, BASIS_STD, BASIS_PHI = 2.0e-4, 4.0e-4, 0.90
ONCHAIN_DELAY_MIN = (10, 30)  # minutes after the hour's ts until the row is published
ANNUALIZE_BASIS = 365 * 3  # basis is the carry of one 8h funding interval
PERP_VOLUME = 2.5
QUOTE_QUANTUM = 2.0**-10  # quote volumes are multiples of this: hourly sums are exact


@dataclass(frozen=True)
class CoinParams:
    daily_vol: float  # average daily log-return std
    beta: float  # loading on the common market factor
    dollar_volume: float  # typical daily spot quote volume, USD
    half_spread_bps: float
    ticket_usd: float  # average trade size, for the trades count
    listing_price: float  # about the coin's USDT price on its first Binance spot day, rounded


PARAMS: dict[str, CoinParams] = {
    "BTC": CoinParams(0.032, 0.85, 1.2e9, 0.5, 2_000.0, 4_300.0),
    "ETH": CoinParams(0.042, 0.85, 6.0e8, 0.6, 1_500.0, 300.0),
    "SOL": CoinParams(0.058, 0.72, 2.0e8, 1.0, 800.0, 3.0),
    "BNB": CoinParams(0.040, 0.75, 1.5e8, 1.0, 800.0, 1.9),
    "XRP": CoinParams(0.048, 0.68, 2.0e8, 1.0, 600.0, 0.90),
    "ADA": CoinParams(0.050, 0.75, 8.0e7, 1.5, 400.0, 0.28),
    "DOGE": CoinParams(0.055, 0.62, 1.5e8, 1.5, 400.0, 0.0040),
    "TRX": CoinParams(0.045, 0.60, 5.0e7, 2.0, 300.0, 0.045),
    "AVAX": CoinParams(0.058, 0.72, 5.0e7, 2.0, 400.0, 4.5),
    "LINK": CoinParams(0.052, 0.72, 5.0e7, 2.0, 400.0, 0.50),
}
COIN_PARAMS: tuple[CoinParams, ...] = tuple(PARAMS[c.base] for c in COINS)
N_COINS = len(COINS)


def tick_decimals(low: float) -> int:
    """Price decimals: about 5 significant digits at the coin's real all-time low (more below it)."""
    return 5 - math.floor(math.log10(low))


def volume_quantum(high: float) -> float:
    """Base-volume lot: a power of two near one dollar's worth at the coin's high.

    Powers of two make every partial sum of lots exact in float64, so a 1h bar's
    volume equals the sum of its 5m volumes bit for bit, in any summation order.
    """
    return 2.0 ** round(math.log2(1.0 / high))


def day_rng(seed: int, owner: int, day_ordinal: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, owner, day_ordinal, stream])))


def cal_index(day: dt.date) -> int:
    if not CAL_START <= day <= CAL_END:
        raise ValueError(
            f"synthetic market: day {day} is outside the simulated calendar {CAL_START}..{CAL_END}"
        )
    return (day - CAL_START).days


# Hour-of-day profile of activity: busiest around 15:00 UTC (EU/US overlap), quietest at 03:00.
_hour = np.arange(HOURS) + 0.5
HOUR_ACTIVITY = 1.0 + 0.32 * np.cos(2 * np.pi * (_hour - 15.0) / HOURS)
BAR_VOL_SEASON = np.repeat(np.sqrt(HOUR_ACTIVITY), BARS_PER_HOUR)  # per 5m bar, 288
BAR_VOLUME_SEASON = np.repeat(HOUR_ACTIVITY, BARS_PER_HOUR)
