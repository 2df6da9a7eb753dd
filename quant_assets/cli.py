"""The `quant-assets` command: what a user does from a terminal (`python -m quant_assets.cli` is the same).

    quant-assets demo       # two latest months, raw -> features -> audit -> models, then a summary
    quant-assets backfill   # 2018-01 -> the running month, one run per layer
                            # (models: the running month's; --walk-forward: every month's)
    quant-assets summary    # what the lake holds and how the checks went
    quant-assets status     # lake tables, model partitions, candidates and their gates, champions,
                            # paper PnL (--json: one JSON object)
    quant-assets promote --symbol BTC --horizon 1h --why "..."   # the promote_model job, in process
    quant-assets rollback --symbol BTC --horizon 1h --why "..."  # the rollback_model job, in process

Runs are recorded in the instance under $DAGSTER_HOME, so `make ui` shows them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import math
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
from deltalake.exceptions import DeltaError  # noqa: E402

from quant_assets import coverage, lake, safe_inputs  # noqa: E402
from quant_assets.definitions import defs  # noqa: E402
from quant_assets.defs.audit.assets import AUDIT_GROUP  # noqa: E402
from quant_assets.defs.evaluation import promotion  # noqa: E402
from quant_assets.defs.layers import (  # noqa: E402
    ASSETS,
    AUDIT,
    BACKBONES,
    CHECKS,
    EVALUATION,
    FEATURES,
    LAYERS,
    MODELS,
    OPERATIONS,
    RAW,
    RESEARCH,
    Layer,
)
from quant_assets.defs.models.tables import MODEL_PREDICTIONS  # noqa: E402
from quant_assets.defs.models.tracking import MlflowTracking  # noqa: E402
from quant_assets.features.keys import LABEL_KEYS, LIQUID_FULL_FEATURE_KEYS  # noqa: E402
from quant_assets.instance import HOST_TAG, prepare_home  # noqa: E402
from quant_assets.partitions import monthly  # noqa: E402

# Dagster logs every engine event at DEBUG (~190 lines for the demo); INFO keeps the assets'
# own progress lines (one per month and table) and every warning and error.
CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# written by the paper-trading asset; read here only, when it exists
PAPER_PNL = "paper_pnl"
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


# --- the demo: the whole loop on a few months --------------------------------------------------------

# The demo's market when QUANT_ASSETS_SIM_SIGNAL is unset: planted effects strong enough that some
# candidates pass on a few months (reachable 1h IC ~0.11, seed 7). QUANT_ASSETS_SIM_SIGNAL=0 shows the
# null market instead: nothing passes, nothing is promoted, nothing is traded.
DEMO_SIGNAL = "1.0"
DEMO_MONTHS = 4
DEMO_PAPER_DAYS = 7  # paper trading and monitoring of the champions' last days (at most)
# Smaller models than production, so the whole loop fits in minutes on 2 cores; the same code paths.
DEMO_CONFIG = {
    "models": {"ops": {
        "liquid_teacher": {"config": {"teacher": {"num_leaves": 15, "n_estimators": 150, "n_kfold": 0, "n_wf_folds": 3,
                                                  "val_days": 7}, "workers": 2}},
        "liquid_student": {"config": {"steps": 150}},
    }},
    "backbones": {"ops": {"backbone_suite": {"config": {"steps": 60, "global_batch": 128, "eval_every": 60,
                                                        "patchtst": {"stride": 16, "n_layers": 1},
                                                        "tft": {"d_model": 8, "n_heads": 2}}}}},
    "research": {"ops": {
        "vc_model": {"config": {"steps": 200}},
        "multimodal_eval": {"config": {"n_boot": 200, "n_kfold": 3}},
    }},
}  # fmt: skip


def _run_step(
    instance, layer: Layer, keys: tuple[str, str] | None, config: dict | None, checks: list
) -> bool:
    t0 = time.monotonic()
    span = f"{keys[0]} .. {keys[1]}" if keys else "all history"
    print(f"[{layer.name}] {span}: running", flush=True)
    res = run_layer(instance, layer, *(keys or ()), run_config=config)
    checks += res.get_asset_check_evaluations()
    print(f"[{layer.name}] run {res.run_id[:8]} {'succeeded' if res.success else 'FAILED'} "
          f"in {time.monotonic() - t0:.1f} s", flush=True)  # fmt: skip
    return res.success


def promote_passed(instance, cutoff: str) -> list[str]:
    """The promote_model job for every coin and horizon with a candidate of `cutoff` whose gates all passed
    (the job picks the best passed kind and records who and why); returns what it promoted."""
    rows = promotion.read_candidates().filter(
        (pl.col("cutoff").dt.strftime("%Y-%m-%d") == cutoff)
        & pl.col("passed")
        & (pl.col("registered_version") != "")
    )
    done = []
    for symbol, horizon in sorted(set(zip(rows["symbol"], rows["horizon"], strict=True))):
        why = f"demo: every gate passed on the {cutoff[:7]} cut-off"
        config = {"symbol": symbol, "horizon": horizon, "why": why, "cutoff": cutoff}
        if run_job_in_process(instance, "promote_model", "promote", config) == 0:
            done.append(f"{symbol} {horizon}")
    return done


def run_demo(instance, months: int) -> bool:
    """Raw, features and audits for `months` months; the models, gates, backbones and research of the
    last complete month's cut-off (trained on the months before it, judged on that month out of sample);
    promotion of every candidate that passed; paper trading and monitoring of the days since (the
    champions trade from the end of the month their gates saw). Then the summary and the status."""
    keys = monthly.get_partition_keys()
    first, last = keys[-months], keys[-1]
    cutoff = keys[-2]  # the last complete month: a whole month of out-of-sample rows for the gates
    today = dt.datetime.now(dt.UTC).date()
    checks: list = []
    ok = True
    days = (today - dt.date.fromisoformat(first)).days
    audit_cfg = {"ops": {"required_data_readiness": {"config": {"window_days": days}}}}
    for layer, span, cfg in (
        (RAW, (first, last), None),
        (FEATURES, (first, last), None),
        (AUDIT, None, audit_cfg),
    ):
        ok &= _run_step(instance, layer, span, cfg, checks)
        if not ok and layer is not AUDIT:
            print_summary(checks)
            return False
    for layer in (MODELS, EVALUATION, BACKBONES, RESEARCH):
        step_ok = _run_step(instance, layer, (cutoff, cutoff), DEMO_CONFIG.get(layer.name), checks)
        ok &= step_ok
        if not step_ok and layer in (MODELS, EVALUATION):
            break  # nothing to judge or promote: the summary says why
    promoted = promote_passed(instance, cutoff) if ok or lake.exists("candidate_models") else []
    print(
        f"[promotion] {len(promoted)} promoted: {', '.join(promoted) or 'none (no candidate passed every gate)'}"
    )
    start = max(next_month_start(cutoff), today - dt.timedelta(days=DEMO_PAPER_DAYS - 1))
    if promoted:
        ok &= _run_step(instance, OPERATIONS, (start.isoformat(), today.isoformat()), None, checks)
    else:
        print("[operations] skipped: no champion to paper-trade")
    print_summary(checks)
    if lake.exists("ablation_results"):
        print("Research: ablation deltas (OOS, per horizon and scheme):")
        with pl.Config(tbl_rows=100, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                       tbl_width_chars=200, fmt_str_lengths=40):  # fmt: skip
            print(ablation_summary())
    print_status(status(instance, defs.resources["mlflow"]))
    return ok


def next_month_start(key: str) -> dt.date:
    d = dt.date.fromisoformat(key)
    return dt.date(d.year + d.month // 12, d.month % 12 + 1, 1)


def ablation_summary() -> pl.DataFrame:
    """The research ablations: each OOS IC and after-cost PnL with its delta against the full model."""
    rows = lake.scan("ablation_results").select(
        pl.col("cutoff").dt.strftime("%Y-%m").alias("partition"), "model", "horizon", "scheme", "ablation",
        "n", pl.col("ic").round(4), pl.col("pnl").round(4), pl.col("delta_ic").round(4),
        pl.col("delta_ic_low").round(4), pl.col("delta_ic_high").round(4),
    )  # fmt: skip
    return rows.sort("partition", "model", "horizon", "scheme", "ablation").collect()


def _table_summary(table: str) -> dict:
    lf = _scan_any(table)  # candidate_models and the promotions table are not month-partitioned
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


# --- status: the state read from the lake, the Dagster instance and the registry ----------------

PNL_KEYS = ("model", "symbol", "horizon")
METRIC_KEYS = ("n_oos", "oos_ic", "oos_ic_lo", "oos_ic_hi", "oos_rank_ic", "hit_rate", "pnl_after_cost",
               "max_drawdown", "turnover_per_day", "improved_wf_windows")  # fmt: skip


def _scan_any(table: str) -> pl.LazyFrame:
    """Any lake table, month-partitioned or not (`lake.scan` expects the month column)."""
    lf = pl.scan_delta(lake.uri(table), storage_options=lake.storage_options())
    if lake.PARTITION_COLUMN in lf.collect_schema().names():
        lf = lf.drop(lake.PARTITION_COLUMN)
    return lf


def table_status(table: str) -> dict:
    """Rows, time range, days with rows and their share of the range (coverage), coins, Delta version."""
    lf = _scan_any(table)
    cols = lf.collect_schema().names()
    time_col = next((c for c in ("ts", "date", "at") if c in cols), None)  # `at`: the promotions log
    aggs = [pl.len().alias("rows")]
    if time_col:
        aggs += [pl.col(time_col).min().alias("first"), pl.col(time_col).max().alias("last")]
    if "ts" in cols and "date" in cols:  # a time series: days with rows (not per-cut-off tables)
        aggs += [pl.col("date").n_unique().alias("days"), pl.col("date").min().alias("d0"),
                 pl.col("date").max().alias("d1")]  # fmt: skip
    if "symbol" in cols:
        aggs.append(pl.col("symbol").unique().sort().implode().alias("coins"))
    s = lf.select(aggs).collect().row(0, named=True)
    span = (s["d1"] - s["d0"]).days + 1 if s.get("d0") is not None else None
    return {
        "table": table,
        "version": lake.version(table),
        "rows": s["rows"],
        "from": s.get("first"),
        "to": s.get("last"),
        "days_with_rows": s.get("days"),
        # share of calendar days between the first and last that hold rows (gaps lower it)
        "coverage": round(s["days"] / span, 4) if span else None,
        "coins": [c for c in s.get("coins") or [] if c is not None],
    }


def model_partitions(instance: dg.DagsterInstance | None = None) -> list[dict]:
    """Per model: its latest cut-off in `model_predictions` (rows, MLflow run, partitions held) and the
    model asset's latest materialised partition in the Dagster instance (None without one)."""
    out: dict[str, dict] = {}
    if lake.exists(MODEL_PREDICTIONS):
        per_cutoff = (
            _scan_any(MODEL_PREDICTIONS)
            .group_by("model", "cutoff")
            .agg(
                pl.len().alias("rows"), pl.col("version").first(), pl.col("symbol").n_unique().alias("coins")
            )
            .collect()
            .sort("model", "cutoff")
        )
        for model, part in per_cutoff.group_by("model", maintain_order=True):
            last = part.row(-1, named=True)
            out[model[0]] = {"model": model[0], "latest_cutoff": last["cutoff"], "partitions": part.height,
                             "rows": last["rows"], "coins": last["coins"], "version": last["version"],
                             "dagster_latest_partition": None, "dagster_partitions": None}  # fmt: skip
    if instance is not None:
        for asset in MODELS.assets:
            for key in asset.keys:
                done = sorted(instance.get_materialized_partitions(key))
                if not done and key.to_user_string() not in out:
                    continue  # never materialised and nothing in the lake: no entry
                entry = out.setdefault(key.to_user_string(), {"model": key.to_user_string(), "latest_cutoff": None,
                                                              "partitions": 0, "rows": 0, "coins": 0, "version": None})  # fmt: skip
                entry["dagster_latest_partition"] = done[-1] if done else None
                entry["dagster_partitions"] = len(done)
    return [out[k] for k in sorted(out)]


