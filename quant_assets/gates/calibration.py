"""The paper-trading entry threshold and minimum confidence, calibrated on OOS predictions.

Rule (documented, deterministic): among the |prediction| quantiles `q` of `GateConfig.entry_quantiles`,
take the one whose threshold `quantile(|prediction|, q)` gives the highest after-cost total return when
the calibration rows are traded with the horizon's backtest (`BacktestConfig.for_horizon`: sign sizing,
entries held for the horizon, the one cost model, funding when settlement events are given); ties go to
the higher quantile (fewer trades for the same PnL). The result:

- `entry_threshold` = that |prediction| threshold (a bar signals when |prediction| >= it);
- `confidence_min` = that quantile. A prediction's confidence is the empirical CDF of |prediction|
  over the calibration rows (`confidence`), so "confidence >= confidence_min" and
  "|prediction| >= entry_threshold" select the same bars.

Time rule: a calibration sees only the rows it is given. `walk_forward_calibrations` calibrates window
k's threshold on the rows of windows before k only (expanding), which is what the after-cost gates
score; the candidate's stored thresholds are calibrated on every OOS window (all in its past once it
trades).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.engine import BacktestResult, run_backtest

DEPTH_COLUMN = "cost_depth_notional"
WINDOW = "window"


@dataclass(frozen=True)
class Calibration:
    quantile: float  # confidence_min
    threshold: float  # entry_threshold, in prediction units
    pnl: float  # after-cost total return on the calibration rows at this threshold
    n_rows: int
    by_quantile: tuple[tuple[float, float, float], ...]  # (quantile, threshold, pnl) of every candidate


def backtest(frame: pl.DataFrame, horizon: str, *, threshold: float = 0.0, funding=None) -> BacktestResult:
    """The horizon's after-cost backtest of `prediction` on the frame's bars (ts, symbol, close, depth?)."""
    depth = DEPTH_COLUMN if DEPTH_COLUMN in frame.columns else None
    cfg = BacktestConfig.for_horizon(horizon, threshold=float(threshold), depth_column=depth)
    cols = ["ts", "symbol", "close", *([depth] if depth else [])]
    bars = frame.select(*cols, pl.col("prediction").alias("score"))
    if funding is not None:
        funding = funding.filter(pl.col("symbol").is_in(frame["symbol"].unique().implode()))
    return run_backtest(bars, cfg, funding=funding)


def calibrate_entry(
    frame: pl.DataFrame, horizon: str, quantiles: Sequence[float], *, funding=None
) -> Calibration:
    """The entry threshold and minimum confidence of the module docstring, from `frame`'s rows only."""
    p = frame.filter(pl.col("prediction").is_finite())
    if p.height == 0:
        raise ValueError(f"calibrate_entry ({horizon}): no rows with a finite prediction to calibrate on")
    mag = np.abs(p["prediction"].to_numpy())
    tried = []
    for q in quantiles:
        thr = float(np.quantile(mag, q)) if q > 0 else 0.0
        tried.append(
            (
                float(q),
                thr,
                float(backtest(p, horizon, threshold=thr, funding=funding).metrics["total_return"]),
            )
        )
    best = max(tried, key=lambda t: (t[2], t[0]))  # highest PnL, then the higher quantile
    return Calibration(best[0], best[1], best[2], p.height, tuple(tried))


def confidence(prediction, calibration_predictions) -> np.ndarray:
    """Empirical CDF of |prediction| over the calibration rows' |prediction| (in [0, 1])."""
    ref = np.sort(np.abs(np.asarray(calibration_predictions, dtype=np.float64)))
    ref = ref[np.isfinite(ref)]
    if not len(ref):
        raise ValueError("confidence: no finite calibration prediction")
    return np.searchsorted(ref, np.abs(np.asarray(prediction, dtype=np.float64)), side="right") / len(ref)


def walk_forward_calibrations(
    frame: pl.DataFrame, horizon: str, quantiles: Sequence[float], *, funding=None
) -> dict[int, Calibration]:
    """{window k: the calibration on the rows of windows < k}, for every window but the first."""
    windows = sorted(frame[WINDOW].unique().to_list())
    return {
        k: calibrate_entry(frame.filter(pl.col(WINDOW) < k), horizon, quantiles, funding=funding)
        for k in windows[1:]
    }
