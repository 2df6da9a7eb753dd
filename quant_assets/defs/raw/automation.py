"""Keep the running month current: a daily run re-materialises its raw tables and audits."""

import dagster as dg

from quant_assets.defs.layers import AUDIT, RAW
from quant_assets.partitions import monthly

# The layers' own jobs (defs/layers.py), so the schedules run exactly what the CLI and the UI run.
raw_job, audit_job = RAW.job, AUDIT.job


@dg.schedule(
    job=raw_job,
    cron_schedule="20 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def daily_running_month(context: dg.ScheduleEvaluationContext):
    """Each day, rebuild the running month (the last partition) as its days arrive."""
    now = context.scheduled_execution_time
    key = monthly.get_partition_keys(current_time=now)[-1]
    return dg.RunRequest(run_key=f"{key}@{now:%Y-%m-%d}", partition_key=key)


@dg.schedule(
    job=audit_job,
    cron_schedule="50 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def daily_audits(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"audit@{context.scheduled_execution_time:%Y-%m-%d}")
