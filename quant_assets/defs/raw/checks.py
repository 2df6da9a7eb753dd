"""Blocking quality checks on every raw table, one check per rule (see quant_assets/quality.py).

A failing check stops everything downstream of the table in the same run and says how
many rows fail, with a few of them. Checks evaluate the run's window month by month so a
2018->now backfill is checked with flat memory.
"""

import datetime as dt

import dagster as dg

from quant_assets import quality
from quant_assets.defs.common import day_window, utc_now
from quant_assets.defs.raw.assets import raw_window_rows
from quant_assets.periods import months
from quant_assets.schemas import RAW_TABLE_NAMES

RULE_DESCRIPTIONS = {
    "schema": "Columns and dtypes match the table schema and required columns have no nulls. "
    "Failing means a source changed format: downstream features would read garbage.",
    "unique_key": "One row per key. Failing means duplicated rows that would double-count volume or events.",
    "in_window_on_grid": "Rows sit inside the partition window and on the bar grid. Failing means "
    "misaligned timestamps (ms/us mix-ups, off-grid bars) that break as-of joins.",
    "listing_and_clock": "No rows before a coin listed and none later than the build time. Failing means "
    "fabricated history or rows from the future: look-ahead.",
    "ohlc_sanity": "low <= open, close <= high, positive prices, non-negative volumes. Failing means corrupt bars.",
    "price_continuity": "Each bar opens where the bar before closed, 5m bars lie inside their 1h bar and the "
    "perpetual trades near spot (quality.MAX_ADJACENT_LOG_GAP, HOUR_RANGE_SLACK, MAX_SPOT_PERP_LOG_GAP). "
    "Failing means a bar carries another coin's (or another time's) price: every return through it is fiction.",
    "available_after_ts": "available_at >= ts. Failing means rows published before they happened: look-ahead.",
}


def partition_label(context) -> str:
    """The partition a check evaluated, as the UI names it: one key (`2026-10-01`, a month's first day)
    or a range `first...last`. Every check result carries it in its metadata and description, since
    the checks themselves are not partitioned and their history lists every window in one column."""
    if context.has_partition_key:
        return context.partition_key
    keys = context.partition_key_range
    return keys.start if keys.start == keys.end else f"{keys.start}...{keys.end}"


def _built_at(context, table: str) -> dt.datetime:
    """The build time recorded by the latest materialization of `table` (now, if none)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(table))
    mat = event.asset_materialization if event else None
    if mat and "built_at" in mat.metadata:
        return dt.datetime.fromisoformat(mat.metadata["built_at"].value)
    return utc_now()


def _table_checks(table: str) -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(rule, asset=table, blocking=True, description=RULE_DESCRIPTIONS[rule])
        for rule in quality.rule_names(table)
    ]

    @dg.multi_asset_check(name=f"{table}_quality", specs=specs, can_subset=True)
    def _check(context: dg.AssetCheckExecutionContext):
        start, end = day_window(context)
        built_at = _built_at(context, table)
        failed: dict[str, int] = {}
        samples: dict[str, str] = {}
        rows = 0
        for m0, m1 in months(start, end):
            df = raw_window_rows(table, m0, m1)
            rows += df.height
            for outcome in quality.raw_table_rules(table, df, m0, m1, built_at):
                failed[outcome.name] = failed.get(outcome.name, 0) + outcome.failed_rows
                if outcome.failed_rows and outcome.name not in samples:
                    samples[outcome.name] = f"month {m0:%Y-%m}:\n\n{outcome.sample_markdown()}"
        partition = partition_label(context)
        selected = {k.name for k in context.selected_asset_check_keys}
        for rule in quality.rule_names(table):
            if rule not in selected:
                continue
            metadata = {
                "partition": partition,
                "failed_rows": dg.MetadataValue.int(failed.get(rule, 0)),
                "rows_checked": dg.MetadataValue.int(rows),
                "window": f"[{start}, {end})",
            }
            if rule in samples:
                metadata["failing_rows_sample"] = dg.MetadataValue.md(samples[rule])
            yield dg.AssetCheckResult(
                asset_key=table,
                check_name=rule,
                passed=failed.get(rule, 0) == 0,
                metadata=metadata,
                description=f"partition {partition}: "
                + (
                    f"{failed[rule]:,} of {rows:,} rows fail `{rule}`"
                    if failed.get(rule, 0)
                    else f"{rows:,} rows pass"
                ),
            )

    return _check


raw_checks = [_table_checks(t) for t in RAW_TABLE_NAMES]
