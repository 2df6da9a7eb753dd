"""The embedded default source: a deterministic crypto market simulator.

`MarketSimulator(seed, signal_strength).fetch(tables, start, end, until)` fills every
raw table of `quant_assets.schemas.RAW_TABLES` for the 10 coins of the universe.

Model, in layers (each module's docstring has the details):
- `sim_daily`: per (seed, coin), a daily log-price anchor over a fixed calendar,
  mean-reverting around a log-linear trend through the coin's real price range,
  with a volatility regime shared in part across coins (fat daily moves cluster).
- `sim_paths`: each day's 5m path is a bridge between two anchors: a common market
  factor seeded by (seed, day), Student-t(4) shocks seeded by (seed, coin, day),
  intraday stochastic volatility and an hour-of-day profile.
- `sim_signals`, `sim_events`: book imbalance, funding, on-chain flows, outages and
  news/social events, each from its own independent random stream.
- `sim_effects`: with signal_strength > 0 the published signals move the next hours'
  returns by stated amounts; `max_ic` reports the best IC that allows.
- `sim_bars`, `sim_tables`: OHLCV (1h the exact aggregate of 5m), frames, `until`.

Guarantees: a day's rows depend only on (seed, signal_strength, day) — a month built
alone equals the same month inside any longer window; the open of each bar is the
close of the bar before, across days and months; no rows before a coin's spot
listing (futures tables: before its perpetual); about 0.1% of hours have no bars
(spot and perpetual, 5m and 1h together, so 1h stays the aggregate of its 5m bars)
while `prices` and `orderbook_l2` keep their rows; nothing happened or published
after `until` is returned, and a bar only once it has closed (ts + timeframe <= until).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Sequence

import numpy as np
import polars as pl

from quant_assets.schemas import RAW_TABLES
from quant_assets.sources import sim_effects as fx
from quant_assets.sources import sim_params as p
from quant_assets.sources import sim_tables as tb
from quant_assets.sources.sim_bars import spot_and_perp
from quant_assets.sources.sim_daily import daily_state
from quant_assets.sources.sim_events import day_events
from quant_assets.sources.sim_paths import Draws, basis_path, draw, listed_mask, paths
from quant_assets.sources.sim_signals import Signals, signals
from quant_assets.universe import HORIZON_BARS

SEED_ENV, SIGNAL_ENV = "QUANT_ASSETS_SIM_SEED", "QUANT_ASSETS_SIM_SIGNAL"
DEFAULT_SEED, DEFAULT_SIGNAL = 7, 0.0
# max_ic is measured on this fixed sample (all 10 coins listed, perpetuals included).
IC_SAMPLE = (dt.date(2024, 1, 1), dt.date(2024, 2, 26))
FIRST_DAY = p.CAL_START + dt.timedelta(days=fx.SOURCE_DAYS_BEFORE + 1)
_EPOCH = dt.date(1970, 1, 1)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


class MarketSimulator:
    """Deterministic simulated market; implements `quant_assets.sources.base.MarketSource`."""

    name = "synthetic"

    def __init__(self, seed: int | None = None, signal_strength: float | None = None):
        try:
            self.seed = int(_env(SEED_ENV, str(DEFAULT_SEED))) if seed is None else int(seed)
            strength = (
                float(_env(SIGNAL_ENV, str(DEFAULT_SIGNAL))) if signal_strength is None else signal_strength
            )
            self.signal_strength = float(strength)
        except ValueError as exc:
            raise ValueError(
                f"synthetic market: {SEED_ENV} must be an integer and {SIGNAL_ENV} a number: {exc}"
            ) from None
        if self.seed < 0:
            raise ValueError(f"synthetic market: seed must be >= 0, got {self.seed}")
        if not math.isfinite(self.signal_strength) or self.signal_strength < 0:
            raise ValueError(
                f"synthetic market: signal_strength must be a finite number >= 0, got {strength}"
            )
        self._max_ic: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"MarketSimulator(seed={self.seed}, signal_strength={self.signal_strength})"

    def fetch(
        self, tables: Sequence[str], start: dt.date, end: dt.date, until: dt.datetime
    ) -> dict[str, pl.DataFrame]:
        """Rows of `tables` with start <= date < end that had happened and been published by `until`."""
        tables = list(tables)
        unknown = [t for t in tables if t not in RAW_TABLES]
        if unknown:
            raise ValueError(f"synthetic market: unknown tables {unknown}; known: {list(RAW_TABLES)}")
        start, end, until = _day(start), _day(end), _utc(until)
        until_ms = int(until.timestamp() * 1000)
        last = min(end, until.date() + dt.timedelta(days=1))
        first = max(start, FIRST_DAY)
        out = {t: RAW_TABLES[t].empty() for t in tables}
        if "entities" in tables:
            out["entities"] = tb.entities(_ms(start), _ms(end), until_ms)
        data_tables = [t for t in tables if t != "entities"]
        if first >= last or not data_tables:
            return {t: RAW_TABLES[t].conform(df) for t, df in out.items()}
        p.cal_index(last - dt.timedelta(days=1))  # errors out past the simulated calendar
        want_events = bool({"events", "event_links"} & set(tables))
        sim = self._simulate(np.arange(p.cal_index(first), p.cal_index(last)), until, want_events)[0]
        builders = {"market_bars": tb.market_bars, "prices": tb.prices, "orderbook_l2": tb.orderbook,
                    "funding_rates": tb.funding, "onchain_signals": tb.onchain,
                    "derivatives_metrics": tb.derivatives}  # fmt: skip
        for t in data_tables:
            if t in builders:
                out[t] = builders[t](sim)
        if want_events:
            ev, links = tb.events(sim)
            if ev.height:
                out["events"], out["event_links"] = ev, links
        return {t: RAW_TABLES[t].conform(out[t]) for t in tables}

    def max_ic(self, horizon: str = "1h") -> float:
        """Best IC a model could reach at `horizon`: 0 when signal_strength is 0.

        Measured by simulation on a fixed sample: `predictable_ic` over `IC_SAMPLE`
        (eight weeks of early 2024, all coins and perpetuals listed), cached per horizon.
        It is linear in signal_strength for small values (about 0.115 * strength at 1h).
        It leaves out the slow pull of prices back towards each coin's trend path, which
        keeps them in the coin's real range and is worth an IC below 0.012 at 1h at any
        strength (`sim_daily.TREND_PULL_IC_1H`).
        """
        if horizon not in self._max_ic:
            self._max_ic[horizon] = self.predictable_ic(*IC_SAMPLE, horizon=horizon)
        return self._max_ic[horizon]

    def predictable_ic(
        self, start: dt.date, end: dt.date, horizon: str = "1h", *, realised: bool = False
    ) -> float:
        """IC of the exactly predictable part of returns over the days [start, end).

        The forecast at each 5m decision time is the drift still to come over `horizon`
        from every signal published by then (`sim_effects.oracle_forecast`): no model
        reading the tables can expect a higher IC. By default the value is its expected
        correlation with the forward log return, pooled over coins and decision times
        (`sim_effects.expected_ic`: exact drifts, expected martingale variance, so it
        does not depend on one draw of the noise). With `realised=True` it is instead
        the Spearman IC against this sample's realised returns, which scatters around
        the expected value by about +-0.01 at 1h over eight weeks.
        """
        if horizon not in HORIZON_BARS:
            raise ValueError(f"synthetic market: unknown horizon {horizon!r}; known: {list(HORIZON_BARS)}")
        if self.signal_strength == 0:
            return 0.0
        days = np.arange(p.cal_index(max(start, FIRST_DAY)), p.cal_index(end))
        far = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
        sim, amp, impact = self._simulate(days, far, want_events=False, bars=False)
        h = HORIZON_BARS[horizon]
        forecast = fx.oracle_forecast(amp, h)
        if realised:
            return fx.realised_rank_ic(forecast, sim.paths.log_price, sim.spot, h)
        return fx.expected_ic(forecast, impact, sim.paths.bar_sigma, sim.spot, h)

    def _simulate(
        self, cal_days: np.ndarray, until: dt.datetime, want_events: bool, bars: bool = True
    ) -> tuple[tb.Sim, np.ndarray | None, np.ndarray | None]:
        """Simulate the target days; with signals on, also the two days whose signals reach into them."""
        daily = daily_state(self.seed)
        on = self.signal_strength > 0
        n_extra = fx.SOURCE_DAYS_BEFORE if on else 0
        src = np.arange(cal_days[0] - n_extra, cal_days[-1] + 1)
        dr = draw(self.seed, src)
        basis = basis_path(daily, src, dr)
        sig = signals(daily, src, dr, basis)
        spot, perp = listed_mask(src, perp=False), listed_mask(src, perp=True)
        events = [day_events(self.seed, daily, int(d)) for d in src] if (want_events or on) else []
        amp, impact = None, None
        if on:
            amp = fx.amplitudes(daily, src, sig, events, spot, perp, self.signal_strength)
            impact = fx.day_impacts(fx.source_impacts(amp))
        k = slice(n_extra, None)
        dr_t, sig_t = _days(dr, k), _days(sig, k)
        path = paths(daily, cal_days, dr_t, basis[:, k], impact)
        sim = tb.Sim(
            cal_days=cal_days,
            day_ms=(p.CAL_START.toordinal() - _EPOCH.toordinal() + cal_days).astype(np.int64) * p.DAY_MS,
            daily=daily, draws=dr_t, paths=path, signals=sig_t,
            bars=spot_and_perp(daily, cal_days, dr_t, path) if bars else {},
            spot=spot[:, k], perp=perp[:, k], events=events[n_extra:] if want_events else [],
            until_ms=int(until.timestamp() * 1000), until=until,
        )  # fmt: skip
        return sim, amp, impact


def _days(obj: Draws | Signals, k: slice) -> Draws | Signals:
    """The same draws/signals restricted to days `k` (the day axis is 1, or 0 for market draws)."""
    fields = {}
    for name, v in vars(obj).items():
        fields[name] = v[k] if name.startswith("market_") else v[:, k]
    return type(obj)(**fields)


def _day(d: dt.date) -> dt.date:
    if not isinstance(d, dt.date):
        raise TypeError(f"synthetic market: start and end must be dates, got {type(d).__name__}")
    return d.date() if isinstance(d, dt.datetime) else d


def _utc(t: dt.datetime) -> dt.datetime:
    if not isinstance(t, dt.datetime):
        raise TypeError(f"synthetic market: until must be a datetime, got {type(t).__name__}")
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _ms(day: dt.date) -> int:
    return (day.toordinal() - _EPOCH.toordinal()) * p.DAY_MS
