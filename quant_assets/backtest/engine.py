"""Vectorised after-cost backtest: predictions -> positions -> trades -> costs -> equity.

Accounting per symbol, in USD, on bar t (units q held after each bar, close p):
    pnl[t] = q[t-1] * (p[t] - p[t-1])                       price move of the held position
           - |q[t] - q[t-1]| * p[t] * one_way_cost(...)     trade at bar t's close (CostModel:
                                                             taker fee + slippage + sqrt impact
                                                             of the trade's notional over depth)
           - q[t-1] * p[t-1] * funding_rate                  when a settlement falls at bar t's open
                                                             (or in a gap just before it; perp only):
                                                             the position held then pays (long,
                                                             positive rate) or receives funding
Each symbol starts with `capital` USD; the portfolio's equity is the sum. The last
position is marked to market, not closed (as vectorbt's `total_return`). The cost
model is `quant_assets.backtest.costs.CostModel`, the one labels' `est_cost` uses.

Inputs are named, never guessed: impact reads the depth column `BacktestConfig.depth_column`
names (`cost_depth_notional` in `feature_matrix_main`), funding comes only from the settlement
events passed as `funding=` (`quant_assets.backtest.funding`; the frame's own columns are
never read for it). Whatever the run had to assume instead (no depth column, trades at bars
without a book, no funding events for a perpetual) is logged as a warning and listed in
`BacktestResult.assumptions` and the `backtest_runs` row.

Outputs: an equity curve by time, a trades table (one row per order), per-symbol
and pooled metrics (`quant_assets.validation.metrics`), and a `backtest_runs` row.
No Python loop runs over bars; symbols are separated by block offsets.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.funding import PlacedFunding, place_settlements, settlement_events
from quant_assets.backtest.panel import Panel, load_panel
from quant_assets.backtest.positions import held_units, level_changes, target_levels
from quant_assets.schemas import TS
from quant_assets.universe import CLOCK, FUNDING_INTERVAL, TIMEFRAMES
from quant_assets.validation.metrics import PERIODS_PER_YEAR_5M, pnl_metrics

BAR_MS = int(TIMEFRAMES[CLOCK].total_seconds() * 1000)
DAY_MS = 86_400_000
FUNDING_INTERVAL_MS = int(FUNDING_INTERVAL.total_seconds() * 1000)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimeIndex:
    """Maps rows to the sorted distinct bar times, to sum symbol values into a portfolio series."""

    times: np.ndarray  # int64 ms
    row_time: np.ndarray | None  # per-row index into times; None when every symbol has the same bars
    n_symbols: int

    @classmethod
    def build(cls, panel: Panel) -> TimeIndex:
        lengths = panel.lengths
        g = len(panel.starts)
        if (lengths == lengths[0]).all():
            grid = panel.ts.reshape(g, -1)
            if (grid == grid[0]).all():
                return cls(grid[0].copy(), None, g)
        t0 = panel.ts.min()
        offset = panel.ts - t0
        if not (offset % BAR_MS).any():  # a regular 5m clock: bucket by arithmetic, no sort
            slot = offset // BAR_MS
            used = np.bincount(slot) > 0
            remap = np.cumsum(used) - 1
            return cls(t0 + np.flatnonzero(used) * BAR_MS, remap[slot], g)
        times, inverse = np.unique(panel.ts, return_inverse=True)
        return cls(times, inverse.reshape(-1), g)

    def total(self, values: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Sum per time of `values` (one per row, or one per entry of `rows`)."""
        m = len(self.times)
        if self.row_time is None:
            if rows is None:
                return values.reshape(self.n_symbols, m).sum(axis=0)
            return np.bincount(rows % m, weights=values, minlength=m)
        idx = self.row_time if rows is None else self.row_time[rows]
        return np.bincount(idx, weights=values, minlength=m)


