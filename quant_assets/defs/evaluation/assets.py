"""`candidate_models`: every model of a partition judged by the gates, verdicts in the lake and MLflow.

Partition M of `model_cutoffs` evaluates the models trained for cut-off M. A candidate is one model
of one coin and horizon: `liquid_teacher` and its ridge baseline `liquid_ridge` (not registered: the
yardstick, listed for comparison, never promoted), and `liquid_student` when it was trained.

The OOS walk-forward each candidate is judged on (`quant_assets.gates`):
- teacher and ridge: their walk-forward out-of-fold record inside the training window (`teacher_oof`
  at the version the teacher wrote; its folds are the windows 0..n-1, n = the teacher run's
  `n_wf_folds`, each coin's predicted span cut into n equal time blocks) and month M's predictions
  (`model_predictions`), window n;
- student: month M's predictions of the last `student_months` student partitions up to M (the
  walk-forward of the production procedure, one window a month), beside the ridge's of the same months.
Targets are the GROSS forward returns (`fwd_ret_1h` / `fwd_ret_4h`) of `feature_matrix_main`, bars and
book depth from it and funding from `funding_rates`, all at the versions the teacher read (recorded
by Dagster). Readiness: `coverage.readiness` of the raw tables (at their recorded versions) over the
training window [first training row, cut-off), per coin.

Writes: the partition's `candidate_models` rows (one commit, replacing the partition's rows); on each
registered MLflow version its gate verdicts as tags (`gates_passed`, `gate.<name>` pass/fail, `gates`:
the JSON of every gate's value, threshold and reason, `entry_threshold`, `confidence_min`, `oos_ic`, ...)
and the alias `candidate` when every gate passed. The alias means "the latest evaluated version of this name whose gates all
passed": a re-evaluation that fails removes it from that version; an older partition's passing
version keeps it. The gates are also blocking asset checks (`checks.py`).
"""

import datetime as dt
import math

import dagster as dg
import polars as pl

from quant_assets import coverage, lake
from quant_assets.backtest.inputs import DEPTH_COLUMN, FUNDING_TABLE, MATRIX_TABLE
from quant_assets.defs.common import markdown_table, utc_now
from quant_assets.defs.conditions import FOLLOW_RUNNING_CUTOFF
from quant_assets.defs.evaluation.config import CandidateRunConfig
from quant_assets.defs.evaluation.tables import CANDIDATE_SCHEMA, replace_candidates
from quant_assets.defs.lineage import snapshot_scans
from quant_assets.defs.models.assets import RIDGE, STUDENT, TEACHER, liquid_student, liquid_teacher
from quant_assets.defs.models.tables import MODEL_PREDICTIONS, TEACHER_OOF, UTC_MS, read_partition
from quant_assets.defs.models.tracking import MlflowTracking, coin_name, registered_name
from quant_assets.gates import GATES, Evaluation, GateConfig, evaluate_candidate
from quant_assets.ml.teacher import TeacherConfig
from quant_assets.ml.training_frame import STEP
from quant_assets.partitions import model_cutoffs
from quant_assets.universe import HORIZONS

EVALUATION_GROUP = "evaluation"
CANDIDATE_ALIAS = "candidate"
KIND = {TEACHER: "teacher", RIDGE: "ridge", STUDENT: "student"}
_STEP_MS = int(STEP.total_seconds() * 1000)


def _utc(d: dt.datetime) -> dt.datetime:
    return d.astimezone(dt.UTC)


def latest_metadata(context, asset: dg.AssetsDefinition, key: str) -> dict | None:
    """Metadata values of `asset`'s latest materialisation of partition `key` (None when never)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def fold_windows(oof: pl.DataFrame, column: str, n_folds: int) -> pl.DataFrame:
    """symbol, ts, horizon, window, prediction of the rows `column` predicted; window 0..n_folds-1 =
    equal time blocks of each coin and horizon's predicted span (the teacher's walk-forward folds)."""
    t = pl.col("ts").dt.epoch("ms")
    lo, hi = t.min().over("symbol", "horizon"), t.max().over("symbol", "horizon")
    w = ((t - lo) * n_folds / (hi - lo + _STEP_MS)).floor().cast(pl.Int64).clip(0, n_folds - 1)
    return oof.filter(pl.col(column).is_not_null()).select(
        "symbol", "ts", "horizon", w.alias("window"), pl.col(column).alias("prediction")
    )


def _n_folds(mlflow: MlflowTracking, run_id: str | None) -> int:
    """The teacher run's n_wf_folds (its recorded param), else the default."""
    if run_id:
        params = mlflow.client().get_run(run_id).data.params
        if "teacher.n_wf_folds" in params:
            return int(params["teacher.n_wf_folds"])
    return TeacherConfig.n_wf_folds


