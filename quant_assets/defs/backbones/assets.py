"""`backbone_suite`: window ridge, iTransformer, PatchTST and TFT on one cut-off's windows, side by side.

Partition M of `model_cutoffs` is a training cut-off, as for the Liquid chain (defs/models/assets.py):
every backbone learns from the `feature_matrix_main` rows whose label ends before M's start
(ml.training_frame), read at the Delta versions Dagster recorded and pinned as
`backbone_suite/<partition>`, and predicts every row of month M out of sample (the windows of month
M's first rows reach back before the cut-off for inputs, never for labels).

Same folds, same metrics: every backbone gets the same rows, the same fold (ml.train_backbone.fold_data:
each coin's windows split in time, training / embargo / validation; standardisation and target scale
fitted on the training fold's rows only) and is scored the same way on month M: IC, rank IC and hit
rate against the labels, and the existing after-cost backtest (PnL, turnover, drawdown) per horizon.
The ridge fits in this process (closed form); the neural backbones train through torchrun like the
student (ml.launch, pipes_entries.backbone), one launch each.

A backbone that cannot run (an exception, a process killed for memory) is reported in the metadata
as failed with its error, and its rows of month M are removed from model_predictions and
backtest_runs (a stale prediction of an earlier run must not look current); the others still run.
If every backbone fails, the materialisation fails naming each error.

Writes: model_predictions (model `backbone_<name>`), backtest_runs (one row per backbone and
horizon); MLflow: one run per backbone and partition, registered models `backbone_<name>_<h>`.
"""

import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import dagster as dg
import polars as pl

from quant_assets import lake
from quant_assets.backtest.inputs import MATRIX_TABLE
from quant_assets.defs.backbones.config import BACKBONE_NAMES, BackboneSuiteConfig
from quant_assets.defs.common import each_partition, markdown_table
from quant_assets.defs.models.assets import (
    FEATURE_DEP,
    _backtest_rows,
    _matrix_range,
    _pin,
    _start_model_run,
    _utc,
    _versions,
    loss_plot,
    matrix_inputs,
    month_evaluation,
    rows_digest,
)
from quant_assets.defs.models.tables import (
    BACKTEST_RUNS,
    BACKTEST_SCHEMA,
    MODEL_PREDICTIONS,
    PREDICTION_SCHEMA,
    replace_partition,
)
from quant_assets.defs.models.tracking import MlflowTracking, TrackedRun
from quant_assets.features.keys import LIQUID_FEATURE_KEYS, LIQUID_FULL_FEATURE_KEYS
from quant_assets.ml.training_frame import TooLittleHistory, training_frame
from quant_assets.partitions import model_cutoffs
from quant_assets.universe import HORIZON_BARS, HORIZONS
from quant_assets.validation.metrics import signal_metrics

BACKBONES_GROUP = "backbones"
SUITE = "backbone_suite"
LABELS = tuple(f"label_{h}" for h in HORIZONS)
EMBARGO_BARS = max(HORIZON_BARS.values()) + 1  # as the student: validation labels never overlap training ones


def model_name(backbone: str) -> str:
    return f"backbone_{backbone}"


def _features(config: BackboneSuiteConfig) -> tuple[str, ...]:
    return LIQUID_FULL_FEATURE_KEYS if config.features == "liquid_full" else LIQUID_FEATURE_KEYS


def _long(month: pl.DataFrame, pred, cutoff: dt.datetime) -> pl.DataFrame:
    """[rows, H] predictions of the month frame (with its lead-in) -> long rows of month M; NaN -> null."""
    return pl.concat([
        month.select("symbol", "ts").with_columns(horizon=pl.lit(h), prediction=pl.Series(pred[:, j], dtype=pl.Float64))
        .filter(pl.col("ts") >= cutoff).with_columns(pl.col("prediction").fill_nan(None))
        for j, h in enumerate(HORIZONS)
    ])  # fmt: skip


