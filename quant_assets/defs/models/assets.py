"""The Liquid production chain: `liquid_teacher` (LightGBM + ridge) -> `liquid_student` (TSMixer, torchrun).

Partition M of `model_cutoffs` is a training cut-off: its models learn only from
`feature_matrix_main` rows whose label ends before M's start (ml.training_frame purges the rest) and
predict every row of month M out of sample. A backfill of model partitions is a walk-forward of the
production procedure; re-materialising the running month is "retrain now".

Time rule: what a partition reads is fixed by the versions Dagster recorded for its input tables
(`defs.lineage.recorded_snapshot`), read with `lake.scan(..., version=...)` and pinned (`lake.pin`,
owner `<asset>/<partition>`) so the training rows can be read back exactly and maintenance keeps
their files. The dependency on `feature_matrix_main` maps partition M to the 14 months up to M (the
default 420-day look-back and month M itself) for the lineage and the UI; the rows actually read are
those of the recorded version, whatever was materialised since.
"""

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from quant_assets import lake
from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.engine import run_horizons
from quant_assets.backtest.inputs import DEPTH_COLUMN, FUNDING_TABLE, MATRIX_TABLE, backtest_inputs_from_lake
from quant_assets.defs.common import each_partition, markdown_table
from quant_assets.defs.conditions import FOLLOW_RUNNING_CUTOFF
from quant_assets.defs.lineage import recorded_snapshot
from quant_assets.defs.models.config import StudentRunConfig, TeacherRunConfig
from quant_assets.defs.models.tables import (
    BACKTEST_RUNS,
    BACKTEST_SCHEMA,
    MODEL_PREDICTIONS,
    TEACHER_OOF,
    read_partition,
    replace_partition,
)
from quant_assets.defs.models.tracking import MlflowTracking, TrackedRun, coin_name
from quant_assets.features.keys import LIQUID_FEATURE_KEYS, LIQUID_FULL_FEATURE_KEYS
from quant_assets.ml import teacher as teacher_ml
from quant_assets.ml.training_frame import STEP, FastWindow, TooLittleHistory, TrainingFrame, training_frame
from quant_assets.partitions import model_cutoffs
from quant_assets.universe import HORIZONS
from quant_assets.validation.metrics import signal_metrics

MODELS_GROUP = "models"
TEACHER, RIDGE, STUDENT = "liquid_teacher", "liquid_ridge", "liquid_student"
INPUT_TABLES = (MATRIX_TABLE, FUNDING_TABLE)
# Months of feature_matrix_main partition M reads with the default window: ceil(420 / 30) + M itself.
LOOK_BACK_MONTHS = 14
FEATURE_DEP = dg.AssetDep(
    MATRIX_TABLE,
    partition_mapping=dg.TimeWindowPartitionMapping(
        start_offset=-LOOK_BACK_MONTHS, end_offset=0, allow_nonexistent_upstream_partitions=True
    ),
)
# A fast window is `rows_per_coin` rows back from the cut-off; read this many times their span so
# gaps in a coin's clock still leave enough rows, without scanning the whole table.
FAST_SPAN_FACTOR = 3


def _utc(d: dt.datetime) -> dt.datetime:
    return d.astimezone(dt.UTC)


def _versions(context: dg.AssetExecutionContext) -> dict[str, int]:
    versions = recorded_snapshot(context.instance, INPUT_TABLES)
    missing = [t for t in INPUT_TABLES if t not in versions]
    if missing:
        raise dg.Failure(
            f"model inputs {missing} were never materialised through Dagster (no recorded Delta version): "
            "materialise the raw and features layers for the training window first"
        )
    return versions


def _pin(owner: str, versions: dict[str, int]) -> None:
    """A retrain replaces the partition's models: its pins move to the versions it read."""
    lake.unpin(owner)
    for table, version in sorted(versions.items()):
        lake.pin(table, version, owner)


