"""What a first user reads in the UI, checked without a browser: described column schemas, owners and
tags, how to type a partition key, the audits' automation, the heatmap's legend, the queue's interval,
and the `make ui` wrapper's arguments."""

from __future__ import annotations

import base64
import datetime as dt
import io
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from quant_assets import lake
from quant_assets.defs.audit.assets import _heatmap_markdown, full_history_audit, required_data_readiness
from quant_assets.defs.features.assets import feature_assets, feature_snapshots_main
from quant_assets.defs.features.columns import TABLE_SCHEMAS, describe, undescribed
from quant_assets.defs.raw.assets import raw_tables
from quant_assets.defs.raw.checks import partition_label
from quant_assets.defs.raw.columns import describe as describe_raw
from quant_assets.partitions import monthly
from quant_assets.resources import MarketDataSource
from quant_assets.schemas import RAW_TABLES
from quant_assets.ui import dev_args

REPO = Path(__file__).resolve().parents[2]


def _specs():
    yield from raw_tables.specs
    for asset in feature_assets:
        yield from asset.specs


def test_every_raw_and_feature_column_is_described_and_every_asset_has_owners_tags_and_the_key_format():
    for spec in _specs():
        table = spec.key.path[-1]
        schema = spec.metadata["dagster/column_schema"]
        expected = RAW_TABLES[table].columns if table in RAW_TABLES else TABLE_SCHEMAS[table]
        assert [c.name for c in schema.columns] == list(expected), table
        assert all(c.description for c in schema.columns), (
            table,
            [c.name for c in schema.columns if not c.description],
        )
        assert spec.owners == ["team:quant-data"] and spec.tags["layer"] in ("raw", "features"), table
        # the partition picker wants the key of the month's first day, and the description says so
        assert "`2026-10-01`" in spec.description, table
    assert "2026-10-01" in monthly.get_partition_keys() and "2026-10" not in monthly.get_partition_keys()
    nullable = {c.name for c in raw_tables.specs_by_key[dg.AssetKey("orderbook_l2")].metadata[
        "dagster/column_schema"].columns if c.constraints.nullable}  # fmt: skip
    assert nullable == {"best_bid", "best_ask"}
    assert (
        describe_raw("orderbook_l2", "ask_notional_3pct")
        == "Cumulative ask notional within 3% of mid, quote (USDT)."
    )
    assert (
        describe("h1_ret_accel_12_48")
        == "1h bars as of the last closed hour: ret_12 / 12 - ret_48 / 48: short minus long per-bar drift."
    )
    assert describe("label_4h").endswith("(looks ahead).") and describe("no_such_column") is None
    assert undescribed(pl.Schema({"ret_3": pl.Float64, "mystery": pl.Float64})) == ["mystery"]


def test_a_feature_materialisation_carries_the_schema_it_wrote_and_its_check_names_the_partition():
    from quant_assets.defs.features.checks import snapshots_unique_on_grid

    with dg.DagsterInstance.ephemeral() as inst:
        res = dg.materialize(
            [raw_tables, feature_snapshots_main, snapshots_unique_on_grid],
            selection=dg.AssetSelection.assets("market_bars", "prices", "feature_snapshots_main")
            | dg.AssetSelection.checks(snapshots_unique_on_grid),
            instance=inst,
            resources={"source": MarketDataSource()},
            partition_key="2024-02-01",
        )
    assert res.success
    [mat] = [
        m
        for m in res.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("feature_snapshots_main")
    ]
    schema = mat.materialization.metadata["dagster/column_schema"].value
    written = lake.scan("feature_snapshots_main").collect_schema()
    assert [(c.name, c.type) for c in schema.columns] == [(c, str(t)) for c, t in written.items()]
    assert all(c.description for c in schema.columns)
    [check] = [e for e in res.get_asset_check_evaluations() if e.check_name == "snapshots_unique_on_grid"]
    assert check.passed and check.metadata["partition"].value == "2024-02-01"
    assert check.description.startswith("partition 2024-02-01: ")


def test_partition_label_names_one_key_or_a_range():
    class One:
        has_partition_key, partition_key = True, "2026-10-01"

    class Range:
        has_partition_key = False
        partition_key_range = dg.PartitionKeyRange("2026-01-01", "2026-03-01")

    class Single(Range):
        partition_key_range = dg.PartitionKeyRange("2026-02-01", "2026-02-01")

    assert partition_label(One()) == "2026-10-01"
    assert partition_label(Range()) == "2026-01-01...2026-03-01"
    assert partition_label(Single()) == "2026-02-01"


