"""The lake: one Delta table per asset under QUANT_ASSETS_LAKE.

- `write_window` (and `WindowWriter`, its incremental form) replaces a window of whole
  days with ONE Delta commit: readers see the old window or the new one, never half; a
  re-run is idempotent; a crash mid-write leaves the previous version intact. Frames are
  written to data files as they arrive and the commit only swaps file lists, so a
  2018->now backfill month by month holds one month in memory. (delta-rs's own streamed
  writer buffered the whole window here: 5.7 GiB for 2.6 GB of data against 0.6 GiB now.)
- `scan` returns a LazyFrame pruned to a date range, usable from a notebook:
  `quant_assets.lake.scan("market_bars", start="2024-01-01")`.
- `WindowWriter.commit` returns the version it committed, which assets record as lineage;
  readers that must see one consistent build read at those recorded versions (see
  `quant_assets.defs.lineage`), not at `version`, the table's latest.
- Concurrent writers are serialised (a commit lands right after the version it read or is
  redone), and a table is only ever created if still missing: no run erases another's months.
- `pin` keeps a version readable for a model; `maintain` compacts and vacuums a table with a
  retention window, keeping every file a pinned or recorded version needs.

The root is a local path (default `.lake` in the working directory) or an object-store
URI (`s3://bucket/lake`) with storage options as JSON in QUANT_ASSETS_LAKE_STORAGE_OPTIONS.
Tables are partitioned by a `month` column ("2021-05"): a partition per day makes
thousands of tiny files and reads ~30x slower.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
from collections.abc import Iterable
from typing import NamedTuple

import polars as pl
import polars.selectors as cs
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from quant_assets import safe_inputs
from quant_assets.periods import month_keys as _months
from quant_assets.periods import next_month

PARTITION_COLUMN = "month"


def root() -> str:
    return os.environ.get("QUANT_ASSETS_LAKE", os.path.join(os.getcwd(), ".lake"))


def storage_options() -> dict[str, str] | None:
    raw = os.environ.get("QUANT_ASSETS_LAKE_STORAGE_OPTIONS")
    return json.loads(raw) if raw else None


def uri(table: str) -> str:
    """Where `table` lives; every read and write goes through here, so a table name that could climb out
    of the root (`../x`, `a/b`) or be more than an identifier is rejected here, naming it."""
    safe_inputs.table_name(table)
    base = root()
    return f"{base.rstrip('/')}/{table}" if "://" in base else os.path.join(os.path.abspath(base), table)


def _as_date(d: dt.date | dt.datetime | str | None) -> dt.date | None:
    if d is None or (isinstance(d, dt.date) and not isinstance(d, dt.datetime)):
        return d
    if isinstance(d, dt.datetime):
        return d.date()
    return dt.date.fromisoformat(d)


def exists(table: str) -> bool:
    return _table_or_none(table) is not None


def version(table: str) -> int | None:
    """Current Delta version of `table`, or None when it has never been written."""
    current = _table_or_none(table)
    return None if current is None else current.version()


def _with_month(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col("date").dt.strftime("%Y-%m").alias(PARTITION_COLUMN))


def _check_window(df: pl.DataFrame, table: str, start: dt.date, end: dt.date) -> None:
    if "date" not in df.columns:
        raise ValueError(f"lake table {table!r}: frame has no 'date' column (columns: {df.columns})")
    bad = df.filter((pl.col("date") < start) | (pl.col("date") >= end) | pl.col("date").is_null())
    if bad.height:
        raise ValueError(
            f"lake table {table!r}: {bad.height} rows outside the window [{start}, {end}), e.g.\n{bad.head(3)}"
        )


def write_window(
    table: str,
    data: pl.DataFrame | Iterable[pl.DataFrame],
    start: dt.date | str,
    end: dt.date | str,
) -> int:
    """Replace rows with `start <= date < end` by `data`, in one commit. Returns rows written.

    `data` may be an iterator of frames with one schema (memory holds one frame at a time).
    An empty window deletes what the window held. `WindowWriter` also gives the committed version.
    """
    writer = WindowWriter(table, start, end)
    for df in [data] if isinstance(data, pl.DataFrame) else data:
        writer.add(df)
    return writer.commit().rows


class Commit(NamedTuple):
    """What a window commit did: rows written and the Delta version it created.

    `version` is None only when nothing was written to a table that does not exist.
    """

    rows: int
    version: int | None


# Attempts of one window commit when other writers commit in between (each attempt re-reads
# the table); past this the commit fails naming the table.
COMMIT_ATTEMPTS = 8
# Post-commit hooks: checkpoints yes, but never delete old log entries: a version that a model
# pinned (see `pin`) must stay readable, and the log is tiny next to the data files.
_HOOKS = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)


class WindowWriter:
    """Builds the replacement of one window of a table, frame by frame, then commits it at once.

    Each `add` writes the frame's rows as data files in their month partitions right away and
    keeps only the file paths, so memory holds one frame, not the window. `commit` swaps the
    window's month partitions for the new files in ONE Delta transaction: readers see the old
    window or the new one, never half; a crash before it leaves only unreferenced files (which
    `vacuum` removes once they are older than its retention window).

    Concurrent writers are serialised, never merged: a commit must land at exactly the version
    after the one it read (delta-rs's own retry is off, because its conflict check lets two
    overwrites of a month that had no files both succeed, duplicating rows). When another writer
    got there first, the commit re-reads the table and tries again, so the outcome is that of the
    two runs one after the other: disjoint windows both land, the same window is the later
    writer's, whole. A table is created only if it is still missing (never CREATE OR REPLACE).
    """

    def __init__(self, table: str, start: dt.date | str, end: dt.date | str, build_id: str | None = None):
        self.table, self.start, self.end = table, _as_date(start), _as_date(end)
        if self.start >= self.end:
            raise ValueError(f"lake table {table!r}: empty window [{self.start}, {self.end})")
        self.build_id = build_id
        self.files = _FileWriter(table)
        self.actions: list = []  # the window's own files, kept across commit attempts
        self.schema: pl.Schema | None = None
        self.rows = 0
        self.attempts = 0

    def add(self, df: pl.DataFrame) -> None:
        _check_window(df, self.table, self.start, self.end)
        self.schema = self.schema or df.schema
        self.rows += df.height
        self.actions += self.files.write(_storage_frame(df))

    def commit(self) -> Commit:
        """Commit the window; returns the rows written and the version this commit created."""
        for attempt in range(COMMIT_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0.05, 0.2) * attempt)  # let the other writer finish
            self.attempts = attempt + 1
            current = _table_or_none(self.table)
            if current is None and self.schema is None:
                return Commit(0, None)  # nothing to write and nothing to delete
            committed = self._try_commit(current)
            if committed is not None:
                return Commit(self.rows, committed)
        raise CommitFailedError(
            f"lake table {self.table!r}: window [{self.start}, {self.end}) not committed after "
            f"{COMMIT_ATTEMPTS} attempts: other writers kept committing to the table first"
        )

    def _try_commit(self, current: DeltaTable | None) -> int | None:
        """One attempt against `current` (None: the table was missing). Returns the version
        committed, or None when another commit landed since `current` was read."""
        properties = CommitProperties(
            custom_metadata={"quant_assets.build_id": self.build_id} if self.build_id else None,
            max_commit_retries=0,
        )
        if current is None:
            try:
                self.files.create(self.actions, self._arrow_schema(None), properties)
                return 0
            except (CommitFailedError, DeltaError):
                if _table_or_none(self.table) is None:
                    raise  # not a race: the table is still missing
                return None  # created meanwhile: commit into it as a normal overwrite
        # Months only partly inside the window keep their rows outside it: the commit replaces
        # whole month partitions, so those rows are rewritten alongside the new ones. They are
        # read at the version the commit replaces, so no other writer's rows can slip in.
        months = _months(self.start, self.end)
        kept = []
        for month in sorted({months[0], months[-1]}):
            rows = _rows_outside_window(current, month, self.start, self.end)
            if rows is not None and rows.height:
                kept += self.files.write(_storage_frame(rows))
        try:
            self.files.overwrite(
                current, self.actions + kept, self._arrow_schema(current), months, properties
            )
        except CommitFailedError:
            self.files.delete(kept)  # written for this attempt only
            return None
        return current.version() + 1

    def _arrow_schema(self, current: DeltaTable | None):
        if self.files.arrow_schema is not None:
            return self.files.arrow_schema
        if self.schema is not None:  # no rows: the schema comes from the (empty) frames
            return _with_month(_storage_frame(pl.DataFrame(schema=self.schema))).to_arrow().schema
        return current.schema().to_arrow()


def _table_or_none(table: str, version: int | None = None) -> DeltaTable | None:
    try:
        return DeltaTable(uri(table), version=version, storage_options=storage_options())
    except TableNotFoundError:
        return None


def _rows_outside_window(
    current: DeltaTable, month: str, start: dt.date, end: dt.date
) -> pl.DataFrame | None:
    first = dt.date.fromisoformat(month + "-01")
    nxt = next_month(first)
    if first >= start and nxt <= end:
        return None  # the month lies wholly inside the window
    return (
        pl.scan_delta(current.table_uri, version=current.version(), storage_options=storage_options())
        .filter(pl.col(PARTITION_COLUMN) == month, (pl.col("date") < start) | (pl.col("date") >= end))
        .drop(PARTITION_COLUMN)
        .collect()
    )


def _storage_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Delta's timestamp type is microseconds; `_ms` turns it back into the project's ms on read."""
    return df.with_columns(cs.datetime().dt.cast_time_unit("us"))


