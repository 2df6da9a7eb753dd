"""monitoring through Dagster on the champions' paper days: known-return rule, drift, calibration, checks."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from quant_assets import lake
from quant_assets.backtest.inputs import MATRIX_TABLE
from quant_assets.defs.operations.assets import paper_trading
from quant_assets.defs.operations.champions import find_champions
from quant_assets.defs.operations.checks import (
    CalibrationCheckConfig,
    DriftCheckConfig,
    calibration_result,
    confidence_calibration,
    drift_result,
    prediction_drift,
)
from quant_assets.defs.operations.monitoring import monitoring
from quant_assets.defs.operations.reference import confidence_map, oos_reference
from quant_assets.defs.operations.tables import PAPER_MARKS, PAPER_MONITORING
from quant_assets.paper.monitor import ece, reliability
from quant_assets_tests.defs import paper_env
from quant_assets_tests.defs.paper_env import FEATURES

D1, D2 = "2024-03-01", "2024-03-02"
ALL = [paper_trading, monitoring, prediction_drift, confidence_calibration]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return paper_env.base_env(tmp_path_factory)


@pytest.fixture
def mlflow(base, isolated_lake, tmp_path):
    return paper_env.copy_env(base[0], isolated_lake, tmp_path)


def trade(mlflow, day):
    dg.materialize([paper_trading], partition_key=day, resources={"mlflow": mlflow})


def check_config(psi_max=0.25, ece_max=0.1, min_rows=200) -> dict:
    return {
        "monitoring_prediction_drift": {"config": {"psi_max": psi_max}},
        "monitoring_confidence_calibration": {"config": {"ece_max": ece_max, "min_rows": min_rows}},
    }


def evaluations(res) -> dict:
    return {e.check_name: e for e in res.get_asset_check_evaluations()}


def watch(mlflow, day, window_days=1, **thresholds):
    run_config = {
        "ops": {"monitoring": {"config": {"window_days": window_days}}, **check_config(**thresholds)}
    }
    res = dg.materialize(ALL, selection=[monitoring, prediction_drift, confidence_calibration], partition_key=day,
                         resources={"mlflow": mlflow}, run_config=run_config)  # fmt: skip
    [ev] = res.get_asset_materialization_events()
    return {k: v.value for k, v in ev.materialization.metadata.items()}, evaluations(res)


def judge(day, psi_max=0.25, ece_max=0.1, min_rows=200) -> dict:
    """The checks' verdicts on the day's paper_monitoring rows with other thresholds (no new run)."""
    d = dt.date.fromisoformat(day)
    rows = lake.read(PAPER_MONITORING, d, d + dt.timedelta(days=1))
    return {
        "prediction_drift": drift_result(rows, DriftCheckConfig(psi_max=psi_max)),
        "confidence_calibration": calibration_result(
            rows, CalibrationCheckConfig(ece_max=ece_max, min_rows=min_rows)
        ),
    }


def row(day) -> dict:
    d = dt.date.fromisoformat(day)
    [r] = lake.read(PAPER_MONITORING, d, d + dt.timedelta(days=1)).iter_rows(named=True)
    return r


def test_only_returns_known_by_the_days_end_are_evaluated(mlflow):
    trade(mlflow, D1)
    trade(mlflow, D2)
    meta, _ = watch(mlflow, D2, window_days=2)
    r = row(D2)
    # 1h: known at ts + 5m + 1h <= 2024-03-03 00:00: all of D1, and D2's bars 00:00 .. 22:55 (23 * 12)
    assert r["n_known"] == 288 + 276 and r["n_calibration"] == 288 + 276
    assert r["ic"] > 0.3 and r["hit_rate"] > 0.6  # the planted signal, seen in the paper predictions
    # ECE recomputed from the lake by hand: the window's known rows against the out-of-fold map
    [c] = find_champions(mlflow)
    cmap = confidence_map(oos_reference(c), 5)
    marks = lake.read(PAPER_MARKS).sort("ts")
    fwd = lake.read(MATRIX_TABLE, D1, "2024-03-03").select("ts", "fwd_ret_1h")
    known = marks.join(fwd, on="ts").filter(pl.col("ts") <= dt.datetime(2024, 3, 2, 22, 55, tzinfo=dt.UTC))
    assert r["ece"] == pytest.approx(
        ece(reliability(cmap, known["score"].to_numpy(), known["fwd_ret_1h"].to_numpy()))
    )
    assert meta["ic_1h"] == pytest.approx(r["ic"])
    assert meta["plot_reliability"].startswith("![reliability](data:image/png;base64,iVBOR")
    artifacts = {a.path for a in mlflow.client().list_artifacts(meta["mlflow_run_id"], "plots")}
    assert artifacts == {"plots/reliability.png", "plots/drift.png", "plots/pnl_by_bucket.png"}


def test_checks_follow_their_thresholds(mlflow):
    trade(mlflow, D1)
    _, checks = watch(mlflow, D1)
    r = row(D1)
    assert r["n_known"] == 276  # D1's bars 00:00 .. 22:55: the last hour's returns end after the day
    assert set(eval(r["feature_psi"])) == set(FEATURES)  # top features of the teacher's gain
    # D1 is drawn like the training window: no drift at the usual 0.25
    assert max(r["prediction_psi"], r["feature_psi_max"]) < 0.25 and checks["prediction_drift"].passed
    strict = judge(D1, psi_max=1e-6, ece_max=0.0, min_rows=10)
    assert not strict["prediction_drift"].passed and not strict["confidence_calibration"].passed
    assert strict["prediction_drift"].metadata["drifted"].value == ["BTCUSDT 1h"]
    lax = judge(D1, psi_max=100.0, ece_max=1.0, min_rows=10)
    assert lax["prediction_drift"].passed and lax["confidence_calibration"].passed
    # too few known rows: not judged however large the error
    few = judge(D1, ece_max=0.0, min_rows=10_000)
    assert (
        few["confidence_calibration"].passed and few["confidence_calibration"].metadata["judged"].value == 0
    )


def test_a_shifted_market_fails_the_drift_check(mlflow):
    d2 = lake.read(MATRIX_TABLE, D2, "2024-03-03").with_columns(
        (pl.col("ret_1") + 3.0).alias("ret_1"), (pl.col("ret_3") * 4.0).alias("ret_3")
    )
    lake.write_window(MATRIX_TABLE, d2, dt.date(2024, 3, 2), dt.date(2024, 3, 3))
    trade(mlflow, D1)
    trade(mlflow, D2)
    _, checks = watch(mlflow, D2)
    r = row(D2)
    assert r["feature_psi_max"] > 1.0 and r["prediction_psi"] > 0.25
    assert not checks["prediction_drift"].passed
    assert checks["prediction_drift"].metadata["drifted"].value == ["BTCUSDT 1h"]


def test_no_champion_no_monitoring_rows(mlflow):
    mlflow.client().delete_registered_model_alias(paper_env.NAME, "champion")
    trade(mlflow, D1)
    meta, checks = watch(mlflow, D1)
    assert "no champion traded" in meta["nothing_to_monitor"]
    assert lake.read(PAPER_MONITORING).height == 0
    assert checks["prediction_drift"].passed and checks["prediction_drift"].metadata["books"].value == 0
