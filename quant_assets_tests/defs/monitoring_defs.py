"""A tiny code location for the run monitoring test: what the runs do does not matter, only
that a worker dies and the instance (the repo's dagster.yaml) notices.

`sleeper` stands for a long backfill that gets killed; `after_crash` for the next scheduled
run, requested once by a sensor when two sleepers hold both run slots, so it has to queue.
"""

import time

import dagster as dg


@dg.asset
def sleeper() -> None:
    time.sleep(600)  # killed long before


@dg.asset
def after_crash() -> None:
    pass


after_crash_job = dg.define_asset_job("after_crash_job", selection=[after_crash])


SLEEPER_JOB = "__ephemeral_asset_job__"  # what dg.materialize names the sleepers' runs


@dg.sensor(job=after_crash_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def request_after_crash(context: dg.SensorEvaluationContext):
    started = context.instance.get_runs(
        dg.RunsFilter(job_name=SLEEPER_JOB, statuses=[dg.DagsterRunStatus.STARTED])
    )
    if len(started) < 2:
        return dg.SkipReason(f"{len(started)}/2 sleepers started")
    return dg.RunRequest(run_key="after-crash")


defs = dg.Definitions(
    assets=[sleeper, after_crash],
    jobs=[after_crash_job],
    sensors=[request_after_crash],
    executor=dg.in_process_executor,  # one process less to start on a busy box
)
