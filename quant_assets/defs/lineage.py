"""Which lake versions form one consistent build: the ones Dagster recorded.

Each raw and feature run commits its tables, then records in every materialisation the Delta
version it committed (`delta_version`) and the run's `build_id`. A reader that must see one
build - the audits, a model's training frame - reads each table at its recorded version, not
at the table's latest: a run killed between two commits, or a table rewritten outside Dagster
(a notebook, a stray script), leaves newer versions in the lake that no materialisation vouches
for, and a reader at "latest" would mix them with the rest.

    versions = recorded_snapshot(context.instance, ["market_bars", "prices"])
    bars = lake.scan("market_bars", start, end, version=versions["market_bars"])

Models record `versions` with their run and `lake.pin` them, so the training frame can be read
back exactly and `lake_maintenance` keeps its files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
import polars as pl

from quant_assets import lake

# Materialisations looked at per table. Versions only grow, so the newest recorded commit is the
# highest `delta_version`; two concurrent runs may record in the other order than they committed,
# and a ranged run records one event per month, all with its one version.
RECENT_EVENTS = 50


@dataclass(frozen=True)
class Recorded:
    """The newest commit of a table that a Dagster materialisation vouches for."""

    table: str
    version: int
    build_id: str | None
    run_id: str


def recorded(instance: dg.DagsterInstance, tables: Iterable[str]) -> dict[str, Recorded]:
    """{table: its newest recorded commit}; tables Dagster never materialised are absent."""
    out: dict[str, Recorded] = {}
    for table in tables:
        records = instance.fetch_materializations(dg.AssetKey(table), limit=RECENT_EVENTS).records
        for record in records:
            metadata = record.asset_materialization.metadata if record.asset_materialization else {}
            version = getattr(metadata.get("delta_version"), "value", None)
            if version is None:
                continue
            if table not in out or int(version) > out[table].version:
                build = getattr(metadata.get("build_id"), "value", None)
                out[table] = Recorded(table, int(version), build, record.run_id)
    return out


def recorded_snapshot(instance: dg.DagsterInstance, tables: Iterable[str]) -> dict[str, int]:
    """{table: the Delta version its last materialisation committed}: the set to read together.

    A table Dagster never materialised is absent (the caller decides whether that is an error).
    A recorded version the lake does not hold (the lake was replaced behind Dagster's back)
    raises ValueError naming the table and both versions.
    """
    versions = {t: r.version for t, r in recorded(instance, tables).items()}
    for table, version in versions.items():
        latest = lake.version(table)
        if latest is None or latest < version:
            raise ValueError(
                f"Dagster recorded {table!r} at Delta version {version}, but the lake at "
                f"{lake.uri(table)} holds {'no table' if latest is None else f'versions up to {latest}'}: "
                "the lake was replaced outside Dagster; re-materialise that table's layer"
            )
    return versions


def snapshot_scans(
    instance: dg.DagsterInstance, tables: Iterable[str]
) -> tuple[dict[str, pl.LazyFrame | None], dict[str, str]]:
    """Scans of `tables` at their recorded versions, and where each scan comes from.

    A table that exists in the lake but was never materialised through Dagster is read at its
    latest version and said so ("latest vN, not recorded"); a missing table gives None.
    """
    tables = list(tables)
    versions = recorded_snapshot(instance, tables)
    scans: dict[str, pl.LazyFrame | None] = {}
    source: dict[str, str] = {}
    for table in tables:
        if table in versions:
            scans[table] = lake.scan(table, version=versions[table])
            source[table] = f"v{versions[table]}"
        elif (latest := lake.version(table)) is not None:
            scans[table] = lake.scan(table)
            source[table] = f"latest v{latest}, not recorded"
        else:
            scans[table] = None
            source[table] = "missing"
    return scans, source
