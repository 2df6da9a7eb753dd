"""The champions in the MLflow registry, and scoring feature rows with one.

A champion is the model version under the alias `champion` of a registered model
`liquid_{COIN}_{h}_{kind}` (one per coin and horizon: promotion moves the alias). Its version carries
the model partition (`partition` tag: the training cut-off, e.g. "2024-03-01") and the paper-trading
thresholds calibrated on the candidate's OOS predictions (`entry_threshold`, `confidence_min` tags;
the `candidate_models` row of that version when the tags are missing).

Models load from the registry in their safe formats only: the teacher's LightGBM text model
(`ml.teacher.load_fit`), the student's state_dict read with weights_only (`ml.train_student`).
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from quant_assets import lake
from quant_assets.defs.evaluation.tables import CANDIDATE_MODELS
from quant_assets.defs.models.tracking import MlflowTracking, registered_name
from quant_assets.ml.training_frame import STEP
from quant_assets.universe import HORIZONS

CHAMPION = "champion"
TRADABLE_KINDS = ("teacher", "student")
MODEL_OF_KIND = {"teacher": "liquid_teacher", "student": "liquid_student"}


@dataclass(frozen=True)
class Champion:
    registered_name: str
    version: str
    kind: str  # teacher | student
    symbol: str
    horizon: str
    partition: str  # model partition key = the training cut-off's date
    source: str  # artifact URI of the model files
    entry_threshold: float  # NaN when neither the version nor candidate_models has one
    confidence_min: float
    gates_passed: bool = False  # the version's `gates_passed` tag (candidate_models' verdict) is "true"

    @property
    def model(self) -> str:
        return MODEL_OF_KIND.get(self.kind, self.kind)

    @property
    def cutoff(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.partition).replace(tzinfo=dt.UTC)

    @property
    def month_end(self) -> dt.date:
        """End (exclusive) of the month the model was trained to predict."""
        c = self.cutoff.date()
        return dt.date(c.year + c.month // 12, c.month % 12 + 1, 1)

    @property
    def calibrated(self) -> bool:
        return math.isfinite(self.entry_threshold) and math.isfinite(self.confidence_min)


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _candidate_thresholds(name: str, version: str) -> tuple[float, float]:
    if not lake.exists(CANDIDATE_MODELS):
        return math.nan, math.nan
    row = (
        lake.scan(CANDIDATE_MODELS)
        .filter((pl.col("registered_name") == name) & (pl.col("registered_version") == version))
        .select("entry_threshold", "confidence_min", "evaluated_at")
        .sort("evaluated_at")
        .collect()
    )
    if row.height == 0:
        return math.nan, math.nan
    return _float(row["entry_threshold"][-1]), _float(row["confidence_min"][-1])


def _champion(client, rm, version: str) -> Champion:
    mv = client.get_model_version(rm.name, version)
    tags, rtags = mv.tags or {}, rm.tags or {}
    kind, symbol, horizon = rtags.get("kind"), rtags.get("symbol"), rtags.get("horizon")
    if not (kind and symbol and horizon) or registered_name(kind, symbol, horizon) != rm.name:
        raise ValueError(f"registered model {rm.name!r}: tags kind/symbol/horizon {rtags} do not name it")
    entry, conf = _float(tags.get("entry_threshold")), _float(tags.get("confidence_min"))
    if not (math.isfinite(entry) and math.isfinite(conf)):
        entry, conf = _candidate_thresholds(rm.name, str(mv.version))
    return Champion(rm.name, str(mv.version), kind, symbol, horizon, tags.get("partition", ""), mv.source,
                    entry, conf, tags.get("gates_passed") == "true")  # fmt: skip


def model_version(mlflow: MlflowTracking, name: str, version: str) -> Champion:
    """One registered version read as a champion (monitoring: the version a day was traded with)."""
    client = mlflow.client()
    return _champion(client, client.get_registered_model(name), version)


def find_champions(mlflow: MlflowTracking) -> list[Champion]:
    """Every registered model's `champion` version, in (symbol, horizon) order.

    Two champions of one coin and horizon (two kinds) break the one-champion contract promotion keeps:
    an error naming both, rather than trading one of them by chance."""
    client = mlflow.client()
    found: list[Champion] = []
    token = None
    while True:
        page = client.search_registered_models(filter_string="name LIKE 'liquid_%'", max_results=100,
                                               page_token=token)  # fmt: skip
        for rm in page:
            aliases = rm.aliases or {}
            if CHAMPION in aliases:
                found.append(_champion(client, rm, str(aliases[CHAMPION])))
        token = page.token
        if not token:
            break
    by_book: dict[tuple[str, str], Champion] = {}
    for c in found:
        other = by_book.get((c.symbol, c.horizon))
        if other is not None:
            raise ValueError(
                f"two champions for {c.symbol} {c.horizon}: {other.registered_name} v{other.version} and "
                f"{c.registered_name} v{c.version}; promotion keeps one per coin and horizon: roll one back"
            )
        by_book[(c.symbol, c.horizon)] = c
    return [by_book[k] for k in sorted(by_book)]


def download(mlflow: MlflowTracking, champion: Champion, dst: str | Path) -> Path:
    """The champion's model directory, downloaded from its artifact URI into `dst`."""
    import mlflow as mlflow_lib

    return Path(mlflow_lib.artifacts.download_artifacts(
        artifact_uri=champion.source, dst_path=str(dst), tracking_uri=mlflow.resolved_uri()))  # fmt: skip