def candidate_status() -> list[dict]:
    """The latest cut-off's candidate per model, coin and horizon, with its metrics and gate verdicts."""
    rows = promotion.read_candidates()
    if rows.height == 0:
        return []
    latest = rows.filter(pl.col("cutoff") == pl.col("cutoff").max().over("model", "symbol", "horizon"))
    return [
        {
            "model": r["model"],
            "kind": r["kind"],
            "symbol": r["symbol"],
            "horizon": r["horizon"],
            "cutoff": r["cutoff"],
            "registered_name": r["registered_name"],
            "version": r["registered_version"],
            "passed": r["passed"],
            "metrics": {k: r[k] for k in METRIC_KEYS},
            "gates": promotion.gate_verdicts(r["gates"]),
            "entry_threshold": r["entry_threshold"],
            "confidence_min": r["confidence_min"],
            "evaluated_at": r["evaluated_at"],
        }  # fmt: skip
        for r in latest.sort("symbol", "horizon", "model").iter_rows(named=True)
    ]


def _registry_client(tracking: MlflowTracking):
    """The registry's client, or None when the embedded store was never created (nothing registered:
    opening it would create an empty database)."""
    uri = tracking.resolved_uri()
    if uri.startswith("sqlite:///") and not os.path.exists(uri.removeprefix("sqlite:///")):
        return None
    return tracking.client()