def _matrix_range(cutoff: dt.datetime, window) -> dt.date:
    """First day of feature_matrix_main a training window of this cut-off can need."""
    if isinstance(window, FastWindow):
        span = STEP * window.rows_per_coin * FAST_SPAN_FACTOR
        return (cutoff - span - dt.timedelta(days=1)).date()
    lo, _ = window.bounds(cutoff)
    return lo.date()


def frame_metadata(
    cutoff: dt.datetime, window, rows: int, digest: str, purged, versions: dict, owner: str
) -> dict:
    """What a model partition records of its training frame: cut-off, window, rows and their digest, the rows
    purged for overlapping the cut-off, the table versions read and the pin that holds them."""
    return {
        "cutoff": cutoff.isoformat(),
        "window": window.describe(),
        "training_rows": dg.MetadataValue.int(rows),
        "training_rows_sha256": digest,
        "purged": dg.MetadataValue.json(purged),
        "table_versions": dg.MetadataValue.json(versions),
        "pinned_as": owner,
    }


def rows_digest(frame: pl.DataFrame) -> str:
    """sha256 of the (symbol, ts) keys of a training frame, taken in (symbol, ts) order."""
    keys = frame.select("symbol", pl.col("ts").dt.epoch("ms")).sort("symbol", "ts")
    h = hashlib.sha256()
    h.update("\n".join(keys["symbol"].to_list()).encode())
    h.update(keys["ts"].to_numpy().astype("<i8").tobytes())
    return h.hexdigest()


def teacher_training_frame(
    cutoff: dt.datetime, window, versions: dict[str, int], teacher_cfg
) -> TrainingFrame:
    """The teacher's rows of the cut-off at the recorded versions, with close and depth for its backtest."""
    lo = _matrix_range(cutoff, window)
    matrix = lake.scan(MATRIX_TABLE, lo, cutoff.date() + dt.timedelta(days=1), version=versions[MATRIX_TABLE])
    tf = training_frame(
        matrix, cutoff, window, LIQUID_FULL_FEATURE_KEYS, min_labelled_rows=teacher_cfg.rows_needed()
    )
    bars = matrix.select("symbol", "ts", "close", DEPTH_COLUMN).collect()
    frame = tf.frame.join(bars, on=["symbol", "ts"], how="left", maintain_order="left")
    return TrainingFrame(frame, tf.manifest)


def _month_rows(cutoff: dt.datetime, end: dt.datetime, versions: dict[str, int], columns) -> pl.DataFrame:
    """Every feature_matrix_main row of month M (ts in [cutoff, end)) at the recorded version."""
    lf = lake.scan(MATRIX_TABLE, cutoff.date(), end.date(), version=versions[MATRIX_TABLE])
    return (
        lf.filter((pl.col("ts") >= cutoff) & (pl.col("ts") < end))
        .select(*columns)
        .sort("symbol", "ts")
        .collect()
    )


def month_evaluation(
    preds: pl.DataFrame, month: pl.DataFrame, cutoff: dt.datetime, end: dt.datetime, versions: dict[str, int]
) -> tuple[pl.DataFrame, dict]:
    """OOS IC per coin and horizon of month M's predictions (where labels are known) and one after-cost
    backtest per horizon (`run_horizons` on the matrix's bars and funding at the recorded versions)."""
    ics = []
    for h in HORIZONS:
        p = preds.filter(pl.col("horizon") == h).join(
            month.select("symbol", "ts", pl.col(f"label_{h}").alias("label")), on=["symbol", "ts"]
        )
        p = p.filter(pl.col("label").is_not_null() & pl.col("prediction").is_finite())
        if p.height > 2:
            m = signal_metrics(p, "prediction", "label").select("symbol", "n", "ic", "rank_ic")
            ics.append(m.with_columns(horizon=pl.lit(h)))
    ic = pl.concat(ics) if ics else pl.DataFrame()
    if preds.height == 0:
        return ic, {}
    wide = preds.pivot(on="horizon", index=["symbol", "ts"], values="prediction")
    wide = wide.rename({h: f"score_{h}" for h in HORIZONS if h in wide.columns})
    inputs = backtest_inputs_from_lake(cutoff.date(), end.date(), versions=versions)
    frame = inputs.frame.join(wide, on=["symbol", "ts"], how="inner")
    configs = {h: BacktestConfig.for_horizon(h) for h in HORIZONS if f"score_{h}" in frame.columns}
    results = run_horizons(frame, configs, confidence=None, funding=inputs.funding)
    return ic, results


