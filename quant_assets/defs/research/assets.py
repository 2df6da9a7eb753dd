"""The research chains, on the models' training cut-offs (`model_cutoffs`):

- `vc_model`: the event chain. Five numbers per news event (`ml.tiny_vc`), label 1 for funding and M&A;
  a least-squares teacher distilled into a tiny MLP, scored out of sample (AUC, calibration) on the
  events of month M.
- `multimodal_candidate`: the fusion candidates (`ml.multimodal`: `single_ridge`, `residual_gate`) per
  horizon, trained on the cut-off's training frame and predicting month M into `model_predictions`
  (models `multimodal_<mode>`).
- `multimodal_eval`: walk-forward and purged k-fold OOS of each candidate under the ablations full,
  no_text, no_macro and event_window, with MSE/MAE, IC, hit rate and after-cost backtest metrics and
  the deltas against full, into the lake table `ablation_results`; its check says whether text helps.

Time rule. Partition M (cut-off C = M's start) reads its inputs at the Delta versions Dagster recorded
(`defs.lineage.recorded_snapshot`) and pins them (owner `<asset>/<partition>`). `vc_model` learns from
news events with available_at < C (all of them in `production`, the `max_events` most recent in `fast`)
and scores those available in [C, end of M). The multimodal assets learn from `feature_matrix_main` rows
whose label ends before C (`ml.training_frame`, the same frame as the Liquid chain) with the forward
return `fwd_ret_<h>` as target; `multimodal_eval` reads the versions and configuration its candidate
recorded, so both judge the same rows. The partition mappings (14 months up to M) are for lineage and
the UI; the rows read are those of the recorded versions.
"""

import base64
import datetime as dt
import io
import json
import math
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from quant_assets import lake
from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.inputs import DEPTH_COLUMN, FUNDING_TABLE, MATRIX_TABLE
from quant_assets.defs.common import each_partition, markdown_table
from quant_assets.defs.lineage import recorded_snapshot
from quant_assets.defs.models.assets import (
    FEATURE_DEP,
    LOOK_BACK_MONTHS,
    _backtest_rows,
    _matrix_range,
    _month_rows,
    _pin,
    _start_model_run,
    _utc,
    _versions,
    frame_metadata,
    month_evaluation,
    rows_digest,
)
from quant_assets.defs.models.tables import BACKTEST_RUNS, MODEL_PREDICTIONS, replace_partition
from quant_assets.defs.models.tracking import MlflowTracking, TrackedRun, coin_name
from quant_assets.defs.research.checks import TEXT_HELPS, text_helps_result
from quant_assets.defs.research.config import MultimodalEvalRunConfig, MultimodalRunConfig, VCRunConfig
from quant_assets.defs.research.tables import ABLATION_RESULTS, replace_ablations
from quant_assets.features.keys import FWD_RETURN_KEYS
from quant_assets.ml import multimodal as mm
from quant_assets.ml.training_frame import TooLittleHistory, TrainingFrame, training_frame
from quant_assets.partitions import model_cutoffs
from quant_assets.universe import HORIZONS

RESEARCH_GROUP = "research"
VC_MODEL, CANDIDATE, EVAL = "vc_model", "multimodal_candidate", "multimodal_eval"
EVENT_TABLES = ("events", "event_links", "entities")
EVENT_DEPS = [
    dg.AssetDep(t, partition_mapping=dg.TimeWindowPartitionMapping(
        start_offset=-LOOK_BACK_MONTHS, end_offset=0, allow_nonexistent_upstream_partitions=True))
    for t in EVENT_TABLES
]  # fmt: skip
# Labelled rows per coin a candidate needs: enough for its walk-forward folds to hold several days.
MIN_TRAIN_ROWS = 200
MIN_VC_EVENTS = 10


def model_name(mode: str) -> str:
    return f"multimodal_{mode}"