def _student_months(cutoff: dt.datetime, months: int) -> pl.DataFrame:
    """Student and ridge month predictions of the last `months` partitions up to `cutoff` (window =
    the partition's index in time order)."""
    first = cutoff
    for _ in range(max(0, months - 1)):
        first = (first - dt.timedelta(days=1)).replace(day=1)
    lf = pl.scan_delta(lake.uri(MODEL_PREDICTIONS), storage_options=lake.storage_options())
    rows = (
        lf.filter(pl.col("model").is_in([STUDENT, RIDGE]))
        .with_columns(pl.col("cutoff", "ts").dt.cast_time_unit("ms"))
        .filter((pl.col("cutoff") >= first) & (pl.col("cutoff") <= cutoff))
        .select("model", "cutoff", "symbol", "ts", "horizon", "prediction")
        .collect()
    )
    student_cutoffs = rows.filter(pl.col("model") == STUDENT)["cutoff"].unique().sort()
    rows = rows.filter(pl.col("cutoff").is_in(student_cutoffs.implode()))
    index = pl.DataFrame({"cutoff": student_cutoffs, "window": range(len(student_cutoffs))},
                         schema={"cutoff": UTC_MS, "window": pl.Int64})  # fmt: skip
    return rows.join(index, on="cutoff")


def _readiness(context, cutoff: dt.datetime, first: dt.datetime) -> dict[str, tuple[bool, str]]:
    """{symbol: (ready, detail)} of the raw tables over [first, cutoff); {} when none was ever written."""
    scans, source = snapshot_scans(context.instance, coverage.REQUIRED_TABLES)
    if all(s is None for s in scans.values()):
        return {}
    days = max(1, math.ceil((cutoff - first) / dt.timedelta(days=1)))
    table = coverage.readiness(scans, cutoff, days)
    versions = ", ".join(f"{t} {v}" for t, v in sorted(source.items()))
    out = {}
    for (sym,), g in table.group_by("symbol"):
        bad = g.filter(~pl.col("ready"))
        window = f"training window {days} days to {cutoff:%Y-%m-%d}"
        if bad.height == 0:
            out[sym] = (
                True,
                f"{window}: every required table >= {coverage.MIN_REQUIRED_COVERAGE:.0%} ({versions})",
            )
        else:
            worst = ", ".join(f"{r['table']} {r['coverage']:.3f}" for r in bad.iter_rows(named=True))
            out[sym] = (False, f"{window}: below {coverage.MIN_REQUIRED_COVERAGE:.0%}: {worst}")
    return out


def _row(ev: Evaluation, model: str, sym: str, h: str, cutoff: dt.datetime, version: str, now) -> dict:
    return {"cutoff": cutoff, "model": model, "kind": KIND[model], "symbol": sym, "horizon": h,
            "registered_name": registered_name(KIND[model], sym, h), "registered_version": version,
            **ev.metrics(), "gates": ev.gates_json(), "passed": ev.passed, "evaluated_at": now,
            "date": cutoff.date()}  # fmt: skip


def _tag(client, name: str, version: str, ev: Evaluation, key: str, now: dt.datetime) -> bool:
    """Gate verdicts as tags on the version; the `candidate` alias when all passed. True when aliased."""

    def num(v) -> str:
        return "nan" if v is None or not math.isfinite(v) else f"{v:.6g}"

    # A handful of tags (each is one registry write): the verdicts, the numbers paper trading and a
    # reader need, and every gate's value, threshold and reason in one JSON tag.
    tags = {
        "gates_passed": str(ev.passed).lower(),
        "gates_partition": key,
        "gates_evaluated_at": now.isoformat(),
    }
    for g in ev.gates:
        tags[f"gate.{g.name}"] = "pass" if g.passed else "fail"
    for k in ("oos_ic", "oos_ic_lo", "hit_rate", "pnl_after_cost", "entry_threshold", "confidence_min"):
        tags[k] = num(getattr(ev, k))
    tags["gates"] = ev.gates_json()[:5000]  # the registry's tag value limit
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    if ev.passed:
        client.set_registered_model_alias(name, CANDIDATE_ALIAS, version)
        return True
    try:
        holder = client.get_model_version_by_alias(name, CANDIDATE_ALIAS)
    except Exception:  # no such alias: nothing to take back
        return False
    if str(holder.version) == str(version):
        client.delete_registered_model_alias(name, CANDIDATE_ALIAS)
    return False


