"""Raw layer: one multi-asset that fills every raw table from the configured source.

One step fetches all selected tables month by month (a simulator builds them jointly,
a real source downloads each file once) and hands each month to a per-table
`lake.WindowWriter`, which writes its files at once; at the end each table's whole run
window is replaced in ONE Delta commit. Memory holds one month over a 2018->now
backfill, and readers never see a half-written window.
"""

import datetime as dt

import dagster as dg
import polars as pl

from quant_assets import lake
from quant_assets.defs.common import Progress, day_window, months, utc_now
from quant_assets.defs.raw.columns import column_schema
from quant_assets.partitions import monthly
from quant_assets.resources import MarketDataSource
from quant_assets.schemas import RAW_TABLE_NAMES, RAW_TABLES

RAW_GROUP = "raw"
RAW_KEYS = [dg.AssetKey(t) for t in RAW_TABLE_NAMES]
OWNERS = ["team:quant-data"]
# Said in every description: the UI's partition picker takes the key, not the month (2026-10 errors).
PARTITION_NOTE = (
    " Monthly partitions, keyed by the month's first day: type `2026-10-01` in the partition picker "
    "(a range: `2026-01-01...2026-03-01`)."
)


def _grain(spec) -> str:
    """The tag saying how often a row is expected per coin (`event`: sparse, no cadence; the entity
    catalogue is restated monthly)."""
    if spec.cadence is None:
        return "monthly" if spec.name == "entities" else "event"
    hours, rest = divmod(int(spec.cadence.total_seconds()), 3600)
    return f"{hours}h" if not rest else f"{int(spec.cadence.total_seconds()) // 60}m"


def _spec(table: str) -> dg.AssetSpec:
    spec = RAW_TABLES[table]
    return dg.AssetSpec(
        key=table,
        group_name=RAW_GROUP,
        description=spec.description + PARTITION_NOTE,
        kinds={"delta", "polars"},
        owners=OWNERS,
        tags={"layer": "raw", "grain": _grain(spec)},
        metadata={"key": ", ".join(spec.key), "dagster/column_schema": column_schema(table)},
    )


@dg.multi_asset(
    name="raw_tables",
    specs=[_spec(t) for t in RAW_TABLE_NAMES],
    partitions_def=monthly,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def raw_tables(context: dg.AssetExecutionContext, source: MarketDataSource):
    start, end = day_window(context)
    tables = [k.path[-1] for k in RAW_KEYS if k in context.selected_asset_keys]
    built_at = utc_now()
    src = source.build()
    context.log.info(f"source={src.name} tables={tables} window=[{start}, {end}) built_at={built_at}")
    slices = list(months(start, end))
    build_id = context.run.run_id  # shared by every table this run commits
    writers = {t: lake.WindowWriter(t, start, end, build_id=build_id) for t in tables}
    progress = Progress(context.log, len(slices), "fetched month")
    for m0, m1 in slices:
        frames = src.fetch(tables, m0, m1, until=built_at)
        for table in tables:
            # Empty frames still carry the schema: an empty window commits too, clearing stale
            # rows and creating the table on first use, so readers and checks always find it.
            writers[table].add(RAW_TABLES[table].conform(frames[table]))
        progress.step(f"{m0:%Y-%m}: " + ", ".join(f"{t}={frames[t].height:,}" for t in tables))
    # Commit every table before recording any: a run killed between two commits records none,
    # so the versions Dagster holds (which audits and training read, see defs/lineage.py) stay
    # one build's set; the lake's newer, unrecorded versions are then never read.
    commits = {table: writers[table].commit() for table in tables}
    for table, commit in commits.items():
        context.log.info(f"{table}: wrote {commit.rows:,} rows for [{start}, {end}) as v{commit.version}")
        yield dg.MaterializeResult(
            asset_key=table, metadata=_metadata(table, commit, start, end, src, built_at, build_id)
        )


def _metadata(
    table: str, commit: lake.Commit, start: dt.date, end: dt.date, src, built_at: dt.datetime, build_id: str
) -> dict:
    cols = RAW_TABLES[table].columns
    aggs = [pl.len().alias("rows")]
    if "ts" in cols:
        aggs += [pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts")]
    if "symbol" in cols:
        aggs.append(pl.col("symbol").n_unique().alias("symbols"))
    summary = lake.scan(table, start, end, version=commit.version).select(aggs).collect().row(0, named=True)
    metadata = {
        "rows": dg.MetadataValue.int(commit.rows),
        "window": f"[{start}, {end})",
        "source": src.name,
        "built_at": built_at.isoformat(),
        # The version this run committed (not the table's latest, which may already be another's).
        "delta_version": dg.MetadataValue.int(commit.version),
        "build_id": build_id,
        "lake_uri": lake.uri(table),
        **{k: str(v) for k, v in summary.items() if k != "rows"},
    }
    report = getattr(src, "last_report", None)
    if report and table in report:
        metadata["source_report"] = dg.MetadataValue.json(report[table])
    return metadata


def raw_window_rows(table: str, start: dt.date, end: dt.date) -> pl.DataFrame:
    return lake.read(table, start, end) if lake.exists(table) else RAW_TABLES[table].empty()
