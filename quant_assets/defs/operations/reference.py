"""What a champion was judged and calibrated on: the reference paper trading and monitoring compare with.

The candidate's OOS predictions, as the gates pool them (`quant_assets.defs.evaluation`):
- a teacher: its walk-forward out-of-fold record inside the training window (`teacher_oof`, rows
  before the cut-off) and its predictions of the partition's month M (`model_predictions`);
- a student: its predictions of month M (the gates also pool the student partitions of earlier
  months; the reference keeps the champion's own).
Its thresholds (`entry_threshold`, `confidence_min`) were calibrated on these rows, so they end at
the end of month M: a champion of partition M trades from the month after (`assets.champion_status`).

- `confidence`: the gates' confidence (`gates.calibration.confidence`), the empirical CDF of
  |prediction| over these rows: what `confidence_min` is compared with.
- Realised: the gross forward return `fwd_ret_{h}` of those rows (`feature_matrix_main`); every return
  ends by month M's end + h, before any day the champion trades has ended.
- Features: the last `reference_days` days of the training window, `[cut-off - reference_days, cut-off)`.
"""

import datetime as dt

import polars as pl

from quant_assets import lake
from quant_assets.backtest.inputs import MATRIX_TABLE
from quant_assets.defs.models.tables import MODEL_PREDICTIONS, TEACHER_OOF, read_partition
from quant_assets.defs.operations.champions import Champion
from quant_assets.paper.monitor import ConfidenceMap

OOF_MODEL = "liquid_teacher"
REF_SCHEMA = {"ts": pl.Datetime("ms", "UTC"), "prediction": pl.Float64, "realised": pl.Float64}


def oos_reference(champion: Champion, matrix_version: int | None = None) -> pl.DataFrame:
    """ts, prediction, realised of the champion's coin and horizon (empty without any record)."""
    c = champion
    if not c.partition:  # no model partition recorded: nothing to read it from
        return pl.DataFrame(schema=REF_SCHEMA)
    end = dt.datetime.combine(c.month_end, dt.time(), dt.UTC)
    parts = []
    if c.kind == "teacher" and lake.exists(TEACHER_OOF):
        parts.append(
            read_partition(TEACHER_OOF, c.cutoff, OOF_MODEL)
            .filter(
                (pl.col("symbol") == c.symbol) & (pl.col("horizon") == c.horizon) & (pl.col("ts") < c.cutoff)
            )
            .select("ts", pl.col("teacher_oof").alias("prediction"))
        )
    if lake.exists(MODEL_PREDICTIONS):
        parts.append(
            read_partition(MODEL_PREDICTIONS, c.cutoff, c.model)
            .filter((pl.col("symbol") == c.symbol) & (pl.col("horizon") == c.horizon) & (pl.col("ts") < end))
            .select("ts", "prediction")
        )
    preds = pl.concat(parts).filter(pl.col("prediction").is_finite()) if parts else pl.DataFrame()
    if preds.height == 0:
        return pl.DataFrame(schema=REF_SCHEMA)
    fwd = (
        lake.scan(MATRIX_TABLE, preds["ts"].min().date(), c.month_end, version=matrix_version)
        .filter((pl.col("symbol") == c.symbol) & (pl.col("ts") < end))
        .select("ts", pl.col(f"fwd_ret_{c.horizon}").alias("realised"))
        .collect()
    )
    return preds.join(fwd, on="ts", how="left").sort("ts").select(*REF_SCHEMA)


def confidence_map(reference: pl.DataFrame, buckets: int) -> ConfidenceMap:
    """P(sign correct) by |prediction| bucket over the reference rows whose return is known."""
    return ConfidenceMap.fit(
        reference["prediction"].to_numpy(), reference["realised"].fill_null(float("nan")).to_numpy(), buckets
    )


def feature_reference(
    champion: Champion, columns: list[str], days: int, matrix_version: int | None = None
) -> pl.DataFrame:
    start = champion.cutoff - dt.timedelta(days=days)
    return (
        lake.scan(
            MATRIX_TABLE, start.date(), champion.cutoff.date() + dt.timedelta(days=1), version=matrix_version
        )
        .filter(
            (pl.col("symbol") == champion.symbol) & (pl.col("ts") >= start) & (pl.col("ts") < champion.cutoff)
        )
        .select(*columns)
        .collect()
    )