def _backtest_rows(results: dict, model: str, version: str, cutoff: dt.datetime) -> pl.DataFrame:
    rows = []
    for res in results.values():
        r = res.run_row().with_columns(model=pl.lit(model), version=pl.lit(version), cutoff=pl.lit(cutoff))
        rows.append(r)
    if not rows:
        return pl.DataFrame(schema=BACKTEST_SCHEMA)
    return pl.concat(rows, how="diagonal_relaxed").select(
        pl.col(c).cast(t) for c, t in BACKTEST_SCHEMA.items()
    )


def _importance_plot(fits: dict, run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gain = (
        pl.concat([f.importance for by_coin in fits.values() for f in by_coin.values()])
        .group_by("feature")
        .agg(pl.col("gain").sum())
        .sort("gain", "feature", descending=[True, False])
        .head(25)
    )
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.barh(gain["feature"].to_list()[::-1], gain["gain"].to_list()[::-1])
    ax.set_xlabel("total gain (all coins and horizons)")
    ax.set_title("liquid_teacher feature importance")
    run.log_png(fig, "feature_importance")
    plt.close(fig)


def _oos_plot(table: pl.DataFrame, run, title: str) -> None:
    if table.height == 0:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    horizons = table["horizon"].unique().sort().to_list()
    coins = table["coin"].unique().sort().to_list()
    width = 0.8 / max(1, len(horizons))
    for j, h in enumerate(horizons):
        t = table.filter(pl.col("horizon") == h)
        val = dict(zip(t["coin"].to_list(), t["wf_ic"].to_list(), strict=True))
        ax.bar([i + j * width for i in range(len(coins))], [val.get(c) or 0.0 for c in coins], width, label=h)
    ax.set_xticks([i + width / 2 for i in range(len(coins))], coins, rotation=45)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("walk-forward OOS IC")
    ax.set_title(title)
    ax.legend()
    run.log_png(fig, "oos_ic")
    plt.close(fig)


def _f(v) -> float | None:
    return None if v is None or v != v else round(float(v), 5)


def train_teacher_partition(
    context: dg.AssetExecutionContext, key: str, config: TeacherRunConfig, mlflow: MlflowTracking
) -> dict:
    """Train, record and predict one model partition; returns its metadata."""
    window_ = model_cutoffs.time_window_for_partition_key(key)
    cutoff, end = _utc(window_.start), _utc(window_.end)
    owner = f"{TEACHER}/{key}"
    versions = _versions(context)
    window, cfg = config.window.build(), config.teacher.build()
    try:
        tf = teacher_training_frame(cutoff, window, versions, cfg)
    except TooLittleHistory as exc:
        raise dg.Failure(f"{TEACHER} partition {key}: {exc}") from exc
    frame, manifest = tf.frame, tf.manifest
    _pin(owner, versions)
    context.log.info(f"{TEACHER} {key}: {frame.height:,} training rows, {len(manifest.coins)} coins, "
                     f"window {window.describe()}, versions {versions}")  # fmt: skip
    funding = lake.scan(FUNDING_TABLE, _matrix_range(cutoff, window), cutoff.date(),
                        version=versions[FUNDING_TABLE]).filter(pl.col("ts") < cutoff).collect()  # fmt: skip
    try:
        fits = {h: teacher_ml.fit_teacher(frame, LIQUID_FULL_FEATURE_KEYS, h, cfg, funding=funding,
                                           workers=config.workers)
                for h in manifest.horizons}  # fmt: skip
    except TooLittleHistory as exc:
        raise dg.Failure(f"{TEACHER} partition {key}: {exc}") from exc

    # --- MLflow: params, metrics per coin and horizon, plots, model files, one registered version each
    digest = rows_digest(frame)
    run = _start_model_run(
        context, mlflow, TEACHER, key, cutoff, window, frame.height, versions,
        params={f"teacher.{k}": v for k, v in teacher_ml.config_dict(cfg).items()},
        tags={"training_rows_sha256": digest},
    )  # fmt: skip
    ok = False
    try:
        registered: dict[str, str] = {}
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "manifest.json").write_text(json.dumps(
                {**manifest.to_dict(), "table_versions": versions, "training_rows_sha256": digest}, indent=1))  # fmt: skip
            run.log_artifacts(tmp, "manifest")
            for h, by_coin in fits.items():
                for sym, fit in sorted(by_coin.items()):
                    d = Path(tmp) / f"{sym}_{h}"
                    teacher_ml.save_fit(fit, d)
                    path = f"teacher/{coin_name(sym)}_{h}"
                    run.log_artifacts(d, path)
                    run.log_metrics({f"{coin_name(sym)}_{h}.{k}": v for k, v in fit.metrics.items()})
                    registered[f"{coin_name(sym)}_{h}"] = run.register("teacher", sym, h, path, key)
        _importance_plot(fits, run)

        # --- out-of-fold record and month-M predictions, in the lake
        oof = pl.concat([f.oof for by_coin in fits.values() for f in by_coin.values()]).with_columns(
            cutoff=pl.lit(cutoff), model=pl.lit(TEACHER)
        )
        oof_version = replace_partition(TEACHER_OOF, cutoff, [TEACHER], oof)
        month = _month_rows(cutoff, end, versions, ["symbol", "ts", *LIQUID_FULL_FEATURE_KEYS,
                                                    *(f"label_{h}" for h in HORIZONS)])  # fmt: skip
        preds = pl.concat([teacher_ml.predict(by_coin, month) for by_coin in fits.values()])
        rows = pl.concat([
            preds.select("symbol", "ts", "horizon", "prediction").with_columns(model=pl.lit(TEACHER)),
            preds.select("symbol", "ts", "horizon", pl.col("baseline").alias("prediction")).with_columns(
                model=pl.lit(RIDGE)),
        ]).with_columns(version=pl.lit(run.run_id), cutoff=pl.lit(cutoff), date=pl.col("ts").dt.date())  # fmt: skip
        pred_version = replace_partition(MODEL_PREDICTIONS, cutoff, [TEACHER, RIDGE], rows)

        teacher_preds = preds.select("symbol", "ts", "horizon", "prediction")
        month_ic, results = month_evaluation(teacher_preds, month, cutoff, end, versions)
        bt = _backtest_rows(results, TEACHER, run.run_id, cutoff)
        bt_version = replace_partition(BACKTEST_RUNS, cutoff, [TEACHER], bt) if bt.height else None

        # --- the table a user reads: per coin and horizon, in-window walk-forward and month-M OOS
        table = pl.DataFrame(
            [
                {
                    "coin": coin_name(s),
                    "horizon": h,
                    "wf_ic": _f(f.metrics.get("wf_ic")),
                    "wf_rank_ic": _f(f.metrics.get("wf_rank_ic")),
                    "wf_ic_low": _f(f.metrics.get("wf_ic_low")),
                    "wf_ic_high": _f(f.metrics.get("wf_ic_high")),
                    "ridge_wf_ic": _f(f.metrics.get("ridge_wf_ic")),
                    "wf_pnl_after_cost": _f(f.metrics.get("wf_pnl_after_cost")),
                    "best_iter": f.best_iteration,
                }
                for h, by_coin in fits.items()
                for s, f in sorted(by_coin.items())
            ]  # fmt: skip
        )
        if month_ic.height:
            m_ic = month_ic.filter(pl.col("symbol") != "ALL").select(
                pl.col("symbol").map_elements(coin_name, return_dtype=pl.String).alias("coin"), "horizon",
                pl.col("ic").round(5).alias("month_ic"), pl.col("n").alias("month_rows"))  # fmt: skip
            table = table.join(m_ic, on=["coin", "horizon"], how="left")
        _oos_plot(table, run, f"{TEACHER} {key}")
        pnl = {h: r.metrics for h, r in results.items()}
        run.log_metrics({f"month.{h}.{k}": m[k] for h, m in pnl.items() for k in ("total_return", "sharpe")})
        ok = True
    finally:
        run.end(ok)

    metadata = {
        **frame_metadata(cutoff, window, frame.height, digest, manifest.purged, versions, owner),
        "oos_ic": markdown_table(table.sort("horizon", "coin"), max_rows=60),
        "month_predictions": dg.MetadataValue.int(rows.filter(pl.col("model") == TEACHER).height),
        **run.metadata(),
        "registered_versions": dg.MetadataValue.json(registered),
        "lake_versions_written": dg.MetadataValue.json(
            {TEACHER_OOF: oof_version, MODEL_PREDICTIONS: pred_version, BACKTEST_RUNS: bt_version}
        ),
    }
    for h, m in pnl.items():
        metadata[f"month_pnl_after_cost_{h}"] = dg.MetadataValue.float(round(float(m["total_return"]), 6))
    return metadata