@dataclass(frozen=True)
class BacktestResult:
    config: BacktestConfig
    panel: Panel
    units: np.ndarray  # coin units held after each row's bar
    pnl: np.ndarray  # USD per row, after costs and funding
    equity: pl.DataFrame  # ts, pnl, cost, funding, equity, drawdown
    trades: pl.DataFrame  # ts, symbol, price, qty, notional, cost, position
    per_symbol: pl.DataFrame
    metrics: dict
    assumptions: tuple[str, ...] = ()  # what the run assumed for want of an input (also logged)

    @property
    def period(self) -> tuple:
        ts = self.equity.get_column("ts")
        return ts[0], ts[-1]

    def run_row(self, run_id: str | None = None) -> pl.DataFrame:
        """The `backtest_runs` row: id, config json, period, symbols and the pooled metrics."""
        start, end = self.period
        config_json = self.config.to_json()
        if run_id is None:
            key = json.dumps(
                [
                    config_json,
                    self.panel.symbols,
                    str(start),
                    str(end),
                    self.panel.n_rows,
                    self.metrics["n_trades"],
                    round(self.metrics["total_pnl"], 6),
                ],
            )
            run_id = hashlib.sha256(key.encode()).hexdigest()[:16]
        row = {
            "run_id": run_id,
            "horizon": self.config.horizon,
            "config": config_json,
            "period_start": start,
            "period_end": end,
            "symbols": ",".join(self.panel.symbols),
            **self.metrics,
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "assumptions": json.dumps(list(self.assumptions)),
        }
        # the period is the open times of the first and last bar
        return pl.DataFrame([row]).with_columns(
            pl.col("period_start", "period_end").cast(TS), pl.col("horizon").cast(pl.String)
        )

    def bars(self) -> pl.DataFrame:
        """Per-row detail (ts, symbol, close, units, pnl), built on demand: it is as large as the input."""
        return self.panel.frame.select("ts", "symbol", "close").with_columns(
            pl.Series("units", self.units), pl.Series("pnl", self.pnl)
        )


