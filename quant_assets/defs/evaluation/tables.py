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


def replace_candidates(cutoff, df: pl.DataFrame) -> int:
    """Replace the candidate rows of one model partition (the cut-off's `date`) by `df`, in one commit;
    return the table's version. `df` is cast to CANDIDATE_SCHEMA (a missing or extra column is an error
    naming it). Other partitions' rows are untouched (a predicate overwrite, as models' tables do)."""
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    from quant_assets import lake

    missing = [c for c in CANDIDATE_SCHEMA if c not in df.columns]
    extra = [c for c in df.columns if c not in CANDIDATE_SCHEMA]
    if missing or extra:
        raise ValueError(
            f"lake table {CANDIDATE_MODELS!r}: frame lacks columns {missing}, has unknown columns {extra}"
        )
    day = cutoff.date()
    data = df.select(pl.col(c).cast(t) for c, t in CANDIDATE_SCHEMA.items())
    wrong = data.filter(pl.col("date") != day)
    if wrong.height:
        raise ValueError(
            f"lake table {CANDIDATE_MODELS!r}: {wrong.height} rows are not of the partition {day}"
        )
    uri, opts = lake.uri(CANDIDATE_MODELS), lake.storage_options()
    if not lake.exists(CANDIDATE_MODELS):
        try:
            write_deltalake(uri, data.to_arrow(), mode="error", partition_by=["date"], storage_options=opts)
            return DeltaTable(uri, storage_options=opts).version()
        except Exception:  # created meanwhile by a parallel writer: replace in it as below
            if not lake.exists(CANDIDATE_MODELS):
                raise
    write_deltalake(uri, data.to_arrow(), mode="overwrite", predicate=f"date = '{day.isoformat()}'",
                    storage_options=opts, commit_properties=CommitProperties(max_commit_retries=8))  # fmt: skip
    return DeltaTable(uri, storage_options=opts).version()


def read_candidate_partition(cutoff) -> pl.DataFrame:
    """The candidate rows of one model partition as written (empty with the schema when none)."""
    from quant_assets import lake

    if not lake.exists(CANDIDATE_MODELS):
        return pl.DataFrame(schema=CANDIDATE_SCHEMA)
    lf = pl.scan_delta(lake.uri(CANDIDATE_MODELS), storage_options=lake.storage_options())
    df = lf.filter(pl.col("date") == cutoff.date()).collect()
    return df.select(pl.col(c).cast(t) for c, t in CANDIDATE_SCHEMA.items())