class _FileWriter:
    """Writes data files into the table's month partitions; commits them in one transaction."""

    def __init__(self, table: str):
        self.table = table
        if "://" not in uri(table):
            os.makedirs(uri(table), exist_ok=True)  # the storage handler needs the root to exist
        self.fs = _fs(table)
        self.arrow_schema = None

    def write(self, df: pl.DataFrame) -> list:
        """Write `df` as one data file per month; returns their add actions (not yet committed)."""
        import uuid

        from deltalake.transaction import AddAction

        actions = []
        if df.height == 0:
            return actions
        for (month,), part in _with_month(df).group_by(PARTITION_COLUMN, maintain_order=True):
            data = part.drop(PARTITION_COLUMN)
            if self.arrow_schema is None:
                self.arrow_schema = _with_month(data.head(0)).to_arrow().schema
            path = f"{PARTITION_COLUMN}={month}/part-{uuid.uuid4().hex}.parquet"
            full = f"{uri(self.table)}/{path}"
            if "://" not in full:
                os.makedirs(os.path.dirname(full), exist_ok=True)
            data.write_parquet(
                full,
                compression="zstd",
                statistics=True,
                row_group_size=128_000,
                storage_options=storage_options(),
            )
            [info] = self.fs.get_file_info([path])
            stats = {
                "numRecords": data.height,
                "minValues": {"date": str(data.get_column("date").min())},
                "maxValues": {"date": str(data.get_column("date").max())},
                "nullCount": {"date": 0},
            }
            actions.append(
                AddAction(
                    path,
                    info.size,
                    {PARTITION_COLUMN: month},
                    int(time.time() * 1000),
                    True,
                    json.dumps(stats),
                )
            )
        return actions

    def delete(self, actions: list) -> None:
        for action in actions:
            self.fs.delete_file(action.path)

    def create(self, actions: list, arrow_schema, properties: CommitProperties) -> None:
        """Create the table with `actions` as version 0; fails if the table exists or appears
        meanwhile (mode "error", and no retry at version 1 when another creator took version 0)."""
        from deltalake import Schema
        from deltalake.transaction import create_table_with_add_actions

        create_table_with_add_actions(
            uri(self.table),
            Schema.from_arrow(arrow_schema),
            actions,
            mode="error",
            partition_by=[PARTITION_COLUMN],
            storage_options=storage_options(),
            commit_properties=properties,
            post_commithook_properties=_HOOKS,
        )

    def overwrite(
        self,
        current: DeltaTable,
        actions: list,
        arrow_schema,
        months: list[str],
        properties: CommitProperties,
    ) -> None:
        current.create_write_transaction(
            actions,
            mode="overwrite",
            schema=arrow_schema,
            partition_by=[PARTITION_COLUMN],
            partition_filters=[(PARTITION_COLUMN, "in", months)],
            commit_properties=properties,
            post_commithook_properties=_HOOKS,
        )


