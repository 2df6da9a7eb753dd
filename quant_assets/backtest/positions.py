"""Predictions -> target weights -> held coin units, vectorised over a whole panel.

The position decided on bar t (from its score, at its close) is held over bar t+1,
so `units[t]` earns `close[t+1] - close[t]`. Signals and holding rules are in
`quant_assets.backtest.config`.

A target weight is `level * scale`: with sign sizing the level is an int8 in
{-1, 0, 1} (a tenth of the memory of floats, which is most of the cost on 8.6M
rows), with score sizing it is the clipped float weight and the scale is 1.
Every step is a numpy pass over all rows; symbol blocks are kept apart by
resetting at each block's first row instead of looping.
"""

from __future__ import annotations

import numpy as np

from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.panel import Panel


def _index_dtype(n: int):
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def signal_levels(panel: Panel, cfg: BacktestConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(signal, level, scale): which bars signal, and the weight each signal asks for (level * scale)."""
    score = panel.score
    with np.errstate(invalid="ignore"):  # NaN scores compare False: a missing score never signals
        if cfg.sizing == "sign":
            up = score >= cfg.threshold if cfg.threshold > 0 else score > 0
            down = score <= -cfg.threshold if cfg.threshold > 0 else score < 0
            signal = up | down
            level = up.view(np.int8) - down.view(np.int8)
            scale = float(cfg.max_position)
        else:
            mag = np.abs(score)
            signal = (mag >= cfg.threshold) & (mag > 0)
            level = np.clip(score * cfg.score_scale, -cfg.max_position, cfg.max_position)
            scale = 1.0
        if cfg.min_confidence > 0:
            if panel.confidence is None:
                raise ValueError(
                    f"min_confidence={cfg.min_confidence} needs a 'confidence' column in the frame"
                )
            signal &= panel.confidence >= cfg.min_confidence
    # a bar that does not signal asks for nothing (np.where also clears NaN float levels)
    if level.dtype.kind == "f":
        level = np.where(signal, level, 0.0)
    else:
        level *= signal
    return signal, level, scale


def target_levels(panel: Panel, cfg: BacktestConfig) -> tuple[np.ndarray, float]:
    """Level held after each bar: the symbol's latest signal if at most holding_bars - 1 bars old, else 0."""
    signal, level, scale = signal_levels(panel, cfg)
    rows = np.arange(panel.n_rows, dtype=_index_dtype(panel.n_rows))
    # Each block's first row is a marker too (its level is 0 unless it signals), so a
    # symbol never inherits the previous symbol's signal.
    signal[panel.starts] = True
    last = np.where(signal, rows, 0).astype(rows.dtype, copy=False)
    np.maximum.accumulate(last, out=last)
    held = level[last]
    if cfg.holding_bars is not None:
        held *= (rows - last) < cfg.holding_bars
    return held, scale


def level_changes(level: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Rows where the held level differs from the previous row of the same symbol (a block opens from 0)."""
    changed = np.empty(len(level), dtype=bool)
    np.not_equal(level[1:], level[:-1], out=changed[1:])
    changed[starts] = level[starts] != 0
    return changed


def held_units(panel: Panel, cfg: BacktestConfig, level: np.ndarray, scale: float) -> np.ndarray:
    """Coin units held after each bar.

    In notional mode the units are fixed when a level starts (weight * capital /
    entry close) and kept until the level changes, as a real position is: no hidden
    rebalancing, so no trade happens while a signal merely persists.
    """
    if cfg.units == "coin":
        return level * scale
    starts_segment = level_changes(level, panel.starts)
    starts_segment[panel.starts] = True
    rows = np.arange(panel.n_rows, dtype=_index_dtype(panel.n_rows))
    entry = np.where(starts_segment, rows, 0).astype(rows.dtype, copy=False)
    np.maximum.accumulate(entry, out=entry)
    return level * (scale * cfg.capital) / panel.close[entry]
