"""Automation after the features: model cut-offs follow their data, paper days follow the day, both wait
for upstream blocking checks across runs; the retrain and fine-tune sensors. Dagster's own evaluators
(`evaluate_automation_conditions`, sensor build contexts), a temp instance and a real temp lake; no sleeps.

The feature month is written to the lake and recorded as a materialisation of `feature_matrix_main`
(what a features run does), and its blocking check `feature_matrix_contract` runs for real on it in a run
of its own: the "earlier run" whose verdict the automation must honour. Evaluation times are in 2024,
so the running month and "yesterday" do not depend on the day the suite runs.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import polars as pl
import pytest

from quant_assets import lake
from quant_assets.definitions import defs
from quant_assets.defs.evaluation.promotion import append_promotion
from quant_assets.defs.evaluation.tables import CANDIDATE_SCHEMA, replace_candidates
from quant_assets.defs.features.assets import feature_matrix_main
from quant_assets.defs.features.checks import feature_matrix_contract
from quant_assets.defs.models import automation as auto
from quant_assets.defs.models.assets import _init_weights
from quant_assets.defs.operations.checks import prediction_drift
from quant_assets.defs.operations.monitoring import monitoring
from quant_assets.defs.operations.tables import MONITORING_SCHEMA, PAPER_MONITORING
from quant_assets.features.keys import LABEL_KEYS, LIQUID_FULL_FEATURE_KEYS
from quant_assets.partitions import model_cutoffs

MATRIX = "feature_matrix_main"
FOLLOWERS = ("liquid_teacher", "liquid_student", "candidate_models")
DAILY = ("paper_trading", "monitoring")
WATCHED = dg.AssetSelection.groups("models", "evaluation", "operations")


def write_month(month: dt.date, duplicated: bool = False) -> None:
    """Two coins' first hour of the month in feature_matrix_main (every contract column), recorded in
    the instance by the caller; `duplicated` repeats every row (the contract's duplicate check fails)."""
    ts = pl.datetime_range(
        dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC),
        dt.datetime(month.year, month.month, 1, 1, tzinfo=dt.UTC),
        "5m",
        closed="left",
        eager=True,
        time_unit="ms",
    )
    frame = pl.concat(
        pl.DataFrame({"symbol": s, "ts": ts}).with_columns(
            pl.lit(0.0).alias(k) for k in (*LIQUID_FULL_FEATURE_KEYS, *LABEL_KEYS)
        )
        for s in ("BTCUSDT", "ETHUSDT")
    ).with_columns(date=pl.col("ts").dt.date())
    if duplicated:
        frame = pl.concat([frame, frame])
    nxt = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
    lake.write_window(MATRIX, frame, month, nxt)


def land_month(inst, month: dt.date, duplicated: bool = False) -> bool:
    """A run writes the month (a stand-in for the features run: same key and partitions) and the real
    blocking check `feature_matrix_contract` judges it in that run; returns its verdict."""
    return run_with_check(inst, feature_matrix_main, feature_matrix_contract, month.isoformat(),
                          lambda: write_month(month, duplicated))  # fmt: skip


def run_with_check(inst, asset, check, partition_key: str, write) -> bool:
    @dg.asset(key=asset.key, partitions_def=asset.partitions_def)
    def writer() -> None:
        write()

    res = dg.materialize([writer, check], partition_key=partition_key, instance=inst, raise_on_error=False)
    [ev] = res.get_asset_check_evaluations()
    return ev.passed


def requested(result) -> dict[str, set[str]]:
    out = {}
    for name in (*FOLLOWERS, *DAILY):
        keys = result.get_requested_partitions(dg.AssetKey(name))
        if keys:
            out[name] = keys
    return out


