"""What every raw-data source provides. No Dagster here; the wiring lives in defs/raw.

A source is asked for some raw tables over a window of whole UTC days. It returns
frames that conform to `quant_assets.schemas.RAW_TABLES` and hold only rows that had
happened and been published by `until` (the moment the partition is built), so the
running month never contains the future.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

import polars as pl


class MarketSource(Protocol):
    name: str

    def fetch(
        self, tables: Sequence[str], start: dt.date, end: dt.date, until: dt.datetime
    ) -> dict[str, pl.DataFrame]:
        """Rows of `tables` with `start <= date < end`, `ts < until` and `available_at <= until`.

        Every requested table is a key of the result (possibly an empty frame with the
        table's schema). Missing upstream files/rows are gaps, not errors; corrupt input
        raises an error that names the file, row and field.
        """
        ...


def clip_to_until(df: pl.DataFrame, until: dt.datetime) -> pl.DataFrame:
    """Drop rows that had not happened, or not been published, by `until`."""
    cond = pl.col("ts") < until if "ts" in df.columns else pl.lit(True)
    if "available_at" in df.columns:
        cond = cond & (pl.col("available_at") <= until)
    return df.filter(cond)