def _fs(table: str):
    from deltalake.fs import DeltaStorageHandler

    return DeltaStorageHandler(uri(table), storage_options())


def scan(
    table: str,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    version: int | None = None,
) -> pl.LazyFrame:
    """Rows of `table` with `start <= date < end` (either bound optional), month partitions pruned."""
    start, end = _as_date(start), _as_date(end)
    lf = pl.scan_delta(uri(table), version=version, storage_options=storage_options())
    if start is not None:
        lf = lf.filter(pl.col(PARTITION_COLUMN) >= start.strftime("%Y-%m"), pl.col("date") >= start)
    if end is not None:
        last = end - dt.timedelta(days=1)
        lf = lf.filter(pl.col(PARTITION_COLUMN) <= last.strftime("%Y-%m"), pl.col("date") < end)
    return _ms(lf.drop(PARTITION_COLUMN))


def _ms(frame):
    """Delta stores timestamps in microseconds; the project's contract is milliseconds (schemas.TS)."""
    return frame.with_columns(cs.datetime().dt.cast_time_unit("ms"))


def read(table: str, start=None, end=None, version: int | None = None) -> pl.DataFrame:
    """`scan(...).collect()`; a table never written raises TableNotFoundError naming its URI."""
    return scan(table, start, end, version).collect()