def test_models_and_paper_days_wait_for_a_failed_check_across_runs_then_follow_monthly_and_daily():
    t_march = dt.datetime(2024, 3, 5, 1, tzinfo=dt.UTC)

    def tick(cursor, at=t_march):
        return dg.evaluate_automation_conditions(
            defs=defs, instance=inst, asset_selection=WATCHED, evaluation_time=at, cursor=cursor
        )

    with dg.instance_for_test() as inst:
        first = tick(None)
        assert first.total_requested == 0

        # an earlier run's blocking check failed on the running month: nothing that reads it follows
        assert not land_month(inst, dt.date(2024, 3, 1), duplicated=True)
        blocked = tick(first.cursor)
        assert requested(blocked) == {}
        assert requested(tick(blocked.cursor)) == {}  # and still not on the next tick

        # a later run fixes the month and its check passes: the running cut-off and yesterday follow
        assert land_month(inst, dt.date(2024, 3, 1))
        follow = tick(blocked.cursor)
        cut, day = {"2024-03-01"}, {"2024-03-04"}
        assert requested(follow) == {**dict.fromkeys(FOLLOWERS, cut), **dict.fromkeys(DAILY, day)}
        assert requested(tick(follow.cursor)) == {}  # nothing new landed

        # the month turns: the new cut-off waits for its month's data, then is built (the monthly retrain)
        t_april = dt.datetime(2024, 4, 1, 6, tzinfo=dt.UTC)
        turned = tick(follow.cursor, t_april)
        assert "liquid_teacher" not in requested(turned)
        assert land_month(inst, dt.date(2024, 4, 1))
        t_april2 = dt.datetime(2024, 4, 2, 6, tzinfo=dt.UTC)
        monthly = tick(turned.cursor, t_april2)
        assert requested(monthly) == {
            **dict.fromkeys(FOLLOWERS, {"2024-04-01"}),
            **dict.fromkeys(DAILY, {"2024-04-01"}),
        }


def monitoring_day(day: dt.date, psi: float) -> None:
    row = {c: None for c in MONITORING_SCHEMA}
    row |= {"date": day, "symbol": "BTCUSDT", "horizon": "1h", "model": "liquid_teacher",
            "registered_name": "liquid_BTC_1h_teacher", "version": "3", "prediction_psi": psi,
            "feature_psi_max": 0.01, "feature_psi": "{}"}  # fmt: skip
    df = pl.DataFrame([row], schema=MONITORING_SCHEMA, strict=False)
    lake.write_window(PAPER_MONITORING, df, day, day + dt.timedelta(days=1))


def run_drift_check(inst, day: dt.date, psi: float) -> bool:
    return run_with_check(
        inst, monitoring, prediction_drift, day.isoformat(), lambda: monitoring_day(day, psi)
    )


def test_a_failed_drift_check_retrains_the_running_cutoff_on_recent_days_once_per_day():
    with dg.instance_for_test() as inst:
        day = dt.date(2024, 3, 4)
        assert run_drift_check(inst, day, psi=0.02)
        ctx = dg.build_sensor_context(instance=inst)
        assert isinstance(auto.retrain_on_monitoring(ctx), dg.SkipReason)  # a passed check: no retrain

        assert not run_drift_check(inst, day, psi=0.6)  # the champion's predictions drifted (> psi_max 0.25)
        ctx = dg.build_sensor_context(instance=inst, cursor=ctx.cursor)
        [req] = auto.retrain_on_monitoring(ctx)
        cutoff = model_cutoffs.get_last_partition_key()
        assert req.partition_key == cutoff and req.run_key == f"retrain:{cutoff}:{day}"
        assert set(req.asset_selection) == set(auto.RETRAIN_ASSETS)
        assert req.tags[auto.REASON_TAG] == "drift"
        window = req.run_config["ops"]["liquid_teacher"]["config"]["window"]
        assert window == {"kind": "production", "lookback_days": auto.RETRAIN.recent_days}

        # the same evaluation is not seen twice; a second failure of the day keeps the same run key
        ctx = dg.build_sensor_context(instance=inst, cursor=ctx.cursor)
        assert isinstance(auto.retrain_on_monitoring(ctx), dg.SkipReason)
        assert not run_drift_check(inst, day, psi=0.7)
        ctx = dg.build_sensor_context(instance=inst, cursor=ctx.cursor)
        [again] = auto.retrain_on_monitoring(ctx)
        assert again.run_key == req.run_key  # Dagster launches one run per run key


