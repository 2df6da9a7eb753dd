"""Features follow the data: eager automation rebuilds the latest month when raw data lands."""

import dagster as dg

from quant_assets.partitions import monthly

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.groups("features"),
    partitions_def=monthly,
    description="The four feature tables for a month or a range of months.",
)

# Evaluates the eager conditions on the feature assets (and anything later layers add).
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all(),
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
