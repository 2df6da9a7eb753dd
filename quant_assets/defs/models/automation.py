"""Retraining on signals: early when monitoring fails, fine-tuning when a champion stops paying.

The calendar part of retraining is an automation condition on the model assets (defs/conditions.py:
a new month is a new cut-off partition, built when its data lands). These two sensors add the
retrains that a signal calls for. Both request the running cut-off partition (the latest of
`model_cutoffs`: the newest data a model may learn from) and are deduplicated by run key.

- `retrain_on_monitoring`: a failed `prediction_drift` or `confidence_calibration` evaluation on
  `monitoring` (a day's champion saw a market unlike its training one, or its confidence no longer
  means what it says) retrains the teacher and student of the running cut-off on the most recent
  `RETRAIN.recent_days` days (the regime the checks say changed) and re-gates them. At most one
  such retrain per monitored day. Its candidates are judged by the same gates; promotion stays a
  decision (the promote job).
- `fine_tune_unprofitable_champion`: when `candidate_models` judges the current champion's line
  (its coin, horizon and kind, in a partition at or after the champion's cut-off) and the
  profitability gate `pnl_after_cost` fails, the student of the running cut-off is trained for
  `FINE_TUNE.steps` steps starting from the champion's student weights (`init_from`: the champion
  itself when it is a student, else the student registered for the champion's cut-off). A run the
  sensor started does not start another (its own evaluation is skipped).

Champions are read from the `promotions` table (every promotion and rollback, written after the
registry changed): the last row of a coin and horizon names its champion.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import dagster as dg
import polars as pl
from dagster._core.events import DagsterEventType

from quant_assets.defs.evaluation.assets import candidate_models
from quant_assets.defs.evaluation.promotion import read_promotions
from quant_assets.defs.evaluation.tables import read_candidate_partition
from quant_assets.defs.models.assets import liquid_student, liquid_teacher
from quant_assets.defs.operations.checks import confidence_calibration, prediction_drift
from quant_assets.defs.operations.monitoring import monitoring
from quant_assets.partitions import model_cutoffs

REASON_TAG = "quant_assets/retrain"  # drift | calibration | fine_tune: why a sensor started the run
PROFIT_GATE = "pnl_after_cost"
RETRAIN_ASSETS = (liquid_teacher.key, liquid_student.key, candidate_models.key)
FINE_TUNE_ASSETS = (liquid_student.key, candidate_models.key)


@dataclass(frozen=True)
class Retrain:
    recent_days: int = int(os.environ.get("QUANT_ASSETS_RETRAIN_RECENT_DAYS", "120"))


@dataclass(frozen=True)
class FineTune:
    steps: int = int(os.environ.get("QUANT_ASSETS_FINE_TUNE_STEPS", "100"))
    lr: float = float(os.environ.get("QUANT_ASSETS_FINE_TUNE_LR", "3e-4"))


RETRAIN, FINE_TUNE = Retrain(), FineTune()
MONITORING_CHECKS = {
    prediction_drift.check_key.name: "drift",
    confidence_calibration.check_key.name: "calibration",
}


def running_cutoff() -> str:
    """The latest model partition: the running month's cut-off."""
    return model_cutoffs.get_last_partition_key()


@dg.sensor(
    name="retrain_on_monitoring",
    target=dg.AssetSelection.assets(*RETRAIN_ASSETS),
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed drift or calibration check on monitoring retrains the running cut-off's teacher "
    "and student on the most recent days and re-gates them (one retrain per monitored day).",
)
def retrain_on_monitoring(context: dg.SensorEvaluationContext):
    # every check's evaluations after the cursor's time (the event log does not index them by asset key;
    # a SQLite instance shards events by run, so storage ids do not order runs: time does)
    after = float(context.cursor) if context.cursor else None
    records = context.instance.get_event_records(
        dg.EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION, after_timestamp=after),
        ascending=True,
        limit=500,
    )
    if not records:
        return dg.SkipReason("no new check evaluations")
    cutoff = running_cutoff()
    requests, seen_days = [], set()
    for rec in records:
        ev = rec.event_log_entry.dagster_event.event_specific_data
        reason = MONITORING_CHECKS.get(ev.check_name)
        if ev.asset_key != monitoring.key or reason is None or ev.passed:
            continue
        run = context.instance.get_run_by_id(rec.event_log_entry.run_id)
        # the monitored day: the evaluation's partition, else its run's (a one-day run), else the run itself
        day = (
            ev.partition or (run.tags.get("dagster/partition") if run else None) or rec.event_log_entry.run_id
        )
        if day in seen_days:  # drift and calibration of one day: one retrain
            continue
        seen_days.add(day)
        window = {"window": {"kind": "production", "lookback_days": RETRAIN.recent_days}}
        requests.append(
            dg.RunRequest(
                run_key=f"retrain:{cutoff}:{day}",
                partition_key=cutoff,
                asset_selection=list(RETRAIN_ASSETS),
                run_config={
                    "ops": {"liquid_teacher": {"config": window}, "liquid_student": {"config": window}}
                },
                tags={REASON_TAG: reason, "quant_assets/monitored_day": day},
            )
        )
    context.update_cursor(repr(max(r.timestamp for r in records)))
    return requests or dg.SkipReason(f"{len(records)} check evaluations, no failed drift or calibration")


