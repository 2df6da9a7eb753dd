"""The model tables in the lake, each replaced one model partition (and model) at a time.

- `teacher_oof`: the teacher's walk-forward out-of-fold predictions inside each training window
  (cutoff, model, symbol, ts, horizon, label, teacher_oof, ridge_oof): what the student distils.
- `model_predictions`: model, version, cutoff, symbol, ts, horizon, prediction (+ date) for every
  row of month M, made by the models of partition M: the out-of-sample walk-forward record gates,
  paper trading and monitoring read. `version` is the MLflow run that holds the models.
- `backtest_runs`: one after-cost backtest row per model, partition and horizon (month M).

Rows are keyed by the partition's month (`month`, the lake's partition column, = the cut-off's month)
and `model`: a retrain of one model replaces only its own rows of that partition, in one commit,
so the teacher and the student of a month never erase each other.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake

from quant_assets import lake

TEACHER_OOF = "teacher_oof"
MODEL_PREDICTIONS = "model_predictions"
BACKTEST_RUNS = "backtest_runs"

UTC_MS = pl.Datetime("ms", "UTC")
PREDICTION_SCHEMA = {"model": pl.String, "version": pl.String, "cutoff": UTC_MS, "symbol": pl.String,
                     "ts": UTC_MS, "horizon": pl.String, "prediction": pl.Float64, "date": pl.Date}  # fmt: skip
OOF_SCHEMA = {"cutoff": UTC_MS, "model": pl.String, "symbol": pl.String, "ts": UTC_MS, "horizon": pl.String,
              "label": pl.Float64, "teacher_oof": pl.Float64, "ridge_oof": pl.Float64}  # fmt: skip
BACKTEST_SCHEMA = {"model": pl.String, "version": pl.String, "cutoff": UTC_MS, "horizon": pl.String,
                   "run_id": pl.String, "period_start": UTC_MS, "period_end": UTC_MS, "symbols": pl.String,
                   "n_trades": pl.Int64, "total_pnl": pl.Float64, "total_return": pl.Float64,
                   "sharpe": pl.Float64, "max_drawdown": pl.Float64, "turnover_per_day": pl.Float64,
                   "cost": pl.Float64, "funding": pl.Float64, "config": pl.String, "metrics": pl.String,
                   "assumptions": pl.String}  # fmt: skip
SCHEMAS = {TEACHER_OOF: OOF_SCHEMA, MODEL_PREDICTIONS: PREDICTION_SCHEMA, BACKTEST_RUNS: BACKTEST_SCHEMA}


def _month(cutoff: dt.datetime) -> str:
    return cutoff.strftime("%Y-%m")


def replace_partition(
    table: str, cutoff: dt.datetime, models: list[str], df: pl.DataFrame, schema: dict | None = None
) -> int:
    """Replace the rows of `models` in the partition of `cutoff` by `df` (one commit); return the version.

    `df` is cast to the table's schema (a missing or extra column is an error naming it). `schema`: for a
    table of another layer keyed the same way (cut-off month + model), e.g. `ablation_results`."""
    schema = schema or SCHEMAS[table]
    missing = [c for c in schema if c not in df.columns]
    extra = [c for c in df.columns if c not in schema]
    if missing or extra:
        raise ValueError(f"lake table {table!r}: frame lacks columns {missing}, has unknown columns {extra}")
    wrong = df.filter(pl.col("model").is_in(models).not_()) if df.height else df
    if wrong.height:
        raise ValueError(f"lake table {table!r}: rows of models {wrong['model'].unique().to_list()}, "
                         f"not of the ones replaced {models}")  # fmt: skip
    month = _month(cutoff)
    data = df.select(pl.col(c).cast(t) for c, t in schema.items()).with_columns(
        pl.lit(month).alias(lake.PARTITION_COLUMN)
    )
    models_sql = ", ".join("'" + m.replace("'", "''") + "'" for m in models)
    uri = lake.uri(table)
    opts = lake.storage_options()
    if not lake.exists(table):
        try:
            write_deltalake(uri, data.to_arrow(), mode="error", partition_by=[lake.PARTITION_COLUMN],
                            storage_options=opts)  # fmt: skip
            return DeltaTable(uri, storage_options=opts).version()
        except Exception:  # created meanwhile by a parallel writer: replace in it as below
            if not lake.exists(table):
                raise
    # delta-rs checks the predicate against concurrent commits and retries; rows outside it stay
    write_deltalake(
        uri,
        data.to_arrow(),
        mode="overwrite",
        predicate=f"{lake.PARTITION_COLUMN} = '{month}' AND model IN ({models_sql})",
        storage_options=opts,
        commit_properties=CommitProperties(max_commit_retries=8),
    )
    return _version_with(uri, opts)


def _version_with(uri: str, opts) -> int:
    # write_deltalake returns nothing: the latest version right after the commit is ours unless
    # another writer committed in between, which only makes the recorded version newer (still
    # holding our rows, as other writers replace other models' rows)
    return DeltaTable(uri, storage_options=opts).version()


def read_partition(
    table: str,
    cutoff: dt.datetime,
    model: str | None = None,
    version: int | None = None,
    schema: dict | None = None,
):
    """The rows of one partition (and model), as written (without `month`)."""
    schema = schema or SCHEMAS[table]
    lf = pl.scan_delta(lake.uri(table), version=version, storage_options=lake.storage_options())
    lf = lf.filter(pl.col(lake.PARTITION_COLUMN) == _month(cutoff))
    if model is not None:
        lf = lf.filter(pl.col("model") == model)
    return (
        lf.drop(lake.PARTITION_COLUMN)
        .with_columns(pl.col(c).dt.cast_time_unit("ms") for c, t in schema.items() if t == UTC_MS)
        .collect()
    )