def champion_status(tracking: MlflowTracking, candidates: list[dict]) -> list[dict]:
    """Every `champion` alias in the registry with when, by whom and why it became champion (the latest
    `promotions` row that made it so)."""
    client = _registry_client(tracking)
    if client is None:
        return []
    history = promotion.read_promotions()
    model_of = {(c["registered_name"], c["version"]): c["model"] for c in candidates}
    out = []
    for ch in promotion.all_champions(client):
        rec = history.filter(
            (pl.col("registered_name") == ch["registered_name"]) & (pl.col("version") == ch["version"])
        )
        last = rec.row(-1, named=True) if rec.height else {}
        cutoff = last.get("cutoff")
        if cutoff is None:  # promoted outside the jobs: the version's own partition tag
            cutoff = (client.get_model_version(ch["registered_name"], ch["version"]).tags or {}).get(
                "partition"
            )
        out.append({
            "model": model_of.get((ch["registered_name"], ch["version"]), f"liquid_{ch['kind']}"),
            "kind": ch["kind"], "symbol": ch["symbol"], "horizon": ch["horizon"],
            "registered_name": ch["registered_name"], "version": ch["version"], "cutoff": cutoff,
            "promoted_at": last.get("at"), "action": last.get("action"), "who": last.get("who"),
            "why": last.get("why"), "previous": ch["previous"],
        })  # fmt: skip
    return out


