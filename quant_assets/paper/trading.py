"""One day of paper trading for one book (a coin and horizon traded by its champion), state carried in.

The rules are the backtest's, not a copy of them (`quant_assets.backtest`):
- which bars signal, and the level they ask for: `backtest.positions.signal_levels` on the day's
  bars (threshold `BacktestConfig.threshold` on the score, `min_confidence` on the confidence);
- a signal's level is held for `holding_bars` bars unless a newer signal replaces it
  (`target_levels`), in notional units fixed at entry (`held_units`);
- each trade pays `CostModel.trade_cost` on its notional against the bar's depth (the fallback depth
  without a book), perpetual funding is `CostModel.funding_payment` of the position held at each
  settlement, booked on the bar that opens at it (`backtest.funding`'s placement rule);
- pnl[t] = units[t-1] * (close[t] - close[t-1]) - cost[t] + funding[t] (USD).

The backtest starts each symbol flat; here the day starts from `BookState`, the previous day's last
bar (its held level, the bars since the signal that set it, units, close and open time), so trading
day D then D+1 gives exactly the backtest of the two days together (tested). The state is all that
is carried: the caller stores it (the lake) and passes it back; nothing lives in memory between days.

Time rule: the score of bar t is known at its close (t + 5m) and traded at that close (order and fill
at `close[t]`, costs on top): the bar's own return is never earned by its own signal. Nothing after
the day's last bar is read; a funding settlement at or after the last bar's close is booked the next day.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.panel import load_panel
from quant_assets.backtest.positions import signal_levels
from quant_assets.schemas import TS
from quant_assets.universe import CLOCK, TIMEFRAMES

BAR = TIMEFRAMES[CLOCK]


@dataclass(frozen=True)
class BookState:
    """A book after its last traded bar (all zeros and no bar: flat, never traded)."""

    level: float = 0.0  # target level held (sign sizing: -1, 0, 1; score sizing: the weight)
    age: int = 0  # bars since the signal that set `level` (0: set on the last bar)
    units: float = 0.0  # coin units held
    last_close: float = math.nan  # close of the last bar (the next bar's price move starts here)
    last_ts: dt.datetime | None = None  # open time of the last bar traded
    cum_pnl: float = 0.0  # USD since the book's first day
    entry_score: float = math.nan  # score of the signal that opened the held position

    @property
    def flat(self) -> bool:
        return self.units == 0.0 and self.level == 0.0


FLAT = BookState()

ORDER_SCHEMA = {"ts": TS, "decided_at": TS, "side": pl.String, "qty": pl.Float64, "target_units": pl.Float64,
                "target_level": pl.Float64, "score": pl.Float64, "confidence": pl.Float64, "reason": pl.String}  # fmt: skip
FILL_SCHEMA = {"ts": TS, "filled_at": TS, "price": pl.Float64, "qty": pl.Float64, "notional": pl.Float64,
               "cost_rate": pl.Float64, "cost": pl.Float64, "depth": pl.Float64, "position": pl.Float64}  # fmt: skip
MARK_SCHEMA = {"ts": TS, "close": pl.Float64, "score": pl.Float64, "confidence": pl.Float64, "level": pl.Float64,
               "units": pl.Float64, "entry_score": pl.Float64, "pnl": pl.Float64, "cost": pl.Float64,
               "funding": pl.Float64}  # fmt: skip


@dataclass(frozen=True)
class BookDay:
    orders: pl.DataFrame  # ORDER_SCHEMA: one per change of the held level
    fills: pl.DataFrame  # FILL_SCHEMA: each order filled at its bar's close, with its cost
    marks: pl.DataFrame  # MARK_SCHEMA: every bar's score, held position and USD pnl
    pnl: float  # USD after cost and funding
    gross_pnl: float  # price moves only
    cost: float
    funding: float
    state: BookState  # after the day's last bar: the next day's start

    def summary(self) -> dict:
        return {
            "pnl": self.pnl,
            "gross_pnl": self.gross_pnl,
            "cost": self.cost,
            "funding": self.funding,
            "n_orders": self.orders.height,
            "n_bars": self.marks.height,
            "cum_pnl": self.state.cum_pnl,
            "position_end": self.state.units,
            "level_end": self.state.level,
        }


def _reason(prev: float, new: float, signalled: bool) -> str:
    if new == 0.0:
        return "exit: holding period over" if not signalled else "exit"
    if prev == 0.0:
        return "entry"
    return "flip" if np.sign(prev) != np.sign(new) else "resize"


def trade_book_day(
    bars: pl.DataFrame,
    cfg: BacktestConfig,
    state: BookState = FLAT,
    *,
    funding: pl.DataFrame | None = None,
) -> BookDay:
    """Trade one book's bars of one day from `state`; see the module docstring.

    `bars`: ts, close, score (NaN/null = no signal), optional confidence and `cfg.depth_column`; one
    symbol, bars strictly after `state.last_ts`. `funding`: that symbol's settlement events (ts,
    funding_rate) for perpetuals; only those falling in this day's booking span are charged.
    """
    if bars.height == 0:
        return BookDay(pl.DataFrame(schema=ORDER_SCHEMA), pl.DataFrame(schema=FILL_SCHEMA),
                       pl.DataFrame(schema=MARK_SCHEMA), 0.0, 0.0, 0.0, 0.0, state)  # fmt: skip
    frame = bars.with_columns(symbol=pl.lit("book")) if "symbol" not in bars.columns else bars
    if frame["symbol"].n_unique() != 1:
        raise ValueError(f"paper trading: one book is one symbol, got {frame['symbol'].unique().to_list()}")
    panel = load_panel(frame, cfg.depth_column)
    ts_ms = panel.ts
    if state.last_ts is not None:
        last_ms = int(state.last_ts.timestamp() * 1000)
        if ts_ms[0] <= last_ms:
            raise ValueError(
                f"paper trading {panel.symbols[0]}: bar {panel.frame['ts'][0]} is not after the carried state's "
                f"last bar {state.last_ts} (a day is traded once, from the day before's state)"
            )
    signal, level, scale = signal_levels(panel, cfg)
    close, depth_col = panel.close, panel.depth
    n = panel.n_rows
    bar_ms = int(BAR.total_seconds() * 1000)

    events_ts = np.empty(0, dtype=np.int64)
    events_rate = np.empty(0)
    if funding is not None and cfg.instrument == "perp" and funding.height:
        ev = funding.sort("ts")
        events_ts = ev["ts"].dt.cast_time_unit("ms").to_physical().to_numpy()
        events_rate = ev["funding_rate"].cast(pl.Float64).to_numpy()

    lvl_prev, age, units_prev, close_prev = state.level, state.age, state.units, state.last_close
    prev_ms = None if state.last_ts is None else int(state.last_ts.timestamp() * 1000)
    entry_score = state.entry_score
    levels, units_out, pnl, cost_out, fund_out, entry_out = (np.zeros(n) for _ in range(6))
    orders, fills = [], []
    for i in range(n):  # a day is ~288 bars: a loop a reader can follow beats a vectorised carry-in
        price_move = units_prev * (close[i] - close_prev) if prev_ms is not None else 0.0
        fund = 0.0
        if prev_ms is not None and len(events_ts):
            # a settlement s is paid by the position decided at the last close <= s, on the next bar
            k = (events_ts >= prev_ms + bar_ms) & (events_ts < ts_ms[i] + bar_ms)
            if k.any():
                fund = float(cfg.costs.funding_payment(units_prev * close_prev, events_rate[k]).sum())
        if signal[i]:
            lvl, age = float(level[i]), 0
        else:
            age += 1
            lvl = lvl_prev if (cfg.holding_bars is None or age < cfg.holding_bars) else 0.0
        units, cost = units_prev, 0.0
        if lvl != lvl_prev:
            units = lvl * scale if cfg.units == "coin" else lvl * scale * cfg.capital / close[i]
            qty = units - units_prev
            d = depth_col[i] if depth_col is not None else math.nan
            notional = qty * close[i]
            rate = float(cfg.costs.one_way_cost(notional, d))
            cost = abs(notional) * rate
            t = panel.frame["ts"][i]
            conf = float(panel.confidence[i]) if panel.confidence is not None else math.nan
            orders.append({"ts": t, "decided_at": t + BAR, "side": "buy" if qty > 0 else "sell", "qty": qty,
                           "target_units": units, "target_level": lvl, "score": float(panel.score[i]),
                           "confidence": conf, "reason": _reason(lvl_prev, lvl, bool(signal[i]))})  # fmt: skip
            fills.append({"ts": t, "filled_at": t + BAR, "price": float(close[i]), "qty": qty,
                          "notional": notional, "cost_rate": rate, "cost": cost,
                          "depth": float(d) if np.isfinite(d) and d > 0 else cfg.costs.fallback_depth_notional,
                          "position": units})  # fmt: skip
            entry_score = float(panel.score[i]) if lvl != 0.0 else math.nan
        levels[i], units_out[i], cost_out[i], fund_out[i], entry_out[i] = lvl, units, cost, fund, entry_score
        pnl[i] = price_move - cost + fund
        lvl_prev, units_prev, close_prev, prev_ms = lvl, units, close[i], ts_ms[i]

    marks = pl.DataFrame(
        {
            "ts": panel.frame["ts"],
            "close": close,
            "score": panel.score,
            "confidence": panel.confidence if panel.confidence is not None else np.full(n, np.nan),
            "level": levels,
            "units": units_out,
            "entry_score": entry_out,
            "pnl": pnl,
            "cost": cost_out,
            "funding": fund_out,
        },
        schema=MARK_SCHEMA,
    ).with_columns(pl.col("score", "confidence", "entry_score").fill_nan(None))  # missing, not a number
    total, cost_total, fund_total = float(pnl.sum()), float(cost_out.sum()), float(fund_out.sum())
    new_state = BookState(
        level=lvl_prev,
        age=age,
        units=units_prev,
        last_close=float(close[-1]),
        last_ts=panel.frame["ts"][-1],
        cum_pnl=state.cum_pnl + total,
        entry_score=entry_score,
    )
    return BookDay(
        orders=pl.DataFrame(orders, schema=ORDER_SCHEMA),
        fills=pl.DataFrame(fills, schema=FILL_SCHEMA),
        marks=marks,
        pnl=total,
        gross_pnl=total + cost_total - fund_total,
        cost=cost_total,
        funding=fund_total,
        state=new_state,
    )


def stop_signals(bars: pl.DataFrame) -> pl.DataFrame:
    """The bars with every score removed: a book whose champion may not trade (stale, none) takes no
    new position, and the one it holds runs out by the holding rule as any other would."""
    return bars.with_columns(pl.lit(None, dtype=pl.Float64).alias("score"))
