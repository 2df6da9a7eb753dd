"""`monitoring` (day D): how the champions' paper predictions behave, per book (coin and horizon).

- Performance per horizon: IC and hit rate of the paper scores (`paper_marks`) of the last
  `window_days` days up to D against the realised GROSS forward return `fwd_ret_{h}`.
  Time rule: a row's return is known at its label end, ts + 5m + h (the bar closes at ts + 5m, the
  return ends h later); only rows with ts + 5m + h <= D's end (D+1 00:00 UTC) are evaluated. A 1h
  score of 23:00 (known 00:05) or a 4h score of 22:00 (known 02:05) waits for a later day's run.
- Prediction drift: PSI of D's scores against the candidate's OOS predictions the gates judged it on
  (`reference.oos_reference`); feature drift: PSI of D's rows of the `top_features` features of
  largest gain (the partition's teacher) against the last `reference_days` days of the training window.
- Confidence calibration: P(sign correct) by |prediction| bucket as the OOS record shows it
  (`paper.monitor.ConfidenceMap`) against the realised hit rate of the window's known rows: the
  reliability curve and its expected calibration error.
- Paper PnL by score bucket: the window's bars with a position, by the |score| bucket of the signal
  that opened it.

One row per book goes to `paper_monitoring` (day D replaced); the plots go to an MLflow run
(`monitoring <D>`) and into the materialisation metadata as markdown images. The checks
`prediction_drift` and `confidence_calibration` read that table; see `checks.py`.
"""

import base64
import datetime as dt
import io
import json
import math
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from quant_assets import lake
from quant_assets.backtest.inputs import MATRIX_TABLE
from quant_assets.defs.common import markdown_table
from quant_assets.defs.conditions import AFTER_THE_DAY
from quant_assets.defs.models.tracking import MlflowTracking
from quant_assets.defs.operations import champions as reg
from quant_assets.defs.operations.assets import MATRIX_DEP, OPERATIONS_GROUP, paper_trading
from quant_assets.defs.operations.reference import confidence_map, feature_reference, oos_reference
from quant_assets.defs.operations.tables import MONITORING_SCHEMA, PAPER_MARKS, PAPER_MONITORING, conform
from quant_assets.paper import monitor
from quant_assets.schemas import FIVE_MIN
from quant_assets.universe import HORIZONS


class MonitoringConfig(dg.Config):
    window_days: int = 7  # performance, calibration and PnL buckets over the last N days up to D
    top_features: int = 5  # features of largest gain whose drift is measured
    reference_days: int = 30  # the training window's last N days: the features' reference
    confidence_buckets: int = 5  # must match paper trading's: the same map


def _utc(d: dt.date) -> dt.datetime:
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)


