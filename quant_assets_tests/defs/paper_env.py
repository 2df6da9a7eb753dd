"""A small world for the operations layer: one coin's feature_matrix_main (Jan - early Mar 2024) in a
real Delta lake; a LightGBM teacher of model partition February (trained on Jan 1-20), registered in a
real SQLite MLflow store under the alias `champion` with thresholds calibrated by the gates' own rule
on its OOS record (teacher_oof: Jan 21-31; model_predictions: February). It trades from March 1.
Built once per test session; each test copies it (`copy_env`)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import lightgbm
import numpy as np
import polars as pl
import pytest

from quant_assets import lake
from quant_assets.backtest.inputs import FUNDING_TABLE, MATRIX_TABLE
from quant_assets.defs.models.tables import MODEL_PREDICTIONS, TEACHER_OOF, replace_partition
from quant_assets.defs.models.tracking import MlflowTracking, registered_name
from quant_assets.gates.calibration import calibrate_entry
from quant_assets.ml.teacher import RidgeModel, TeacherFit, save_fit

SYMBOL, HORIZON, PARTITION = "BTCUSDT", "1h", "2024-02-01"
CUTOFF = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
FIRST, LAST = dt.date(2024, 1, 1), dt.date(2024, 3, 6)  # matrix rows [FIRST, LAST)
FEATURES = ("ret_1", "ret_3", "ret_12")
NAME = registered_name("teacher", SYMBOL, HORIZON)


def tracking(d: Path) -> MlflowTracking:
    return MlflowTracking(tracking_uri=f"sqlite:///{d / 'mlflow.db'}", artifact_root=str(d / "art"))


def matrix(seed: int = 0) -> pl.DataFrame:
    """5m rows of one coin; ret_1 carries a planted signal about the next hour, the rest is noise."""
    rng = np.random.default_rng(seed)
    n = (LAST - FIRST).days * 288
    ts = pl.datetime_range(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 3, 6, tzinfo=dt.UTC),
                           "5m", closed="left", time_unit="ms", eager=True)  # fmt: skip
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    df = pl.DataFrame({"symbol": SYMBOL, "ts": ts, "close": close, "cost_depth_notional": 2e6})
    df = df.with_columns(
        fwd_ret_1h=pl.col("close").shift(-12) / pl.col("close") - 1,
        fwd_ret_4h=pl.col("close").shift(-48) / pl.col("close") - 1,
    )
    sig = df["fwd_ret_1h"].fill_null(0.0).to_numpy()
    return df.with_columns(
        ret_1=pl.Series(sig / 0.007 + rng.normal(0, 1.0, n)),
        ret_3=pl.Series(rng.normal(0, 1.0, n)),
        ret_12=pl.Series(rng.normal(0, 1.0, n)),
        label_1h=pl.col("fwd_ret_1h") - 0.0007,
        label_4h=pl.col("fwd_ret_4h") - 0.0014,
        date=pl.col("ts").dt.date(),
    )


def funding(seed: int = 1) -> pl.DataFrame:
    """Settlements at 00/08/16 UTC (the funding_rates schema), published at the settlement time."""
    ts = pl.datetime_range(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 3, 6, tzinfo=dt.UTC), "8h",
                           closed="left", time_unit="ms", eager=True)  # fmt: skip
    rate = np.random.default_rng(seed).normal(1e-4, 2e-4, len(ts))
    return pl.DataFrame({"ts": ts, "symbol": SYMBOL, "funding_rate": rate, "mark_price": None}).with_columns(
        pl.col("mark_price").cast(pl.Float64), available_at=pl.col("ts"), date=pl.col("ts").dt.date()
    )


def fit_teacher(df: pl.DataFrame) -> tuple[TeacherFit, pl.DataFrame]:
    """LightGBM on Feb 1-20, its predictions of Feb 21-29 as the out-of-fold record (never trained on)."""
    train = df.filter(
        (pl.col("ts") < dt.datetime(2024, 2, 20, 23, tzinfo=dt.UTC)) & pl.col("label_1h").is_not_null()
    )
    oof_rows = df.filter((pl.col("ts") >= dt.datetime(2024, 2, 21, tzinfo=dt.UTC)) & (pl.col("ts") < CUTOFF))
    oof_rows = oof_rows.filter(
        pl.col("ts") < CUTOFF - dt.timedelta(minutes=65)
    )  # labels end before the cut-off
    x, y = train.select(FEATURES).to_numpy(), train["label_1h"].to_numpy()
    params = {"objective": "regression", "num_leaves": 7, "learning_rate": 0.1, "verbose": -1,
              "deterministic": True, "num_threads": 1, "seed": 0}  # fmt: skip
    booster = lightgbm.train(params, lightgbm.Dataset(x, y, feature_name=list(FEATURES)), 30)
    ridge = RidgeModel.fit(x, y, FEATURES, alpha=1.0)
    xo = oof_rows.select(FEATURES).to_numpy()
    oof = (
        oof_rows.select("symbol", "ts", "label_1h")
        .rename({"label_1h": "label"})
        .with_columns(
            horizon=pl.lit(HORIZON),
            teacher_oof=pl.Series(booster.predict(xo)),
            ridge_oof=pl.Series(ridge.predict(xo)),
        )
    )
    gain = booster.feature_importance("gain")
    importance = pl.DataFrame({"feature": list(FEATURES), "gain": gain.astype(float),
                               "split": booster.feature_importance("split").astype(np.int64)})  # fmt: skip
    fit = TeacherFit(SYMBOL, HORIZON, booster, ridge, 30, oof, {"wf_ic": 0.1}, importance)
    return fit, oof


def build(d: Path, mp: pytest.MonkeyPatch) -> dict:
    mp.setenv("QUANT_ASSETS_LAKE", str(d / "lake"))
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    df = matrix()
    lake.write_window(MATRIX_TABLE, df, FIRST, LAST)
    lake.write_window(FUNDING_TABLE, funding(), FIRST, LAST)
    fit, oof = fit_teacher(df)
    replace_partition(TEACHER_OOF, CUTOFF, ["liquid_teacher"], oof.with_columns(
        cutoff=pl.lit(CUTOFF), model=pl.lit("liquid_teacher")))  # fmt: skip
    month = df.filter((pl.col("ts") >= CUTOFF) & (pl.col("ts") < dt.datetime(2024, 3, 1, tzinfo=dt.UTC)))
    preds = month.select("symbol", "ts", "date").with_columns(
        prediction=pl.Series(fit.booster.predict(month.select(FEATURES).to_numpy())), horizon=pl.lit(HORIZON),
        model=pl.lit("liquid_teacher"), version=pl.lit("run"), cutoff=pl.lit(CUTOFF))  # fmt: skip
    replace_partition(MODEL_PREDICTIONS, CUTOFF, ["liquid_teacher"], preds)
    # the gates' calibration on the same OOS rows paper trading reads back as its reference
    oos = pl.concat(
        [oof.select("ts", pl.col("teacher_oof").alias("prediction")), preds.select("ts", "prediction")]
    )
    cal = calibrate_entry(oos.join(df.select("symbol", "ts", "close", "cost_depth_notional"), on="ts"), HORIZON,
                          (0.0, 0.5, 0.75, 0.9))  # fmt: skip
    entry, conf = cal.threshold, cal.quantile
    mlflow = tracking(d)
    run = mlflow.start_run(f"liquid_teacher {PARTITION}", tags={"partition": PARTITION})
    save_fit(fit, d / "fit")
    run.log_artifacts(d / "fit", "teacher/BTC_1h")
    version = run.register("teacher", SYMBOL, HORIZON, "teacher/BTC_1h", PARTITION,
                           tags={"entry_threshold": repr(entry), "confidence_min": repr(conf), "gates_passed": "true"})  # fmt: skip
    run.end()
    mlflow.client().set_registered_model_alias(NAME, "champion", version)
    return {"entry_threshold": entry, "confidence_min": conf, "version": version}


_BUILT: dict[str, tuple[Path, dict]] = {}


def base_env(tmp_path_factory) -> tuple[Path, dict]:
    """The world, built once per test session (a new MLflow database costs its schema migrations, ~10 s
    on a busy 2-core box) and shared read-only by the paper trading and monitoring tests."""
    if "base" not in _BUILT:
        d = tmp_path_factory.mktemp("paper")
        with pytest.MonkeyPatch.context() as mp:
            _BUILT["base"] = (d, build(d, mp))
    return _BUILT["base"]


def copy_env(base: Path, lake_dir: Path, tmp: Path) -> MlflowTracking:
    """This test's own lake and MLflow database (artifacts are read from the base, never written)."""
    shutil.copytree(base / "lake", lake_dir)
    shutil.copy(base / "mlflow.db", tmp / "mlflow.db")
    return MlflowTracking(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", artifact_root=str(base / "art"))