def evaluate_partition(
    context, key: str, config: CandidateRunConfig, mlflow: MlflowTracking
) -> tuple[pl.DataFrame, dict]:
    """The candidate rows of partition `key` (written, tagged) and the partition's metadata."""
    window_ = model_cutoffs.time_window_for_partition_key(key)
    cutoff, end = _utc(window_.start), _utc(window_.end)
    cfg: GateConfig = config.gates.build()
    tmeta = latest_metadata(context, liquid_teacher, key)
    if tmeta is None:
        raise dg.Failure(f"candidate_models partition {key}: {TEACHER} has no materialisation for it; "
                         f"materialise {TEACHER} for {key} first")  # fmt: skip
    versions = {t: int(v) for t, v in tmeta["table_versions"].items()}
    oof = read_partition(
        TEACHER_OOF, cutoff, TEACHER, version=int(tmeta["lake_versions_written"][TEACHER_OOF])
    )
    preds = read_partition(MODEL_PREDICTIONS, cutoff)
    smeta = latest_metadata(context, liquid_student, key)
    trained = sorted(set(preds["model"].unique().to_list()))
    n_folds = _n_folds(mlflow, tmeta.get("mlflow_run_id"))

    month = preds.filter(pl.col("model").is_in([TEACHER, RIDGE])).select(
        "model", "symbol", "ts", "horizon", pl.lit(n_folds, pl.Int64).alias("window"), "prediction"
    )
    teacher = pl.concat([fold_windows(oof, "teacher_oof", n_folds).with_columns(model=pl.lit(TEACHER)),
                         fold_windows(oof, "ridge_oof", n_folds).with_columns(model=pl.lit(RIDGE)),
                         ]).select(month.columns)  # fmt: skip
    frames = {"teacher": pl.concat([teacher, month])}
    if STUDENT in trained:
        frames["student"] = _student_months(cutoff, config.student_months).drop("cutoff")
    first = min((f["ts"].min() for f in frames.values() if f.height), default=cutoff)
    first = first if first is not None else cutoff

    bars = (
        lake.scan(MATRIX_TABLE, first.date(), end.date(), version=versions[MATRIX_TABLE])
        .filter((pl.col("ts") >= first) & (pl.col("ts") < end))
        .select("symbol", "ts", "close", DEPTH_COLUMN, *(f"fwd_ret_{h}" for h in HORIZONS))
        .collect()
    )
    funding = lake.scan(FUNDING_TABLE, first.date(), end.date(), version=versions[FUNDING_TABLE]).collect()
    train_start = oof["ts"].min() if oof.height else cutoff
    readiness = _readiness(context, cutoff, train_start)

    now = utc_now().replace(microsecond=0)
    rows, evals = [], []
    for source, frame in frames.items():
        # the ridge first: the teacher reuses its after-cost walk-forward as its baseline
        models = [RIDGE, TEACHER] if source == "teacher" else [STUDENT]
        for h in HORIZONS:
            f = frame.filter(pl.col("horizon") == h).join(
                bars.select("symbol", "ts", "close", DEPTH_COLUMN, pl.col(f"fwd_ret_{h}").alias("target")),
                on=["symbol", "ts"], how="inner",
            )  # fmt: skip
            base = f.filter(pl.col("model") == RIDGE)
            ridge_wf = {}
            for model in models:
                mf = f.filter(pl.col("model") == model)
                meta = tmeta if model == TEACHER else smeta if model == STUDENT else None
                registered = (meta or {}).get("registered_versions") or {}
                for sym in sorted(mf["symbol"].unique().to_list()):
                    ev = evaluate_candidate(
                        mf.filter(pl.col("symbol") == sym), h, cfg,
                        baseline=base.filter(pl.col("symbol") == sym), is_baseline=model == RIDGE,
                        funding=funding.filter(pl.col("symbol") == sym), readiness=readiness.get(sym),
                        trained=trained, baseline_walk_forward=ridge_wf.get(sym) if source == "teacher" else None,
                    )  # fmt: skip
                    if model == RIDGE:
                        ridge_wf[sym] = ev.walk_forward
                    version = str(registered.get(f"{coin_name(sym)}_{h}", ""))
                    rows.append(_row(ev, model, sym, h, cutoff, version, now))
                    evals.append(ev)
    table = pl.DataFrame(rows, schema=CANDIDATE_SCHEMA) if rows else pl.DataFrame(schema=CANDIDATE_SCHEMA)
    lake_version = replace_candidates(cutoff, table)

    client = mlflow.client()
    aliased = []
    for r, ev in zip(rows, evals, strict=True):
        if r["registered_version"] and _tag(
            client, r["registered_name"], r["registered_version"], ev, key, now
        ):
            aliased.append(f"{r['registered_name']} v{r['registered_version']}")
    context.log.info(f"candidate_models {key}: {len(rows)} candidates, {sum(r['passed'] for r in rows)} passed, "
                     f"`{CANDIDATE_ALIAS}` set on {aliased or 'none'}")  # fmt: skip
    return table, {"lake_version": lake_version, "aliased": aliased, "gate_config": cfg.as_dict(),
                   "n_folds": n_folds, "trained": trained}  # fmt: skip


