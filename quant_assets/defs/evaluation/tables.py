"""Lake tables of the evaluation layer: the contract between gates, promotion, paper trading and status.

`candidate_models` (one row per candidate and model partition; written by the `candidate_models` asset):
a candidate is one trained model of one coin and horizon at one cut-off, with its OOS metrics and every
gate's value, threshold and verdict. `gates` is a JSON list of
`{"name", "value", "threshold", "passed", "reason"}` objects, `passed` is true only when every gate
passed. `entry_threshold` / `confidence_min` are the paper-trading thresholds calibrated on the
candidate's OOS predictions (stored with the model).

`promotions` (append-only; written by the promotion and rollback jobs): who promoted or rolled back
what, when and why. `action` is "promote" or "rollback".
"""

from __future__ import annotations

import polars as pl

CANDIDATE_MODELS = "candidate_models"
PROMOTIONS = "promotions"

UTC_MS = pl.Datetime("ms", "UTC")

CANDIDATE_SCHEMA = {
    "cutoff": UTC_MS,  # the model partition's start (training cut-off)
    "model": pl.String,  # model name as in model_predictions: liquid_teacher, liquid_student, ...
    "kind": pl.String,  # registry kind: teacher, student, ridge, ...
    "symbol": pl.String,  # BTCUSDT
    "horizon": pl.String,  # 1h, 4h
    "registered_name": pl.String,  # MLflow registered model (liquid_BTC_1h_teacher)
    "registered_version": pl.String,  # MLflow model version ("" when the kind is not registered)
    "n_oos": pl.Int64,  # OOS rows the metrics are computed on
    "oos_ic": pl.Float64,
    "oos_ic_lo": pl.Float64,  # block-bootstrap interval of the OOS IC
    "oos_ic_hi": pl.Float64,
    "oos_rank_ic": pl.Float64,
    "hit_rate": pl.Float64,
    "pnl_after_cost": pl.Float64,  # over the OOS walk-forward
    "max_drawdown": pl.Float64,
    "turnover_per_day": pl.Float64,
    "improved_wf_windows": pl.Int64,  # walk-forward windows beating the ridge baseline after cost
    "entry_threshold": pl.Float64,
    "confidence_min": pl.Float64,
    "gates": pl.String,  # JSON list of gate verdicts
    "passed": pl.Boolean,
    "evaluated_at": UTC_MS,
    "date": pl.Date,  # partition column: the cut-off's date
}

PROMOTION_SCHEMA = {
    "at": UTC_MS,
    "action": pl.String,  # promote | rollback
    "symbol": pl.String,
    "horizon": pl.String,
    "registered_name": pl.String,
    "version": pl.String,  # the version that became champion
    "replaced_version": pl.String,  # the champion before (now alias `previous`); "" when none
    "cutoff": UTC_MS,
    "who": pl.String,
    "why": pl.String,
    "dagster_run_id": pl.String,
}