def student_lead(model_dir: Path) -> dt.timedelta:
    """How far before the first scored row a student needs feature rows (its look-back window)."""
    import json

    manifest = json.loads((model_dir / "student.json").read_text())
    return STEP * (int(manifest["model_config"]["input_len"]) + 1)


def feature_columns(champion: Champion, model_dir: Path) -> list[str]:
    """The feature columns the model reads (its own record of them: the teacher's ridge keys and scale
    column, the student's manifest)."""
    if champion.kind == "teacher":
        from quant_assets.ml.teacher import load_fit

        fit = load_fit(model_dir)
        # the scale column (vol_288) is usually a feature too: each column once, or the select fails
        return list(
            dict.fromkeys([*fit.ridge.feature_keys, *([fit.scale_column] if fit.scale_column else [])])
        )
    import json

    return list(json.loads((model_dir / "student.json").read_text())["feature_names"])


def score(champion: Champion, model_dir: Path, rows: pl.DataFrame, start: dt.datetime) -> pl.DataFrame:
    """ts, prediction of the champion's coin for rows with ts >= start (earlier rows are a student's
    look-back only: inputs, never scored)."""
    rows = rows.filter(pl.col("symbol") == champion.symbol).sort("ts")
    if champion.kind == "teacher":
        from quant_assets.ml.teacher import load_fit, predict

        out = predict({champion.symbol: load_fit(model_dir)}, rows).select("ts", "prediction")
    elif champion.kind == "student":
        from quant_assets.ml.train_student import StudentInputs, predict

        names = feature_columns(champion, model_dir)
        # labels only give the inputs their shape (predict never reads them): zeros, not the future
        inputs = StudentInputs(symbol=rows["symbol"].to_numpy().astype(str), ts_ms=rows["ts"].dt.epoch("ms").to_numpy(),
                               x=rows.select(names).to_numpy().astype("float32"), feature_names=tuple(names),
                               y=np.zeros((rows.height, len(HORIZONS)), dtype="float32"),
                               label_names=tuple(f"label_{h}" for h in HORIZONS), teacher=None)  # fmt: skip
        pred = predict(model_dir, inputs) if rows.height else None
        j = list(HORIZONS).index(champion.horizon)
        out = rows.select("ts").with_columns(
            prediction=pl.Series(pred[:, j] if pred is not None else [], dtype=pl.Float64).fill_nan(None)
        )
    else:
        raise ValueError(f"champion {champion.registered_name}: kind {champion.kind!r} cannot be traded "
                         f"(tradable: {TRADABLE_KINDS})")  # fmt: skip
    return out.filter(pl.col("ts") >= start)


def top_features(mlflow: MlflowTracking, champion: Champion, k: int) -> list[str]:
    """The k features of largest gain of the teacher of the champion's coin, horizon and partition (the
    champion itself when it is a teacher); [] when that teacher is not registered."""
    from quant_assets.ml.teacher import IMPORTANCE_FILE

    source = champion.source
    if champion.kind != "teacher":
        client = mlflow.client()
        name = registered_name("teacher", champion.symbol, champion.horizon)
        versions = [v for v in client.search_model_versions(f"name='{name}'")
                    if (v.tags or {}).get("partition") == champion.partition]  # fmt: skip
        if not versions:
            return []
        source = max(versions, key=lambda v: int(v.version)).source
    import mlflow as mlflow_lib

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow_lib.artifacts.download_artifacts(
            artifact_uri=f"{source.rstrip('/')}/{IMPORTANCE_FILE}", dst_path=tmp,
            tracking_uri=mlflow.resolved_uri())  # fmt: skip
        imp = pl.read_parquet(path)
    return imp.sort("gain", "feature", descending=[True, False]).head(k)["feature"].to_list()
