"""The readiness gate: training assets depend on it, so a failure stops training."""

import dagster as dg
import polars as pl

from quant_assets import coverage, lake
from quant_assets.defs.audit.assets import required_data_readiness


@dg.asset_check(
    asset=required_data_readiness,
    blocking=True,
    description=f"Every required raw table has >= {coverage.MIN_REQUIRED_COVERAGE:.0%} coverage for every listed "
    "coin over the readiness window. Failing means models would train on holes: backfill first.",
)
def readiness_ready() -> dg.AssetCheckResult:
    table = lake.read_table("required_data_readiness")
    not_ready = table.filter(~pl.col("ready"))
    return dg.AssetCheckResult(
        passed=not_ready.height == 0,
        metadata={
            "pairs_checked": table.height,
            "pairs_not_ready": not_ready.height,
            "min_coverage": float(table.get_column("coverage").min() or 0.0),
        },
        description=None
        if not_ready.height == 0
        else (
            "not ready: "
            + ", ".join(
                f"{r['table']}/{r['symbol']} {r['coverage']:.3f}"
                for r in not_ready.head(8).iter_rows(named=True)
            )
        ),
    )