def paper_pnl_status() -> list[dict]:
    """Per model, coin and horizon (one book a day in `paper_pnl`): days, cumulative PnL, the latest day's
    PnL and status (USD). Days without a champion (no model) belong to no model and are left out."""
    if not lake.exists(PAPER_PNL):
        return []
    lf = _scan_any(PAPER_PNL)
    cols = lf.collect_schema().names()
    missing = [c for c in (*PNL_KEYS, "date", "pnl") if c not in cols]
    if missing:
        raise ValueError(f"lake table {PAPER_PNL!r} lacks columns {missing} (columns: {cols})")
    status_col = pl.col("status") if "status" in cols else pl.lit(None, pl.String)
    daily = (
        lf.filter(pl.col("model").is_not_null())
        .group_by(*PNL_KEYS, "date")
        .agg(pl.col("pnl").sum(), status_col.last().alias("status"))
        .collect()
    )
    summary = (
        daily.sort("date")
        .group_by(PNL_KEYS, maintain_order=True)
        .agg(
            pl.len().alias("days"),
            pl.col("date").first().alias("first_day"),
            pl.col("date").last().alias("latest_day"),
            pl.col("pnl").last().alias("latest_day_pnl"),
            pl.col("status").last().alias("latest_status"),
            pl.col("pnl").sum().alias("cumulative_pnl"),
        )
    )
    return summary.sort(PNL_KEYS).to_dicts()