def _start_model_run(
    context,
    mlflow,
    asset: str,
    key: str,
    cutoff,
    window,
    rows: int,
    versions: dict,
    *,
    params: dict,
    tags: dict,
):
    """One MLflow run per model partition: what every model kind records (cut-off, window, rows,
    partition, Dagster run, the lake versions read) plus its own params and tags."""
    return mlflow.start_run(
        f"{asset} {key}",
        params={"cutoff": cutoff.isoformat(), "window": window.describe(), "rows": rows, **params},
        tags={"partition": key, "asset": asset, "dagster_run_id": context.run.run_id, **tags,
              **{f"table_version.{t}": v for t, v in versions.items()}},
    )  # fmt: skip


@dg.asset(
    group_name=MODELS_GROUP,
    partitions_def=model_cutoffs,
    backfill_policy=dg.BackfillPolicy.single_run(),  # a range is one run: its cut-offs in order
    automation_condition=FOLLOW_RUNNING_CUTOFF,  # the running cut-off: monthly, then daily (defs/conditions.py)
    deps=[FEATURE_DEP],
    kinds={"lightgbm", "mlflow", "delta"},
    description="LightGBM per coin and horizon (ridge baseline beside it) trained on feature_matrix_main rows "
    "whose label ends before the partition's month, predicting that month out of sample. Writes teacher_oof, "
    "model_predictions and backtest_runs; models and metrics go to MLflow.",
)
def liquid_teacher(
    context: dg.AssetExecutionContext, config: TeacherRunConfig, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    metadata = each_partition(context, lambda key: train_teacher_partition(context, key, config, mlflow))
    return dg.MaterializeResult(metadata=metadata)


# --- the student ------------------------------------------------------------------------------------


def _teacher_record(context: dg.AssetExecutionContext, key: str) -> dict:
    """Metadata of the teacher's latest materialisation of partition `key` (the versions it read)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=liquid_teacher.key, asset_partitions=[key]), limit=1
    ).records
    if not records:
        raise dg.Failure(f"{STUDENT} partition {key}: {TEACHER} has no materialisation for it; "
                         f"materialise {TEACHER} for {key} first (the student distils its out-of-fold predictions)")  # fmt: skip
    meta = records[0].asset_materialization.metadata
    return {k: v.value for k, v in meta.items()}


def student_rows(frame: pl.DataFrame, oof: pl.DataFrame) -> pl.DataFrame:
    """The training rows with the teacher's out-of-fold prediction per horizon (teacher_1h, teacher_4h;
    null where the teacher has none: its first walk-forward block, or rows outside its window)."""
    out = frame
    for h in HORIZONS:
        t = oof.filter(pl.col("horizon") == h).select(
            "symbol", "ts", pl.col("teacher_oof").alias(f"teacher_{h}")
        )
        out = out.join(t, on=["symbol", "ts"], how="left", maintain_order="left")
    return out


def matrix_inputs(frame: pl.DataFrame, features):
    """ml.train_student.StudentInputs of matrix rows (labels only fill the shape: predict ignores them)."""
    from quant_assets.ml.train_student import StudentInputs  # torch: imported when a model runs

    labels = [f"label_{h}" for h in HORIZONS]
    return StudentInputs(
        symbol=frame["symbol"].to_numpy().astype(str),
        ts_ms=frame["ts"].dt.epoch("ms").to_numpy(),
        x=frame.select(features).to_numpy().astype("float32"),
        feature_names=tuple(features),
        y=frame.select(labels).to_numpy().astype("float32"),
        label_names=tuple(labels),
        teacher=None,
    )


def loss_plot(manifest: dict, run: TrackedRun, title: str, ylabel: str) -> None:
    """The manifest's training loss per step, logged to the run as loss_curve.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, loss = zip(*manifest["loss"], strict=True) if manifest["loss"] else ((), ())
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    run.log_png(fig, "loss_curve")
    plt.close(fig)


