"""What a champion's training window looked like: the reference paper trading and monitoring compare with.

- Predictions: the out-of-fold predictions of the champion's model partition (`teacher_oof`, the
  walk-forward record inside the training window: rows before the cut-off, each predicted by a model
  that never saw it). A student has no out-of-fold record of its own; it is compared with the
  teacher's of the same partition (it distils that prediction, in the same label units).
- Realised: the gross forward return `fwd_ret_{h}` of those rows (`feature_matrix_main`). Every row is
  before the cut-off and purged against it, so its return was known at the cut-off.
- Features: the last `reference_days` days of the training window (`[cut-off - reference_days,
  cut-off)`), the coin's rows of `feature_matrix_main`.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from quant_assets import lake
from quant_assets.backtest.inputs import MATRIX_TABLE
from quant_assets.defs.models.tables import TEACHER_OOF, read_partition
from quant_assets.defs.operations.champions import Champion
from quant_assets.paper.monitor import ConfidenceMap

OOF_MODEL = "liquid_teacher"


def oof_reference(champion: Champion, matrix_version: int | None = None) -> pl.DataFrame:
    """ts, prediction, realised for the champion's coin and horizon (empty without a teacher_oof record)."""
    empty = pl.DataFrame(
        schema={"ts": pl.Datetime("ms", "UTC"), "prediction": pl.Float64, "realised": pl.Float64}
    )
    if not lake.exists(TEACHER_OOF):
        return empty
    oof = (
        read_partition(TEACHER_OOF, champion.cutoff, OOF_MODEL)
        .filter((pl.col("symbol") == champion.symbol) & (pl.col("horizon") == champion.horizon))
        .filter(pl.col("teacher_oof").is_not_null() & (pl.col("ts") < champion.cutoff))
        .select("ts", pl.col("teacher_oof").alias("prediction"))
    )
    if oof.height == 0:
        return empty
    lo = oof["ts"].min().date()
    fwd = (
        lake.scan(MATRIX_TABLE, lo, champion.cutoff.date() + dt.timedelta(days=1), version=matrix_version)
        .filter((pl.col("symbol") == champion.symbol) & (pl.col("ts") < champion.cutoff))
        .select("ts", pl.col(f"fwd_ret_{champion.horizon}").alias("realised"))
        .collect()
    )
    return oof.join(fwd, on="ts", how="inner").sort("ts")


def confidence_map(reference: pl.DataFrame, buckets: int) -> ConfidenceMap:
    return ConfidenceMap.fit(reference["prediction"].to_numpy(), reference["realised"].to_numpy(), buckets)


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