def current_champions() -> pl.DataFrame:
    """symbol, horizon, registered_name, version, cutoff of each coin and horizon's champion (the last
    promotions row: a promotion names the new champion, a rollback the restored one)."""
    rows = read_promotions()
    if rows.height == 0:
        return rows
    return rows.sort("at").group_by("symbol", "horizon", maintain_order=True).last()


def _kind(registered_name: str) -> str:
    return registered_name.split("_", 3)[-1]  # liquid_BTC_1h_student -> student


def _pnl_gate_failed(row: dict) -> bool:
    gates = json.loads(row["gates"] or "[]")
    return any(g.get("name") == PROFIT_GATE and not g.get("passed") for g in gates)


def student_of(champion: dict) -> str | None:
    """models:/ URI of the student weights to fine-tune from for this champion, or None."""
    if _kind(champion["registered_name"]) == "student":
        return f"models:/{champion['registered_name']}/{champion['version']}"
    if champion["cutoff"] is None:
        return None
    rows = read_candidate_partition(champion["cutoff"]).filter(
        (pl.col("kind") == "student")
        & (pl.col("symbol") == champion["symbol"])
        & (pl.col("horizon") == champion["horizon"])
        & (pl.col("registered_version") != "")
    )
    if rows.height == 0:
        return None
    last = rows.sort("evaluated_at").row(-1, named=True)
    return f"models:/{last['registered_name']}/{last['registered_version']}"


def unprofitable_champions(cutoff) -> list[tuple[dict, dict]]:
    """(champion, its line's candidate row of partition `cutoff`) where the profitability gate failed."""
    champions = current_champions()
    if champions.height == 0:
        return []
    rows = read_candidate_partition(cutoff)
    out = []
    for champ in champions.iter_rows(named=True):
        if champ["cutoff"] is not None and champ["cutoff"] > cutoff:
            continue  # a partition before the champion's own: not its line's judgement any more
        line = rows.filter(
            (pl.col("symbol") == champ["symbol"])
            & (pl.col("horizon") == champ["horizon"])
            & (pl.col("kind") == _kind(champ["registered_name"]))
        )
        for row in line.iter_rows(named=True):
            if _pnl_gate_failed(row):
                out.append((champ, row))
    return out


@dg.sensor(
    name="fine_tune_unprofitable_champion",
    target=dg.AssetSelection.assets(*FINE_TUNE_ASSETS),
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When candidate_models fails the profitability gate for a champion's line, fine-tune the "
    "running cut-off's student from the champion's student weights (FINE_TUNE.steps steps) and re-gate it.",
)
def fine_tune_unprofitable_champion(context: dg.SensorEvaluationContext):
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=candidate_models.key, after_storage_id=after),
        limit=100,
        ascending=True,
    ).records
    if not records:
        return dg.SkipReason("no new candidate_models materialisations")
    target = running_cutoff()
    requests, notes = [], []
    for rec in records:
        run = context.instance.get_run_by_id(rec.run_id)
        if run is not None and run.tags.get(REASON_TAG) == "fine_tune":
            notes.append(f"{rec.partition_key}: judged a fine-tune run; not fine-tuned again")
            continue
        if rec.partition_key is None:
            continue
        cutoff = model_cutoffs.time_window_for_partition_key(rec.partition_key).start
        failing = unprofitable_champions(cutoff)
        if not failing:
            continue
        champ, row = failing[0]
        init = student_of(champ)
        if init is None:
            notes.append(f"{champ['registered_name']} v{champ['version']}: no student weights to start from")
            continue
        why = (
            f"{PROFIT_GATE} failed for champion {champ['registered_name']} v{champ['version']} "
            f"({row['registered_name']} v{row['registered_version']}, cut-off {rec.partition_key})"
        )
        requests.append(
            dg.RunRequest(
                run_key=f"fine_tune:{target}:{rec.storage_id}",
                partition_key=target,
                asset_selection=list(FINE_TUNE_ASSETS),
                run_config={
                    "ops": {
                        "liquid_student": {
                            "config": {"init_from": init, "steps": FINE_TUNE.steps, "lr": FINE_TUNE.lr}
                        }
                    }
                },
                tags={REASON_TAG: "fine_tune", "quant_assets/fine_tune_why": why[:250]},
            )
        )
    context.update_cursor(str(records[-1].storage_id))
    if requests:
        return requests
    return dg.SkipReason("; ".join(notes) or "no champion's profitability gate failed")


model_sensors = [retrain_on_monitoring, fine_tune_unprofitable_champion]
