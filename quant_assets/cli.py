"""Command line for the things a user does from a terminal: demo, backfill, summary.

    python -m quant_assets.cli demo       # two latest months, raw -> features -> audit -> models, then a summary
    python -m quant_assets.cli backfill   # 2018-01 -> the running month, one run per layer
                                          # (models: the running month's; --walk-forward: every month's)
    python -m quant_assets.cli summary    # what the lake holds and how the checks went

Runs are recorded in the instance under $DAGSTER_HOME, so `make ui` shows them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import sys
import time
import warnings

import dagster as dg

# Before the definitions are imported: their decorators emit Beta/PreviewWarnings (backfill_policy,
# ...) that a terminal user can do nothing about. Tests and the UI still show them.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

import polars as pl  # noqa: E402
from dagster._core.storage.tags import (  # noqa: E402
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from quant_assets import coverage, lake  # noqa: E402
from quant_assets.definitions import defs  # noqa: E402
from quant_assets.defs.audit.assets import AUDIT_GROUP  # noqa: E402
from quant_assets.defs.layers import ASSETS, AUDIT, CHECKS, LAYERS, Layer  # noqa: E402
from quant_assets.features.keys import LABEL_KEYS, LIQUID_FULL_FEATURE_KEYS  # noqa: E402
from quant_assets.instance import HOST_TAG, prepare_home  # noqa: E402
from quant_assets.partitions import monthly  # noqa: E402

# Dagster logs every engine event at DEBUG (~190 lines for the demo); INFO keeps the assets'
# own progress lines (one per month and table) and every warning and error.
CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
UI_HINT = "Open the UI:  make ui   ->  http://127.0.0.1:3000  (runs, asset checks, lineage)"


def run_layer(
    instance: dg.DagsterInstance,
    layer: Layer,
    first_key: str | None = None,
    last_key: str | None = None,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """One run of `layer` over the partition range [first_key, last_key]; unpartitioned layers take none."""
    if layer.partitioned != (first_key is not None):
        raise ValueError(
            f"layer {layer.name!r} is {'' if layer.partitioned else 'not '}partitioned: "
            f"got partition range {first_key!r}..{last_key!r}"
        )
    # The host lets run monitoring on a shared (Postgres) instance judge this process from here only.
    tags = {HOST_TAG: socket.gethostname()}
    if first_key is not None:
        tags |= {
            ASSET_PARTITION_RANGE_START_TAG: first_key,
            ASSET_PARTITION_RANGE_END_TAG: last_key or first_key,
        }
    return dg.materialize(
        [*ASSETS, *CHECKS],
        instance=instance,
        selection=layer.selection,
        tags=tags,
        run_config={**CONSOLE_INFO, **(run_config or {})},
        raise_on_error=False,
        resources=defs.resources,
    )


def run_layers(
    instance, first_key: str, last_key: str, readiness_days: int | None = None, walk_forward: bool = True
) -> bool:
    """Every layer that takes part in runs, in registry order, one run each; stop at a failed data layer.

    A layer with its own partitions (the models' cut-offs) runs those in [first_key, last_key]: all of
    them (`walk_forward`, a backfill) or the last one only (the demo: the models of its last month).
    """
    ok = True
    checks: list = []
    for layer in (lay for lay in LAYERS if lay.in_runs):
        t0 = time.monotonic()
        cfg = None
        if layer is AUDIT and readiness_days is not None:
            cfg = {"ops": {"required_data_readiness": {"config": {"window_days": readiness_days}}}}
        keys = layer.run_range(first_key, last_key, walk_forward=walk_forward)
        if layer.partitioned and keys is None:
            print(f"[{layer.name}] no partition in {first_key[:7]} .. {last_key[:7]}: skipped", flush=True)
            continue
        span = f"months {keys[0][:7]} .. {keys[1][:7]}" if keys else "all history"
        print(f"[{layer.name}] {span}: running", flush=True)
        if keys:
            res = run_layer(instance, layer, *keys, run_config=cfg)
        else:
            res = run_layer(instance, layer, run_config=cfg)
        checks += res.get_asset_check_evaluations()
        print(
            f"[{layer.name}] run {res.run_id[:8]} {'succeeded' if res.success else 'FAILED'} "
            f"in {time.monotonic() - t0:.1f} s",
            flush=True,
        )
        ok &= res.success
        if not res.success and layer is not AUDIT:
            break  # a failed blocking check upstream: what follows would read bad data
    print_summary(checks)
    return ok


def _table_summary(table: str) -> dict:
    lf = lake.scan(table)
    cols = lf.collect_schema().names()
    aggs = [pl.len().alias("rows")]
    if "ts" in cols:
        aggs += [pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")]
    elif "date" in cols:
        aggs += [pl.col("date").min().alias("first"), pl.col("date").max().alias("last")]
    if "symbol" in cols:
        aggs.append(pl.col("symbol").n_unique().alias("coins"))
    return lf.select(aggs).collect().row(0, named=True)


def print_summary(evaluations: list) -> None:
    by_asset: dict[str, list[bool]] = {}
    for ev in evaluations:
        by_asset.setdefault(ev.asset_key.to_user_string(), []).append(ev.passed)
    rows = []
    graph = defs.resolve_asset_graph()
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        name = key.to_user_string()
        if not lake.exists(name):
            continue
        s = (
            _table_summary(name)
            if graph.get(key).group_name != AUDIT_GROUP  # audit tables are not time series
            else {"rows": lake.read_table(name).height}
        )
        results = by_asset.get(name, [])
        rows.append(
            {
                "table": name,
                "rows": s["rows"],
                "from": str(s.get("first", ""))[:16],
                "to": str(s.get("last", ""))[:16],
                "coins": s.get("coins"),
                "checks_passed": sum(results),
                "checks_failed": len(results) - sum(results),
            }
        )
    with pl.Config(
        tbl_rows=100,
        tbl_cols=-1,  # the models table has a column per coin
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        tbl_width_chars=160,
        thousands_separator=",",
    ):
        print(pl.DataFrame(rows))
        if lake.exists("required_data_readiness"):
            ready = lake.read_table("required_data_readiness")
            worst = (
                ready.group_by("table")
                .agg(pl.col("coverage").min().alias("min_coverage"), pl.col("ready").all())
                .sort("table")
            )
            days = ready.get_column("window_days")[0]
            print(f"Readiness over the trailing {days} days (gate: >= {coverage.MIN_REQUIRED_COVERAGE:.0%}):")
            print(worst)
        if lake.exists("feature_matrix_main"):
            print("Feature matrix coverage (share of rows with a value):")
            print(feature_coverage())
        if lake.exists("model_predictions"):
            print("Models, out of sample (month M predicted by partition M): IC per coin and horizon")
            print(model_oos_ic())
        if lake.exists("backtest_runs"):
            print("Models, after-cost backtest of month M (total return on capital):")
            print(model_pnl())
    print(UI_HINT)


def feature_coverage() -> pl.DataFrame:
    """Non-null share of the features (mean and worst column) and of each label, per month."""
    lf = lake.scan("feature_matrix_main")
    return (
        lf.group_by(pl.col("date").dt.strftime("%Y-%m").alias("month"))
        .agg(
            pl.len().alias("rows"),
            pl.mean_horizontal(pl.col(k).is_not_null().mean() for k in LIQUID_FULL_FEATURE_KEYS).alias(
                "features_mean"
            ),
            pl.min_horizontal(pl.col(k).is_not_null().mean() for k in LIQUID_FULL_FEATURE_KEYS).alias(
                "features_worst"
            ),
            *(pl.col(k).is_not_null().mean().alias(k) for k in LABEL_KEYS),
        )
        .sort("month")
        .collect()
    )


def model_oos_ic() -> pl.DataFrame:
    """Pearson IC of each model's month-M predictions with the label, per coin and horizon (labelled rows)."""
    preds = lake.scan("model_predictions").select("model", "cutoff", "symbol", "ts", "horizon", "prediction")
    labels = (
        lake.scan("feature_matrix_main")
        .select("symbol", "ts", *(pl.col(f"label_{h}") for h in ("1h", "4h")))
        .unpivot(index=["symbol", "ts"], variable_name="horizon", value_name="label")
    )
    labels = labels.with_columns(pl.col("horizon").str.strip_prefix("label_"))
    joined = preds.join(labels, on=["symbol", "ts", "horizon"]).drop_nulls(["prediction", "label"])
    ic = (
        joined.group_by("model", "symbol", "horizon")
        .agg(pl.corr("prediction", "label").round(4).alias("ic"))
        .collect()
        .with_columns(pl.col("symbol").str.strip_suffix("USDT"))
    )
    if ic.height == 0:
        return ic
    return ic.pivot(on="symbol", index=["model", "horizon"], values="ic", sort_columns=True).sort(
        "model", "horizon"
    )


def model_pnl() -> pl.DataFrame:
    runs = lake.scan("backtest_runs").select(
        pl.col("cutoff").dt.strftime("%Y-%m").alias("partition"), "model", "horizon",
        pl.col("total_return").round(5), pl.col("sharpe").round(2), "n_trades",
    )  # fmt: skip
    return runs.sort("partition", "model", "horizon").collect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quant_assets.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="materialise the two latest months of every layer and print a summary")
    demo.add_argument("--months", type=int, default=2)
    back = sub.add_parser(
        "backfill", help="materialise a range of months (default 2018-01 -> now), one run per layer"
    )
    back.add_argument("--start", default=monthly.get_first_partition_key())
    back.add_argument(
        "--end", default=None, help="last month to include, e.g. 2024-06-01 (default: running month)"
    )
    back.add_argument(
        "--walk-forward",
        action="store_true",
        help="train every model partition in the range (a walk-forward; hours on full history), "
        "not only the last month's",
    )
    sub.add_parser("summary", help="print what the lake holds")
    args = parser.parse_args(argv)

    os.environ.setdefault("DAGSTER_HOME", str(prepare_home()))
    if args.command == "summary":
        print_summary([])
        return 0
    instance = dg.DagsterInstance.get()
    keys = monthly.get_partition_keys()
    if args.command == "demo":
        first, last = keys[-args.months], keys[-1]
        days = (dt.datetime.now(dt.UTC).date() - dt.date.fromisoformat(first)).days
        print(f"demo: months {first} .. {last} of all coins; lake at {lake.root()}")
        return 0 if run_layers(instance, first, last, readiness_days=days, walk_forward=False) else 1
    last = args.end or keys[-1]
    print(f"backfill: months {args.start} .. {last}; lake at {lake.root()}")
    return 0 if run_layers(instance, args.start, last, walk_forward=args.walk_forward) else 1


if __name__ == "__main__":
    sys.exit(main())