def _init_weights(init_from: str, dst: Path, mlflow: MlflowTracking) -> str:
    """A local directory of the student to fine-tune from: an MLflow model URI is downloaded into `dst`
    (the registry's artifact copy: student.pt, read with weights_only by the training)."""
    if not init_from.startswith("models:/"):
        if not (Path(init_from) / "student.pt").is_file():
            raise dg.Failure(f"{STUDENT}: init_from {init_from!r} is neither a models:/ URI nor a directory "
                             "holding student.pt")  # fmt: skip
        return init_from
    import mlflow as mlflow_lib

    path = mlflow_lib.artifacts.download_artifacts(artifact_uri=init_from, dst_path=str(dst),
                                                   tracking_uri=mlflow.resolved_uri())  # fmt: skip
    return str(path)


def train_student_partition(
    context: dg.AssetExecutionContext,
    key: str,
    config: StudentRunConfig,
    mlflow: MlflowTracking,
    pipes: dg.PipesSubprocessClient,
) -> dict:
    from quant_assets.deploy.k8s import launch_torchrun
    from quant_assets.ml.train_student import predict as student_predict

    window_ = model_cutoffs.time_window_for_partition_key(key)
    cutoff, end = _utc(window_.start), _utc(window_.end)
    owner = f"{STUDENT}/{key}"
    teacher_meta = _teacher_record(context, key)
    # The teacher's versions, so the out-of-fold column lines up with the same rows.
    versions = {t: int(v) for t, v in teacher_meta["table_versions"].items()}
    oof_version = int(teacher_meta["lake_versions_written"][TEACHER_OOF])
    window = config.window.build()
    needed = config.input_len + config.global_batch
    lo = _matrix_range(cutoff, window)
    matrix = lake.scan(MATRIX_TABLE, lo, cutoff.date() + dt.timedelta(days=1), version=versions[MATRIX_TABLE])
    try:
        tf = training_frame(matrix, cutoff, window, LIQUID_FEATURE_KEYS, min_labelled_rows=needed)
    except TooLittleHistory as exc:
        raise dg.Failure(f"{STUDENT} partition {key}: {exc}") from exc
    oof = read_partition(TEACHER_OOF, cutoff, TEACHER, version=oof_version)
    rows = student_rows(tf.frame, oof)
    _pin(owner, {**versions, TEACHER_OOF: oof_version})

    # TMPDIR: on Kubernetes the shared scratch claim, so a training pod can read the inputs (deploy/k8s)
    with tempfile.TemporaryDirectory(prefix="liquid_student_") as tmp:
        inputs, out_dir, cfg_path = (
            Path(tmp) / "inputs.parquet",
            Path(tmp) / "out",
            Path(tmp) / "student.json",
        )
        rows.write_parquet(inputs)
        init_dir = _init_weights(config.init_from, Path(tmp) / "init", mlflow) if config.init_from else None
        student_cfg = {
            "inputs": str(inputs), "out_dir": str(out_dir), "feature_columns": list(LIQUID_FEATURE_KEYS),
            "label_columns": [f"label_{h}" for h in HORIZONS], "teacher_columns": [f"teacher_{h}" for h in HORIZONS],
            "teacher_weight": config.teacher_weight, "text_dropout": config.text_dropout,
            "input_len": config.input_len, "coin_embedding": config.coin_embedding, "model": {**config.model, "dropout": config.dropout},
            "steps": config.steps, "global_batch": config.global_batch, "lr": config.lr,
            "eval_every": config.eval_every, "seed": config.seed, "threads": config.threads,
            "init_from": init_dir,
        }  # fmt: skip
        cfg_path.write_text(json.dumps(student_cfg, indent=1))
        context.log.info(f"{STUDENT} {key}: {rows.height:,} rows")
        # a subprocess here, or a GPU pod when the deployment says so (QUANT_ASSETS_TRAINING_BACKEND=k8s)
        invocation, launched = launch_torchrun(context, pipes, "quant_assets.pipes_entries.student", str(cfg_path),
                                               cpu_procs=config.cpu_procs, threads=config.threads, partition_key=key)  # fmt: skip
        reported = invocation.get_materialize_result()
        manifest = json.loads((out_dir / "student.json").read_text())

        # --- month M: every row, with its 96-step lead-in from before the cut-off (inputs, not labels)
        lead = dt.timedelta(minutes=5 * (config.input_len + 1))
        month = (
            lake.scan(MATRIX_TABLE, (cutoff - lead).date(), end.date(), version=versions[MATRIX_TABLE])
            .filter((pl.col("ts") >= cutoff - lead) & (pl.col("ts") < end))
            .select("symbol", "ts", *LIQUID_FEATURE_KEYS, *(f"label_{h}" for h in HORIZONS))
            .sort("symbol", "ts")
            .collect()
        )
        pred = student_predict(out_dir, matrix_inputs(month, LIQUID_FEATURE_KEYS)) if month.height else None
        long = []
        for j, h in enumerate(HORIZONS):
            p = month.select("symbol", "ts").with_columns(
                horizon=pl.lit(h),
                prediction=pl.Series(pred[:, j] if pred is not None else [], dtype=pl.Float64),
            )
            long.append(p.filter(pl.col("ts") >= cutoff).with_columns(pl.col("prediction").fill_nan(None)))
        preds = pl.concat(long)

        run = _start_model_run(
            context, mlflow, STUDENT, key, cutoff, window, rows.height, {**versions, TEACHER_OOF: oof_version},
            params={**{f"student.{k}": v for k, v in student_cfg.items() if k not in ("inputs", "out_dir", "init_from")},
                    **{f"launch.{k}": v for k, v in launched.items()}},
            tags={"teacher_run": teacher_meta.get("mlflow_run_id", ""),
                  **({"init_from": config.init_from} if config.init_from else {})},
        )  # fmt: skip
        ok = False
        try:
            for step, loss in manifest["loss"]:
                run.log_metrics({"loss": loss}, step=int(step))
            for ev in manifest["eval"]:
                run.log_metrics({f"val.{k}": v for k, v in ev.items() if k != "step"}, step=int(ev["step"]))
            run.log_artifacts(out_dir, "student")
            loss_plot(
                manifest,
                run,
                "liquid_student training loss",
                "loss (label MSE + lambda x teacher MSE, scaled)",
            )
            # one shared model (coin embedding): each coin and horizon's name gets a version of it
            registered = {
                f"{coin_name(s)}_{h}": run.register(
                    "student", s, h, "student", key, tags={"shared_model": "true"}
                )
                for h in HORIZONS
                for s in manifest["symbols"]
            }
            rows_out = preds.with_columns(model=pl.lit(STUDENT), version=pl.lit(run.run_id), cutoff=pl.lit(cutoff),
                                          date=pl.col("ts").dt.date())  # fmt: skip
            pred_version = replace_partition(MODEL_PREDICTIONS, cutoff, [STUDENT], rows_out)
            scored = preds.filter(pl.col("prediction").is_not_null())
            month_ic, results = month_evaluation(
                scored, month.filter(pl.col("ts") >= cutoff), cutoff, end, versions
            )
            bt = _backtest_rows(results, STUDENT, run.run_id, cutoff)
            bt_version = replace_partition(BACKTEST_RUNS, cutoff, [STUDENT], bt) if bt.height else None
            pnl = {h: r.metrics for h, r in results.items()}
            run.log_metrics(
                {f"month.{h}.{k}": m[k] for h, m in pnl.items() for k in ("total_return", "sharpe")}
            )
            ok = True
        finally:
            run.end(ok)

    table = pl.DataFrame()
    if month_ic.height:
        table = month_ic.filter(pl.col("symbol") != "ALL").select(
            pl.col("symbol").map_elements(coin_name, return_dtype=pl.String).alias("coin"), "horizon",
            pl.col("ic").round(5).alias("month_ic"), pl.col("rank_ic").round(5).alias("month_rank_ic"),
            pl.col("n").alias("month_rows"),
        ).sort("horizon", "coin")  # fmt: skip
    metadata = {k: v for k, v in (reported.metadata or {}).items()}
    metadata |= {
        "cutoff": cutoff.isoformat(),
        "window": window.describe(),
        "training_rows": dg.MetadataValue.int(rows.height),
        "rows_with_teacher": dg.MetadataValue.json(
            {h: rows[f"teacher_{h}"].is_not_null().sum() for h in HORIZONS}
        ),
        "launch": dg.MetadataValue.json(launched),
        "table_versions": dg.MetadataValue.json({**versions, TEACHER_OOF: oof_version}),
        "pinned_as": owner,
        "oos_ic": markdown_table(table, max_rows=60) if table.height else "no labelled rows in the month yet",
        "init_from": config.init_from or "none (a fresh model)",
        "month_predictions": dg.MetadataValue.int(preds.height),
        **run.metadata(),
        "registered_versions": dg.MetadataValue.json(registered),
        "lake_versions_written": dg.MetadataValue.json(
            {MODEL_PREDICTIONS: pred_version, BACKTEST_RUNS: bt_version}
        ),
    }
    for h, m in pnl.items():
        metadata[f"month_pnl_after_cost_{h}"] = dg.MetadataValue.float(round(float(m["total_return"]), 6))
    return metadata


@dg.asset(
    group_name=MODELS_GROUP,
    partitions_def=model_cutoffs,
    backfill_policy=dg.BackfillPolicy.single_run(),  # a range is one run: its cut-offs in order
    automation_condition=FOLLOW_RUNNING_CUTOFF,  # the running cut-off: monthly, then daily (defs/conditions.py)
    deps=[liquid_teacher, FEATURE_DEP],
    pool="gpu",  # two trainings never share a device
    kinds={"pytorch", "mlflow", "delta"},
    description="TSMixer over 96-step windows of LIQUID_FEATURE_KEYS (one shared model, coin embedding), "
    "trained under torchrun through Dagster Pipes on the label and the teacher's out-of-fold prediction; "
    "predicts the partition's month into model_predictions.",
)
def liquid_student(
    context: dg.AssetExecutionContext,
    config: StudentRunConfig,
    mlflow: MlflowTracking,
    pipes: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    metadata = each_partition(
        context, lambda key: train_student_partition(context, key, config, mlflow, pipes)
    )
    return dg.MaterializeResult(metadata=metadata)


model_assets = [liquid_teacher, liquid_student]
