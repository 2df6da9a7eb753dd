import datetime as dt

import dagster as dg

from quant_assets.defs.raw.automation import daily_audits, daily_running_month


def test_daily_schedule_rebuilds_the_running_month():
    at = dt.datetime(2026, 11, 24, 0, 20, tzinfo=dt.UTC)
    with dg.build_schedule_context(scheduled_execution_time=at) as context:
        request = daily_running_month(context)
    assert request.partition_key == "2026-11-01"
    assert request.run_key == "2026-11-01@2026-11-24"
    # On the first of a month the new month is already a partition (end_offset=1).
    with dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 12, 1, 0, 20, tzinfo=dt.UTC)
    ) as ctx:
        assert daily_running_month(ctx).partition_key == "2026-12-01"


def test_daily_audit_runs_once_a_day():
    at = dt.datetime(2026, 11, 24, 0, 50, tzinfo=dt.UTC)
    with dg.build_schedule_context(scheduled_execution_time=at) as context:
        assert daily_audits(context).run_key == "audit@2026-11-24"
