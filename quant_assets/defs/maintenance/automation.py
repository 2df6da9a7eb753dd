"""Run lake maintenance weekly, at a quiet hour (writers racing it redo their commits, but the
daily raw run at 00:20 and the audits at 00:50 are long done by 03:30)."""

import dagster as dg

from quant_assets.defs.layers import MAINTENANCE

lake_maintenance_job = MAINTENANCE.job  # the layer's job (defs/layers.py)


@dg.schedule(
    job=lake_maintenance_job,
    cron_schedule="30 3 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def weekly_lake_maintenance(context: dg.ScheduleEvaluationContext):
    """Each Sunday, maintain the lake with the default one-week retention window."""
    return dg.RunRequest(run_key=f"lake_maintenance@{context.scheduled_execution_time:%Y-%m-%d}")
