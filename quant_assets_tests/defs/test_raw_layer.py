"""The raw and audit layers through Dagster, on the embedded simulator and a real lake."""

import os
import subprocess
import sys

import dagster as dg
import polars as pl
import pytest

from quant_assets import coverage, lake
from quant_assets.cli import run_layer
from quant_assets.definitions import ASSETS, CHECKS
from quant_assets.defs.layers import AUDIT, RAW
from quant_assets.resources import MarketDataSource, default_resources
from quant_assets.schemas import RAW_TABLE_NAMES
from quant_assets.universe import SYMBOLS, TIMEFRAMES
from quant_assets_tests.defs.defect_source import (
    DUPLICATED_BARS,
    HIGH_BELOW_LOW_BARS,
    DefectiveSourceResource,
)

# One evaluation per rule per table: what the raw layer declares, not a retyped count.
RAW_CHECK_COUNT = sum(len(c.check_keys) for c in RAW.checks)


def snapshot(start: str, end: str) -> dict[str, pl.DataFrame]:
    out = {}
    for table in RAW_TABLE_NAMES:
        df = lake.read(table, start, end)
        key = [c for c in ("symbol", "market", "timeframe", "ts", "event_id", "entity_id") if c in df.columns]
        out[table] = df.sort(key)
    return out


def test_one_month_of_every_raw_and_audit_asset_passes_all_checks():
    inst = dg.DagsterInstance.ephemeral()
    raw = run_layer(inst, RAW, "2024-03-01", "2024-03-01")
    assert raw.success
    evaluations = raw.get_asset_check_evaluations()
    assert len(evaluations) == RAW_CHECK_COUNT and all(ev.passed for ev in evaluations)
    assert {m.asset_key.to_user_string() for m in raw.get_asset_materialization_events()} == set(
        RAW_TABLE_NAMES
    )
    bars = lake.read("market_bars")
    assert set(bars.get_column("symbol")) == set(SYMBOLS)
    assert set(bars.get_column("timeframe")) == set(TIMEFRAMES)

    audit = run_layer(
        inst,
        AUDIT,
        run_config={
            "ops": {
                "required_data_readiness": {
                    "config": {"window_days": 30, "as_of": "2024-03-31T00:00:00+00:00"}
                }
            }
        },
    )
    assert audit.success
    [gate] = audit.get_asset_check_evaluations()
    assert gate.check_name == "readiness_ready" and gate.passed
    ready = lake.read_table("required_data_readiness")
    assert ready.height == len(coverage.REQUIRED_TABLES) * len(SYMBOLS)
    assert ready.get_column("coverage").min() >= coverage.MIN_REQUIRED_COVERAGE
    history = lake.read_table("full_history_audit")
    march = history.filter(pl.col("month") == "2024-03", pl.col("table") == "market_bars")
    assert march.get_column("coverage").min() > 0.99
    assert history.filter(pl.col("month") == "2023-03").get_column("present").sum() == 0


def test_readiness_gate_fails_when_the_window_is_not_covered():
    inst = dg.DagsterInstance.ephemeral()
    assert run_layer(inst, RAW, "2024-03-01", "2024-03-01").success
    audit = run_layer(
        inst,
        AUDIT,
        run_config={
            "ops": {
                "required_data_readiness": {
                    "config": {"window_days": 60, "as_of": "2024-04-01T00:00:00+00:00"}
                }
            }
        },
    )
    assert not audit.success
    [gate] = audit.get_asset_check_evaluations()
    # Only March of a 60-day window: every (required table, coin) pair is short, all coins listed.
    assert not gate.passed
    assert gate.metadata["pairs_not_ready"].value == len(coverage.REQUIRED_TABLES) * len(SYMBOLS)


def test_a_month_built_alone_equals_the_same_month_inside_a_three_month_cli_run(tmp_path):
    """The CLI's --partition-range makes one run; its middle month equals that month built alone."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    os.makedirs(env["DAGSTER_HOME"])
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "quant_assets.definitions",
        "--select",
        f"group:{RAW.group}",
        "--partition-range",
        "2021-04-01...2021-06-01",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stderr
    inside = snapshot("2021-05-01", "2021-06-01")
    assert lake.read("market_bars").get_column("date").min().isoformat() == "2021-04-01"

    lake_alone = tmp_path / "alone"
    os.environ["QUANT_ASSETS_LAKE"] = str(lake_alone)  # restored by the autouse fixture's monkeypatch
    proc = subprocess.run(
        [*cmd[:-2], "--partition", "2021-05-01"],
        env={**env, "QUANT_ASSETS_LAKE": str(lake_alone)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    alone = snapshot("2021-05-01", "2021-06-01")
    for table in RAW_TABLE_NAMES:
        assert alone[table].equals(inside[table]), table
    assert alone["market_bars"].height > 100_000


@pytest.mark.parametrize(
    ("defect", "failing", "failed_rows"),
    [
        ("duplicate_bars", "unique_key", 2 * DUPLICATED_BARS),  # both rows of each duplicated key
        ("high_below_low", "ohlc_sanity", HIGH_BELOW_LOW_BARS),
    ],
)
def test_a_corrupt_source_fails_its_blocking_check_with_a_count_and_sample(defect, failing, failed_rows):
    res = dg.materialize(
        [*ASSETS, *CHECKS],
        selection=RAW.selection,
        partition_key="2024-03-01",
        raise_on_error=False,
        resources={**default_resources(), "source": DefectiveSourceResource(defect=defect)},
    )
    assert not res.success
    failed = {ev.check_name: ev for ev in res.get_asset_check_evaluations() if not ev.passed}
    assert set(failed) == {failing}
    ev = failed[failing]
    assert ev.asset_key.to_user_string() == "market_bars"
    assert ev.metadata["failed_rows"].value == failed_rows
    assert "|" in ev.metadata["failing_rows_sample"].value
    assert res.get_failed_step_keys() == {"market_bars_quality"}


def test_source_kind_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("QUANT_ASSETS_SOURCE", "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        MarketDataSource().build()
    monkeypatch.setenv("QUANT_ASSETS_SOURCE", "synthetic")
    monkeypatch.setenv("QUANT_ASSETS_SIM_SEED", "11")
    assert MarketDataSource().build().name == "synthetic"