def test_the_audits_follow_the_raw_data_daily_and_the_heatmap_has_its_legend():
    for audit in (required_data_readiness, full_history_audit):
        condition = audit.specs_by_key[audit.key].automation_condition
        assert condition is not None and condition.get_label() == "daily_after_upstream_checks_pass", (
            audit.key
        )
    rows = [
        {"table": t, "symbol": s, "month": m, "coverage": None if (s, m) == ("SOL", "2024-01") else 0.5}
        for t in ("market_bars", "prices")
        for s in ("BTC", "SOL")
        for m in ("2024-01", "2024-02")
    ]
    md = _heatmap_markdown(pl.DataFrame(rows))
    assert md.startswith("![coverage heatmap](data:image/png;base64,")
    png = base64.b64decode(md.split("base64,", 1)[1].rstrip(")"))
    import matplotlib.image

    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    # the colour bar (a legend of coverage 0..1) adds a column of saturated red at its bottom:
    # coverage 0.5 alone (the heatmaps) is yellow, so a red pixel can only be the bar's.
    red = (image[..., 0] > 0.6) & (image[..., 1] < 0.25) & (image[..., 2] < 0.25)
    assert red.any()


def test_the_audits_are_requested_once_a_day_after_every_raw_table_has_updated():
    from quant_assets.definitions import defs
    from quant_assets.defs.raw.assets import RAW_KEYS

    # Only the events matter to the condition: the raw materialisations are reported, not built.
    now = dt.datetime.now(dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    audits = dg.AssetSelection.assets(full_history_audit, required_data_readiness)

    def evaluate(at, cursor=None):
        return dg.evaluate_automation_conditions(
            defs=defs, instance=inst, asset_selection=audits, evaluation_time=at, cursor=cursor
        )

    graph = defs.resolve_asset_graph()

    def built(inst, key, passed=True):
        # A raw run: the month's materialisation, then its blocking checks' results.
        inst.report_runless_asset_event(dg.AssetMaterialization(key, partition="2026-10-01"))
        for check in graph.get_check_keys_for_assets({key}):
            inst.report_runless_asset_event(
                dg.AssetCheckEvaluation(asset_key=key, check_name=check.name, passed=passed)
            )

    with dg.DagsterInstance.ephemeral() as inst:
        before = evaluate(midnight - dt.timedelta(minutes=5))
        for key in RAW_KEYS[:-1]:
            built(inst, key)
        partial = evaluate(now, before.cursor)
        built(inst, RAW_KEYS[-1], passed=False)  # the last table lands, but a blocking check fails
        held = evaluate(now + dt.timedelta(seconds=15), partial.cursor)
        built(inst, RAW_KEYS[-1])  # a later run of it passes
        complete = evaluate(now + dt.timedelta(seconds=30), held.cursor)
        again = evaluate(now + dt.timedelta(seconds=60), complete.cursor)
    assert (before.total_requested, partial.total_requested) == (0, 0)  # 8 of 9 raw tables: wait
    assert held.total_requested == 0  # a failed blocking check upstream holds the audits back
    assert complete.get_num_requested(full_history_audit.key) == 1
    assert complete.get_num_requested(required_data_readiness.key) == 1
    assert again.total_requested == 0  # once per day's tick, not on every sensor evaluation


def test_both_instances_dequeue_every_second_and_make_ui_runs_dagster_dev_from_dagster_home():
    # dagster.yaml (SQLite) and dagster-postgres.yaml (DAGSTER_PG_HOST set): the same queue tuning.
    for name in ("dagster.yaml", "dagster-postgres.yaml"):
        config = yaml.safe_load((REPO / name).read_text())["run_coordinator"]["config"]
        assert config["dequeue_interval_seconds"] == 1 and config["dequeue_use_threads"] is True, name
        assert config["max_concurrent_runs"] == 2, name
    assert dev_args(["-p", "3000"])[-4:] == ["-h", "127.0.0.1", "-p", "3000"]
    assert dev_args(["-h", "0.0.0.0"]).count("-h") == 1
    out = subprocess.run(
        ["make", "-s", "-n", "-o", ".venv/.installed", "ui"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "exec .venv/bin/python -m quant_assets.ui dagster dev -h 127.0.0.1 -p 3000" in out


@pytest.mark.parametrize("table", ["market_bars", "events"])
def test_raw_tags_say_how_often_rows_come(table):
    spec = raw_tables.specs_by_key[dg.AssetKey(table)]
    assert spec.tags["grain"] == {"market_bars": "5m", "events": "event"}[table]
