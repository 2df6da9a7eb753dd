"""The one Definitions object: assembly only; every piece lives in its layer under defs/."""

import dagster as dg

from quant_assets.defs.audit.assets import full_history_audit, required_data_readiness
from quant_assets.defs.audit.checks import readiness_ready
from quant_assets.defs.features.assets import feature_assets
from quant_assets.defs.features.automation import automation_sensor, features_job
from quant_assets.defs.features.checks import feature_checks
from quant_assets.defs.maintenance.assets import lake_maintenance
from quant_assets.defs.maintenance.automation import lake_maintenance_job, weekly_lake_maintenance
from quant_assets.defs.raw.assets import raw_tables
from quant_assets.defs.raw.automation import audit_job, daily_audits, daily_running_month, raw_job
from quant_assets.defs.raw.checks import raw_checks
from quant_assets.resources import default_resources

ASSETS = [raw_tables, required_data_readiness, full_history_audit, *feature_assets]
CHECKS = [*raw_checks, readiness_ready, *feature_checks]

defs = dg.Definitions(
    assets=[*ASSETS, lake_maintenance],
    asset_checks=CHECKS,
    jobs=[raw_job, audit_job, features_job, lake_maintenance_job],
    schedules=[daily_running_month, daily_audits, weekly_lake_maintenance],
    sensors=[automation_sensor],
    resources=default_resources(),
    # In-process: on a 2-core box the multiprocess executor costs ~6 s per run in process
    # start-up and gives nothing back (each step is already vectorised). Deployments that
    # want isolation set the executor in run config.
    executor=dg.in_process_executor,
)