def write_table(table: str, df: pl.DataFrame) -> None:
    """Replace a small, unpartitioned table (audits, reports) in one commit.

    Like window commits, a replace lands at the version after the one it saw or is redone, so
    two writers racing never leave both their rows (delta-rs's retry would append the loser's).
    """
    from deltalake import write_deltalake

    _retrying(
        f"lake table {table!r}: replace",
        lambda: write_deltalake(
            uri(table),
            df.to_arrow(),
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=storage_options(),
            commit_properties=CommitProperties(max_commit_retries=0),
            post_commithook_properties=_HOOKS,
        ),
    )


def _retrying(what: str, attempt_commit) -> None:
    """Run `attempt_commit` until a commit lands: each failed one left the table unchanged and is
    redone against the table as it is now."""
    for attempt in range(COMMIT_ATTEMPTS):
        if attempt:
            time.sleep(random.uniform(0.05, 0.2) * attempt)
        try:
            attempt_commit()
            return
        except CommitFailedError:
            continue
    raise CommitFailedError(
        f"{what}: not committed after {COMMIT_ATTEMPTS} attempts, other writers kept winning"
    )


def read_table(table: str, version: int | None = None) -> pl.DataFrame:
    """A whole unpartitioned table (see `write_table`)."""
    return _ms(pl.read_delta(uri(table), version=version, storage_options=storage_options()))


# --- Retention: pins, compaction, vacuum --------------------------------------------------------
#
# Every window commit leaves the files it replaced in place (old versions stay readable), and a
# killed run leaves files it never committed. `maintain` compacts a table, then deletes files no
# version still needs: those replaced longer than the retention window ago, and uncommitted files
# older than it. The retention window also protects writers in flight (their files are not yet in
# the log), so it must be longer than the longest run. Versions in `keep` - the ones models pinned
# with `pin`, and the ones Dagster recorded as current - keep every file they reference.

