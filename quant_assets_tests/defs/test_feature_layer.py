"""The feature layer through Dagster: partition edges, blocking upstream checks, automation."""

import dagster as dg
import polars as pl

from quant_assets import lake
from quant_assets.cli import run_layer
from quant_assets.definitions import ASSETS, CHECKS, defs
from quant_assets.defs.layers import FEATURES, RAW
from quant_assets.features.keys import LABEL_KEYS, LIQUID_FULL_FEATURE_KEYS
from quant_assets.partitions import monthly
from quant_assets_tests.defs.defect_source import DefectiveSourceResource

FEATURE_TABLES = tuple(a.key.to_user_string() for a in FEATURES.assets)
# What reads the raw bars (directly or through another feature table); social text reads only events.
READS_BARS = ("feature_snapshots_main", "market_latent", "feature_matrix_main")


def month_rows(table: str) -> pl.DataFrame:
    return lake.read(table, "2024-02-01", "2024-03-01").sort("symbol", "ts")


def test_a_month_computed_alone_equals_it_inside_a_three_month_run():
    inst = dg.DagsterInstance.ephemeral()
    assert run_layer(inst, RAW, "2024-01-01", "2024-04-01").success
    ranged = run_layer(inst, FEATURES, "2024-01-01", "2024-03-01")
    assert ranged.success and all(ev.passed for ev in ranged.get_asset_check_evaluations())
    inside = {t: month_rows(t) for t in FEATURE_TABLES}
    versions = {t: lake.version(t) for t in FEATURE_TABLES}

    alone = run_layer(inst, FEATURES, "2024-02-01", "2024-02-01")
    assert alone.success
    for table in FEATURE_TABLES:
        assert lake.version(table) == versions[table] + 1  # really rewritten
        assert month_rows(table).equals(inside[table]), table

    matrix = inside["feature_matrix_main"]
    assert set(LIQUID_FULL_FEATURE_KEYS) <= set(matrix.columns)
    # February's last rows have labels: they were read from the start of March.
    last_hour = matrix.filter(pl.col("ts") >= pl.datetime(2024, 2, 29, 20, time_zone="UTC"))
    assert last_hour.get_column("label_4h").is_not_null().mean() > 0.95
    assert matrix.select(pl.col(k).is_not_null().mean() for k in LABEL_KEYS).min_horizontal().item() > 0.99


def test_a_failing_raw_check_stops_the_features_in_the_same_run():
    res = dg.materialize(
        [*ASSETS, *CHECKS],
        selection=RAW.selection | FEATURES.selection,
        partition_key="2024-03-01",
        raise_on_error=False,
        resources={**defs.resources, "source": DefectiveSourceResource(defect="duplicate_bars")},
    )
    assert not res.success
    materialized = {m.asset_key.to_user_string() for m in res.get_asset_materialization_events()}
    assert "market_bars" in materialized
    # Everything that reads the corrupt bars is stopped; social text, which reads only events, is not.
    blocked = set(READS_BARS)
    assert not materialized & blocked
    assert not any(lake.exists(t) for t in blocked)
    assert "social_text_latent" in materialized


def test_automation_requests_the_latest_month_only_once_upstream_blocking_checks_pass():
    """The sensor across runs: a daily raw run that fails a blocking check, then a tick, requests
    nothing that reads the bad bars (eager() alone would); the fixed run, then a tick, requests
    the running month of every feature table, and only that month; the next tick, nothing."""
    keys = monthly.get_partition_keys()
    with dg.instance_for_test() as inst:
        run_layer(inst, RAW, keys[-2], keys[-2])
        run_layer(inst, FEATURES, keys[-2], keys[-2])  # history is backfilled; automation keeps up the head
        first = dg.evaluate_automation_conditions(defs=defs, instance=inst)  # the sensor's first tick
        assert first.total_requested == 0

        bad = dg.materialize(  # the daily schedule's run of the running month, on a corrupt source
            [*ASSETS, *CHECKS],
            selection=RAW.selection,
            partition_key=keys[-1],
            instance=inst,
            raise_on_error=False,
            resources={**defs.resources, "source": DefectiveSourceResource(defect="duplicate_bars")},
        )
        [failed] = [ev for ev in bad.get_asset_check_evaluations() if not ev.passed]
        assert (failed.asset_key, failed.check_name) == (dg.AssetKey("market_bars"), "unique_key")
        # The bad month is in the lake and recorded as materialised; only its check says it is bad.
        assert dg.AssetKey("market_bars") in {m.asset_key for m in bad.get_asset_materialization_events()}
        tick = dg.evaluate_automation_conditions(defs=defs, instance=inst, cursor=first.cursor)
        for table in READS_BARS:
            assert tick.get_requested_partitions(dg.AssetKey(table)) == set(), table
        # Social text reads only events, whose checks passed: it follows its own data.
        assert tick.get_requested_partitions(dg.AssetKey("social_text_latent")) == {keys[-1]}
        social = dg.materialize(  # what the sensor's run would do
            [*ASSETS, *CHECKS],
            selection=dg.AssetSelection.assets("social_text_latent"),
            partition_key=keys[-1],
            instance=inst,
            resources=defs.resources,
        )
        assert social.success
        # A minute later: the bad bars still hold back everything that reads them.
        later = dg.evaluate_automation_conditions(defs=defs, instance=inst, cursor=tick.cursor)
        assert later.total_requested == 0

        assert run_layer(inst, RAW, keys[-1], keys[-1]).success  # the next daily run, source fixed
        result = dg.evaluate_automation_conditions(defs=defs, instance=inst, cursor=later.cursor)
        for table in FEATURE_TABLES:
            assert result.get_requested_partitions(dg.AssetKey(table)) == {keys[-1]}, table

        # Nothing new landed: the next tick requests nothing.
        again = dg.evaluate_automation_conditions(defs=defs, instance=inst, cursor=result.cursor)
        assert again.total_requested == 0
