"""The one Definitions object: assembly only; the layers are listed in defs/layers.py."""

import dagster as dg

from quant_assets.defs.evaluation.jobs import PROMOTION_JOBS
from quant_assets.defs.features.automation import automation_sensor
from quant_assets.defs.layers import ASSETS, CHECKS, JOBS
from quant_assets.defs.maintenance.automation import weekly_lake_maintenance
from quant_assets.defs.models.automation import model_sensors
from quant_assets.defs.raw.automation import daily_audits, daily_running_month
from quant_assets.deploy.k8s import executor as deploy_executor
from quant_assets.resources import default_resources

__all__ = ["ASSETS", "CHECKS", "defs"]

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[*JOBS, *PROMOTION_JOBS],
    schedules=[daily_running_month, daily_audits, weekly_lake_maintenance],
    sensors=[automation_sensor, *model_sensors],  # conditions (defs/conditions.py); signal-driven retrains
    resources=default_resources(),
    # In-process: on a 2-core box the multiprocess executor costs ~6 s per run in process
    # start-up and gives nothing back (each step is already vectorised). On Kubernetes,
    # QUANT_ASSETS_EXECUTOR=k8s (deploy/k8s) runs each step as a pod (k8s_job_executor).
    executor=deploy_executor(),
)
