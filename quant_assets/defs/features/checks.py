"""Checks on the feature tables: the contract models rely on, and honest coverage."""

import datetime as dt

import dagster as dg
import polars as pl

from quant_assets import lake
from quant_assets.defs.common import day_window, utc_now
from quant_assets.defs.features.assets import feature_matrix_main, feature_snapshots_main
from quant_assets.defs.raw.checks import partition_label
from quant_assets.features.keys import LABEL_KEYS, LIQUID_FULL_FEATURE_KEYS, LOOKAHEAD

# Below this share of labelled rows (outside the last LOOKAHEAD, which cannot have labels yet)
# the training set is suspiciously thin: bars are missing or the next month was never built.
MIN_LABEL_COVERAGE = 0.95


@dg.asset_check(
    asset=feature_matrix_main,
    blocking=True,
    description="Every column of LIQUID_FULL_FEATURE_KEYS and the labels is present, one row per (symbol, ts), "
    "and no row is later than now. Failing means models would train on a different contract.",
)
def feature_matrix_contract(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    start, end = day_window(context)
    lf = lake.scan("feature_matrix_main", start, end)
    cols = lf.collect_schema().names()
    missing = [k for k in (*LIQUID_FULL_FEATURE_KEYS, *LABEL_KEYS) if k not in cols]
    stats = (
        lf.select(
            pl.len().alias("rows"),
            pl.struct("symbol", "ts").is_duplicated().sum().alias("duplicates"),
            (pl.col("ts") > utc_now()).sum().alias("future_rows"),
        )
        .collect()
        .row(0, named=True)
    )
    passed = not missing and stats["duplicates"] == 0 and stats["future_rows"] == 0 and stats["rows"] > 0
    partition = partition_label(context)
    return dg.AssetCheckResult(
        passed=passed,
        metadata={"partition": partition, **stats, "missing_columns": ", ".join(missing) or "none"},
        description=f"partition {partition}: {stats['rows']:,} rows, {stats['duplicates']:,} duplicated, "
        f"{stats['future_rows']:,} in the future, missing columns: {', '.join(missing) or 'none'}",
    )


@dg.asset_check(
    asset=feature_matrix_main,
    description=f"At least {MIN_LABEL_COVERAGE:.0%} of rows older than the label horizon have both labels. "
    "Failing means gaps in bars or a next month that was never built; models would lose those rows.",
)
def label_coverage(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    start, end = day_window(context)
    horizon_end = min(dt.datetime.combine(end, dt.time(), dt.UTC), utc_now()) - LOOKAHEAD
    cov = (
        lake.scan("feature_matrix_main", start, end)
        .filter(pl.col("ts") < horizon_end)
        .select(pl.len().alias("rows"), *(pl.col(k).is_not_null().mean().alias(k) for k in LABEL_KEYS))
        .collect()
        .row(0, named=True)
    )
    worst = min((cov[k] or 0.0) for k in LABEL_KEYS) if cov["rows"] else 0.0
    partition = partition_label(context)
    return dg.AssetCheckResult(
        passed=worst >= MIN_LABEL_COVERAGE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "partition": partition,
            "rows": cov["rows"],
            **{f"coverage_{k}": float(cov[k] or 0.0) for k in LABEL_KEYS},
        },
        description=f"partition {partition}: worst label coverage {worst:.1%} of {cov['rows']:,} rows "
        f"(at least {MIN_LABEL_COVERAGE:.0%} required)",
    )


@dg.asset_check(
    asset=feature_snapshots_main,
    blocking=True,
    description="One row per (symbol, ts) on the 5m grid. Failing means a duplicated clock that would "
    "double-weight rows in training.",
)
def snapshots_unique_on_grid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    start, end = day_window(context)
    stats = (
        lake.scan("feature_snapshots_main", start, end)
        .select(
            pl.len().alias("rows"),
            pl.struct("symbol", "ts").is_duplicated().sum().alias("duplicates"),
            (pl.col("ts").dt.epoch("ms") % 300_000 != 0).sum().alias("off_grid"),
        )
        .collect()
        .row(0, named=True)
    )
    partition = partition_label(context)
    return dg.AssetCheckResult(
        passed=stats["duplicates"] == 0 and stats["off_grid"] == 0,
        metadata={"partition": partition, **stats},
        description=f"partition {partition}: {stats['rows']:,} rows, {stats['duplicates']:,} duplicated, "
        f"{stats['off_grid']:,} off the 5m grid",
    )


feature_checks = [feature_matrix_contract, label_coverage, snapshots_unique_on_grid]
