"""One build, one snapshot, and lake maintenance, through Dagster on real Delta tables."""

import datetime as dt
import os
import time

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from quant_assets import coverage, lake
from quant_assets.defs.audit.assets import required_data_readiness
from quant_assets.defs.lineage import recorded, recorded_snapshot, snapshot_scans
from quant_assets.defs.maintenance.assets import lake_maintenance
from quant_assets.defs.maintenance.automation import weekly_lake_maintenance
from quant_assets.defs.raw.assets import raw_tables
from quant_assets.resources import default_resources
from quant_assets.schemas import RAW_TABLE_NAMES, RAW_TABLES

MARCH = "2024-03-01"
READINESS = {
    "ops": {"required_data_readiness": {"config": {"window_days": 30, "as_of": "2024-03-31T00:00:00+00:00"}}}
}


def test_the_audit_reads_the_versions_the_raw_run_recorded_not_a_later_rewrite():
    inst = dg.DagsterInstance.ephemeral()
    raw = dg.materialize([raw_tables], instance=inst, partition_key=MARCH, resources=default_resources())
    assert raw.success
    events = raw.get_asset_materialization_events()
    assert {e.asset_key.to_user_string() for e in events} == set(RAW_TABLE_NAMES)
    for event in events:
        meta = event.materialization.metadata
        # One build id for every table of the run, and the version its commit created.
        assert meta["build_id"].value == raw.run_id
        assert meta["delta_version"].value == 0
    assert recorded_snapshot(inst, RAW_TABLE_NAMES) == dict.fromkeys(RAW_TABLE_NAMES, 0)
    [commit] = DeltaTable(lake.uri("market_bars")).history(1)
    assert commit["quant_assets.build_id"] == raw.run_id

    # Outside Dagster, someone empties March of market_bars: the lake's latest moves on to v1.
    lake.write_window("market_bars", RAW_TABLES["market_bars"].empty(), "2024-03-01", "2024-04-01")
    assert (
        lake.version("market_bars") == 1 and lake.read("market_bars", "2024-03-01", "2024-04-01").height == 0
    )
    as_of = dt.datetime(2024, 3, 31, tzinfo=dt.UTC)
    at_latest = coverage.readiness({t: lake.scan(t) for t in coverage.REQUIRED_TABLES}, as_of, 30)
    assert at_latest.filter(pl.col("table") == "market_bars").get_column("coverage").max() == 0.0
    assert recorded_snapshot(inst, ["market_bars"]) == {"market_bars": 0}
    assert recorded(inst, ["market_bars"])["market_bars"].build_id == raw.run_id

    audit = dg.materialize([required_data_readiness], instance=inst, run_config=READINESS)
    assert audit.success
    [event] = audit.get_asset_materialization_events()
    assert event.materialization.metadata["lake_versions"].value["market_bars"] == "v0"
    ready = lake.read_table("required_data_readiness").filter(pl.col("table") == "market_bars")
    assert ready.height == 10 and ready.get_column("coverage").min() >= 0.99


def test_a_table_never_materialised_is_read_at_its_latest_and_says_so():
    inst = dg.DagsterInstance.ephemeral()
    lake.write_window("prices", RAW_TABLES["prices"].empty(), "2024-03-01", "2024-04-01")
    scans, source = snapshot_scans(inst, ["prices", "market_bars"])
    assert source == {"prices": "latest v0, not recorded", "market_bars": "missing"}
    assert scans["market_bars"] is None and scans["prices"].collect().height == 0


def test_a_recorded_version_the_lake_does_not_hold_is_an_error_naming_the_table():
    inst = dg.DagsterInstance.ephemeral()
    lake.write_window("prices", RAW_TABLES["prices"].empty(), "2024-03-01", "2024-04-01")
    inst.report_runless_asset_event(dg.AssetMaterialization("prices", metadata={"delta_version": 4}))
    try:
        recorded_snapshot(inst, ["prices"])
    except ValueError as exc:
        assert "recorded 'prices' at Delta version 4" in str(exc) and "versions up to 0" in str(exc)
    else:
        raise AssertionError("a recorded version missing from the lake must raise")


