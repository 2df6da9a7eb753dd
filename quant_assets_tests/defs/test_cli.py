"""What a terminal user sees: INFO logs with progress, no Dagster DEBUG lines or Beta warnings."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from quant_assets import instance, lake
from quant_assets.cli import main, run_layer
from quant_assets.defs.evaluation.tables import CANDIDATE_SCHEMA, replace_candidates
from quant_assets.defs.layers import AUDIT, RAW
from quant_assets.defs.models.tables import MODEL_PREDICTIONS, replace_partition
from quant_assets.defs.models.tracking import MlflowTracking


def test_the_cli_imports_without_beta_or_preview_warnings():
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-m", "quant_assets.cli", "--help"],
        cwd=instance.REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "demo" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr[-2000:]


def test_a_layer_run_logs_progress_at_info_and_no_debug_events(capfd):
    inst = dg.DagsterInstance.ephemeral()
    res = run_layer(
        inst, AUDIT, run_config={"ops": {"required_data_readiness": {"config": {"window_days": 1}}}}
    )
    assert res.success is False  # an empty lake is not ready: the gate fails, the logs still show it
    err = capfd.readouterr().err
    assert " - INFO - " in err and "readiness as of" in err
    assert " - DEBUG - " not in err  # STEP_START, HANDLED_OUTPUT, ... (~190 lines for the demo)


def test_a_layer_takes_a_partition_range_only_when_partitioned():
    inst = dg.DagsterInstance.ephemeral()
    for layer, keys in ((AUDIT, ("2024-03-01", "2024-03-01")), (RAW, (None, None))):
        try:
            run_layer(inst, layer, *keys)
        except ValueError as exc:
            assert layer.name in str(exc)
        else:
            raise AssertionError(f"{layer.name}: a wrong partition range was accepted")


# --- quant-assets status / promote / rollback ----------------------------------------------------

MAR = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
FEB = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """The command's own instance and registry in the test's temp dir (never the user's)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    return tmp_path


def status_json(capsys) -> dict:
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # stdout is ONE JSON object and nothing else


def candidate_row(version: str, cutoff: dt.datetime, failed: bool) -> dict:
    gates = [
        {"name": "oos_ic_interval_above_zero", "value": -0.004 if failed else 0.012, "threshold": 0.0,
         "passed": not failed, "reason": "interval reaches zero" if failed else ""},
        {"name": "hit_rate_above_half", "value": 0.51, "threshold": 0.5, "passed": True, "reason": ""},
    ]  # fmt: skip
    return {
        "cutoff": cutoff, "model": "liquid_teacher", "kind": "teacher", "symbol": "BTCUSDT", "horizon": "1h",
        "registered_name": "liquid_BTC_1h_teacher", "registered_version": version, "n_oos": 8640,
        "oos_ic": 0.021, "oos_ic_lo": 0.004, "oos_ic_hi": 0.038, "oos_rank_ic": 0.019, "hit_rate": 0.51,
        "pnl_after_cost": 0.0031, "max_drawdown": -0.012, "turnover_per_day": 4.5, "improved_wf_windows": 2,
        "entry_threshold": 0.0012, "confidence_min": 0.55, "gates": json.dumps(gates), "passed": not failed,
        "evaluated_at": cutoff + dt.timedelta(days=33), "date": cutoff.date(),
    }  # fmt: skip


def small_lake() -> None:
    """Real Delta tables: bars with a missing day, two model partitions, candidates, paper PnL."""
    days = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 4)]  # 03-03 missing
    bars = pl.DataFrame(
        [
            {
                "ts": dt.datetime(d.year, d.month, d.day, 12, tzinfo=dt.UTC),
                "date": d,
                "symbol": s,
                "close": 1.0,
            }
            for d in days
            for s in ("BTCUSDT", "ETHUSDT")
        ]  # fmt: skip
    )
    lake.write_window("market_bars", bars, "2024-03-01", "2024-04-01")
    for cutoff, n in ((FEB, 2), (MAR, 3)):
        preds = pl.DataFrame({
            "model": "liquid_teacher", "version": f"run-{cutoff:%m}", "cutoff": cutoff, "symbol": "BTCUSDT",
            "ts": [cutoff + dt.timedelta(minutes=5 * i) for i in range(n)], "horizon": "1h",
            "prediction": 0.001, "date": cutoff.date(),
        })  # fmt: skip
        replace_partition(MODEL_PREDICTIONS, cutoff, ["liquid_teacher"], preds)
    cands = pl.DataFrame([candidate_row("1", FEB, failed=True), candidate_row("2", MAR, failed=False)],
                         schema=CANDIDATE_SCHEMA)  # fmt: skip
    for cutoff in (FEB, MAR):  # as the candidate_models asset writes them: one replace per cut-off
        replace_candidates(cutoff, cands.filter(pl.col("cutoff") == cutoff))
    pnl = pl.DataFrame({"date": [*days, days[-1]], "model": ["liquid_teacher"] * 3 + [None],
                        "symbol": ["BTCUSDT"] * 3 + ["ETHUSDT"], "horizon": "1h",
                        "status": ["trading"] * 3 + ["no champion"], "pnl": [12.5, -2.0, 4.25, 0.0]})  # fmt: skip
    lake.write_window("paper_pnl", pnl, "2024-03-01", "2024-04-01")


def test_status_json_on_an_empty_lake_has_every_section_empty(cli_env, capsys):
    state = status_json(capsys)
    assert {k: state[k] for k in ("tables", "model_partitions", "candidates", "champions", "paper_pnl")} == {
        "tables": [], "model_partitions": [], "candidates": [], "champions": [], "paper_pnl": []}  # fmt: skip
    assert state["warnings"] == []
    assert not (cli_env / "mlflow").exists()  # status never creates a registry
    assert main(["status"]) == 0 and "Champions\n  (none)" in capsys.readouterr().out


