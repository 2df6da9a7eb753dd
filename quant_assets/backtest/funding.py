"""Funding settlements: the events at which a perpetual position pays or receives funding.

A settlement is one row `(symbol, ts, funding_rate)` at the funding time: the rows of the
`funding_rates` table (Binance USD-M: 00/08/16 UTC, ts rounded to the minute). It is not
`feature_matrix_main`'s `funding_rate` column, which carries the last settled rate forward
onto every 5m row as a feature: charging that would pay funding on every bar, 96 times per
8 hours. `settlement_events` therefore refuses a frame whose settlements of one symbol are
less than `MIN_SETTLEMENT_SPACING` apart (Binance's shortest interval is 1 h).

Placement on one symbol's bars (rows ts[a..b), bar i spanning [ts[i], ts[i] + 5m), its
position decided at its close): the position held at settlement time s is the one decided
at the last close at or before s, `units[j]` with j the last row where `ts[j] + 5m <= s`.
Its payment `CostModel.funding_payment(units[j] * close[j], rate)` is booked on row j + 1,
the bar that opens at s (or the first bar after a gap). A settlement before the first
close (nothing held yet) or at or after the last close (outside the period: the last
position is marked, not closed) is not placed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_assets.backtest.panel import Panel
from quant_assets.schemas import TS

SETTLEMENT_COLUMNS = ("symbol", "ts", "funding_rate")
MIN_SETTLEMENT_SPACING = dt.timedelta(hours=1)
_NOT_A_FEATURE = (
    "settlement rows (the funding_rates table, one row per funding time), not a feature column "
    "carried forward onto every bar"
)


def _fail(what: str, frame: pl.DataFrame, i: int) -> ValueError:
    row = frame.row(i, named=True)
    return ValueError(f"funding settlements: {what} at row {i} (symbol {row['symbol']!r}, ts {row['ts']})")


def settlement_events(funding: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Check settlement rows and return them as (symbol, ts, funding_rate) sorted by (symbol, ts).

    Other columns (mark_price, available_at, date) are dropped. Errors name the row.
    """
    if isinstance(funding, pl.LazyFrame):
        funding = funding.collect()
    missing = [c for c in SETTLEMENT_COLUMNS if c not in funding.columns]
    if missing:
        raise ValueError(f"funding settlements: missing columns {missing}; got {funding.columns}")
    ts_dtype = funding.schema["ts"]
    if not isinstance(ts_dtype, pl.Datetime) or ts_dtype.time_zone is None:
        raise ValueError(f"funding settlements: ts must be a UTC Datetime ({TS}), got {ts_dtype}")
    if not funding.schema["funding_rate"].is_numeric():
        raise ValueError(
            f"funding settlements: funding_rate must be numeric, got {funding.schema['funding_rate']}"
        )
    events = (
        funding.select(SETTLEMENT_COLUMNS)
        .with_columns(
            pl.col("ts").dt.convert_time_zone("UTC").cast(TS), pl.col("funding_rate").cast(pl.Float64)
        )
        .sort("symbol", "ts")
    )
    for col in ("symbol", "ts"):
        if events.get_column(col).null_count():
            i = int(events.get_column(col).is_null().arg_true()[0])
            raise _fail(f"null {col!r}", events, i)
    same = events.get_column("symbol") == events.get_column("symbol").shift(1)
    gap = events.get_column("ts").diff()
    dup = (same & (gap == dt.timedelta(0))).fill_null(False)
    if dup.any():
        raise _fail("duplicate settlement", events, int(dup.arg_true()[0]))
    close = (same & (gap < MIN_SETTLEMENT_SPACING)).fill_null(False)
    if close.any():
        i = int(close.arg_true()[0])
        raise _fail(
            f"settlement {gap[i]} after the previous one ({events['ts'][i - 1]}), under "
            f"{MIN_SETTLEMENT_SPACING}: funding must be {_NOT_A_FEATURE}",
            events,
            i,
        )
    rate = events.get_column("funding_rate")
    bad = (rate.is_null() | ~rate.is_finite()).fill_null(True)
    if bad.any():
        raise _fail(
            f"funding_rate {rate[int(bad.arg_true()[0])]} is not a finite rate",
            events,
            int(bad.arg_true()[0]),
        )
    return events


@dataclass(frozen=True)
class PlacedFunding:
    rows: np.ndarray  # panel row each payment is booked on
    held_rows: np.ndarray  # panel row whose units and close are the position held at the settlement
    rates: np.ndarray
    per_symbol: np.ndarray  # settlements placed per panel symbol block

    @classmethod
    def empty(cls, n_symbols: int) -> PlacedFunding:
        none = np.empty(0, dtype=np.int64)
        return cls(none, none, np.empty(0), np.zeros(n_symbols, dtype=np.int64))


def place_settlements(panel: Panel, events: pl.DataFrame, bar_ms: int) -> PlacedFunding:
    """Rows of `panel` that book each settlement of `events` (from `settlement_events`); see the docstring.

    Symbols without bars in the panel are ignored: a funding table covers every coin.
    """
    runs = events.get_column("symbol").rle()
    names = runs.struct.field("value").to_list()
    ends = np.cumsum(runs.struct.field("len").to_numpy())
    blocks = {
        n: (int(e - k), int(e))
        for n, k, e in zip(names, runs.struct.field("len").to_numpy(), ends, strict=True)
    }
    ev_ts = events.get_column("ts").to_physical().to_numpy()
    ev_rate = events.get_column("funding_rate").to_numpy()
    bounds = np.append(panel.starts, panel.n_rows)
    rows, held, rates = [], [], []
    per_symbol = np.zeros(len(panel.starts), dtype=np.int64)
    for i, name in enumerate(panel.symbols):  # one searchsorted per symbol, not a loop over bars
        if name not in blocks:
            continue
        lo, hi = blocks[name]
        a, b = bounds[i], bounds[i + 1]
        j = a + np.searchsorted(panel.ts[a:b], ev_ts[lo:hi] - bar_ms, side="right") - 1
        inside = (j >= a) & (j + 1 < b)
        per_symbol[i] = int(inside.sum())
        held.append(j[inside])
        rows.append(j[inside] + 1)
        rates.append(ev_rate[lo:hi][inside])
    if not rows:
        return PlacedFunding.empty(len(panel.starts))
    return PlacedFunding(
        np.concatenate(rows).astype(np.int64),
        np.concatenate(held).astype(np.int64),
        np.concatenate(rates),
        per_symbol,
    )