PINS_TABLE = "_pins"  # `_` names are the lake's own bookkeeping, skipped by `tables()`


def tables() -> list[str]:
    """Names of the Delta tables under the lake root (the lake's own `_` tables aside), sorted."""
    from pyarrow.fs import FileSelector, FileType

    base = root()
    if "://" not in base and not os.path.isdir(base):
        return []
    from deltalake.fs import DeltaStorageHandler

    fs = DeltaStorageHandler(base if "://" in base else os.path.abspath(base), storage_options())
    names = [
        info.base_name
        for info in fs.get_file_info_selector(FileSelector("", allow_not_found=True, recursive=False))
        if info.type == FileType.Directory
        and not info.base_name.startswith(("_", "."))
        # a directory someone made by hand under another name is not one of the lake's tables
        and safe_inputs.TABLE_NAME.fullmatch(info.base_name)
    ]
    return sorted(n for n in names if _table_or_none(n) is not None)


def pin(table: str, version: int, owner: str) -> None:
    """Keep `version` of `table` readable for `owner` (e.g. "liquid_teacher/2026-11-23"):
    `maintain` never removes a file that a pinned version references. Models pin the versions
    they were trained on; `unpin` releases them. Refuses a version that is not readable now."""
    from deltalake import write_deltalake

    missing = missing_files(table, version)
    if missing:
        raise ValueError(
            f"lake table {table!r}: version {version} cannot be pinned, {len(missing)} of its files are "
            f"already gone (e.g. {missing[0]})"
        )
    row = pl.DataFrame(
        {"table_name": [table], "version": [int(version)], "owner": [owner], "pinned_at": [_now_us()]},
        schema={"table_name": pl.String, "version": pl.Int64, "owner": pl.String, "pinned_at": _US},
    )
    # An append conflicts only while the pins table is being created by a parallel pin: redo it.
    _retrying(
        f"pin {table!r} v{version}",
        lambda: write_deltalake(
            uri(PINS_TABLE),
            row.to_arrow(),
            mode="append",
            storage_options=storage_options(),
            post_commithook_properties=_HOOKS,
        ),
    )


def unpin(owner: str, table: str | None = None) -> None:
    """Release every pin of `owner` (on `table` only, if given)."""
    if _table_or_none(PINS_TABLE) is None:
        return
    predicate = f"owner = {_sql_string(owner)}"
    if table is not None:
        predicate += f" AND table_name = {_sql_string(table)}"
    _retrying(
        f"unpin {owner!r}",
        lambda: DeltaTable(uri(PINS_TABLE), storage_options=storage_options()).delete(
            predicate, post_commithook_properties=_HOOKS
        ),
    )


def pinned_versions() -> dict[str, set[int]]:
    """{table: versions some owner pinned}; empty when nothing was ever pinned."""
    if _table_or_none(PINS_TABLE) is None:
        return {}
    pins = pl.read_delta(uri(PINS_TABLE), storage_options=storage_options())
    out: dict[str, set[int]] = {}
    for table, version in pins.select("table_name", "version").unique().iter_rows():
        out.setdefault(table, set()).add(version)
    return out


def missing_files(table: str, version: int) -> list[str]:
    """Data files that `version` of `table` references but storage no longer has (none: readable).

    A version that does not exist raises ValueError naming the table and version."""
    from pyarrow.fs import FileType

    try:
        snapshot = DeltaTable(uri(table), version=version, storage_options=storage_options())
    except (TableNotFoundError, DeltaError) as exc:
        raise ValueError(f"lake table {table!r}: no version {version} ({exc})") from exc
    paths = snapshot.get_add_actions(flatten=True).column("path").to_pylist()
    infos = _fs(table).get_file_info(paths)
    return [info.path for info in infos if info.type == FileType.NotFound]