def _register(run: TrackedRun, backbone: str, horizon: str, artifact_path: str, partition: str) -> str:
    """A new version of `backbone_<name>_<h>` from the run's artifact directory; returns its number."""
    from mlflow.exceptions import MlflowException

    name = f"{model_name(backbone)}_{horizon}"
    try:
        run.client.create_registered_model(
            name, tags={"kind": "backbone", "backbone": backbone, "horizon": horizon}
        )
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    source = f"{run.client.get_run(run.run_id).info.artifact_uri}/{artifact_path}"
    mv = run.client.create_model_version(
        name, source=source, run_id=run.run_id, tags={"partition": partition}
    )
    return str(mv.version)


def _scores(preds: pl.DataFrame, month: pl.DataFrame) -> dict[str, dict]:
    """Pooled IC, rank IC and hit rate of month M's predictions per horizon, where labels are known."""
    out = {}
    for h in HORIZONS:
        p = preds.filter(pl.col("horizon") == h).join(
            month.select("symbol", "ts", pl.col(f"label_{h}").alias("label")), on=["symbol", "ts"]
        )
        p = p.filter(pl.col("label").is_finite() & pl.col("prediction").is_finite())
        if p.height > 2:
            row = (
                signal_metrics(p, "prediction", "label").filter(pl.col("symbol") == "ALL").row(0, named=True)
            )
            out[h] = {k: row[k] for k in ("n", "ic", "rank_ic", "hit_rate")}
    return out


def _f(v) -> float | None:
    return None if v is None or v != v else round(float(v), 5)


def _error_text(out_dir: Path, exc: BaseException) -> str:
    """The rank's own error (error_rank<r>.json) when it wrote one; else the launch's, with the likely cause."""
    for path in sorted(out_dir.glob("error_rank*.json")):
        err = json.loads(path.read_text())
        return f"rank {err['rank']}: {err['error']}"
    text = f"{type(exc).__name__}: {exc}"
    if "-9" in text or "SIGKILL" in text or "Signals.SIGKILL" in text:
        text += " (a process was killed without writing its error: out of memory is the usual cause)"
    return text