def _register(run: TrackedRun, name: str, artifact_path: str, partition: str, tags: dict) -> str:
    """A new version of registered model `name` from this run's `artifact_path` (created on first use)."""
    from mlflow.exceptions import MlflowException

    try:
        run.client.create_registered_model(name, tags={k: str(v) for k, v in tags.items()})
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    source = f"{run.client.get_run(run.run_id).info.artifact_uri}/{artifact_path}"
    mv = run.client.create_model_version(name, source=source, run_id=run.run_id,
                                         tags={"partition": partition, **{k: str(v) for k, v in tags.items()}})  # fmt: skip
    return str(mv.version)


def _png_markdown(fig) -> dg.MetadataValue:
    """A matplotlib figure inline in the materialisation (the UI renders data-URI images in markdown)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})")


def _finite(v) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(float(v), 6)


def _partitions(context: dg.AssetExecutionContext, train_one) -> dg.MaterializeResult:
    """A ranged run trains its cut-offs in order (each_partition); the checks are the last cut-off's."""
    checks = []

    def one(key: str) -> dict:
        nonlocal checks
        metadata, checks = train_one(key)
        return metadata

    metadata = each_partition(context, one)
    return dg.MaterializeResult(metadata=metadata, check_results=checks or None)


# ------------------------------------------------------------------------------------------ vc_model
def vc_event_frames(versions: dict[str, int], end: dt.datetime):
    """The raw event tables at their recorded versions, every news event available before `end`."""
    from quant_assets.ml import tiny_vc  # torch: imported when the asset runs, not with the definitions

    last_day = end.date() + dt.timedelta(days=1)  # an event's `date` is its ts's; available_at >= ts
    events = (
        lake.scan("events", end=last_day, version=versions["events"])
        .filter(pl.col("event_type").is_in(tiny_vc.NEWS_TYPES) & (pl.col("available_at") < end))
        .collect()
    )
    links = lake.scan("event_links", end=last_day, version=versions["event_links"]).filter(
        pl.col("event_id").is_in(events["event_id"].implode())
    )
    entities = lake.scan("entities", end=last_day, version=versions["entities"])
    return events, links.collect(), entities.collect()


