"""backbone_suite through Dagster on a tiny lake: month-M predictions per backbone, a failing backbone reported as failed."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import polars as pl
import pytest

from quant_assets import lake
from quant_assets.backtest.inputs import FUNDING_TABLE, MATRIX_TABLE
from quant_assets.defs.backbones.assets import backbone_suite
from quant_assets.defs.models.tables import BACKTEST_RUNS, MODEL_PREDICTIONS, read_partition
from quant_assets.defs.models.tracking import MlflowTracking
from quant_assets.features.keys import LIQUID_FEATURE_KEYS

CUTOFF = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
COINS = ("BTCUSDT", "ETHUSDT")
START, END = dt.datetime(2024, 2, 26, tzinfo=dt.UTC), dt.datetime(2024, 3, 3, tzinfo=dt.UTC)


def write_tiny_lake(inst: dg.DagsterInstance) -> pl.DataFrame:
    """feature_matrix_main and funding_rates as real Delta tables (2 coins, 26 Feb - 2 Mar 2024), recorded
    through Dagster like a features run records them; label_1h follows the funding column."""
    rng = np.random.default_rng(0)
    ts = pl.datetime_range(START, END, "5m", closed="left", time_unit="ms", time_zone="UTC", eager=True)
    frames = []
    for k, s in enumerate(COINS):
        n = len(ts)
        x = rng.normal(size=(n, len(LIQUID_FEATURE_KEYS)))
        f = LIQUID_FEATURE_KEYS.index("funding_rate") if "funding_rate" in LIQUID_FEATURE_KEYS else 0
        sig = x[:, f] * 2e-3  # the newest step's funding column: inside every window the backbones see
        ret = sig + rng.normal(size=n) * 1e-3
        close = 100.0 * (k + 1) * np.exp(np.cumsum(rng.normal(size=n) * 1e-3))
        frames.append(pl.DataFrame({"symbol": s, "ts": ts}).with_columns(
            *(pl.Series(c, x[:, i]) for i, c in enumerate(LIQUID_FEATURE_KEYS)),
            pl.Series("label_1h", ret), pl.Series("label_4h", 2 * ret + rng.normal(size=n) * 1e-3),
            pl.Series("close", close), pl.lit(5e6).alias("cost_depth_notional"),
        ))  # fmt: skip
    matrix = pl.concat(frames).with_columns(date=pl.col("ts").dt.date())
    funding = matrix.filter(pl.col("ts").dt.minute().eq(0) & pl.col("ts").dt.hour().is_in([0, 8, 16])).select(
        "symbol", "ts", pl.lit(1e-4).alias("funding_rate"), "date"
    )
    for table, df in ((MATRIX_TABLE, matrix), (FUNDING_TABLE, funding)):
        lake.write_window(table, df, START.date(), END.date())
        inst.report_runless_asset_event(
            dg.AssetMaterialization(table, metadata={"delta_version": lake.version(table)})
        )
    return matrix


@pytest.fixture
def env(tmp_path):
    (tmp_path / "instance").mkdir()
    inst = dg.DagsterInstance.local_temp(str(tmp_path / "instance"))
    matrix = write_tiny_lake(inst)
    mlflow = MlflowTracking(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art")
    )
    yield inst, mlflow, matrix
    inst.dispose()


def test_the_suite_writes_each_backbones_month_predictions_and_reports_a_failing_one(env):
    inst, mlflow, matrix = env
    cfg = {
        "window": {"kind": "fast", "rows_per_coin": 700}, "input_len": 16, "steps": 10, "global_batch": 64,
        "eval_every": 10, "lr": 3e-3, "backbones": ["ridge", "patchtst", "tft"],
        "ridge": {"lag_stride": 4, "alpha": 1e-3},
        "patchtst": {"d_model": 8, "n_heads": 2, "n_layers": 1, "ff_dim": 16, "patch_len": 8, "stride": 8},
        "tft": {"d_model": 6, "n_heads": 4},  # 6 is not divisible by 4 heads: this backbone cannot run
    }  # fmt: skip
    res = dg.materialize([backbone_suite], instance=inst, partition_key="2024-03-01",
                         run_config={"ops": {"backbone_suite": {"config": cfg}}},
                         resources={"mlflow": mlflow, "pipes": dg.PipesSubprocessClient()})  # fmt: skip
    [event] = res.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["backbone_status"] == {"ridge": "ok", "patchtst": "ok", "tft": "failed"}
    assert meta["failed"]["tft"] == "ValueError: TFT: d_model 6 is not divisible by n_heads 4"
    assert "| tft" in meta["oos"] and "failed" in meta["oos"]

    # month M's rows, every row with a full window of inputs (the lead-in reaches before the cut-off)
    preds = read_partition(MODEL_PREDICTIONS, CUTOFF)
    assert set(preds["model"]) == {"backbone_ridge", "backbone_patchtst"}
    march = matrix.filter(pl.col("ts") >= CUTOFF).select("symbol", "ts").sort("symbol", "ts")
    for model in ("backbone_ridge", "backbone_patchtst"):
        for h in ("1h", "4h"):
            p = preds.filter(model=model, horizon=h)
            assert p.select("symbol", "ts").sort("symbol", "ts").equals(march), (model, h)
            assert p["prediction"].is_finite().all()
    assert meta["month_predictions"] == {"ridge": 2 * march.height, "patchtst": 2 * march.height}
    # the ridge finds the planted signal out of sample (label_1h = 2e-3 x funding + noise: IC ceiling 0.89)
    ridge_1h = preds.filter(model="backbone_ridge", horizon="1h").join(matrix, on=["symbol", "ts"])
    assert np.corrcoef(ridge_1h["prediction"], ridge_1h["label_1h"])[0, 1] > 0.5

    bt = read_partition(BACKTEST_RUNS, CUTOFF)
    assert sorted(bt.select("model", "horizon").rows()) == [
        ("backbone_patchtst", "1h"), ("backbone_patchtst", "4h"), ("backbone_ridge", "1h"), ("backbone_ridge", "4h")]  # fmt: skip
    client = mlflow.client()
    names = sorted(m.name for m in client.search_registered_models())
    assert names == ["backbone_patchtst_1h", "backbone_patchtst_4h", "backbone_ridge_1h", "backbone_ridge_4h"]
    [v] = client.search_model_versions("name = 'backbone_ridge_1h'")
    assert v.tags["partition"] == "2024-03-01"
    assert lake.pinned_versions() == {
        MATRIX_TABLE: {lake.version(MATRIX_TABLE)},
        FUNDING_TABLE: {lake.version(FUNDING_TABLE)},
    }
