"""paper_trading through Dagster on a real Delta lake and a real SQLite MLflow registry."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from quant_assets import lake
from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.engine import run_backtest
from quant_assets.backtest.inputs import FUNDING_TABLE, MATRIX_TABLE
from quant_assets.defs.operations.assets import paper_trading
from quant_assets.defs.operations.tables import (
    PAPER_FILLS,
    PAPER_MARKS,
    PAPER_ORDERS,
    PAPER_PNL,
    PAPER_POSITIONS,
)
from quant_assets_tests.defs import paper_env
from quant_assets_tests.defs.paper_env import HORIZON, NAME, SYMBOL

D1, D2, D3 = "2024-03-01", "2024-03-02", "2024-03-03"
TABLES = (PAPER_ORDERS, PAPER_FILLS, PAPER_MARKS, PAPER_PNL, PAPER_POSITIONS)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return paper_env.base_env(tmp_path_factory)


@pytest.fixture
def mlflow(base, isolated_lake, tmp_path):
    return paper_env.copy_env(base[0], isolated_lake, tmp_path)


def trade(mlflow, day, instance=None, config=None, raise_on_error=True):
    run_config = {"ops": {"paper_trading": {"config": config}}} if config else None
    return dg.materialize([paper_trading], partition_key=day, resources={"mlflow": mlflow}, instance=instance,
                          run_config=run_config, raise_on_error=raise_on_error)  # fmt: skip


def meta(result) -> dict:
    [ev] = result.get_asset_materialization_events()
    return {k: v.value for k, v in ev.materialization.metadata.items()}


def day_rows(table, day) -> pl.DataFrame:
    d = dt.date.fromisoformat(day)
    return lake.read(table, d, d + dt.timedelta(days=1)).sort(
        "ts" if "ts" in lake.read(table).columns else "symbol"
    )


def test_two_days_carry_the_position_and_equal_one_backtest_of_both(mlflow, base):
    m1 = meta(trade(mlflow, D1))
    assert m1["champions"] == 1 and m1["trading"] == 1 and m1["state"].startswith("first paper day")
    m2 = meta(trade(mlflow, D2))
    assert m2["state"] == "books continue from paper_positions of 2024-03-01"
    pnl = lake.read(PAPER_PNL).sort("date")
    assert pnl["status"].to_list() == ["trading", "trading"]
    assert (pnl["registered_name"].to_list(), pnl["version"].to_list()) == (
        [NAME] * 2,
        [base[1]["version"]] * 2,
    )
    assert pnl["cum_pnl"][1] == pytest.approx(pnl["pnl"][0] + pnl["pnl"][1])
    assert pnl["n_bars"].to_list() == [288, 288] and pnl["n_orders"].sum() > 5
    # the same scores backtested over both days from flat: every bar's PnL and the total agree
    marks = lake.read(PAPER_MARKS).sort("ts")
    bars = lake.read(MATRIX_TABLE, D1, D3).sort("ts").select("symbol", "ts", "close", "cost_depth_notional")
    frame = bars.join(marks.select("ts", "score", "confidence"), on="ts")
    assert 0 < base[1]["confidence_min"] < 1 and frame["confidence"].is_not_null().all()
    cfg = BacktestConfig.for_horizon(
        HORIZON, threshold=base[1]["entry_threshold"], min_confidence=base[1]["confidence_min"]
    )
    funding = lake.read(FUNDING_TABLE, D1, D3)
    whole = run_backtest(frame, cfg, funding=funding)
    assert pnl["funding"].sum() == pytest.approx(whole.metrics["funding"]) != 0.0
    assert marks["pnl"].to_numpy() == pytest.approx(whole.pnl, abs=1e-9)
    assert pnl["cum_pnl"][1] == pytest.approx(whole.metrics["total_pnl"])
    assert lake.read(PAPER_ORDERS).height == lake.read(PAPER_FILLS).height == whole.metrics["n_trades"]
    pos = lake.read(PAPER_POSITIONS).sort("date")
    assert pos["last_ts"][1] == dt.datetime(2024, 3, 2, 23, 55, tzinfo=dt.UTC)
    assert pos["units"][1] == pytest.approx(pnl["position_end"][1])
    assert marks["ts"].max() < dt.datetime(2024, 3, 3, tzinfo=dt.UTC)


def test_rerun_replaces_the_day_and_a_restart_continues_from_the_lake(mlflow, base, tmp_path):
    with dg.DagsterInstance.ephemeral() as inst:
        trade(mlflow, D1, inst)
        first = {t: day_rows(t, D1) for t in TABLES}
        trade(mlflow, D1, inst)  # the same day again: replaced, never doubled
        for t in TABLES:
            assert day_rows(t, D1).equals(first[t]), t
        assert lake.read(PAPER_PNL).height == 1
    # a new instance (nothing in memory) continues from the lake's paper_positions of D1
    with dg.DagsterInstance.ephemeral() as fresh:
        trade(mlflow, D2, fresh)
    restarted = {t: day_rows(t, D2) for t in TABLES}
    # the same two days in one uninterrupted sequence, in another lake, give the same rows
    other = tmp_path / "lake2"
    (tmp_path / "m2").mkdir()
    mlflow2 = paper_env.copy_env(base[0], other, tmp_path / "m2")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANT_ASSETS_LAKE", str(other))
        trade(mlflow2, D1)
        trade(mlflow2, D2)
        straight = {t: day_rows(t, D2) for t in TABLES}
    for t in TABLES:
        assert restarted[t].equals(straight[t]), t


def test_a_gap_after_a_day_with_positions_fails_and_names_the_days(mlflow):
    trade(mlflow, D1)
    assert lake.read(PAPER_POSITIONS)["units"][0] != 0  # the planted signal leaves a position open at the end
    res = trade(mlflow, D3, raise_on_error=False)
    assert not res.success
    [fail] = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no paper_positions for 2024-03-02 .. 2024-03-02" in str(fail.event_specific_data.error)
    assert lake.read(PAPER_PNL)["date"].to_list() == [dt.date(2024, 3, 1)]


def test_a_stale_champion_stops_trading_and_says_so(mlflow, base):
    trade(mlflow, D1)
    # the same model, as if its cut-off were December: fresh until 2024-02-14 (45 days after January's start)
    mlflow.client().set_model_version_tag(NAME, base[1]["version"], "partition", "2023-12-01")
    m = meta(trade(mlflow, D2))
    assert m["trading"] == 0
    status = m["champion_status"][f"{SYMBOL} {HORIZON}"]
    assert "stale: cut-off 2023-12-01, fresh until 2024-02-14" in status
    orders = day_rows(PAPER_ORDERS, D2)
    assert orders["reason"].to_list() in (
        [],
        ["exit: holding period over"],
    )  # no entry, the held one runs out
    marks = day_rows(PAPER_MARKS, D2)
    assert marks["score"].is_null().all() and marks["units"][-1] == 0.0
    assert day_rows(PAPER_PNL, D2)["status"][0].startswith("stale")


def test_no_champion_trades_nothing_and_says_so(mlflow):
    mlflow.client().delete_registered_model_alias(NAME, "champion")
    m = meta(trade(mlflow, D1))
    assert m["champions"] == 0 and m["books"] == "nothing traded"
    assert "nothing traded" in m["no_champion"]
    assert all(lake.read(t).height == 0 for t in TABLES)


def test_rows_after_the_day_do_not_change_the_day(mlflow):
    trade(mlflow, D1)
    before = {t: day_rows(t, D1) for t in TABLES}
    # rewrite everything after D1's end: prices, features and labels of D2 onwards
    later = lake.read(MATRIX_TABLE, "2024-03-02", "2024-03-06").with_columns(
        (pl.col("close") * 3.0).alias("close"),
        (pl.col("ret_1") * -5.0).alias("ret_1"),
        pl.lit(0.0).alias("ret_3"),
    )
    lake.write_window(MATRIX_TABLE, later, dt.date(2024, 3, 2), dt.date(2024, 3, 6))
    trade(mlflow, D1)
    for t in TABLES:
        assert day_rows(t, D1).equals(before[t]), t


def test_a_champion_does_not_trade_its_own_evaluation_month(mlflow, base):
    # partition March: trained up to March 1, thresholds calibrated on March's predictions -> from April 1
    mlflow.client().set_model_version_tag(NAME, base[1]["version"], "partition", "2024-03-01")
    m = meta(trade(mlflow, D1))
    assert m["trading"] == 0
    assert "not before 2024-04-01" in m["champion_status"][f"{SYMBOL} {HORIZON}"]
    assert day_rows(PAPER_ORDERS, D1).height == 0 and day_rows(PAPER_MARKS, D1)["score"].is_null().all()


def test_a_student_champion_scores_the_day_from_a_look_back_before_it(mlflow, tmp_path):
    import numpy as np

    from quant_assets.ml.train_student import StudentConfig, StudentInputs, predict, save_npz, train

    jan = lake.read(MATRIX_TABLE, "2024-01-01", "2024-02-01").sort("ts")
    feats = list(paper_env.FEATURES)
    inputs = StudentInputs(jan["symbol"].to_numpy().astype(str), jan["ts"].dt.epoch("ms").to_numpy(),
                           jan.select(feats).to_numpy().astype("float32"), tuple(feats),
                           jan.select("label_1h", "label_4h").to_numpy().astype("float32"),
                           ("label_1h", "label_4h"), None)  # fmt: skip
    save_npz(inputs, tmp_path / "jan.npz")
    out = tmp_path / "student"
    train(StudentConfig(inputs=str(tmp_path / "jan.npz"), out_dir=str(out), teacher_columns=None, teacher_weight=0.0,
                        input_len=16, steps=10, global_batch=32, eval_every=10, threads=1))  # fmt: skip
    run = mlflow.start_run("liquid_student 2024-02-01")
    run.log_artifacts(out, "student")
    version = run.register("student", SYMBOL, HORIZON, "student", paper_env.PARTITION,
                           tags={"entry_threshold": "0.0", "confidence_min": "0.0", "gates_passed": "true"})  # fmt: skip
    run.end()
    client = mlflow.client()
    client.delete_registered_model_alias(NAME, "champion")
    client.set_registered_model_alias("liquid_BTC_1h_student", "champion", version)

    m = meta(trade(mlflow, D1))
    assert m["champion_status"][f"{SYMBOL} {HORIZON}"].endswith(": trading"), m["champion_status"]
    marks = day_rows(PAPER_MARKS, D1)
    assert marks["model"][0] == "liquid_student" and marks.height == 288
    assert marks["score"].is_not_null().all()  # 00:00's window reaches back into Feb 29
    # the same scores from the model directly, on 17 rows of look-back and the day's rows
    rows = lake.read(MATRIX_TABLE, "2024-02-29", "2024-03-02").sort("ts")
    rows = rows.filter(pl.col("ts") >= dt.datetime(2024, 2, 29, 22, 35, tzinfo=dt.UTC))
    direct = StudentInputs(rows["symbol"].to_numpy().astype(str), rows["ts"].dt.epoch("ms").to_numpy(),
                           rows.select(feats).to_numpy().astype("float32"), tuple(feats),
                           np.zeros((rows.height, 2), dtype="float32"), ("label_1h", "label_4h"), None)  # fmt: skip
    want = predict(out, direct)[:, 0][rows["ts"].to_numpy() >= np.datetime64("2024-03-01")][:288]
    np.testing.assert_allclose(marks["score"].to_numpy(), want, rtol=1e-6)


def test_a_crash_before_the_positions_land_is_redone_from_the_day_before(mlflow, monkeypatch):
    trade(mlflow, D1)
    real = lake.write_window

    def crash_on_positions(table, *args, **kwargs):
        if table == PAPER_POSITIONS:
            raise OSError("killed while committing paper_positions")
        return real(table, *args, **kwargs)

    monkeypatch.setattr(lake, "write_window", crash_on_positions)
    assert not trade(mlflow, D2, raise_on_error=False).success
    assert day_rows(PAPER_PNL, D2).height == 1 and day_rows(PAPER_POSITIONS, D2).height == 0  # half a day
    monkeypatch.setattr(lake, "write_window", real)
    with dg.DagsterInstance.ephemeral() as fresh:  # the restart: nothing but the lake
        m = meta(trade(mlflow, D2, fresh))
    assert m["state"] == "books continue from paper_positions of 2024-03-01"
    pnl = lake.read(PAPER_PNL).sort("date")
    assert pnl.height == 2 and pnl["cum_pnl"][1] == pytest.approx(pnl["pnl"][0] + pnl["pnl"][1])
    assert lake.read(PAPER_ORDERS).height == lake.read(PAPER_FILLS).height == pnl["n_orders"].sum()
    assert lake.read(PAPER_POSITIONS)["date"].sort().to_list() == [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]