class Maintenance(NamedTuple):
    """What `maintain` did to one table."""

    table: str
    files_before: int  # data files of the current version, before compaction
    files_after: int
    compaction: str  # "compacted", "nothing to compact", "off", or "skipped: ..." (the reason)
    replaced_files_removed: int  # files that versions older than the retention window referenced
    uncommitted_files_removed: int  # files no version ever referenced (killed runs), older than it
    bytes_reclaimed: int
    kept_versions: tuple[int, ...]
    kept_versions_missing_files: int  # > 0: a kept version lost files outside maintenance


def maintain(
    table: str,
    retention_hours: int,
    keep: Iterable[int] = (),
    compact: bool = True,
    target_file_bytes: int = 128 * 2**20,
) -> Maintenance:
    """Compact `table`'s small files, then vacuum it: delete files replaced more than
    `retention_hours` ago and uncommitted files older than that, except any file that a version
    in `keep` references. Versions newer than the retention window stay readable; the current one
    always does. See the section comment above for why the window must outlast every run.

    Windows over 168 h need the table's `delta.deletedFileRetentionDuration` (7 days) raised to
    match: checkpoints drop older tombstones, and vacuum then judges a replaced file by its write
    time. Kept versions are safe either way (their files are listed from their own snapshots)."""
    from deltalake import WriterProperties

    if retention_hours < 0:
        raise ValueError(f"lake table {table!r}: retention_hours must be >= 0, got {retention_hours}")
    keep = tuple(sorted(set(keep)))
    current = DeltaTable(uri(table), storage_options=storage_options())
    unknown = [v for v in keep if not 0 <= v <= current.version()]
    if unknown:
        raise ValueError(
            f"lake table {table!r}: cannot keep versions {unknown}, it has 0..{current.version()}"
        )
    files_before = len(current.get_add_actions(flatten=True))
    compaction = "off"
    if compact:
        compaction = "skipped: other writers kept committing to the table"
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                metrics = current.optimize.compact(
                    target_size=target_file_bytes,
                    writer_properties=WriterProperties(compression="ZSTD"),
                    # Like a window commit: land right after the version read or redo it, so a
                    # writer's commit in between is never silently merged with the rewrite.
                    commit_properties=CommitProperties(max_commit_retries=0),
                    post_commithook_properties=_HOOKS,
                )
                compaction = "compacted" if metrics.get("numFilesRemoved", 0) else "nothing to compact"
                break
            except CommitFailedError:
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
                current = DeltaTable(uri(table), storage_options=storage_options())
        current = DeltaTable(uri(table), storage_options=storage_options())
    files_after = len(current.get_add_actions(flatten=True))

    args = {
        "retention_hours": retention_hours,
        # The caller's window is the policy (the table property's 7-day floor is not).
        "enforce_retention_duration": False,
        "keep_versions": list(keep) or None,
        "post_commithook_properties": _HOOKS,
    }
    replaced = set(current.vacuum(dry_run=True, full=False, **args))  # tombstones past the window
    candidates = current.vacuum(dry_run=True, full=True, **args)  # + files never committed
    sizes = {info.path: info.size for info in _fs(table).get_file_info(candidates)}
    removed = current.vacuum(dry_run=False, full=True, **args) if candidates else []
    missing = sum(len(missing_files(table, v)) for v in keep)
    return Maintenance(
        table=table,
        files_before=files_before,
        files_after=files_after,
        compaction=compaction,
        replaced_files_removed=sum(1 for p in removed if p in replaced),
        uncommitted_files_removed=sum(1 for p in removed if p not in replaced),
        bytes_reclaimed=sum(sizes.get(p) or 0 for p in removed),
        kept_versions=keep,
        kept_versions_missing_files=missing,
    )


_US = pl.Datetime("us", "UTC")


def _now_us() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