class _Suite:
    """One partition's shared inputs: the training rows, month M with its lead-in, and where files go."""

    def __init__(self, context, key: str, config: BackboneSuiteConfig, mlflow: MlflowTracking, tmp: Path):
        self.context, self.key, self.config, self.mlflow, self.tmp = context, key, config, mlflow, tmp
        w = model_cutoffs.time_window_for_partition_key(key)
        self.cutoff, self.end = _utc(w.start), _utc(w.end)
        self.versions = _versions(context)
        self.window = config.window.build()
        self.features = _features(config)
        lo = _matrix_range(self.cutoff, self.window)
        matrix = lake.scan(MATRIX_TABLE, lo, self.cutoff.date() + dt.timedelta(days=1),
                           version=self.versions[MATRIX_TABLE])  # fmt: skip
        try:
            tf = training_frame(matrix, self.cutoff, self.window, self.features,
                                min_labelled_rows=config.input_len + config.global_batch)  # fmt: skip
        except TooLittleHistory as exc:
            raise dg.Failure(f"{SUITE} partition {key}: {exc}") from exc
        self.frame, self.manifest = tf.frame, tf.manifest
        self.digest = rows_digest(self.frame)
        self.rows_path = tmp / "rows.parquet"
        self.frame.write_parquet(self.rows_path)
        lead = dt.timedelta(minutes=5 * (config.input_len + 1))  # inputs before the cut-off, not labels
        self.month = (
            lake.scan(MATRIX_TABLE, (self.cutoff - lead).date(), self.end.date(), version=self.versions[MATRIX_TABLE])
            .filter((pl.col("ts") >= self.cutoff - lead) & (pl.col("ts") < self.end))
            .select("symbol", "ts", *self.features, *LABELS)
            .sort("symbol", "ts")
            .collect()
        )  # fmt: skip

    def run(self, name: str, train_fn) -> dict:
        """Train one backbone (train_fn -> (predictions [rows, H] of self.month, manifest, artifact dir)),
        evaluate, record and write it; any exception makes it a failed entry, its month-M rows removed."""
        model = model_name(name)
        t0 = time.perf_counter()
        run = None
        try:
            pred, manifest, art_dir = train_fn()
            preds = _long(self.month, pred, self.cutoff)
            month_m = self.month.filter(pl.col("ts") >= self.cutoff)
            scores = _scores(preds, month_m)
            scored = preds.filter(pl.col("prediction").is_not_null())
            _, results = month_evaluation(scored, month_m, self.cutoff, self.end, self.versions)
            run = _start_model_run(
                self.context, self.mlflow, model, self.key, self.cutoff, self.window, self.frame.height, self.versions,
                params={"backbone": name, "features": self.config.features, "input_len": self.config.input_len,
                        **{f"model.{k}": v for k, v in manifest.get("model_config", manifest.get("config", {})).items()}},
                tags={"training_rows_sha256": self.digest, "suite": SUITE},
            )  # fmt: skip
            for step, loss in manifest.get("loss", []):
                run.log_metrics({"loss": loss}, step=int(step))
            for ev in manifest.get("eval", []):
                run.log_metrics({f"val.{k}": v for k, v in ev.items() if k != "step"}, step=int(ev["step"]))
            run.log_metrics({f"month.{h}.{k}": v for h, s in scores.items() for k, v in s.items()})
            run.log_metrics({f"month.{h}.{k}": r.metrics[k] for h, r in results.items()
                             for k in ("total_return", "sharpe", "max_drawdown", "turnover_per_day")})  # fmt: skip
            run.log_artifacts(art_dir, model)
            if manifest.get("loss"):
                loss_plot(manifest, run, f"{model} {self.key}", "label MSE (target units)")
            registered = {h: _register(run, name, h, model, self.key) for h in HORIZONS}
            rows = preds.with_columns(model=pl.lit(model), version=pl.lit(run.run_id), cutoff=pl.lit(self.cutoff),
                                      date=pl.col("ts").dt.date())  # fmt: skip
            pred_version = replace_partition(MODEL_PREDICTIONS, self.cutoff, [model], rows)
            bt = _backtest_rows(results, model, run.run_id, self.cutoff)
            bt_version = replace_partition(BACKTEST_RUNS, self.cutoff, [model], bt)
            run.end(True)
        except Exception as exc:  # a backbone that cannot run is reported, never dropped
            if run is not None:
                run.end(False)
            error = _error_text(self.tmp / name, exc)
            self.context.log.error(f"{SUITE} {self.key}: backbone {name} failed: {error}")
            replace_partition(MODEL_PREDICTIONS, self.cutoff, [model], pl.DataFrame(schema=PREDICTION_SCHEMA))
            replace_partition(BACKTEST_RUNS, self.cutoff, [model], pl.DataFrame(schema=BACKTEST_SCHEMA))
            return {
                "backbone": name,
                "status": "failed",
                "error": error,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        last_eval = (manifest.get("eval") or [{}])[-1]
        return {
            "backbone": name,
            "status": "ok",
            "seconds": round(time.perf_counter() - t0, 1),
            "n_params": manifest.get("n_params"),
            "train_windows": manifest.get("train_windows"),
            "val_ic": {h: _f(last_eval.get(f"ic_label_{h}")) for h in HORIZONS},
            "month": {
                h: {
                    **{k: _f(v) for k, v in scores.get(h, {}).items()},
                    **(
                        {
                            "pnl_after_cost": _f(results[h].metrics["total_return"]),
                            "turnover_per_day": _f(results[h].metrics["turnover_per_day"]),
                            "max_drawdown": _f(results[h].metrics["max_drawdown"]),
                        }
                        if h in results
                        else {}
                    ),
                }
                for h in HORIZONS
            },  # fmt: skip
            "predictions": preds.filter(pl.col("prediction").is_not_null()).height,
            "mlflow_run": run.link,
            "registered": registered,
            "lake_versions": {MODEL_PREDICTIONS: pred_version, BACKTEST_RUNS: bt_version},
        }

    # --- the two ways a backbone trains

    def train_ridge(self):
        from quant_assets.ml.window_ridge import WindowRidgeConfig, fit_inputs, predict_inputs

        c = self.config
        rcfg = WindowRidgeConfig(input_len=c.input_len, **c.ridge.model_dump())
        ridge, fold, metrics = fit_inputs(
            matrix_inputs(self.frame, self.features), rcfg, c.val_fraction, EMBARGO_BARS
        )
        out = self.tmp / "ridge"
        manifest = {"backbone": "ridge", "config": rcfg.__dict__, "n_params": int(ridge.weights.size),
                    "train_windows": metrics["train_windows"], "feature_names": list(self.features),
                    "eval": [{"step": 0, **{k: v for k, v in metrics.items() if k.startswith(("ic_", "mse_"))}}]}  # fmt: skip
        ridge.save(out, fold, extra={"feature_names": list(self.features)})
        return predict_inputs(ridge, fold, matrix_inputs(self.month, self.features)), manifest, out

    def train_neural(self, name: str, pipes: dg.PipesSubprocessClient):
        from quant_assets.ml.launch import preflight, torchrun_command
        from quant_assets.ml.train_backbone import BACKBONES, predict

        c = self.config
        # the model's own config check, here: a bad setting fails now, not after a torchrun launch
        n_coins = self.frame["symbol"].n_unique() if c.coin_embedding else 0
        BACKBONES[name][1](n_vars=len(self.features), input_len=c.input_len, n_targets=len(LABELS),
                           n_coins=n_coins, **c.model_options(name))  # fmt: skip
        pre = preflight(cpu_procs=c.cpu_procs)
        out = self.tmp / name
        cfg = {"inputs": str(self.rows_path), "out_dir": str(out), "backbone": name,
               "feature_columns": list(self.features), "label_columns": list(LABELS), "input_len": c.input_len,
               "coin_embedding": c.coin_embedding, "model": c.model_options(name), "steps": c.steps,
               "global_batch": c.global_batch, "lr": c.lr, "val_fraction": c.val_fraction,
               "embargo_bars": EMBARGO_BARS, "eval_every": c.eval_every, "seed": c.seed, "threads": c.threads}  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        cfg_path = self.tmp / f"{name}.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        launch = torchrun_command("quant_assets.pipes_entries.backbone", ["--config", str(cfg_path)], pre.nproc,
                                  threads=c.threads)  # fmt: skip
        if launch.note:
            self.context.log.warning(launch.note)
        self.context.log.info(
            f"{SUITE} {self.key}: {name} on {self.frame.height:,} rows, torchrun {pre.nproc} x {pre.backend}"
        )
        pipes.run(command=launch.command, context=self.context, env=launch.env)
        manifest = json.loads((out / "backbone.json").read_text())
        manifest["launch"] = {**pre.metadata(), "netns": launch.netns}
        return predict(out, matrix_inputs(self.month, self.features)), manifest, out


