"""The model layer through Dagster on a small simulated lake: partitions are cut-offs, versions read back."""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from quant_assets import lake
from quant_assets.cli import run_layer
from quant_assets.defs.layers import FEATURES, RAW
from quant_assets.defs.models.assets import (
    MATRIX_TABLE,
    RIDGE,
    STUDENT,
    TEACHER,
    liquid_student,
    liquid_teacher,
    rows_digest,
    teacher_training_frame,
)
from quant_assets.defs.models.config import TeacherRunConfig
from quant_assets.defs.models.tables import BACKTEST_RUNS, MODEL_PREDICTIONS, TEACHER_OOF, read_partition
from quant_assets.defs.models.tracking import MlflowTracking
from quant_assets.ml.training_frame import STEP

MARCH = "2024-03-01"
CUTOFF = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
APRIL = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
# Small and quick: ~7 days per coin, 2-day early-stopping tails, two walk-forward folds.
TEACHER_FAST = {
    "window": {"kind": "fast", "rows_per_coin": 2000},
    "teacher": {"num_leaves": 7, "n_estimators": 30, "early_stopping_rounds": 5, "min_child_samples": 50,
                "val_days": 2, "n_wf_folds": 2, "n_kfold": 0},
}  # fmt: skip


def teacher_config(**window) -> dict:
    cfg = {**TEACHER_FAST, "window": {**TEACHER_FAST["window"], **window}}
    return {"ops": {"liquid_teacher": {"config": cfg}}}


