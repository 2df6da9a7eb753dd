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

from quant_assets.periods import months


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


def restate_catalogue(catalogue: pl.DataFrame, start: dt.date, end: dt.date) -> pl.DataFrame:
    """Rows of the entity catalogue dated within [start, end): each entity restated in every month it is known.

    `catalogue` has one row per entity with its `first_seen` date (already limited to what was
    visible by the build time). The table it feeds holds, for every calendar month M and every
    entity first seen before M ends, one row dated `max(first_seen, first day of M)`. So a monthly
    partition lists every entity its events can link to (a demo of two recent months is not left
    with an empty catalogue), the rows do not depend on how the history is cut into windows, and
    no row is dated before its entity was first seen.
    """
    parts = [catalogue.with_columns(pl.col("first_seen").alias("date")).clear()]
    for m0, m1 in months(start.replace(day=1), end):
        known = catalogue.filter(pl.col("first_seen") < m1)
        dated = known.with_columns(
            pl.max_horizontal(pl.col("first_seen"), pl.lit(m0, dtype=pl.Date)).alias("date")
        )
        parts.append(dated.filter((pl.col("date") >= start) & (pl.col("date") < end)))
    return pl.concat(parts)