def candidates_markdown(table: pl.DataFrame) -> dg.MetadataValue:
    """The table a user reads: one line per candidate, its numbers and the gates it failed."""
    import json

    if table.height == 0:
        return dg.MetadataValue.md("no candidates")

    def failed(g: str) -> str:
        names = [x["name"] for x in json.loads(g) if not x["passed"]]
        return ", ".join(names) or "-"

    view = table.sort("model", "horizon", "symbol").select(
        "model", pl.col("symbol").map_elements(coin_name, return_dtype=pl.String).alias("coin"), "horizon",
        pl.col("registered_version").alias("version"), "n_oos",
        pl.col("oos_ic").round(4), pl.format("[{}, {}]", pl.col("oos_ic_lo").round(4), pl.col("oos_ic_hi").round(4)).alias("ic_interval"),
        pl.col("hit_rate").round(4), pl.col("pnl_after_cost").round(4), pl.col("improved_wf_windows").alias("beat_ridge"),
        pl.col("entry_threshold").round(6), "passed",
        pl.col("gates").map_elements(failed, return_dtype=pl.String).alias("failed_gates"),
    )  # fmt: skip
    return markdown_table(view, max_rows=200)


@dg.asset(
    group_name=EVALUATION_GROUP,
    partitions_def=model_cutoffs,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[liquid_teacher, liquid_student],
    automation_condition=FOLLOW_RUNNING_CUTOFF,  # re-gated with its models (defs/conditions.py)
    kinds={"mlflow", "delta", "polars"},
    description="Every model of the partition (teacher, its ridge baseline, student) judged by the gates on its OOS "
    "walk-forward: IC interval, hit rate, after-cost PnL with earlier-window entry thresholds, windows beating the "
    "ridge, readiness, backbones. Rows in candidate_models; verdicts as MLflow tags; alias `candidate` on versions "
    "whose gates all passed.",
)
def candidate_models(
    context: dg.AssetExecutionContext, config: CandidateRunConfig, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    tables, info = [], {}
    for key in context.partition_keys:
        table, info = evaluate_partition(context, key, config, mlflow)
        tables.append(table)
    table = pl.concat(tables) if tables else pl.DataFrame(schema=CANDIDATE_SCHEMA)
    registered = table.filter(pl.col("registered_version") != "")
    metadata = {
        "candidates": markdown_table(pl.DataFrame()) if table.height == 0 else candidates_markdown(table),
        "n_candidates": dg.MetadataValue.int(table.height),
        "n_passed": dg.MetadataValue.int(int(table["passed"].sum() or 0)),
        "n_registered": dg.MetadataValue.int(registered.height),
        "candidate_alias_set_on": dg.MetadataValue.json(info.get("aliased", [])),
        "gate_config": dg.MetadataValue.json(info.get("gate_config", {})),
        "gates": dg.MetadataValue.json(list(GATES)),
        "trained_models": dg.MetadataValue.json(info.get("trained", [])),
        "teacher_folds": dg.MetadataValue.int(int(info.get("n_folds", 0))),
        "lake_version": dg.MetadataValue.int(int(info.get("lake_version", -1))),
    }
    if len(context.partition_keys) > 1:
        metadata["partitions"] = f"{context.partition_keys[0]} .. {context.partition_keys[-1]}"
    return dg.MaterializeResult(metadata=metadata)
