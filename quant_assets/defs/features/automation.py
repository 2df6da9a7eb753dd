"""Features follow the data: eager automation rebuilds the latest month when raw data lands."""

import dagster as dg

# Evaluates the eager conditions on the feature assets (and anything later layers add).
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all(),
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
