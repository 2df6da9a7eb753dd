"""The backtest's input: a long frame of bars and predictions, checked and laid out as numpy arrays.

Columns: `ts` (Datetime ms UTC, the bar's open time, as `quant_assets.schemas.TS`),
`symbol`, `close`, `score`; optional `confidence`, and the depth column the config
names (`BacktestConfig.depth_column`: USD resting within the cost model's band, for
the impact term). Nothing else is read: in particular a `funding_rate` column is a
feature (the last settled rate carried forward onto every bar), not a settlement;
funding events reach the engine separately (`quant_assets.backtest.funding`).

A row's score is known when its bar closes (ts + 5m) and is traded at that close,
so it earns the returns of the following bars only: no look-ahead.
Rows are ordered by (symbol, ts); each symbol is one contiguous block and its
bars are consecutive in the holding-period arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_assets.schemas import TS

REQUIRED = ("ts", "symbol", "close", "score")


@dataclass(frozen=True)
class Panel:
    frame: pl.DataFrame  # sorted by (symbol, ts); kept to gather trade rows
    ts: np.ndarray  # int64 ms since epoch
    close: np.ndarray
    score: np.ndarray  # NaN where missing
    confidence: np.ndarray | None
    depth: np.ndarray | None  # the configured depth column; None when the frame has none
    depth_column: str | None  # its name, for messages
    starts: np.ndarray  # first row of each symbol block
    symbols: tuple[str, ...]

    @property
    def n_rows(self) -> int:
        return len(self.close)

    @property
    def first(self) -> np.ndarray:
        mask = np.zeros(self.n_rows, dtype=bool)
        mask[self.starts] = True
        return mask

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(np.append(self.starts, self.n_rows))


def _float(frame: pl.DataFrame, col: str) -> np.ndarray:
    s = frame.get_column(col)
    if not s.dtype.is_numeric():
        raise ValueError(f"backtest input: column {col!r} must be numeric, got {s.dtype}")
    s = s.cast(pl.Float64)
    # fill_null first: polars' own null->NaN path in to_numpy is several times slower
    return (s.fill_null(np.nan) if s.null_count() else s).to_numpy()


def _blocks(frame: pl.DataFrame) -> tuple[np.ndarray, list[str], bool]:
    runs = frame.get_column("symbol").rle()
    lengths = runs.struct.field("len").to_numpy()
    names = runs.struct.field("value").to_list()
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    return starts, names, names == sorted(set(names))  # one block per symbol, in symbol order


def _ts_increasing(ts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Mask over rows 1..n-1: True where ts does not increase inside a symbol block."""
    bad = ts[1:] <= ts[:-1]  # a comparison, not np.diff: a bool temporary instead of an int64 one
    bad[starts[1:] - 1] = False
    return bad


def load_panel(frame: pl.DataFrame | pl.LazyFrame, depth_column: str | None = None) -> Panel:
    """Check the frame and lay it out by (symbol, ts); errors name the column and the first bad row.

    `depth_column` is read when the frame has it (the engine reports when it does not).
    """
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"backtest input: missing columns {missing}; got {frame.columns}")
    if frame.height == 0:
        raise ValueError("backtest input: the frame has no rows")
    ts_dtype = frame.schema["ts"]
    if not isinstance(ts_dtype, pl.Datetime) or ts_dtype.time_zone is None:
        raise ValueError(f"backtest input: ts must be a UTC Datetime ({TS}), got {ts_dtype}")
    optional = ("confidence", depth_column) if depth_column else ("confidence",)
    frame = frame.select([c for c in (*REQUIRED, *optional) if c in frame.columns])
    if ts_dtype != TS:
        frame = frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC").cast(TS))
    for col in ("ts", "symbol", "close"):
        nulls = frame.get_column(col).null_count()
        if nulls:
            row = frame.with_row_index("row").filter(pl.col(col).is_null()).row(0, named=True)
            raise ValueError(f"backtest input: {nulls} null {col!r} values, first at row {row['row']}: {row}")

    starts, names, grouped = _blocks(frame)
    ts = frame.get_column("ts").to_physical().to_numpy()
    if not grouped or _ts_increasing(ts, starts).any():
        frame = frame.sort("symbol", "ts")
        starts, names, _ = _blocks(frame)
        ts = frame.get_column("ts").to_physical().to_numpy()
        dup = _ts_increasing(ts, starts)
        if dup.any():
            i = int(np.flatnonzero(dup)[0]) + 1
            raise ValueError(
                f"backtest input: duplicate bar for symbol {frame['symbol'][i]!r} at ts {frame['ts'][i]} (row {i})"
            )

    close = _float(frame, "close")
    bad = ~(close > 0) | ~np.isfinite(close)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"backtest input: close must be finite and > 0; symbol {frame['symbol'][i]!r} ts {frame['ts'][i]} "
            f"has {close[i]}"
        )
    opt = {c: (_float(frame, c) if c in frame.columns else None) for c in optional}
    return Panel(
        frame=frame,
        ts=ts,
        close=close,
        score=_float(frame, "score"),
        confidence=opt["confidence"],
        depth=opt.get(depth_column),
        depth_column=depth_column,
        starts=starts,
        symbols=tuple(names),
    )