def _summary_table(entries: list[dict]) -> pl.DataFrame:
    rows = []
    for e in entries:
        for h in HORIZONS:
            m = e.get("month", {}).get(h, {})
            rows.append({"backbone": e["backbone"], "horizon": h, "status": e["status"], "seconds": e["seconds"],
                         "val_ic": (e.get("val_ic") or {}).get(h), "month_ic": m.get("ic"), "month_rank_ic": m.get("rank_ic"),
                         "hit_rate": m.get("hit_rate"), "pnl_after_cost": m.get("pnl_after_cost"),
                         "turnover_per_day": m.get("turnover_per_day"), "max_drawdown": m.get("max_drawdown")})  # fmt: skip
    return pl.DataFrame(rows)


def train_suite_partition(
    context: dg.AssetExecutionContext,
    key: str,
    config: BackboneSuiteConfig,
    mlflow: MlflowTracking,
    pipes: dg.PipesSubprocessClient,
) -> dict:
    unknown = [b for b in config.backbones if b not in BACKBONE_NAMES]
    if unknown or not config.backbones:
        raise dg.Failure(
            f"{SUITE}: backbones {config.backbones} must be a non-empty subset of {list(BACKBONE_NAMES)}"
        )
    owner = f"{SUITE}/{key}"
    with tempfile.TemporaryDirectory(prefix="backbone_suite_") as tmp:
        suite = _Suite(context, key, config, mlflow, Path(tmp))
        _pin(owner, suite.versions)
        context.log.info(f"{SUITE} {key}: {suite.frame.height:,} training rows, {len(suite.manifest.coins)} coins, "
                         f"{len(suite.features)} features, window {suite.window.describe()}")  # fmt: skip
        entries = []
        for name in config.backbones:
            if name == "ridge":
                entries.append(suite.run(name, suite.train_ridge))
            else:
                entries.append(suite.run(name, lambda name=name: suite.train_neural(name, pipes)))
    failed = {e["backbone"]: e["error"] for e in entries if e["status"] == "failed"}
    if len(failed) == len(entries):
        raise dg.Failure(f"{SUITE} partition {key}: every backbone failed: {failed}",
                         metadata={"failed": dg.MetadataValue.json(failed)})  # fmt: skip
    ok = [e for e in entries if e["status"] == "ok"]
    metadata = {
        "cutoff": suite.cutoff.isoformat(),
        "window": suite.window.describe(),
        "features": f"{config.features} ({len(suite.features)} columns)",
        "lookback": config.input_len,
        "training_rows": dg.MetadataValue.int(suite.frame.height),
        "training_rows_sha256": suite.digest,
        "table_versions": dg.MetadataValue.json(suite.versions),
        "pinned_as": owner,
        "backbone_status": dg.MetadataValue.json({e["backbone"]: e["status"] for e in entries}),
        "failed": dg.MetadataValue.json(failed),
        "oos": markdown_table(_summary_table(entries), max_rows=40),
        "month_predictions": dg.MetadataValue.json({e["backbone"]: e["predictions"] for e in ok}),
        "mlflow_runs": dg.MetadataValue.json({e["backbone"]: e["mlflow_run"] for e in ok}),
        "registered_versions": dg.MetadataValue.json(
            {f"{model_name(e['backbone'])}_{h}": v for e in ok for h, v in e["registered"].items()}
        ),
        "lake_versions_written": dg.MetadataValue.json({e["backbone"]: e["lake_versions"] for e in ok}),
        "seconds": dg.MetadataValue.json({e["backbone"]: e["seconds"] for e in entries}),
    }
    for e in ok:
        for h in HORIZONS:
            pnl = e["month"][h].get("pnl_after_cost")
            if pnl is not None:
                metadata[f"{e['backbone']}_month_pnl_after_cost_{h}"] = dg.MetadataValue.float(pnl)
    return metadata


@dg.asset(
    group_name=BACKBONES_GROUP,
    partitions_def=model_cutoffs,
    backfill_policy=dg.BackfillPolicy.single_run(),  # a range is one run: its cut-offs in order
    deps=[FEATURE_DEP],
    pool="gpu",  # the neural backbones train on the devices the student uses
    kinds={"pytorch", "mlflow", "delta"},
    description="Window ridge, iTransformer, PatchTST and TFT on lookback windows of feature_matrix_main with "
    "exogenous features, the same cut-off, folds and after-cost metrics; predicts the partition's month into "
    "model_predictions (models backbone_<name>). A backbone that cannot run is reported as failed.",
)
def backbone_suite(
    context: dg.AssetExecutionContext,
    config: BackboneSuiteConfig,
    mlflow: MlflowTracking,
    pipes: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    metadata = each_partition(context, lambda key: train_suite_partition(context, key, config, mlflow, pipes))
    return dg.MaterializeResult(metadata=metadata)


backbone_assets = [backbone_suite]