def status(instance: dg.DagsterInstance | None = None, tracking: MlflowTracking | None = None) -> dict:
    """The whole state as one JSON-ready object. A table that does not exist gives an empty section; a
    section that cannot be read (an MLflow server down, a table of another schema) gives an empty section
    and a line in `warnings` naming the table or store, so one bad source never hides the others."""
    warnings_: list[str] = []

    def section(name: str, read):
        try:
            return read()
        except Exception as exc:
            if not _unreadable(exc):
                raise
            warnings_.append(f"{name}: {type(exc).__name__}: {exc}")
            return []

    candidates = section("candidates", candidate_status)
    return {
        "lake": lake.root(),
        "as_of": dt.datetime.now(dt.UTC).replace(microsecond=0),
        "tables": section("tables", lambda: [table_status(t) for t in lake.tables()]),
        "model_partitions": section("model_partitions", lambda: model_partitions(instance)),
        "candidates": candidates,
        "champions": section("champions", lambda: champion_status(tracking or MlflowTracking(), candidates)),
        "paper_pnl": section("paper_pnl", paper_pnl_status),
        "warnings": warnings_,
    }


def _unreadable(exc: Exception) -> bool:
    """A source that cannot be read (I/O, schema, registry), as opposed to a bug in this module."""
    if isinstance(exc, ValueError | OSError | DeltaError | pl.exceptions.PolarsError):
        return True
    if "mlflow" in sys.modules:  # importing mlflow costs seconds: only when it is already loaded
        from mlflow.exceptions import MlflowException

        return isinstance(exc, MlflowException)
    return False


