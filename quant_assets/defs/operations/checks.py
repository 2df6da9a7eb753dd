"""Checks on `monitoring`: the signals automation uses to retrain a champion early.

Both read day D's `paper_monitoring` rows. They are NOT blocking: nothing downstream of `monitoring`
consumes its rows, and a drifted or miscalibrated day must still be recorded and shown; a failure is
a verdict for whoever watches it (the retrain sensor reads these evaluations), not a reason to stop a
run. The thresholds are run config (defaults: the README's table).
"""

import dagster as dg
import polars as pl

from quant_assets import lake
from quant_assets.defs.common import markdown_table
from quant_assets.defs.operations.monitoring import monitoring
from quant_assets.defs.operations.tables import PAPER_MONITORING


class DriftCheckConfig(dg.Config):
    psi_max: float = 0.25  # PSI above this is a shift (the usual 0.1 / 0.25 reading)


class CalibrationCheckConfig(dg.Config):
    ece_max: float = 0.1  # expected calibration error of P(sign correct), in probability points
    min_rows: int = 200  # books with fewer known rows in the window are not judged (too noisy)


def _rows(context: dg.AssetCheckExecutionContext) -> pl.DataFrame:
    tw = context.partition_time_window
    if not lake.exists(PAPER_MONITORING):
        return pl.DataFrame()
    return lake.read(PAPER_MONITORING, tw.start.date(), tw.end.date())


@dg.asset_check(
    asset=monitoring,
    blocking=False,
    description="Fails when a champion's predictions (PSI of the day's scores against the OOS "
    "predictions it was judged on) or one of its top features (PSI against the training window's last days) drifted beyond "
    "psi_max: the model now sees a market unlike the one it learned; retrain it early.",
)
def prediction_drift(context: dg.AssetCheckExecutionContext, config: DriftCheckConfig) -> dg.AssetCheckResult:
    return drift_result(_rows(context), config)


def drift_result(rows: pl.DataFrame, config: DriftCheckConfig) -> dg.AssetCheckResult:
    """The drift verdict on one day's paper_monitoring rows."""
    if rows.height == 0:
        return dg.AssetCheckResult(
            passed=True, metadata={"books": 0, "note": "no champion traded: nothing to judge"}
        )
    over = [(pl.col(c).is_finite() & (pl.col(c) > config.psi_max)).fill_null(False)
            for c in ("prediction_psi", "feature_psi_max")]  # fmt: skip
    bad = rows.filter(over[0] | over[1])
    shown = rows.select("symbol", "horizon", "version", "prediction_psi", "feature_psi_max", "feature_psi")
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "psi_max": config.psi_max,
            "books": rows.height,
            "drifted": dg.MetadataValue.json(
                [f"{r['symbol']} {r['horizon']}" for r in bad.iter_rows(named=True)]
            ),
            "max_prediction_psi": dg.MetadataValue.float(
                float(rows["prediction_psi"].fill_nan(None).max() or 0.0)
            ),
            "max_feature_psi": dg.MetadataValue.float(
                float(rows["feature_psi_max"].fill_nan(None).max() or 0.0)
            ),
            "psi": markdown_table(shown),
        },
    )


@dg.asset_check(
    asset=monitoring,
    blocking=False,
    description="Fails when a champion's confidence is miscalibrated: over the monitoring window, the expected "
    "calibration error between its OOS P(sign correct) per |prediction| bucket and the realised hit "
    "rate exceeds ece_max (books with fewer than min_rows known rows are not judged). Its confidence_min no "
    "longer means what it did; retrain it early.",
)
def confidence_calibration(
    context: dg.AssetCheckExecutionContext, config: CalibrationCheckConfig
) -> dg.AssetCheckResult:
    return calibration_result(_rows(context), config)


def calibration_result(rows: pl.DataFrame, config: CalibrationCheckConfig) -> dg.AssetCheckResult:
    """The calibration verdict on one day's paper_monitoring rows."""
    if rows.height == 0:
        return dg.AssetCheckResult(
            passed=True, metadata={"books": 0, "note": "no champion traded: nothing to judge"}
        )
    judged = rows.filter(pl.col("n_calibration") >= config.min_rows)
    bad = judged.filter(pl.col("ece").is_finite() & (pl.col("ece") > config.ece_max))
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "ece_max": config.ece_max,
            "min_rows": config.min_rows,
            "books": rows.height,
            "judged": judged.height,
            "miscalibrated": dg.MetadataValue.json(
                [f"{r['symbol']} {r['horizon']}" for r in bad.iter_rows(named=True)]
            ),
            "ece": markdown_table(rows.select("symbol", "horizon", "version", "n_calibration", "ece")),
        },
    )


operations_checks = [prediction_drift, confidence_calibration]
