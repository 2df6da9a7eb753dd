"""The feature matrix -> backtest path: bars and book depth from `feature_matrix_main`, funding
settlements from `funding_rates`, each passed to the engine by name.

    inputs = backtest_inputs_from_lake("2024-01-01", "2024-07-01", columns=["ret_12"])
    frame = inputs.frame.with_columns(score=-pl.col("ret_12"))
    result = run_backtest(frame, BacktestConfig.for_horizon("1h"), funding=inputs.funding)

- `frame`: ts, symbol, close, `cost_depth_notional` (the book depth of the row itself, the
  column `BacktestConfig.depth_column` names by default) and the requested columns, for the
  rows with a price: a row whose close is null (no bar and no fallback price) can be neither
  traded nor marked, so it is dropped (counted in `dropped_no_price`, logged); a position
  then carries over the gap, and a settlement inside it is charged on the next row. The
  matrix's `funding_rate` is a feature (the last settled rate carried forward onto every
  5m row); it is kept only if asked for, and the engine never reads it for funding.
- `funding`: the `funding_rates` rows with ts in [start, end) as settlement events
  (symbol, ts, funding_rate), so a perpetual position pays at 00/08/16 UTC only.

The matrix's close is the spot close (a fallback last-trade price where the bar is
missing); the backtest values perpetual positions at it, so the perp-spot basis is ignored.
Time rule: nothing here looks ahead; scores must come from the frame's features (known
at each row's close) and labels (`fwd_ret_*`, `label_*`) must never become scores.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from quant_assets import lake
from quant_assets.backtest.funding import settlement_events

MATRIX_TABLE = "feature_matrix_main"
FUNDING_TABLE = "funding_rates"
DEPTH_COLUMN = "cost_depth_notional"  # feature_matrix_main's depth within the cost model's band
BAR_COLUMNS = ("ts", "symbol", "close")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BacktestInputs:
    frame: pl.DataFrame  # ts, symbol, close, depth, requested columns; sorted by (symbol, ts)
    funding: pl.DataFrame  # settlement events (symbol, ts, funding_rate), sorted by (symbol, ts)
    dropped_no_price: int = 0  # matrix rows in the window without a close


def _bound(d: dt.date | dt.datetime | str | None) -> dt.datetime | None:
    """A date is its midnight UTC; a naive datetime is UTC."""
    if d is None:
        return None
    if isinstance(d, str):
        d = dt.datetime.fromisoformat(d) if "T" in d or " " in d else dt.date.fromisoformat(d)
    if not isinstance(d, dt.datetime):
        d = dt.datetime(d.year, d.month, d.day)
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def _in_window(frame: pl.LazyFrame, start: dt.datetime | None, end: dt.datetime | None) -> pl.LazyFrame:
    if start is not None:
        frame = frame.filter(pl.col("ts") >= start)
    if end is not None:
        frame = frame.filter(pl.col("ts") < end)
    return frame


def backtest_inputs(
    matrix: pl.DataFrame | pl.LazyFrame,
    funding_rates: pl.DataFrame | pl.LazyFrame,
    *,
    start: dt.date | dt.datetime | str | None = None,
    end: dt.date | dt.datetime | str | None = None,
    columns: Sequence[str] = (),
    depth_column: str = DEPTH_COLUMN,
) -> BacktestInputs:
    """The backtest's frame and funding events from a feature matrix and `funding_rates` rows, ts in [start, end)."""
    lo, hi = _bound(start), _bound(end)
    matrix = matrix.lazy()
    names = matrix.collect_schema().names()
    wanted = list(dict.fromkeys([*BAR_COLUMNS, depth_column, *columns]))
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(f"backtest inputs: the feature matrix has no columns {missing}")
    frame = _in_window(matrix.select(wanted), lo, hi).sort("symbol", "ts").collect()
    if frame.height == 0:
        raise ValueError(f"backtest inputs: the feature matrix has no rows in [{lo}, {hi})")
    priced = frame.filter(pl.col("close").is_not_null())
    dropped = frame.height - priced.height
    if dropped:
        log.warning(
            "backtest inputs: %d of %d feature-matrix rows have no close and are left out",
            dropped,
            frame.height,
        )
    funding = settlement_events(_in_window(funding_rates.lazy(), lo, hi))
    return BacktestInputs(priced, funding, dropped)


def backtest_inputs_from_lake(
    start: dt.date | str,
    end: dt.date | str,
    columns: Sequence[str] = (),
    *,
    versions: Mapping[str, int] | None = None,
) -> BacktestInputs:
    """`backtest_inputs` on the lake's `feature_matrix_main` and `funding_rates`, dates [start, end).

    `versions` pins Delta versions by table name (e.g. the ones a model recorded); the latest otherwise.
    """
    versions = versions or {}
    if not lake.exists(FUNDING_TABLE):
        raise ValueError(
            f"backtest inputs: the lake has no {FUNDING_TABLE!r} table at {lake.uri(FUNDING_TABLE)}; "
            "materialise the raw layer first (perpetual funding cannot be charged without it)"
        )
    return backtest_inputs(
        lake.scan(MATRIX_TABLE, start, end, version=versions.get(MATRIX_TABLE)),
        lake.scan(FUNDING_TABLE, start, end, version=versions.get(FUNDING_TABLE)),
        start=start,
        end=end,
        columns=columns,
    )