def _jsonable(value):
    """Dates as ISO strings, NaN and infinities as null (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_status(state: dict) -> None:
    def show(title: str, rows: list[dict], columns: list[str]) -> None:
        print(f"\n{title}")
        if not rows:
            print("  (none)")
            return
        print(pl.DataFrame([{c: _cell(r.get(c)) for c in columns} for r in rows]))

    with pl.Config(tbl_rows=200, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_width_chars=200, thousands_separator=",", fmt_str_lengths=60):  # fmt: skip
        print(f"lake: {state['lake']}   as of {_cell(state['as_of'])}")
        show(
            "Tables", state["tables"], ["table", "rows", "from", "to", "days_with_rows", "coverage", "coins"]
        )
        show("Model partitions", state["model_partitions"],
             ["model", "latest_cutoff", "partitions", "rows", "coins", "dagster_latest_partition"])  # fmt: skip
        cands = [{**c, **c["metrics"], "gates": _gate_line(c["gates"])} for c in state["candidates"]]
        show("Candidates (latest cut-off; gates: + passed, - failed)", cands,
             ["model", "symbol", "horizon", "cutoff", "version", "oos_ic", "hit_rate", "pnl_after_cost", "passed",
              "gates"])  # fmt: skip
        show("Champions", state["champions"],
             ["symbol", "horizon", "registered_name", "version", "cutoff", "promoted_at", "who", "previous"])  # fmt: skip
        show("Paper PnL (USD)", state["paper_pnl"],
             ["model", "symbol", "horizon", "days", "latest_day", "latest_day_pnl", "latest_status",
              "cumulative_pnl"])  # fmt: skip
        for w in state["warnings"]:
            print(f"WARNING {w}", file=sys.stderr)


def _cell(v):
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    if isinstance(v, list):
        return f"{len(v)}" if len(v) > 3 else ",".join(map(str, v))
    if isinstance(v, float):
        return round(v, 5)
    return v if v is None or isinstance(v, int | bool) else str(v)


def _gate_line(gates: list[dict]) -> str:
    return " ".join(("+" if g.get("passed") else "-") + str(g.get("name")) for g in gates)


def run_job_in_process(instance: dg.DagsterInstance, job_name: str, op: str, config: dict) -> int:
    """The promotion/rollback job as the UI would launch it, in this process; 1 with the reason on refusal."""
    user = os.environ.get("USER") or getpass.getuser()
    res = defs.get_job_def(job_name).execute_in_process(
        run_config={
            **CONSOLE_INFO,
            "ops": {op: {"config": {k: v for k, v in config.items() if v is not None}}},
        },
        instance=instance,
        tags={"user": user, HOST_TAG: socket.gethostname()},
        raise_on_error=False,
    )
    if res.success:
        print(f"{job_name}: run {res.run_id[:8]} succeeded")
        return 0
    failure = res.failure_data_for_node(op)
    reason = getattr(failure.user_failure_data, "description", None) if failure else None
    print(
        f"{job_name}: REFUSED: {reason or (failure.error.message if failure else 'run failed')}",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="quant-assets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="materialise the two latest months of every layer and print a summary")
    demo.add_argument("--months", type=int, default=DEMO_MONTHS)
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
    stat = sub.add_parser(
        "status", help="lake tables, model partitions, candidates and gates, champions, paper PnL"
    )
    stat.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    prom = sub.add_parser("promote", help="promote a candidate whose gates all passed (job promote_model)")
    roll = sub.add_parser("rollback", help="restore the previous champion (job rollback_model)")
    for p in (prom, roll):
        p.add_argument("--symbol", required=True, help="BTC or BTCUSDT")
        p.add_argument("--horizon", required=True, help="1h or 4h")
        p.add_argument("--why", required=True, help="recorded in the promotions table")
    prom.add_argument("--kind", help="teacher, student, ... (default: the best passed candidate)")
    prom.add_argument("--cutoff", help="model partition, e.g. 2026-12-01 (default: the latest)")
    prom.add_argument("--version", help="registered model version (default: the selected candidate's)")
    args = parser.parse_args(argv)
    # months checked before anything runs: '2024-06' means 2024-06-01, a typo fails here naming it
    # (compared as strings, a bad key would have silently selected no month, or every one)
    try:
        if args.command == "backfill":
            keys = monthly.get_partition_keys()
            args.start = safe_inputs.month_key(args.start, keys)
            args.end = safe_inputs.month_key(args.end, keys) if args.end else None
            if args.end and args.end < args.start:
                raise ValueError(f"--end {args.end} is before --start {args.start}")
        if args.command == "demo" and args.months < 3:
            raise ValueError(
                f"--months {args.months}: at least 3 (training months, the judged month, the running one)"
            )
    except ValueError as exc:
        parser.error(str(exc))

    os.environ.setdefault("DAGSTER_HOME", str(prepare_home()))
    if args.command == "summary":
        print_summary([])
        return 0
    instance = dg.DagsterInstance.get()
    if args.command == "status":
        state = status(instance, defs.resources["mlflow"])
        if args.json:
            print(json.dumps(_jsonable(state)))
        else:
            print_status(state)
        return 0
    if args.command in ("promote", "rollback"):
        config = {"symbol": args.symbol, "horizon": args.horizon, "why": args.why}
        if args.command == "promote":
            config |= {"kind": args.kind, "cutoff": args.cutoff, "version": args.version}
            return run_job_in_process(instance, "promote_model", "promote", config)
        return run_job_in_process(instance, "rollback_model", "rollback", config)
    keys = monthly.get_partition_keys()
    if args.command == "demo":
        os.environ.setdefault("QUANT_ASSETS_SIM_SIGNAL", DEMO_SIGNAL)
        t0 = time.monotonic()
        print(f"demo: months {keys[-args.months]} .. {keys[-1]} of all coins; simulator seed "
              f"{os.environ.get('QUANT_ASSETS_SIM_SEED', '7')}, signal {os.environ['QUANT_ASSETS_SIM_SIGNAL']}; "
              f"lake at {lake.root()}")  # fmt: skip
        ok = run_demo(instance, args.months)
        print(f"demo: {'done' if ok else 'FAILED (see above)'} in {time.monotonic() - t0:.0f} s")
        return 0 if ok else 1
    last = args.end or keys[-1]
    print(f"backfill: months {args.start} .. {last}; lake at {lake.root()}")
    return 0 if run_layers(instance, args.start, last, walk_forward=args.walk_forward) else 1


if __name__ == "__main__":
    sys.exit(main())
