"""Research gates: does a multimodal candidate's text pay for itself out of sample?

The check is declared on `multimodal_eval` (check_specs) and evaluated from the ablation table that the
asset just wrote, so it judges exactly the partition materialised.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from quant_assets.defs.common import markdown_table

# Text helps a candidate when removing it loses IC on walk-forward folds with the whole-day bootstrap
# interval of (IC no_text - IC full) entirely below this: a significant loss, not just a negative point.
MAX_DELTA_IC_NO_TEXT = 0.0
TEXT_SCHEME = "walk_forward"  # the fold scheme that mimics production: train on the past only

TEXT_HELPS = dg.AssetCheckSpec(
    "multimodal_text_helps",
    asset="multimodal_eval",
    description=(
        "For every candidate and horizon, zeroing the text-derived columns (no_text) must lose walk-forward "
        f"OOS IC against full: the upper end of the day-bootstrap interval of delta_ic_no_text_vs_full below "
        f"{MAX_DELTA_IC_NO_TEXT}. A failure names the candidates whose text features add no out-of-sample IC "
        "beyond the market and exogenous features: for those, the text pipeline costs compute and look-ahead "
        "risk for nothing, and the no_text variant should be preferred (at signal strength 0 every candidate "
        "fails, as it should). A warning, not a block: research results never stop the production chain."
    ),
)


def text_helps_result(table: pl.DataFrame) -> dg.AssetCheckResult:
    """The verdict from an `ablation_results` partition (every candidate and horizon it holds)."""
    rows = table.filter((pl.col("ablation") == "no_text") & (pl.col("scheme") == TEXT_SCHEME)).sort(
        "model", "horizon"
    )
    verdict = rows.select(
        "model", "horizon", "delta_ic", "delta_ic_low", "delta_ic_high",
        helps=pl.col("delta_ic_high").is_not_null() & (pl.col("delta_ic_high") < MAX_DELTA_IC_NO_TEXT),
    )  # fmt: skip
    flagged = verdict.filter(~pl.col("helps"))
    return dg.AssetCheckResult(
        check_name=TEXT_HELPS.name,
        passed=rows.height > 0 and flagged.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "candidates_without_text_gain": dg.MetadataValue.json(
                [f"{r['model']} {r['horizon']}" for r in flagged.iter_rows(named=True)]
            ),
            "evaluated": dg.MetadataValue.int(rows.height),
            "threshold_delta_ic_high": MAX_DELTA_IC_NO_TEXT,
            "verdicts": markdown_table(verdict.with_columns(pl.col(pl.Float64).round(5))),
        },
    )