def test_status_json_reports_tables_models_candidates_champions_and_paper_pnl(cli_env, capsys):
    small_lake()
    run = MlflowTracking().start_run("test")  # MLFLOW_TRACKING_URI: the temp store
    for part in ("2024-02-01", "2024-03-01"):
        run.register("teacher", "BTCUSDT", "1h", "teacher/BTCUSDT_1h", part)
    run.end()

    # the February candidate failed a gate: refused, naming it; March's passed: promoted
    assert (
        main(["promote", "--symbol", "BTC", "--horizon", "1h", "--cutoff", "2024-02-01", "--why", "x"]) == 1
    )
    assert "oos_ic_interval_above_zero (value -0.004" in capsys.readouterr().err
    assert main(["promote", "--symbol", "BTCUSDT", "--horizon", "1h", "--why", "March passed"]) == 0
    with dg.DagsterInstance.get() as inst:  # the command's instance: the teacher's partitions as recorded
        for part in ("2024-02-01", "2024-03-01"):
            inst.report_runless_asset_event(dg.AssetMaterialization("liquid_teacher", partition=part))
    state = status_json(capsys)

    tables = {t["table"]: t for t in state["tables"]}
    assert sorted(tables) == [
        "candidate_models",
        "market_bars",
        "model_predictions",
        "paper_pnl",
        "promotions",
    ]
    bars = tables["market_bars"]
    assert (bars["rows"], bars["days_with_rows"], bars["coverage"], bars["coins"]) == (
        6, 3, 0.75, ["BTCUSDT", "ETHUSDT"])  # fmt: skip
    assert (bars["from"], bars["to"]) == ("2024-03-01T12:00:00+00:00", "2024-03-04T12:00:00+00:00")
    assert tables["promotions"]["rows"] == 1 and tables["promotions"]["coins"] == ["BTCUSDT"]
    assert tables["candidate_models"]["to"] == "2024-03-01" and tables["candidate_models"]["coverage"] is None

    [teacher] = state["model_partitions"]
    assert (teacher["model"], teacher["latest_cutoff"], teacher["partitions"], teacher["rows"]) == (
        "liquid_teacher", "2024-03-01T00:00:00+00:00", 2, 3)  # fmt: skip
    assert teacher["version"] == "run-03"
    assert (teacher["dagster_latest_partition"], teacher["dagster_partitions"]) == ("2024-03-01", 2)

    [cand] = state["candidates"]  # the latest cut-off of each model, coin and horizon
    assert (cand["model"], cand["symbol"], cand["horizon"], cand["cutoff"], cand["version"], cand["passed"]) == (
        "liquid_teacher", "BTCUSDT", "1h", "2024-03-01T00:00:00+00:00", "2", True)  # fmt: skip
    assert cand["metrics"]["oos_ic"] == 0.021 and cand["metrics"]["improved_wf_windows"] == 2
    assert [(g["name"], g["passed"]) for g in cand["gates"]] == [
        ("oos_ic_interval_above_zero", True), ("hit_rate_above_half", True)]  # fmt: skip

    [champ] = state["champions"]
    promoted = lake.read_table("promotions").row(0, named=True)
    assert (champ["model"], champ["symbol"], champ["horizon"], champ["version"]) == (
        "liquid_teacher", "BTCUSDT", "1h", "2")  # fmt: skip
    assert champ["promoted_at"] == promoted["at"].isoformat() and champ["why"] == "March passed"
    assert tables["promotions"]["from"] == champ["promoted_at"]
    assert champ["previous"] is None

    assert state["warnings"] == []
    [pnl] = state["paper_pnl"]
    assert (pnl["model"], pnl["symbol"], pnl["horizon"], pnl["days"]) == (
        "liquid_teacher",
        "BTCUSDT",
        "1h",
        3,
    )
    assert (pnl["latest_day"], pnl["latest_day_pnl"], pnl["cumulative_pnl"]) == ("2024-03-04", 4.25, 14.75)
    assert pnl["latest_status"] == "trading"  # the ETH book without a champion belongs to no model

    # rollback with no previous champion is refused; the human form prints every section
    assert main(["rollback", "--symbol", "BTC", "--horizon", "1h", "--why", "x"]) == 1
    assert "no `previous` model" in capsys.readouterr().err
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "liquid_BTC_1h_teacher" in out and "+oos_ic_interval_above_zero" in out and "14.75" in out


def test_a_section_that_cannot_be_read_is_empty_with_a_warning_and_the_others_still_show(cli_env, capsys):
    day = dt.date(2024, 3, 1)
    lake.write_window("paper_pnl", pl.DataFrame({"date": [day], "symbol": ["BTCUSDT"]}), day, "2024-03-02")
    state = status_json(capsys)
    assert state["paper_pnl"] == [] and [t["table"] for t in state["tables"]] == ["paper_pnl"]
    [warning] = state["warnings"]
    assert warning.startswith(
        "paper_pnl: ValueError: lake table 'paper_pnl' lacks columns ['model', 'horizon', 'pnl']"
    )


def test_quant_assets_is_installed_as_a_console_script_running_main():
    from importlib.metadata import entry_points

    [ep] = entry_points(group="console_scripts", name="quant-assets")
    assert ep.value == "quant_assets.cli:main" and ep.load() is main
    script = Path(sys.executable).parent / "quant-assets"
    assert script.exists(), f"{script}: run `.venv/bin/pip install -e . --no-deps`"