def _days(start: str, end: str, value: int) -> pl.DataFrame:
    days = pl.date_range(
        dt.date.fromisoformat(start), dt.date.fromisoformat(end), "1d", closed="left", eager=True
    )
    return pl.DataFrame({"date": days, "value": [value] * len(days)})


def _files(table: str) -> set[str]:
    base = lake.uri(table)
    return {
        os.path.relpath(os.path.join(d, f), base)
        for d, _, names in os.walk(base)
        if "_delta_log" not in d
        for f in names
        if f.endswith(".parquet")
    }


def _maintain(inst: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    config = {"ops": {"lake_maintenance": {"config": {"retention_hours": 0}}}}
    return dg.materialize([lake_maintenance], instance=inst, run_config=config, raise_on_error=False)


def test_maintenance_keeps_pinned_and_recorded_versions_and_reports_what_it_reclaimed():
    inst = dg.DagsterInstance.ephemeral()
    files = []
    for v in range(4):  # versions 0..3 of one window, each with its own value
        lake.write_window("t", _days("2021-01-01", "2021-03-01", v), "2021-01-01", "2021-03-01")
        files.append(_files("t") - set().union(*files))
    lake.pin("t", 0, owner="model_x/2021-03")
    inst.report_runless_asset_event(dg.AssetMaterialization("t", metadata={"delta_version": 1}))
    killed = lake.WindowWriter("t", "2021-01-01", "2021-02-01")  # a run killed before its commit
    killed.add(_days("2021-01-01", "2021-02-01", 9))
    orphans = _files("t") - set().union(*files)
    past = time.time() - 3600
    for p in orphans:
        os.utime(os.path.join(lake.uri("t"), p), (past, past))
    gone = files[2] | orphans
    reclaimable = sum(os.path.getsize(os.path.join(lake.uri("t"), p)) for p in gone)
    frames = (
        _days(f"2021-{m:02d}-{d:02d}", f"2021-{m:02d}-{d + 10:02d}", d) for m in (1, 2) for d in (1, 11)
    )
    lake.write_window("u", frames, "2021-01-01", "2021-03-01")  # four small files, two months
    reclaimable += sum(os.path.getsize(os.path.join(lake.uri("u"), p)) for p in _files("u"))
    u_rows = lake.read("u").sort("date")

    result = _maintain(inst)
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["kept_versions"] == {"t": [0, 1], "u": []}
    # t: version 2's files (neither pinned, recorded nor current) and the killed run's file;
    # u: its four small files, replaced by two compacted ones (retention 0: gone at once).
    assert (meta["replaced_files_removed"], meta["uncommitted_files_removed"]) == (2 + 4, 1)
    assert meta["bytes_reclaimed"] == reclaimable
    assert (meta["files_before"], meta["files_after"]) == (2 + 4, 2 + 2)
    assert _files("t") == files[0] | files[1] | files[3]
    for version in (0, 1, 3):
        assert set(lake.read("t", version=version).get_column("value")) == {version}
    assert lake.missing_files("t", 2)
    assert u_rows.height == 40 and lake.read("u").sort("date").equals(u_rows)
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "kept_versions_intact" and check.passed

    # Files of a pinned version deleted behind maintenance's back: the check says so.
    os.remove(os.path.join(lake.uri("t"), sorted(files[0])[0]))
    again = _maintain(inst)
    [check] = again.get_asset_check_evaluations()
    assert not check.passed and check.metadata["missing_files"].value == 1
    assert "t [0, 1]" in check.description


def test_maintenance_runs_weekly():
    at = dt.datetime(2026, 11, 29, 3, 30, tzinfo=dt.UTC)  # a Sunday
    with dg.build_schedule_context(scheduled_execution_time=at) as context:
        assert weekly_lake_maintenance(context).run_key == "lake_maintenance@2026-11-29"