def tracking(d) -> MlflowTracking:
    return MlflowTracking(tracking_uri=f"sqlite:///{d / 'mlflow.db'}", artifact_root=str(d / "art"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Raw Jan-Apr 2024, features Jan-Mar (March's labels read April) and the teacher of partition March,
    built once through Dagster: a lake, a file-backed instance and an MLflow store each test copies."""
    d = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANT_ASSETS_LAKE", str(d / "lake"))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        (d / "instance").mkdir()
        inst = dg.DagsterInstance.local_temp(str(d / "instance"))
        assert run_layer(inst, RAW, "2024-01-01", "2024-04-01").success
        assert run_layer(inst, FEATURES, "2024-01-01", "2024-03-01").success
        [event] = materialise_teacher(inst, tracking(d)).get_asset_materialization_events()
        inst.dispose()
    return d, {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture
def env(base, isolated_lake, tmp_path):
    """This test's own copy of the lake, instance and MLflow store (models write, pin and register)."""
    d, meta = base
    shutil.copytree(d / "lake", isolated_lake)
    shutil.copytree(d / "instance", tmp_path / "instance")
    shutil.copy(d / "mlflow.db", tmp_path / "mlflow.db")
    inst = dg.DagsterInstance.local_temp(str(tmp_path / "instance"))
    yield inst, tracking(tmp_path), meta
    inst.dispose()


def materialise_teacher(inst, mlflow, key=MARCH, run_config=None, raise_on_error=True):
    return dg.materialize(
        [liquid_teacher],
        instance=inst,
        partition_key=key,
        run_config=run_config or teacher_config(),
        resources={"mlflow": mlflow},
        raise_on_error=raise_on_error,
    )


def test_a_teacher_partition_predicts_its_month_only_and_its_versions_read_back_the_training_rows(env):
    inst, mlflow, meta = env
    versions = meta["table_versions"]
    assert versions == {"feature_matrix_main": lake.version("feature_matrix_main"),
                        "funding_rates": lake.version("funding_rates")}  # fmt: skip
    assert lake.pinned_versions() == {t: {v} for t, v in versions.items()}

    # Predictions cover exactly the rows of March that exist, for teacher and ridge, both horizons.
    preds = read_partition(MODEL_PREDICTIONS, CUTOFF)
    march = lake.read(MATRIX_TABLE, "2024-03-01", "2024-04-01").select("symbol", "ts")
    assert preds["ts"].min() >= CUTOFF and preds["ts"].max() < APRIL
    for model in (TEACHER, RIDGE):
        for h in ("1h", "4h"):
            keys = preds.filter(model=model, horizon=h).select("symbol", "ts").sort("symbol", "ts")
            assert keys.equals(march.sort("symbol", "ts")), (model, h)
    assert preds["prediction"].is_finite().all() and preds["version"].unique().to_list() == [
        meta["mlflow_run_id"]
    ]
    assert meta["month_predictions"] == 2 * march.height

    # The training rows: nothing at or after the cut-off, and read back exactly at the recorded version.
    oof = read_partition(TEACHER_OOF, CUTOFF, TEACHER)
    assert oof["ts"].max() < CUTOFF
    assert oof.filter(horizon="1h").group_by("symbol").len()["len"].max() == 2000
    # Outside Dagster, February's last day is dropped from the matrix: the lake moves on behind the model.
    feb = lake.read(MATRIX_TABLE, "2024-02-01", "2024-03-01")
    lake.write_window(
        MATRIX_TABLE, feb.filter(pl.col("date") < dt.date(2024, 2, 29)), "2024-02-01", "2024-03-01"
    )
    assert lake.version(MATRIX_TABLE) == versions[MATRIX_TABLE] + 1
    cfg = TeacherRunConfig(**TEACHER_FAST)
    again = teacher_training_frame(CUTOFF, cfg.window.build(), versions, cfg.teacher.build())
    assert rows_digest(again.frame) == meta["training_rows_sha256"]
    assert again.frame.height == meta["training_rows"]
    one_h = again.frame.filter(pl.col("label_1h").is_not_null()).select("symbol", "ts").sort("symbol", "ts")
    assert one_h.equals(oof.filter(horizon="1h").select("symbol", "ts").sort("symbol", "ts"))
    latest = teacher_training_frame(CUTOFF, cfg.window.build(), {**versions, MATRIX_TABLE: lake.version(MATRIX_TABLE)},
                                    cfg.teacher.build())  # fmt: skip
    assert rows_digest(latest.frame) != meta["training_rows_sha256"]  # the check can fail

    # One after-cost row per horizon for March; MLflow holds a version per coin and horizon, tagged.
    bt = read_partition(BACKTEST_RUNS, CUTOFF, TEACHER)
    assert sorted(bt["horizon"].to_list()) == ["1h", "4h"] and bt["total_pnl"].is_finite().all()
    assert bt["period_start"].min() >= CUTOFF and bt["period_end"].max() < APRIL
    client = mlflow.client()
    versions_mlflow = client.search_model_versions("name = 'liquid_BTC_1h_teacher'")
    assert [v.tags["partition"] for v in versions_mlflow] == [MARCH]
    assert len(client.search_registered_models()) == 20  # 10 coins x 2 horizons
    run = client.get_run(meta["mlflow_run_id"])
    assert run.data.tags["partition"] == MARCH and run.data.tags["table_version.feature_matrix_main"] == str(
        versions[MATRIX_TABLE]
    )
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "teacher/BTC_1h")}
    assert {"teacher/BTC_1h/model.txt", "teacher/BTC_1h/fit.json"} <= arts
    assert "|" in meta["oos_ic"] and "BTC" in meta["oos_ic"]


def test_the_same_partition_twice_with_the_same_seed_gives_the_same_predictions_and_metrics(env):
    inst, mlflow, first = env
    p1 = read_partition(MODEL_PREDICTIONS, CUTOFF).drop("version").sort("model", "horizon", "symbol", "ts")
    second = materialise_teacher(inst, mlflow).get_asset_materialization_events()[0].materialization.metadata
    p2 = read_partition(MODEL_PREDICTIONS, CUTOFF).drop("version").sort("model", "horizon", "symbol", "ts")
    assert p1.equals(p2) and p1.height > 0  # replaced, not appended
    assert first["oos_ic"] == second["oos_ic"].value
    assert first["month_pnl_after_cost_1h"] == second["month_pnl_after_cost_1h"].value
    assert first["training_rows_sha256"] == second["training_rows_sha256"].value
    assert read_partition(BACKTEST_RUNS, CUTOFF).height == 2
    versions = mlflow.client().search_model_versions("name = 'liquid_ETH_4h_teacher'")
    assert sorted(int(v.version) for v in versions) == [1, 2]


def test_a_cutoff_with_too_little_history_fails_naming_rows_had_and_needed(env):
    inst, mlflow, _ = env
    # February's cut-off leaves January (~8,900 labelled rows a coin); 20-day tails need 2 x 20 x 288
    cfg = {**TEACHER_FAST, "window": {"kind": "fast", "rows_per_coin": 100_000},
           "teacher": {**TEACHER_FAST["teacher"], "val_days": 20}}  # fmt: skip
    run_config = {"ops": {"liquid_teacher": {"config": cfg}}}
    res = materialise_teacher(inst, mlflow, key="2024-02-01", run_config=run_config, raise_on_error=False)
    assert not res.success
    [failure] = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert "partition 2024-02-01" in text and "too little history" in text
    assert (
        "BTCUSDT has 8915 rows with a known label_1h" in text and "needs 11520 per coin and horizon" in text
    )
    assert read_partition(MODEL_PREDICTIONS, dt.datetime(2024, 2, 1, tzinfo=dt.UTC)).height == 0
    assert set(lake.read_table(lake.PINS_TABLE)["owner"]) == {"liquid_teacher/2024-03-01"}  # no new pins


def test_the_student_trains_under_torchrun_through_pipes_and_only_rank_0_reports(env):
    inst, mlflow, _ = env
    student_cfg = {"window": {"kind": "fast", "rows_per_coin": 600}, "input_len": 16, "steps": 4, "global_batch": 32,
                   "eval_every": 2, "cpu_procs": 2, "model": {"d_series": 4, "mix_len": 4, "ff_dim": 8, "n_blocks": 1}}  # fmt: skip
    res = dg.materialize(
        [liquid_teacher, liquid_student],
        selection=[liquid_student],
        instance=inst,
        partition_key=MARCH,
        run_config={"ops": {"liquid_student": {"config": student_cfg}}},
        resources={"mlflow": mlflow, "pipes": dg.PipesSubprocessClient()},
    )
    assert liquid_student.op.pool == "gpu"  # two trainings never share a device
    [event] = res.get_asset_materialization_events()  # one: rank 1 never opened Pipes
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["rank"] == 0 and meta["world_size"] == 2 and meta["backend"] == "gloo"
    assert meta["rank_weight_max_abs_diff"] == 0.0  # DDP: both ranks end with the same weights
    assert meta["launch"]["nproc"] == 2 and meta["launch"]["gpu_count"] == 0
    assert meta["rows_with_teacher"]["1h"] > 0
    logs = [e.message for e in inst.all_logs(res.run_id) if "student eval" in (e.message or "")]
    assert len(logs) == 2  # steps 2 and 4, from rank 0 only

    preds = read_partition(MODEL_PREDICTIONS, CUTOFF, STUDENT)
    march = lake.read(MATRIX_TABLE, "2024-03-01", "2024-04-01")
    assert preds.height == 2 * march.height and preds["prediction"].is_not_null().all()
    assert read_partition(MODEL_PREDICTIONS, CUTOFF, TEACHER).height == 2 * march.height  # untouched
    assert sorted(read_partition(BACKTEST_RUNS, CUTOFF, STUDENT)["horizon"].to_list()) == ["1h", "4h"]
    [mv] = mlflow.client().search_model_versions("name = 'liquid_SOL_4h_student'")
    assert mv.tags["partition"] == MARCH
    assert {"student/student.pt", "student/student.json"} <= {
        a.path for a in mlflow.client().list_artifacts(meta["mlflow_run_id"], "student")
    }


def test_one_ranged_run_backfills_each_cutoff_as_its_own_walk_forward_partition(env):
    """February and March in ONE run (BackfillPolicy.single_run): each cut-off trains on its own past,
    predicts its own month, is pinned and registered under its own key."""
    inst, mlflow, _ = env
    feb, mar = dt.datetime(2024, 2, 1, tzinfo=dt.UTC), CUTOFF
    res = dg.materialize(
        [liquid_teacher],
        instance=inst,
        tags={ASSET_PARTITION_RANGE_START_TAG: "2024-02-01", ASSET_PARTITION_RANGE_END_TAG: MARCH},
        run_config={
            "ops": {"liquid_teacher": {"config": {**TEACHER_FAST, "workers": 1}}}
        },  # no spawned workers
        resources={"mlflow": mlflow},
    )
    assert sorted(e.partition for e in res.get_asset_materialization_events()) == ["2024-02-01", MARCH]
    assert inst.get_materialized_partitions(liquid_teacher.key) >= {"2024-02-01", MARCH}
    client = mlflow.client()
    run_ids = {}
    for cutoff, key in ((feb, "2024-02-01"), (mar, MARCH)):
        month_end = (cutoff + dt.timedelta(days=32)).replace(day=1)
        # predictions: this month's rows only, from this partition's own MLflow run
        preds = read_partition(MODEL_PREDICTIONS, cutoff, TEACHER)
        assert preds.height == 2 * lake.read(MATRIX_TABLE, cutoff.date(), month_end.date()).height > 0
        assert preds["ts"].min() >= cutoff and preds["ts"].max() < month_end
        assert (preds["cutoff"] == cutoff).all()
        [run_id] = preds["version"].unique().to_list()
        run_ids[key] = run_id
        run = client.get_run(run_id)
        assert run.data.tags["partition"] == key
        assert run.data.tags["table_version.feature_matrix_main"] == str(lake.version(MATRIX_TABLE))
        # training rows (the out-of-fold record): every label interval ends before this cut-off ...
        oof = read_partition(TEACHER_OOF, cutoff, TEACHER)
        horizon = (
            pl.when(pl.col("horizon") == "1h").then(pl.duration(hours=1)).otherwise(pl.duration(hours=4))
        )
        label_end = oof.select(pl.col("ts") + STEP + horizon)["ts"]
        assert oof.height > 0 and label_end.max() < cutoff
        # ... and reach into the last day before it: the window moved with the cut-off
        assert oof["ts"].max() > cutoff - dt.timedelta(days=1)
    assert run_ids["2024-02-01"] != run_ids[MARCH]
    # each partition pinned the versions it read, under its own owner
    owners = set(lake.read_table(lake.PINS_TABLE)["owner"])
    assert {"liquid_teacher/2024-02-01", "liquid_teacher/2024-03-01"} <= owners
    assert [v.tags["partition"] for v in client.search_model_versions("name = 'liquid_BTC_1h_teacher'")
            if v.run_id == run_ids["2024-02-01"]] == ["2024-02-01"]  # fmt: skip
