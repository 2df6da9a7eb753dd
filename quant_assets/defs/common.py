"""Small helpers every layer's wiring shares: windows, progress logs, metadata."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import dagster as dg
import polars as pl

from quant_assets.periods import months  # noqa: F401 (re-exported: layers slice windows by it)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def day_window(context) -> tuple[dt.date, dt.date]:
    """[start, end) in whole UTC days of the run's partition window (one partition or a range)."""
    tw = context.partition_time_window
    return tw.start.date(), tw.end.date()


class Progress:
    """Logs `label i/n, elapsed, eta` for long loops so a backfill shows it is alive."""

    def __init__(self, log, total: int, label: str):
        self.log, self.total, self.label, self.t0, self.done = log, total, label, time.monotonic(), 0

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        self.log.info(
            f"{self.label} {self.done}/{self.total} {what} | {elapsed:.1f} s elapsed, ~{eta:.0f} s left"
        )


def each_partition(context, run_one: Callable[[str], dict]) -> dict:
    """Runs each partition of a (possibly ranged) run in order, each one of its own (a walk-forward over
    cut-offs, or day after day, state carrying); the last one's metadata, naming the range when several."""
    metadata = {}
    for key in context.partition_keys:
        metadata = run_one(key)
    if len(context.partition_keys) > 1:
        metadata["partitions"] = f"{context.partition_keys[0]} .. {context.partition_keys[-1]}"
    return metadata


def markdown_table(df: pl.DataFrame, max_rows: int = 40) -> dg.MetadataValue:
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_dataframe_shape=True,
        tbl_rows=max_rows,
        tbl_hide_column_data_types=True,
        tbl_width_chars=400,
        fmt_str_lengths=60,
    ):
        return dg.MetadataValue.md(str(df.head(max_rows)))
