"""Lake tables of the operations layer: paper trading and monitoring, one UTC day at a time.

Every table has a `date` column (the trading day) and is replaced one day at a time with one commit
per table (`lake.write_window(table, rows, D, D + 1)`): re-materialising day D replaces D's rows, it
never adds to them. `paper_positions` is written last: a day is traded once its positions are in the
lake, and that row is the only state the next day starts from.

A book is one coin and horizon (`symbol`, `horizon`), traded by the champion of that coin and horizon
(`model`, `registered_name`, `version`: the MLflow model version under the alias `champion`).
Amounts are USD; `units` are coin units (signed: short < 0).
"""

from __future__ import annotations

import polars as pl

PAPER_ORDERS = "paper_orders"
PAPER_FILLS = "paper_fills"
PAPER_MARKS = "paper_marks"
PAPER_PNL = "paper_pnl"
PAPER_POSITIONS = "paper_positions"
PAPER_MONITORING = "paper_monitoring"

UTC_MS = pl.Datetime("ms", "UTC")
BOOK = {"date": pl.Date, "model": pl.String, "registered_name": pl.String, "version": pl.String,
        "symbol": pl.String, "horizon": pl.String}  # fmt: skip

# One row per order: decided at the close of bar `ts` (decided_at = ts + 5m) from its score.
ORDERS_SCHEMA = {**BOOK, "ts": UTC_MS, "decided_at": UTC_MS, "side": pl.String, "qty": pl.Float64,
                 "target_units": pl.Float64, "target_level": pl.Float64, "score": pl.Float64,
                 "confidence": pl.Float64, "reason": pl.String}  # fmt: skip
# One row per fill: the order filled at its bar's close; cost = |notional| * cost_rate (CostModel).
FILLS_SCHEMA = {**BOOK, "ts": UTC_MS, "filled_at": UTC_MS, "price": pl.Float64, "qty": pl.Float64,
                "notional": pl.Float64, "cost_rate": pl.Float64, "cost": pl.Float64, "depth": pl.Float64,
                "position": pl.Float64}  # fmt: skip
# One row per bar of a traded book: the champion's score (its paper prediction), the held position
# and the bar's PnL; what monitoring evaluates.
MARKS_SCHEMA = {**BOOK, "ts": UTC_MS, "close": pl.Float64, "score": pl.Float64, "confidence": pl.Float64,
                "level": pl.Float64, "units": pl.Float64, "entry_score": pl.Float64, "pnl": pl.Float64,
                "cost": pl.Float64, "funding": pl.Float64}  # fmt: skip
# One row per book and day. status: trading | stale | no champion | cut-off after the day | ...
PNL_SCHEMA = {**BOOK, "status": pl.String, "pnl": pl.Float64, "gross_pnl": pl.Float64, "cost": pl.Float64,
              "funding": pl.Float64, "cum_pnl": pl.Float64, "position_end": pl.Float64,
              "level_end": pl.Float64, "n_orders": pl.Int64, "n_bars": pl.Int64,
              "entry_threshold": pl.Float64, "confidence_min": pl.Float64}  # fmt: skip
# One row per book after day D: the state day D + 1 starts from (paper.trading.BookState).
POSITIONS_SCHEMA = {**BOOK, "status": pl.String, "level": pl.Float64, "age": pl.Int64, "units": pl.Float64,
                    "last_close": pl.Float64, "last_ts": UTC_MS, "cum_pnl": pl.Float64,
                    "entry_score": pl.Float64}  # fmt: skip
# One row per champion book and day: what the `monitoring` checks read.
MONITORING_SCHEMA = {**BOOK, "cutoff": UTC_MS, "n_known": pl.Int64, "ic": pl.Float64, "hit_rate": pl.Float64,
                     "prediction_psi": pl.Float64, "feature_psi_max": pl.Float64, "feature_psi": pl.String,
                     "ece": pl.Float64, "n_calibration": pl.Int64, "window_pnl": pl.Float64}  # fmt: skip

SCHEMAS = {PAPER_ORDERS: ORDERS_SCHEMA, PAPER_FILLS: FILLS_SCHEMA, PAPER_MARKS: MARKS_SCHEMA,
           PAPER_PNL: PNL_SCHEMA, PAPER_POSITIONS: POSITIONS_SCHEMA, PAPER_MONITORING: MONITORING_SCHEMA}  # fmt: skip


def conform(table: str, df: pl.DataFrame) -> pl.DataFrame:
    """`df` cast to the table's schema, its columns in order; a missing or extra column is an error naming it."""
    schema = SCHEMAS[table]
    missing = [c for c in schema if c not in df.columns]
    extra = [c for c in df.columns if c not in schema]
    if missing or extra:
        raise ValueError(f"lake table {table!r}: frame lacks columns {missing}, has unknown columns {extra}")
    return df.select(pl.col(c).cast(t) for c, t in schema.items())