def _reliability_plot(table: pl.DataFrame, run, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for who in ("student", "teacher"):
        t = table.filter(pl.col("model") == who)
        ax.plot(t["mean_prob"], t["positive_rate"], marker="o", label=who)
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed share of funding / M&A")
    ax.set_title(title)
    ax.legend()
    run.log_png(fig, "reliability")
    md = _png_markdown(fig)
    plt.close(fig)
    return md


def train_vc_partition(
    context: dg.AssetExecutionContext, key: str, config: VCRunConfig, mlflow: MlflowTracking
):
    from quant_assets.ml import tiny_vc  # torch: imported when the asset runs, not with the definitions

    window_ = model_cutoffs.time_window_for_partition_key(key)
    cutoff, end = _utc(window_.start), _utc(window_.end)
    versions = recorded_snapshot(context.instance, EVENT_TABLES)
    missing = [t for t in EVENT_TABLES if t not in versions]
    if missing:
        raise dg.Failure(f"{VC_MODEL} partition {key}: {missing} were never materialised through Dagster "
                         "(no recorded Delta version): materialise the raw layer first")  # fmt: skip
    events, links, entities = vc_event_frames(versions, end)
    feats = tiny_vc.event_features(events, links, entities)
    train_rows = tiny_vc.training_events(feats, cutoff, config.cap())
    oos_rows = tiny_vc.scoring_events(feats, cutoff, end)
    n_pos = int(train_rows["label"].sum()) if train_rows.height else 0
    if train_rows.height < MIN_VC_EVENTS or n_pos == 0 or n_pos == train_rows.height:
        raise dg.Failure(f"{VC_MODEL} partition {key}: {train_rows.height} news events available before "
                         f"{cutoff.isoformat()} ({n_pos} funding/M&A); needs at least {MIN_VC_EVENTS} with both "
                         "labels: materialise the raw events of earlier months")  # fmt: skip
    owner = f"{VC_MODEL}/{key}"
    _pin(owner, versions)
    cfg = config.build()
    x, y = tiny_vc.arrays(train_rows)
    fit = tiny_vc.train(x, y, cfg)
    xo, yo = tiny_vc.arrays(oos_rows)
    oos = tiny_vc.evaluate(fit, xo, yo, config.n_bins) if oos_rows.height else {"n": 0.0}
    probs = fit.predict(xo) if oos_rows.height else {"student": [], "teacher": []}
    reliability = pl.concat([
        tiny_vc.reliability(probs[w], yo, config.n_bins).with_columns(model=pl.lit(w)) for w in ("student", "teacher")
    ]) if oos_rows.height else pl.DataFrame()  # fmt: skip
    context.log.info(
        f"{VC_MODEL} {key}: {train_rows.height:,} training events, {oos_rows.height:,} OOS, {oos}"
    )

    window = f"{config.kind}" + (f", {config.max_events} events" if config.kind == "fast" else ", all events")
    run = mlflow.start_run(
        f"{VC_MODEL} {key}",
        params={"cutoff": cutoff.isoformat(), "window": window, "rows": train_rows.height,
                **{f"vc.{k}": v for k, v in cfg.__dict__.items()}, "features": ",".join(tiny_vc.FEATURES),
                "positive_types": ",".join(tiny_vc.POSITIVE_TYPES)},
        tags={"partition": key, "asset": VC_MODEL, "dagster_run_id": context.run.run_id,
              **{f"table_version.{t}": v for t, v in versions.items()}},
    )  # fmt: skip
    ok = False
    try:
        for step, loss in fit.loss:
            run.log_metrics({"loss": loss}, step=step)
        run.log_metrics({f"oos.{k}": v for k, v in oos.items()})
        with tempfile.TemporaryDirectory() as tmp:
            fit.save(Path(tmp) / "vc_model")
            if oos_rows.height:
                oos_rows.select("event_id", "available_at", "event_type", "label").with_columns(
                    student=pl.Series(probs["student"]), teacher=pl.Series(probs["teacher"])
                ).write_parquet(Path(tmp) / "vc_model" / "oos_scores.parquet")
            run.log_artifacts(Path(tmp) / "vc_model", "vc_model")
        version = _register(run, VC_MODEL, "vc_model", key, {"kind": "vc", "cutoff": cutoff.isoformat()})
        plot = _reliability_plot(reliability, run, f"{VC_MODEL} {key} (OOS)") if reliability.height else None
        ok = True
    finally:
        run.end(ok)
    metadata = {
        "cutoff": cutoff.isoformat(),
        "window": window,
        "training_events": dg.MetadataValue.int(train_rows.height),
        "training_positive_rate": round(float(y.mean()), 5),
        "training_available_at": f"{train_rows['available_at'].min()} .. {train_rows['available_at'].max()}",
        "oos_events": dg.MetadataValue.int(oos_rows.height),
        **{f"oos_{k}": dg.MetadataValue.float(v) for k, v in oos.items() if k != "n" and math.isfinite(v)},
        "teacher_coef": dg.MetadataValue.json(
            dict(
                zip(
                    ("intercept", *tiny_vc.FEATURES),
                    [round(float(c), 5) for c in fit.teacher_coef],
                    strict=True,
                )
            )
        ),  # fmt: skip
        "table_versions": dg.MetadataValue.json(versions),
        "pinned_as": owner,
        **run.metadata(),
        "registered_version": version,
    }
    if reliability.height:
        metadata["reliability"] = markdown_table(reliability.with_columns(pl.col(pl.Float64).round(4)))
        metadata["reliability_plot"] = plot
    return metadata, []


@dg.asset(
    name=VC_MODEL,
    group_name=RESEARCH_GROUP,
    partitions_def=model_cutoffs,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=EVENT_DEPS,
    kinds={"pytorch", "mlflow"},
    description="Event chain: is a news event a funding round or an M&A deal? Five features per event "
    "(type value, source tier, confidence, recency decay and normalised recency), a least-squares teacher "
    "distilled into a tiny MLP, trained on events available before the cut-off and scored (AUC, "
    "calibration) on the month's events. Registered as `vc_model`.",
)
def vc_model(
    context: dg.AssetExecutionContext, config: VCRunConfig, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    return _partitions(context, lambda key: train_vc_partition(context, key, config, mlflow))


# ---------------------------------------------------------------------------------- multimodal chain
def candidate_frame(cutoff: dt.datetime, window, versions: dict[str, int]) -> TrainingFrame:
    """The cut-off's training rows (ml.training_frame) with the purged forward returns as targets, close
    and depth: `fwd_ret_<h>` is null wherever `label_<h>` is (its label ends at or after the cut-off)."""
    lo = _matrix_range(cutoff, window)
    matrix = lake.scan(MATRIX_TABLE, lo, cutoff.date() + dt.timedelta(days=1), version=versions[MATRIX_TABLE])
    tf = training_frame(matrix, cutoff, window, mm.FEATURE_KEYS, min_labelled_rows=MIN_TRAIN_ROWS)
    extra = matrix.select("symbol", "ts", *FWD_RETURN_KEYS, "close", DEPTH_COLUMN).collect()
    frame = tf.frame.join(extra, on=["symbol", "ts"], how="left", maintain_order="left").with_columns(
        pl.when(pl.col(f"label_{h}").is_not_null()).then(pl.col(f"fwd_ret_{h}")).alias(f"fwd_ret_{h}")
        for h in HORIZONS
    )
    return TrainingFrame(frame, tf.manifest)


def _x(frame: pl.DataFrame):
    return frame.select(mm.FEATURE_KEYS).to_numpy().astype("float64")


def train_candidate_partition(context, key: str, config: MultimodalRunConfig, mlflow: MlflowTracking):
    window_ = model_cutoffs.time_window_for_partition_key(key)
    cutoff, end = _utc(window_.start), _utc(window_.end)
    versions = _versions(context)
    window, cfgs = config.window.build(), config.build()
    try:
        tf = candidate_frame(cutoff, window, versions)
    except TooLittleHistory as exc:
        raise dg.Failure(f"{CANDIDATE} partition {key}: {exc}") from exc
    frame = tf.frame
    owner = f"{CANDIDATE}/{key}"
    _pin(owner, versions)
    x, ts = _x(frame), frame["ts"].dt.epoch("ms").to_numpy()
    fits = {
        (c.mode, h): mm.fit(x, frame[f"fwd_ret_{h}"].to_numpy(), c, ts=ts) for c in cfgs for h in HORIZONS
    }
    context.log.info(f"{CANDIDATE} {key}: {frame.height:,} training rows, window {window.describe()}, "
                     f"modes {[c.mode for c in cfgs]}")  # fmt: skip

    month = _month_rows(
        cutoff, end, versions, ["symbol", "ts", *mm.FEATURE_KEYS, *(f"label_{h}" for h in HORIZONS)]
    )
    xm = _x(month)
    models = [model_name(c.mode) for c in cfgs]
    digest = rows_digest(frame)
    run = _start_model_run(context, mlflow, CANDIDATE, key, cutoff, window, frame.height, versions,
                           params={f"multimodal.{k}": v for k, v in config.model_dump().items() if k != "window"},
                           tags={"training_rows_sha256": digest})  # fmt: skip
    ok = False
    try:
        registered, preds, summary = {}, [], []
        with tempfile.TemporaryDirectory() as tmp:
            for (mode, h), f in fits.items():
                d = Path(tmp) / f"{mode}_{h}"
                d.mkdir()
                (d / "fit.json").write_text(json.dumps(f.to_dict()))
                run.log_artifacts(d, f"multimodal/{mode}_{h}")
                # one pooled model per mode and horizon, registered under every coin's name
                for sym in sorted(tf.manifest.coins):
                    name = f"{model_name(mode)}_{coin_name(sym)}_{h}"
                    registered[name] = _register(run, name, f"multimodal/{mode}_{h}", key,
                                                 {"kind": model_name(mode), "symbol": sym, "horizon": h,
                                                  "shared_model": "true"})  # fmt: skip
                p = f.predict(xm) if month.height else []
                preds.append(month.select("symbol", "ts").with_columns(
                    model=pl.lit(model_name(mode)), horizon=pl.lit(h), prediction=pl.Series(p, dtype=pl.Float64)))  # fmt: skip
                summary.append({"model": model_name(mode), "horizon": h, "train_rows": f.train_rows,
                                "gate_w0": f.gate_w0 if mode == "residual_gate" else None,
                                "gate_w1": f.gate_w1 if mode == "residual_gate" else None})  # fmt: skip
        pred = pl.concat(preds).with_columns(version=pl.lit(run.run_id), cutoff=pl.lit(cutoff),
                                             date=pl.col("ts").dt.date())  # fmt: skip
        pred_version = replace_partition(MODEL_PREDICTIONS, cutoff, models, pred)
        ics, pnl, bt_version = [], {}, None
        for m in models:
            p = pred.filter(pl.col("model") == m).select("symbol", "ts", "horizon", "prediction")
            ic, results = month_evaluation(p, month, cutoff, end, versions)
            if ic.height:
                ics.append(ic.filter(pl.col("symbol") == "ALL").select(pl.lit(m).alias("model"), "horizon", "n",
                                                                       pl.col("ic").round(5).alias("month_ic")))  # fmt: skip
            bt = _backtest_rows(results, m, run.run_id, cutoff)
            if bt.height:
                bt_version = replace_partition(BACKTEST_RUNS, cutoff, [m], bt)
            pnl.update({f"{m}_{h}": float(r.metrics["total_return"]) for h, r in results.items()})
        run.log_metrics({f"month.pnl.{k}": v for k, v in pnl.items()})
        table = pl.DataFrame(summary)
        if ics:
            table = table.join(pl.concat(ics), on=["model", "horizon"], how="left")
            run.log_metrics({f"month.ic.{r['model']}_{r['horizon']}": r["month_ic"] for r in pl.concat(ics).iter_rows(named=True)
                             if r["month_ic"] is not None})  # fmt: skip
        ok = True
    finally:
        run.end(ok)
    metadata = {
        **frame_metadata(cutoff, window, frame.height, digest, tf.manifest.purged, versions, owner),
        "run_config": dg.MetadataValue.json(config.model_dump()),  # what multimodal_eval re-evaluates
        "candidates": markdown_table(table.sort("model", "horizon")),
        "month_predictions": dg.MetadataValue.int(pred.height),
        "month_pnl_after_cost": dg.MetadataValue.json({k: _finite(v) for k, v in pnl.items()}),
        **run.metadata(),
        "registered_versions": dg.MetadataValue.json(registered),
        "lake_versions_written": dg.MetadataValue.json(
            {MODEL_PREDICTIONS: pred_version, BACKTEST_RUNS: bt_version}
        ),
    }
    return metadata, []


@dg.asset(
    name=CANDIDATE,
    group_name=RESEARCH_GROUP,
    partitions_def=model_cutoffs,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[FEATURE_DEP],
    kinds={"numpy", "mlflow", "delta"},
    description="Multimodal fusion candidates per horizon on feature_matrix_main: single_ridge (one ridge on every "
    "column) and residual_gate (a market ridge plus a text ridge on its residual, scaled by a sigmoid gate of "
    "text activity), targets the forward return, trained on rows whose label ends before the cut-off. Predicts "
    "the month into model_predictions (models multimodal_<mode>); registered as multimodal_<mode>_<COIN>_<h>.",
)
def multimodal_candidate(
    context: dg.AssetExecutionContext, config: MultimodalRunConfig, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    return _partitions(context, lambda key: train_candidate_partition(context, key, config, mlflow))


def _candidate_record(context, key: str) -> dict:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(CANDIDATE), asset_partitions=[key]), limit=1
    ).records
    if not records:
        raise dg.Failure(f"{EVAL} partition {key}: {CANDIDATE} has no materialisation for it; materialise "
                         f"{CANDIDATE} for {key} first (the evaluation re-runs its candidates on its rows)")  # fmt: skip
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def _ablation_plot(table: pl.DataFrame, run, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wf = table.filter(pl.col("scheme") == "walk_forward")
    groups = wf.select("model", "horizon").unique().sort("model", "horizon").rows()
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(groups)), 4))
    width = 0.8 / len(mm.ABLATIONS)
    for j, ab in enumerate(mm.ABLATIONS):
        vals, errs = [], [[], []]
        for m, h in groups:
            r = wf.filter((pl.col("model") == m) & (pl.col("horizon") == h) & (pl.col("ablation") == ab)).row(
                0, named=True
            )
            full = wf.filter(
                (pl.col("model") == m) & (pl.col("horizon") == h) & (pl.col("ablation") == "full")
            )["ic"][0]
            v = r["ic"] if r["ic"] is not None and math.isfinite(r["ic"]) else 0.0
            vals.append(v)
            lo, hi = r["delta_ic_low"], r["delta_ic_high"]
            ok = lo is not None and hi is not None and full is not None
            errs[0].append(max(0.0, v - (full + lo)) if ok else 0.0)
            errs[1].append(max(0.0, full + hi - v) if ok else 0.0)
        ax.bar([i + j * width for i in range(len(groups))], vals, width, yerr=errs, capsize=3, label=ab)
    ax.set_xticks(
        [i + 1.5 * width for i in range(len(groups))],
        [f"{m.removeprefix('multimodal_')}\n{h}" for m, h in groups],
    )
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("walk-forward OOS IC (bars: full IC + delta interval)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    run.log_png(fig, "ablations")
    md = _png_markdown(fig)
    plt.close(fig)
    return md


def evaluate_partition(context, key: str, config: MultimodalEvalRunConfig, mlflow: MlflowTracking):
    window_ = model_cutoffs.time_window_for_partition_key(key)
    cutoff = _utc(window_.start)
    cand = _candidate_record(context, key)
    versions = {t: int(v) for t, v in cand["table_versions"].items()}
    cand_cfg = MultimodalRunConfig(**cand["run_config"])
    window, cfgs = cand_cfg.window.build(), cand_cfg.build()
    try:
        tf = candidate_frame(cutoff, window, versions)
    except TooLittleHistory as exc:
        raise dg.Failure(f"{EVAL} partition {key}: {exc}") from exc
    if rows_digest(tf.frame) != cand["training_rows_sha256"]:
        raise dg.Failure(f"{EVAL} partition {key}: the training rows read at {versions} differ from those "
                         f"{CANDIDATE} recorded (sha256 {cand['training_rows_sha256'][:12]}...)")  # fmt: skip
    owner = f"{EVAL}/{key}"
    _pin(owner, versions)
    funding = (lake.scan(FUNDING_TABLE, _matrix_range(cutoff, window), cutoff.date(), version=versions[FUNDING_TABLE])
               .filter(pl.col("ts") < cutoff).collect())  # fmt: skip
    tables = []
    for h in HORIZONS:
        ecfg = config.build(h)
        try:
            res = mm.evaluate(
                tf.frame,
                cfgs,
                ecfg,
                backtest=BacktestConfig.for_horizon(h),
                funding=funding,
                keep_predictions=False,
            )
        except ValueError as exc:
            raise dg.Failure(f"{EVAL} partition {key}, horizon {h}: {exc}") from exc
        tables.append(res.table)
        context.log.info(f"{EVAL} {key} {h}: {res.table.height} rows of metrics")
    table = pl.concat(tables, how="diagonal_relaxed").with_columns(
        model=pl.format("multimodal_{}", pl.col("mode")), cutoff=pl.lit(cutoff)
    )
    models = sorted(table["model"].unique().to_list())
    run = _start_model_run(context, mlflow, EVAL, key, cutoff, window, tf.frame.height, versions,
                           params={f"eval.{k}": v for k, v in config.model_dump().items()},
                           tags={"candidate_run": cand.get("mlflow_run_id", "")})  # fmt: skip
    ok = False
    try:
        for r in table.iter_rows(named=True):
            prefix = f"{r['model']}_{r['horizon']}.{r['scheme']}.{r['ablation']}"
            run.log_metrics({f"{prefix}.{m}": r[m] for m in ("mse", "mae", "ic", "rank_ic", "hit_rate", "pnl",
                                                            "max_drawdown", "turnover_per_day", "delta_ic", "delta_mse")
                             if r.get(m) is not None})  # fmt: skip
        plot = _ablation_plot(table, run, f"{EVAL} {key}")
        written = table.with_columns(version=pl.lit(run.run_id))
        version = replace_ablations(cutoff, models, written)
        ok = True
    finally:
        run.end(ok)
    check = text_helps_result(table)
    shown = table.select(
        pl.col("model").str.strip_prefix("multimodal_").alias("mode"), "horizon", "scheme", "ablation", "n",
        *(pl.col(c).round(6) for c in ("mse", "mae", "ic", "hit_rate", "pnl", "max_drawdown", "turnover_per_day",
                                       "delta_mse", "delta_ic", "delta_ic_low", "delta_ic_high")),
    ).sort("mode", "horizon", "scheme", "ablation")  # fmt: skip
    metadata = {
        "cutoff": cutoff.isoformat(),
        "window": window.describe(),
        "training_rows": dg.MetadataValue.int(tf.frame.height),
        "table_versions": dg.MetadataValue.json(versions),
        "ablations": markdown_table(shown, max_rows=200),
        "ablation_plot": plot,
        **run.metadata(),
        "lake_versions_written": dg.MetadataValue.json({ABLATION_RESULTS: version}),
    }
    # delta_<metric>_<ablation>_vs_full: {"<mode> <h> <scheme>": value}, one entry per metric and ablation
    for ab in mm.ABLATIONS[1:]:
        for m in ("mse", "mae", "ic"):
            rows = table.filter(pl.col("ablation") == ab)
            metadata[f"delta_{m}_{ab}_vs_full"] = dg.MetadataValue.json({
                f"{r['mode']} {r['horizon']} {r['scheme']}": _finite(r[f"delta_{m}"]) for r in rows.iter_rows(named=True)})  # fmt: skip
    return metadata, [check]


@dg.asset(
    name=EVAL,
    group_name=RESEARCH_GROUP,
    partitions_def=model_cutoffs,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[CANDIDATE],
    check_specs=[TEXT_HELPS],
    kinds={"numpy", "mlflow", "delta"},
    description="OOS ablation study of the multimodal candidates on their partition's training rows: walk-forward "
    "and purged k-fold, ablations full / no_text / no_macro / event_window, MSE, MAE, IC, hit rate and after-cost "
    "PnL, drawdown and turnover, deltas against full with a whole-day bootstrap interval on the IC delta. "
    "Writes ablation_results; the check says whether each candidate's text helps.",
)
def multimodal_eval(
    context: dg.AssetExecutionContext, config: MultimodalEvalRunConfig, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    return _partitions(context, lambda key: evaluate_partition(context, key, config, mlflow))


research_assets = [vc_model, multimodal_candidate, multimodal_eval]