def _block_of(rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.searchsorted(starts, rows, side="right") - 1


def _price_pnl(units: np.ndarray, close: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """units[t-1] * (close[t] - close[t-1]) per row, 0 on each symbol's first row; one allocation."""
    pnl = np.empty_like(close)
    np.subtract(close[1:], close[:-1], out=pnl[1:])
    pnl[1:] *= units[:-1]
    pnl[starts] = 0.0
    return pnl


def _per_symbol(panel: Panel, cfg: BacktestConfig, pnl, trade_rows, notional, cost, fund_rows, funding):
    starts, n_sym = panel.starts, len(panel.starts)
    block = _block_of(trade_rows, starts)
    cols = {
        "n_trades": np.bincount(block, minlength=n_sym),
        "traded_notional": np.bincount(block, weights=np.abs(notional), minlength=n_sym),
        "cost": np.bincount(block, weights=cost, minlength=n_sym),
        "funding": np.bincount(_block_of(fund_rows, starts), weights=funding, minlength=n_sym),
    }
    bounds = np.append(starts, panel.n_rows)
    rows = []
    for i, name in enumerate(panel.symbols):  # one pass per symbol over its own bars, not a loop over bars
        a, b = bounds[i], bounds[i + 1]
        days = (panel.ts[b - 1] - panel.ts[a] + BAR_MS) / DAY_MS
        rows.append(
            {
                "symbol": name,
                "n_bars": int(b - a),
                "n_trades": int(cols["n_trades"][i]),
                "traded_notional": float(cols["traded_notional"][i]),
                "turnover_per_day": float(cols["traded_notional"][i] / cfg.capital / days),
                "cost": float(cols["cost"][i]),
                "funding": float(cols["funding"][i]),
                **pnl_metrics(pnl[a:b], cfg.capital, PERIODS_PER_YEAR_5M),
            }
        )
    return pl.DataFrame(rows)


def _trade_depth(
    panel: Panel, cfg: BacktestConfig, trade_rows: np.ndarray, notes: list[str]
) -> tuple[np.ndarray, int]:
    """(depth each trade's impact is measured on, how many used the fallback): the row's own depth,
    else the cost model's fallback, with a note saying so."""
    costs = cfg.costs
    fallback = (
        f"the fallback depth of {costs.fallback_depth_notional:,.0f} USD (CostModel.fallback_depth_notional)"
    )
    if panel.depth is None:
        depth = np.full(len(trade_rows), costs.fallback_depth_notional)
        if costs.impact_coef and len(trade_rows):  # without impact the depth changes nothing
            if cfg.depth_column is None:
                notes.append(
                    f"impact: no depth column configured (depth_column=None); every trade uses {fallback}"
                )
            else:
                notes.append(
                    f"impact: the frame has no column {cfg.depth_column!r} (BacktestConfig.depth_column); "
                    f"every trade uses {fallback}"
                )
        return depth, len(trade_rows)
    depth = panel.depth[trade_rows]
    no_book = ~(np.isfinite(depth) & (depth > 0))
    n = int(no_book.sum())
    if n:
        depth = np.where(no_book, costs.fallback_depth_notional, depth)
        if costs.impact_coef:
            notes.append(
                f"impact: {n} of {len(trade_rows)} trades have no depth in {cfg.depth_column!r} "
                f"(no book at that bar) and use {fallback}"
            )
    return depth, n


def _settlements(panel: Panel, cfg: BacktestConfig, funding, notes: list[str]) -> PlacedFunding:
    """The funding settlements inside the panel's bars (perp), or none (spot, or none given: noted)."""
    if cfg.instrument == "spot":
        if funding is not None:
            raise ValueError(
                "run_backtest: instrument='spot' pays no funding, but funding settlements were given; "
                "use BacktestConfig(instrument='perp') or drop funding="
            )
        return PlacedFunding.empty(len(panel.starts))
    if funding is None:
        notes.append(
            "funding: no settlement events given (run_backtest(..., funding=funding_rates rows)); "
            "perpetual positions are charged no funding"
        )
        return PlacedFunding.empty(len(panel.starts))
    placed = place_settlements(panel, settlement_events(funding), BAR_MS)
    bounds = np.append(panel.starts, panel.n_rows)
    for i, name in enumerate(panel.symbols):
        first, last = panel.ts[bounds[i]], panel.ts[bounds[i + 1] - 1]
        # a span of a whole funding interval must contain a settlement; a shorter one may not
        if placed.per_symbol[i] == 0 and last + BAR_MS - first > FUNDING_INTERVAL_MS:
            span = pl.Series([first, last]).cast(pl.Datetime("ms", "UTC")).to_list()
            notes.append(
                f"funding: no settlements for {name} between {span[0]} and {span[1]}; it is charged none"
            )
    return placed


def run_backtest(
    frame: pl.DataFrame | pl.LazyFrame,
    config: BacktestConfig | None = None,
    *,
    funding: pl.DataFrame | pl.LazyFrame | None = None,
) -> BacktestResult:
    """Backtest one prediction column (`score`) on a long frame of bars; see the module docstring.

    `funding`: settlement events (symbol, ts, funding_rate), e.g. rows of the `funding_rates`
    table (`quant_assets.backtest.inputs.backtest_inputs` builds them with the frame); charged
    to perpetual positions (`config.instrument`) held at each settlement.
    """
    cfg = config or BacktestConfig()
    panel = load_panel(frame, cfg.depth_column)
    starts, close = panel.starts, panel.close
    n_sym = len(starts)
    notes: list[str] = []

    level, scale = target_levels(panel, cfg)
    units = held_units(panel, cfg, level, scale)
    pnl = _price_pnl(units, close, starts)

    # Orders are sparse (a row trades only when its level changes): cost them as a subset.
    trade_rows = np.flatnonzero(level_changes(level, starts))
    opening = np.isin(trade_rows, starts)
    before = units[np.maximum(trade_rows - 1, 0)]
    before[opening] = 0.0
    qty = units[trade_rows] - before
    price = close[trade_rows]
    notional = qty * price
    depth, n_fallback_depth = _trade_depth(panel, cfg, trade_rows, notes)
    cost = cfg.costs.trade_cost(notional, depth)
    pnl[trade_rows] -= cost

    placed = _settlements(panel, cfg, funding, notes)
    fund_rows = placed.rows
    funding_paid = cfg.costs.funding_payment(units[placed.held_rows] * close[placed.held_rows], placed.rates)
    np.add.at(pnl, fund_rows, funding_paid)  # two settlements can fall on one bar after a gap
    for note in notes:
        log.warning("backtest: %s", note)

    tix = TimeIndex.build(panel)
    pnl_t = tix.total(pnl)
    cost_t = tix.total(cost, trade_rows)
    funding_t = tix.total(funding_paid, fund_rows)
    capital_total = cfg.capital * n_sym
    equity_t = capital_total + np.cumsum(pnl_t)
    peak = np.maximum.accumulate(np.maximum(equity_t, capital_total))
    equity = pl.DataFrame(
        {
            "ts": pl.Series(tix.times).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            "pnl": pnl_t,
            "cost": cost_t,
            "funding": funding_t,
            "equity": equity_t,
            "drawdown": 1.0 - equity_t / peak,
        }
    )
    trades = panel.frame.select("ts", "symbol")[trade_rows].with_columns(
        pl.Series("price", price),
        pl.Series("qty", qty),
        pl.Series("notional", notional),
        pl.Series("cost", cost),
        pl.Series("depth", depth),
        pl.Series("position", units[trade_rows]),
    )

    days = (tix.times[-1] - tix.times[0] + BAR_MS) / DAY_MS
    traded = float(np.abs(notional).sum())
    metrics = {
        "n_symbols": n_sym,
        "n_bars": int(panel.n_rows),
        "n_trades": int(len(trade_rows)),
        "traded_notional": traded,
        "turnover_per_day": traded / capital_total / days,
        "cost": float(cost.sum()),
        "n_trades_fallback_depth": n_fallback_depth,
        "funding": float(funding_paid.sum()),
        "n_settlements": int(len(fund_rows)),
        "n_funding_payments": int(np.count_nonzero(funding_paid)),
        "exposure": float(np.count_nonzero(level) / panel.n_rows),
        **pnl_metrics(pnl_t, capital_total, PERIODS_PER_YEAR_5M),
    }
    per_symbol = _per_symbol(panel, cfg, pnl, trade_rows, notional, cost, fund_rows, funding_paid)
    return BacktestResult(cfg, panel, units, pnl, equity, trades, per_symbol, metrics, tuple(notes))


def run_horizons(
    frame: pl.DataFrame | pl.LazyFrame,
    configs: dict[str, BacktestConfig],
    *,
    score: str = "score_{h}",
    confidence: str | None = "confidence_{h}",
    funding: pl.DataFrame | pl.LazyFrame | None = None,
) -> dict[str, BacktestResult]:
    """One backtest per horizon: `configs[h]` trades the `score.format(h=h)` column (and its confidence).

    Each run keeps ts, symbol, close and its config's depth column; `funding` (settlement events)
    goes to every run, as in `run_backtest`.
    """
    lazy = frame.lazy()
    names = lazy.collect_schema().names()
    if funding is not None:
        funding = settlement_events(funding)  # checked once, not once per horizon
    out = {}
    for h, cfg in configs.items():
        s_col = score.format(h=h)
        if s_col not in names:
            raise ValueError(f"run_horizons: no column {s_col!r} for horizon {h!r}; got {names}")
        cols = {s_col: "score"}
        c_col = confidence.format(h=h) if confidence else None
        if c_col in names:
            cols[c_col] = "confidence"
        keep = [c for c in ("ts", "symbol", "close", cfg.depth_column) if c in names]
        frame_h = lazy.select(*keep, *[pl.col(k).alias(v) for k, v in cols.items()])
        out[h] = run_backtest(frame_h, cfg, funding=funding)
    return out
