"""The embedded default source: a deterministic crypto market simulator.

`MarketSimulator(seed, signal_strength).fetch(tables, start, end, until)` fills every
raw table of `quant_assets.schemas.RAW_TABLES` for the 10 coins of the universe.

Model, in layers (each module's docstring has the details):
- `sim_daily`: per (seed, coin), a daily log-price anchor over a fixed calendar: a
  random walk from about the coin's real price at listing, with drift -vol^2 / 2 so
  the simple price is a martingale, and a volatility regime shared in part across
  coins (fat daily moves cluster). Prices are not held in the coin's real range.
- `sim_paths`: each day's 5m path is a martingale bridge between two anchors: a common
  market factor seeded by (seed, day), fat-tailed shocks seeded by (seed, coin, day),
  intraday stochastic volatility and an hour-of-day profile.
- `sim_signals`, `sim_events`: book imbalance, funding, on-chain flows, outages and
  news/social events, each from its own independent random stream.
- `sim_effects`: with signal_strength > 0 the published signals move the next hours'
  returns by stated amounts (all five effects, or the subset named by `effects` /
  QUANT_ASSETS_SIM_EFFECTS). Two ceilings: `max_ic` is the best IC with full knowledge
  of every signal by the decision time, `reachable_ic` the best IC from what the feature
  matrix reads (rows published by its row time); `forecast_ic` scores any forecast
  against the same known drifts.
- `sim_bars`, `sim_tables`: OHLCV (1h the exact aggregate of 5m), frames, `until`.

The null: at signal_strength = 0 the spot price is a martingale with respect to
everything the tables publish, E[P(t + h) / P(t) | published by t] = 1 up to the
rounding to the tick (at most 0.05 bp): no feature, price level or position in the
coin's range predicts simple returns, and always-long earns zero in expectation. (Log
returns drift down by half their variance; labels net a cost that the published order
book states, and the perpetual's basis mean-reverts, so perpetual returns are not a
martingale.)

Guarantees: a day's rows depend only on (seed, signal_strength, effects, day) — a month built
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
from quant_assets.universe import HORIZON_BARS, SYMBOLS

SEED_ENV, SIGNAL_ENV, EFFECTS_ENV = (
    "QUANT_ASSETS_SIM_SEED",
    "QUANT_ASSETS_SIM_SIGNAL",
    "QUANT_ASSETS_SIM_EFFECTS",
)
DEFAULT_SEED, DEFAULT_SIGNAL = 7, 0.0
# max_ic is measured on this fixed sample (all 10 coins listed, perpetuals included).
IC_SAMPLE = (dt.date(2024, 1, 1), dt.date(2024, 2, 26))
FIRST_DAY = p.CAL_START + dt.timedelta(days=fx.SOURCE_DAYS_BEFORE + 1)
_EPOCH = dt.date(1970, 1, 1)
_FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
ALL_EFFECTS = tuple(e.name for e in fx.EFFECTS)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


class MarketSimulator:
    """Deterministic simulated market; implements `quant_assets.sources.base.MarketSource`."""

    name = "synthetic"

    def __init__(
        self,
        seed: int | None = None,
        signal_strength: float | None = None,
        effects: Sequence[str] | None = None,
    ):
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
        if effects is None:  # env: comma-separated effect names; unset or empty = all
            effects = [e for e in _env(EFFECTS_ENV, ",".join(ALL_EFFECTS)).split(",") if e.strip()]
        effects = [e.strip() for e in effects]
        unknown = sorted(set(effects) - set(ALL_EFFECTS))
        if unknown or not effects:
            raise ValueError(
                f"synthetic market: effects (or {EFFECTS_ENV}) must name some of {list(ALL_EFFECTS)}, "
                f"got {effects}"
            )
        self.effects = tuple(e for e in ALL_EFFECTS if e in effects)  # canonical order
        self._ceiling: dict[tuple[str, int], float] = {}

    def __repr__(self) -> str:
        planted = "" if self.effects == ALL_EFFECTS else f", effects={list(self.effects)}"
        return f"MarketSimulator(seed={self.seed}, signal_strength={self.signal_strength}{planted})"

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
            out["entities"] = tb.entities(start, end, until_ms)
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
        """Best IC with full knowledge at `horizon`: 0 when signal_strength is 0.

        Measured by simulation on a fixed sample: `predictable_ic` over `IC_SAMPLE`
        (eight weeks of early 2024, all coins and perpetuals listed), cached per horizon.
        It is linear in signal_strength for small values (about 0.115 * strength at 1h with
        every effect planted). Nothing else is predictable: without the effects the spot
        price is a martingale (`sim_daily`, `sim_paths`).
        """
        return self._cached_ic(horizon, lag_bars=0)

    def reachable_ic(self, horizon: str = "1h") -> float:
        """Best IC reachable from the published feature columns at `horizon` (<= max_ic).

        The feature matrix's row t is a decision at t + 5m that reads rows published by t
        (schemas' time rule), so this is `max_ic` with every signal seen one 5m bar later:
        `predictable_ic(..., lag_bars=1)`. Every planted effect's signal is a function of
        published columns (the table in `sim_effects`), so this forecast is the conditional
        expectation of the return given what the tables publish by t: nothing computed from
        them can expect more. About 0.113 * strength at 1h with every effect planted.
        """
        return self._cached_ic(horizon, lag_bars=1)

    def ceilings(self, horizon: str = "1h") -> dict[str, float]:
        """Both ceilings at `horizon`: {"full": max_ic, "reachable": reachable_ic}."""
        return {"full": self.max_ic(horizon), "reachable": self.reachable_ic(horizon)}

    def _cached_ic(self, horizon: str, lag_bars: int) -> float:
        if (horizon, lag_bars) not in self._ceiling:
            ic = self.predictable_ic(*IC_SAMPLE, horizon=horizon, lag_bars=lag_bars)
            self._ceiling[(horizon, lag_bars)] = ic
        return self._ceiling[(horizon, lag_bars)]

    def predictable_ic(
        self,
        start: dt.date,
        end: dt.date,
        horizon: str = "1h",
        *,
        realised: bool = False,
        lag_bars: int = 0,
    ) -> float:
        """IC of the exactly predictable part of returns over the days [start, end).

        The forecast at each 5m decision time is the drift still to come over `horizon`
        from every signal published by then (`sim_effects.oracle_forecast`): no model
        reading the tables can expect a higher IC (with `lag_bars`, signals are seen that
        many 5m bars late; 1 is the feature matrix's view). By default the value is its expected
        correlation with the forward log return, pooled over coins and decision times
        (`sim_effects.expected_ic`: exact drifts, expected martingale variance, so it
        does not depend on one draw of the noise). With `realised=True` it is instead
        the Spearman IC against this sample's realised returns, which scatters around
        the expected value by about +-0.01 at 1h over eight weeks.
        """
        h = _horizon_bars(horizon)
        if self.signal_strength == 0:
            return 0.0
        days = np.arange(p.cal_index(max(start, FIRST_DAY)), p.cal_index(end))
        sim, amp, impact = self._simulate(days, _FAR, want_events=False, bars=False)
        forecast = fx.oracle_forecast(amp, h, lag_bars)
        if realised:
            return fx.realised_rank_ic(forecast, sim.paths.log_price, sim.spot, h)
        return fx.expected_ic(forecast, impact, sim.paths.bar_sigma, sim.spot, h)

    def forecast_ic(self, forecast: pl.DataFrame, horizon: str = "1h", column: str = "forecast") -> float:
        """Expected IC of any forecast on the feature clock against this market's known drifts.

        `forecast` has `symbol`, `ts` (a feature-matrix row time t: the decision is at t + 5m
        and the return runs from the close of bar t over `horizon`) and `column`; rows missing
        or null are left out. The value is `sim_effects.expected_ic`: the population
        correlation with the forward log return given the exact signal drifts and the
        martingale variance, so two forecasts compare without the +-0.01 noise of one
        realisation of returns. Comparable with `max_ic` / `reachable_ic` computed on the
        same days (`predictable_ic`). 0 when signal_strength is 0 (nothing is predictable).
        """
        h = _horizon_bars(horizon)
        missing = [c for c in ("symbol", "ts", column) if c not in forecast.columns]
        if missing:
            raise ValueError(f"forecast_ic: forecast frame lacks columns {missing}; got {forecast.columns}")
        if self.signal_strength == 0 or forecast.height == 0:
            return 0.0
        coin = {s: i for i, s in enumerate(SYMBOLS)}
        unknown = sorted(set(forecast["symbol"].unique().to_list()) - set(coin))
        if unknown:
            raise ValueError(f"forecast_ic: symbols {unknown} are not simulated; known: {list(SYMBOLS)}")
        decision_ms = forecast["ts"].cast(pl.Datetime("ms", "UTC")).dt.epoch("ms").to_numpy() + p.BAR_MS
        first = max(_from_ms(int(decision_ms.min())), FIRST_DAY)
        last = _from_ms(int(decision_ms.max())) + dt.timedelta(days=2)  # room for the horizon
        days = np.arange(p.cal_index(first), p.cal_index(last))
        sim, amp, impact = self._simulate(days, _FAR, want_events=False, bars=False)
        grid = np.full((p.N_COINS, len(days) * p.BARS_PER_DAY), np.nan)
        bar = (decision_ms - int(sim.day_ms[0])) // p.BAR_MS
        c = forecast["symbol"].replace_strict(coin, return_dtype=pl.Int64).to_numpy()
        value = forecast[column].cast(pl.Float64).fill_nan(None).to_numpy()
        ok = (bar >= 0) & (bar < grid.shape[1])
        grid[c[ok], bar[ok]] = value[ok]
        return fx.expected_ic(grid, impact, sim.paths.bar_sigma, sim.spot, h)

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
            amp = fx.amplitudes(
                daily, src, sig, events, spot, perp, self.signal_strength, frozenset(self.effects)
            )
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


def _horizon_bars(horizon: str) -> int:
    if horizon not in HORIZON_BARS:
        raise ValueError(f"synthetic market: unknown horizon {horizon!r}; known: {list(HORIZON_BARS)}")
    return HORIZON_BARS[horizon]


def _from_ms(ms: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=ms // p.DAY_MS)


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