def candidate_row(cutoff: dt.datetime, kind: str, version: str, pnl_passed: bool) -> dict:
    gates = [{"name": "oos_ic", "passed": True}, {"name": auto.PROFIT_GATE, "passed": pnl_passed}]
    row = {c: None for c in CANDIDATE_SCHEMA}
    return row | {
        "cutoff": cutoff, "model": f"liquid_{kind}", "kind": kind, "symbol": "BTCUSDT", "horizon": "1h",
        "registered_name": f"liquid_BTC_1h_{kind}", "registered_version": version, "gates": json.dumps(gates),
        "passed": pnl_passed, "evaluated_at": cutoff + dt.timedelta(days=40), "date": cutoff.date(),
    }  # fmt: skip


def test_an_unprofitable_champion_starts_a_student_fine_tune_from_its_cutoffs_student():
    feb, mar = dt.datetime(2024, 2, 1, tzinfo=dt.UTC), dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    # February: the teacher passed and was promoted; its cut-off's student is version 5
    replace_candidates(feb, pl.DataFrame([candidate_row(feb, "teacher", "2", True),
                                          candidate_row(feb, "student", "5", False)], schema=CANDIDATE_SCHEMA))  # fmt: skip
    append_promotion({"at": feb + dt.timedelta(days=31), "action": "promote", "symbol": "BTCUSDT", "horizon": "1h",
                      "registered_name": "liquid_BTC_1h_teacher", "version": "2", "replaced_version": "",
                      "cutoff": feb, "who": "test", "why": "gates passed", "dagster_run_id": ""})  # fmt: skip
    with dg.instance_for_test() as inst:
        inst.report_runless_asset_event(dg.AssetMaterialization("candidate_models", partition="2024-02-01"))
        ctx = dg.build_sensor_context(instance=inst)
        assert isinstance(auto.fine_tune_unprofitable_champion(ctx), dg.SkipReason)  # it passed there

        # March judges the champion's line (the teacher retrained): the profitability gate fails
        replace_candidates(
            mar, pl.DataFrame([candidate_row(mar, "teacher", "3", False)], schema=CANDIDATE_SCHEMA)
        )
        inst.report_runless_asset_event(dg.AssetMaterialization("candidate_models", partition="2024-03-01"))
        ctx = dg.build_sensor_context(instance=inst, cursor=ctx.cursor)
        [req] = auto.fine_tune_unprofitable_champion(ctx)
        assert req.partition_key == model_cutoffs.get_last_partition_key()
        assert set(req.asset_selection) == set(auto.FINE_TUNE_ASSETS)
        cfg = req.run_config["ops"]["liquid_student"]["config"]
        assert cfg == {"init_from": "models:/liquid_BTC_1h_student/5", "steps": auto.FINE_TUNE.steps,
                       "lr": auto.FINE_TUNE.lr}  # fmt: skip
        assert (
            req.tags[auto.REASON_TAG] == "fine_tune"
            and "liquid_BTC_1h_teacher v2" in req.tags["quant_assets/fine_tune_why"]
        )
        # seen once: the next tick starts nothing
        ctx = dg.build_sensor_context(instance=inst, cursor=ctx.cursor)
        assert isinstance(auto.fine_tune_unprofitable_champion(ctx), dg.SkipReason)


def test_init_from_takes_a_student_directory_and_refuses_anything_else(tmp_path):
    (tmp_path / "student.pt").write_bytes(b"")
    assert _init_weights(str(tmp_path), tmp_path / "dl", mlflow=None) == str(tmp_path)
    with pytest.raises(dg.Failure, match="neither a models:/ URI nor a directory holding student.pt"):
        _init_weights(str(tmp_path / "nothing"), tmp_path / "dl", mlflow=None)


def test_the_demo_config_is_valid_run_config_of_each_layer_job():
    """A typo in the demo's smaller model settings would only show ten minutes into `make demo`."""
    from quant_assets.cli import DEMO_CONFIG

    for layer, config in DEMO_CONFIG.items():
        dg.validate_run_config(defs.resolve_job_def(f"{layer}_job"), config)
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(
            defs.resolve_job_def("models_job"), {"ops": {"liquid_student": {"config": {"stepz": 1}}}}
        )
