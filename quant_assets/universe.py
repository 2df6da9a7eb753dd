"""The trading universe: symbols, listing dates, timeframes, horizons.

Every other module imports these constants; none retypes them. Dates are the
real Binance listing dates (spot) and first day of the USD-M perpetual, so a
backfill from 2018 has no rows before a coin existed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

HISTORY_START = dt.date(2018, 1, 1)
QUOTE = "USDT"


@dataclass(frozen=True)
class Coin:
    base: str
    spot_listed: dt.date  # first day of the spot USDT pair on Binance
    perp_listed: dt.date  # first day of the USD-M perpetual (futures tables start here)
    price_range: tuple[float, float]  # historical low/high of the USDT pair, for sanity checks

    @property
    def symbol(self) -> str:
        return f"{self.base}{QUOTE}"

    def first_day(self, start: dt.date = HISTORY_START) -> dt.date:
        """First day this coin can have spot rows on, given the history start."""
        return max(self.spot_listed, start)


COINS: tuple[Coin, ...] = (
    Coin("BTC", dt.date(2017, 8, 17), dt.date(2019, 9, 8), (3_100.0, 126_300.0)),
    Coin("ETH", dt.date(2017, 8, 17), dt.date(2019, 11, 27), (80.0, 4_960.0)),
    Coin("SOL", dt.date(2020, 8, 11), dt.date(2020, 9, 14), (0.9, 296.0)),
    Coin("BNB", dt.date(2017, 11, 6), dt.date(2020, 2, 10), (4.0, 1_370.0)),
    Coin("XRP", dt.date(2018, 5, 4), dt.date(2020, 1, 6), (0.10, 3.70)),
    Coin("ADA", dt.date(2018, 4, 17), dt.date(2020, 1, 31), (0.017, 3.10)),
    Coin("DOGE", dt.date(2019, 7, 5), dt.date(2020, 7, 10), (0.0011, 0.74)),
    Coin("TRX", dt.date(2018, 6, 11), dt.date(2020, 1, 15), (0.008, 0.45)),
    Coin("AVAX", dt.date(2020, 9, 22), dt.date(2020, 9, 23), (2.7, 147.0)),
    Coin("LINK", dt.date(2019, 1, 16), dt.date(2020, 1, 17), (0.14, 53.0)),
)
COIN_BY_SYMBOL: dict[str, Coin] = {c.symbol: c for c in COINS}
SYMBOLS: tuple[str, ...] = tuple(c.symbol for c in COINS)

# Bar lengths. 5m is the clock every feature and label row sits on.
TIMEFRAMES: dict[str, dt.timedelta] = {"5m": dt.timedelta(minutes=5), "1h": dt.timedelta(hours=1)}
CLOCK = "5m"
BARS_PER_DAY = 288  # 5m bars
# Prediction horizons; labels and backtests use the same names.
HORIZONS: dict[str, dt.timedelta] = {"1h": dt.timedelta(hours=1), "4h": dt.timedelta(hours=4)}
HORIZON_BARS: dict[str, int] = {h: int(d / TIMEFRAMES[CLOCK]) for h, d in HORIZONS.items()}

FUNDING_INTERVAL = dt.timedelta(hours=8)


def coin(symbol: str) -> Coin:
    try:
        return COIN_BY_SYMBOL[symbol]
    except KeyError:
        raise KeyError(f"unknown symbol {symbol!r}; the universe is {', '.join(SYMBOLS)}") from None


def listed_symbols(day: dt.date, *, perp: bool = False) -> list[str]:
    """Symbols trading on `day` (spot, or the perpetual when perp=True)."""
    return [c.symbol for c in COINS if (c.perp_listed if perp else c.spot_listed) <= day]