def _realised(symbol: str, horizon: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """ts, realised of the coin's rows in [start, end) whose return is known by `end` (see the docstring)."""
    known = end - FIVE_MIN - HORIZONS[horizon]
    return (
        lake.scan(MATRIX_TABLE, start.date(), end.date())
        .filter((pl.col("symbol") == symbol) & (pl.col("ts") >= start) & (pl.col("ts") <= known))
        .select("ts", pl.col(f"fwd_ret_{horizon}").alias("realised"))
        .collect()
    )


def _book(c: reg.Champion, marks: pl.DataFrame, day: dt.date, cfg: MonitoringConfig, mlflow) -> dict:
    """Every measure of one book; plots' data under `_curve` and `_buckets`."""
    start, end = _utc(day - dt.timedelta(days=cfg.window_days - 1)), _utc(day + dt.timedelta(days=1))
    window = marks.filter(pl.col("ts") >= start)
    today = marks.filter(pl.col("ts") >= _utc(day))
    known = window.join(_realised(c.symbol, c.horizon, start, end), on="ts", how="inner").filter(
        pl.col("score").is_not_null() & pl.col("realised").is_not_null()
    )
    perf = monitor.performance(known["score"].to_numpy(), known["realised"].to_numpy())
    ref = oos_reference(c)
    cmap = confidence_map(ref, cfg.confidence_buckets)
    pred_psi = monitor.psi(ref["prediction"].to_numpy(), today["score"].drop_nulls().to_numpy())
    feats = reg.top_features(mlflow, c, cfg.top_features) if c.partition else []
    feature_psi = {}
    if feats:
        reference = feature_reference(c, feats, cfg.reference_days)
        current = (
            lake.scan(MATRIX_TABLE, day, day + dt.timedelta(days=1))
            .filter((pl.col("symbol") == c.symbol) & (pl.col("ts") >= _utc(day)) & (pl.col("ts") < end))
            .select(*feats)
            .collect()
        )
        feature_psi = {f: monitor.psi(reference[f].to_numpy(), current[f].to_numpy()) for f in feats}
    finite = [v for v in feature_psi.values() if math.isfinite(v)]
    curve = monitor.reliability(cmap, known["score"].to_numpy(), known["realised"].to_numpy())
    buckets = monitor.pnl_by_bucket(cmap, window)
    return {
        "date": day,
        "model": c.model,
        "registered_name": c.registered_name,
        "version": c.version,
        "symbol": c.symbol,
        "horizon": c.horizon,
        "cutoff": c.cutoff if c.partition else None,
        "n_known": perf["n"],
        "ic": perf["ic"],
        "hit_rate": perf["hit_rate"],
        "prediction_psi": pred_psi,
        "feature_psi_max": max(finite) if finite else math.nan,
        "feature_psi": json.dumps(
            {k: round(v, 6) if math.isfinite(v) else None for k, v in feature_psi.items()}
        ),
        "ece": monitor.ece(curve),
        "n_calibration": int(curve["n"].sum()),
        "window_pnl": float(window["pnl"].sum()),
        "_curve": curve,
        "_buckets": buckets,
    }


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def _plots(rows: list[dict], day: dt.date) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.7, label="calibrated")
    for r in rows:
        c = r["_curve"].filter(pl.col("n") > 0)
        ax.plot(
            c["confidence"], c["hit_rate"], "o-", label=f"{r['symbol']} {r['horizon']} (ECE {r['ece']:.3f})"
        )
    ax.set_xlabel("P(sign correct) of the |prediction| bucket in the OOS record")
    ax.set_ylabel("realised hit rate")
    ax.set_title(f"reliability, window to {day}")
    ax.legend(fontsize=7)
    out["reliability"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['symbol']} {r['horizon']}" for r in rows]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["prediction_psi"] for r in rows], 0.4, label="prediction PSI")
    ax.bar(x + 0.2, [r["feature_psi_max"] for r in rows], 0.4, label="max feature PSI")
    ax.set_xticks(x, labels, rotation=45)
    ax.set_title(f"drift against the training distribution, {day}")
    ax.legend()
    out["drift"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for j, r in enumerate(rows):
        b = r["_buckets"]
        ax.bar(
            b["bucket"].to_numpy() + j * 0.8 / len(rows), b["pnl"].to_list(), 0.8 / len(rows), label=labels[j]
        )
    ax.set_xlabel("|score| bucket of the entry signal (0 = smallest)")
    ax.set_ylabel("paper PnL, USD")
    ax.set_title(f"paper PnL by score bucket, window to {day}")
    ax.legend(fontsize=7)
    out["pnl_by_bucket"] = _png(fig)
    plt.close(fig)
    return out


def monitor_day(day: dt.date, cfg: MonitoringConfig, mlflow: MlflowTracking, run_id: str = "") -> dict:
    """Measure day D's champion books into paper_monitoring; returns the materialisation metadata."""
    start = day - dt.timedelta(days=cfg.window_days - 1)
    marks = lake.read(PAPER_MARKS, start, day + dt.timedelta(days=1)) if lake.exists(PAPER_MARKS) else None
    books = (
        marks.filter(pl.col("date") == day).select("registered_name", "version", "symbol", "horizon").unique()
        if marks is not None
        else pl.DataFrame()
    )
    rows = []
    for b in books.sort("symbol", "horizon").iter_rows(named=True):
        c = reg.model_version(mlflow, b["registered_name"], b["version"])
        own = marks.filter(
            (pl.col("registered_name") == b["registered_name"]) & (pl.col("version") == b["version"])
        ).sort("ts")
        rows.append(_book(c, own, day, cfg, mlflow))
    table = pl.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    written = lake.write_window(
        PAPER_MONITORING,
        conform(PAPER_MONITORING, table) if rows else pl.DataFrame(schema=MONITORING_SCHEMA),
        day,
        day + dt.timedelta(days=1),
    )
    meta = {
        "day": str(day),
        "books": dg.MetadataValue.int(len(rows)),
        "rows_written": dg.MetadataValue.int(written),
    }
    if not rows:
        meta["nothing_to_monitor"] = f"no paper_marks on {day}: no champion traded that day"
        return meta
    shown = table.select(
        "symbol", "horizon", "version", "n_known", *(pl.col(c).round(4) for c in
        ("ic", "hit_rate", "prediction_psi", "feature_psi_max", "ece", "window_pnl")))  # fmt: skip
    meta["monitoring"] = markdown_table(shown)
    for h in sorted(set(table["horizon"])):
        t = table.filter(pl.col("horizon") == h)
        meta[f"ic_{h}"] = dg.MetadataValue.float(float(np.nanmean(t["ic"].fill_null(np.nan).to_numpy())))
        meta[f"hit_rate_{h}"] = dg.MetadataValue.float(
            float(np.nanmean(t["hit_rate"].fill_null(np.nan).to_numpy()))
        )
    plots = _plots(rows, day)
    run = mlflow.start_run(f"monitoring {day}", tags={"asset": "monitoring", "partition": str(day),
                                                      "dagster_run_id": run_id})  # fmt: skip
    try:
        run.log_metrics({f"{r['symbol']}_{r['horizon']}.{k}": r[k] for r in rows
                         for k in ("ic", "hit_rate", "prediction_psi", "feature_psi_max", "ece", "window_pnl")})  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for name, png in plots.items():
                (Path(tmp) / f"{name}.png").write_bytes(png)
            run.log_artifacts(tmp, "plots")
    finally:
        run.end()
    meta |= run.metadata()
    for name, png in plots.items():
        meta[f"plot_{name}"] = dg.MetadataValue.md(
            f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
        )
    return meta


@dg.asset(
    group_name=OPERATIONS_GROUP,
    partitions_def=paper_trading.partitions_def,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[paper_trading, MATRIX_DEP],
    automation_condition=AFTER_THE_DAY,  # after the day's paper trading (defs/conditions.py)
    kinds={"mlflow", "delta"},
    description="Performance (IC, hit rate against realised returns known by the day's end), prediction and "
    "feature drift (PSI against the training distribution), confidence calibration (reliability, ECE) and "
    "paper PnL by score bucket of the champions' paper predictions; rows in paper_monitoring, plots in MLflow.",
)
def monitoring(
    context: dg.AssetExecutionContext, config: MonitoringConfig, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    meta = {}
    for key in context.partition_keys:
        meta = monitor_day(dt.date.fromisoformat(key), config, mlflow, context.run.run_id)
    return dg.MaterializeResult(metadata=meta)
