"""Lake maintenance: compact small files and delete the ones no version still needs.

Every window commit leaves the files it replaced (old versions stay readable) and a killed run
leaves files it never committed, so without this the lake only grows (two full backfills took
13.4 GB for 6.5 GiB of live data). `lake_maintenance` runs `lake.maintain` on every table:
compaction, then a vacuum that deletes files replaced more than `retention_hours` ago and
uncommitted files older than that. It keeps every file that these versions reference:
- versions pinned with `lake.pin` (models pin the versions they trained on);
- each table's version that Dagster last recorded (what audits and training frames read, see
  `defs/lineage.py`), even when it is older than the window.
The window also protects runs in flight, whose files are not in the log yet: keep it longer than
the longest run (a full backfill takes minutes here; the default is a week).
"""

import dagster as dg
import polars as pl
from pydantic import Field

from quant_assets import lake
from quant_assets.defs.common import markdown_table
from quant_assets.defs.lineage import recorded

MAINTENANCE_GROUP = "maintenance"
DEFAULT_RETENTION_HOURS = 7 * 24


class LakeMaintenanceConfig(dg.Config):
    retention_hours: int = Field(
        default=DEFAULT_RETENTION_HOURS,
        ge=0,
        # Past the tables' 7-day tombstone retention, vacuum would judge replaced files by write time.
        le=DEFAULT_RETENTION_HOURS,
        description="Delete files replaced longer ago than this, and uncommitted files older than this. "
        "Versions newer than the window stay readable. Must exceed the longest run: a shorter window "
        "deletes the files of a run still writing. At most 168 (the tables' tombstone retention).",
    )
    compact: bool = Field(default=True, description="Compact small files before vacuuming.")
    target_file_mb: int = Field(default=128, ge=1, description="Size compaction aims for, per file.")
    tables: list[str] = Field(
        default=[], description="Tables to maintain; empty means every table under the lake root."
    )


@dg.asset(
    group_name=MAINTENANCE_GROUP,
    kinds={"delta"},
    description="Compacts every lake table and vacuums it with a retention window (typed config, default "
    "7 days): files replaced before the window and uncommitted files of killed runs older than it are "
    "deleted; files of pinned versions and of the versions Dagster records as current are kept. "
    "Metadata: disk reclaimed, per-table files before/after.",
    check_specs=[
        dg.AssetCheckSpec(
            "kept_versions_intact",
            asset="lake_maintenance",
            description="Every version a model pinned or Dagster records as current still has all its "
            "files. Failing means those versions can no longer be read back (files deleted outside "
            "maintenance, or a version pinned after it was vacuumed): retrain or re-materialise from "
            "a readable version.",
        )
    ],
)
def lake_maintenance(context: dg.AssetExecutionContext, config: LakeMaintenanceConfig):
    tables = config.tables or lake.tables()
    pinned = lake.pinned_versions()
    current = recorded(context.instance, tables)
    reports, errors = [], {}
    for table in tables:
        latest = lake.version(table)
        if latest is None:
            errors[table] = f"no table at {lake.uri(table)}"
            continue
        keep = set(pinned.get(table, ()))
        if table in current and current[table].version <= latest:
            keep.add(current[table].version)
        try:
            report = lake.maintain(
                table,
                config.retention_hours,
                keep=keep,
                compact=config.compact,
                target_file_bytes=config.target_file_mb * 2**20,
            )
        except Exception as exc:  # one broken table must not stop the others' maintenance
            errors[table] = f"{type(exc).__name__}: {exc}"
            context.log.error(f"{table}: maintenance failed: {errors[table]}")
            continue
        reports.append(report)
        context.log.info(
            f"{table}: files {report.files_before} -> {report.files_after} ({report.compaction}), removed "
            f"{report.replaced_files_removed} replaced + {report.uncommitted_files_removed} uncommitted, "
            f"{report.bytes_reclaimed / 2**20:.1f} MiB; kept versions {list(report.kept_versions)}"
        )
    summary = pl.DataFrame(
        [r._asdict() for r in reports],
        schema={
            "table": pl.String,
            "files_before": pl.Int64,
            "files_after": pl.Int64,
            "compaction": pl.String,
            "replaced_files_removed": pl.Int64,
            "uncommitted_files_removed": pl.Int64,
            "bytes_reclaimed": pl.Int64,
            "kept_versions": pl.List(pl.Int64),
            "kept_versions_missing_files": pl.Int64,
        },
    )
    reclaimed = int(summary.get_column("bytes_reclaimed").sum())
    metadata = {
        "retention_hours": config.retention_hours,
        "bytes_reclaimed": dg.MetadataValue.int(reclaimed),
        "mib_reclaimed": dg.MetadataValue.float(round(reclaimed / 2**20, 2)),
        "tables_maintained": len(reports),
        "files_before": int(summary.get_column("files_before").sum()),
        "files_after": int(summary.get_column("files_after").sum()),
        "replaced_files_removed": int(summary.get_column("replaced_files_removed").sum()),
        "uncommitted_files_removed": int(summary.get_column("uncommitted_files_removed").sum()),
        "kept_versions": dg.MetadataValue.json({r.table: list(r.kept_versions) for r in reports}),
        "tables": markdown_table(
            summary.with_columns(
                pl.col("kept_versions").list.eval(pl.element().cast(pl.String)).list.join(",")
            )
        ),
    }
    if errors:
        raise dg.Failure(
            description="lake maintenance failed for " + "; ".join(f"{t}: {e}" for t, e in errors.items()),
            metadata={**metadata, "errors": dg.MetadataValue.json(errors)},
        )
    broken = summary.filter(pl.col("kept_versions_missing_files") > 0)
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="kept_versions_intact",
        passed=broken.height == 0,
        metadata={
            "versions_checked": int(summary.get_column("kept_versions").list.len().sum()),
            "missing_files": int(broken.get_column("kept_versions_missing_files").sum()),
        },
        description=None
        if broken.height == 0
        else "versions with missing files: "
        + ", ".join(f"{r['table']} {r['kept_versions']}" for r in broken.iter_rows(named=True)),
    )
