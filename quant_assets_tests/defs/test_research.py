"""The research layer through Dagster on a small simulated lake with text effects planted.

The lake holds real Delta tables written from the market simulator (signal strength 3, only the news and
social sentiment effects planted): the raw event tables for January to March 2024, funding settlements,
and a `feature_matrix_main` built by the feature layer's own functions on an hourly clock (decisions on
the hour: 12x fewer rows than the 5m clock, the same columns; see sources/test_synthetic_null.py) for
February and March, forward returns from the full 5m clock. Each table's Delta version is recorded in the
Dagster instance as a materialisation, as the raw and feature layers record theirs.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from quant_assets import lake
from quant_assets.backtest.costs import DEFAULT_COSTS
from quant_assets.defs.layers import LAYER_BY_NAME
from quant_assets.defs.models.tables import MODEL_PREDICTIONS, read_partition
from quant_assets.defs.models.tracking import MlflowTracking
from quant_assets.defs.research.assets import multimodal_candidate, multimodal_eval, research_assets, vc_model
from quant_assets.defs.research.tables import read_ablations
from quant_assets.features.keys import LABEL_COST_MULTIPLIER, LABEL_KEYS, REQUIRED_LOOKBACK
from quant_assets.features.market_latent import market_latent
from quant_assets.features.matrix import feature_matrix, labels
from quant_assets.features.snapshots import feature_snapshots
from quant_assets.features.social import social_text_latent
from quant_assets.partitions import model_cutoffs
from quant_assets.sources.synthetic import MarketSimulator
from quant_assets.universe import HORIZONS

MARCH = "2024-03-01"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")  # the matrix's coins (registrations cost ~0.3 s each)
CUTOFF = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
APRIL = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
RAW = ("events", "event_links", "entities", "funding_rates", "market_bars", "prices", "orderbook_l2",
       "onchain_signals", "derivatives_metrics")  # fmt: skip
RUN_CONFIG = {"ops": {
    "vc_model": {"config": {}},
    "multimodal_candidate": {"config": {"window": {"kind": "production", "lookback_days": 29}}},
    "multimodal_eval": {"config": {"n_wf_folds": 3, "n_kfold": 4, "n_boot": 400}},
}}  # fmt: skip


def _hourly_matrix(raw: dict[str, pl.DataFrame]) -> pl.DataFrame:
    lz = {k: v.lazy() for k, v in raw.items()}
    snaps = feature_snapshots(lz["market_bars"], lz["prices"]).collect()
    fwd = labels(snaps.lazy().with_columns(cost_depth_notional=pl.lit(None, pl.Float64)), DEFAULT_COSTS)
    m = feature_matrix(
        snaps.filter(pl.col("ts").dt.minute() == 55).lazy(),
        social_text_latent(lz["events"], lz["event_links"]),
        market_latent(lz["market_bars"], lz["prices"]),
        lz["orderbook_l2"], lz["funding_rates"], lz["onchain_signals"], lz["derivatives_metrics"],
        lz["events"], lz["event_links"],
    ).collect()  # fmt: skip
    fwd = fwd.select("symbol", "ts", "fwd_ret_1h", "fwd_ret_4h").collect()
    # the labels as the matrix defines them (features/matrix.labels), on the 5m clock's returns
    return (
        m.drop("fwd_ret_1h", "fwd_ret_4h", *LABEL_KEYS)
        .join(fwd, on=["symbol", "ts"], how="left")
        .with_columns(
            (pl.col(f"fwd_ret_{h}") - LABEL_COST_MULTIPLIER[h] * pl.col("est_cost")).alias(f"label_{h}")
            for h in HORIZONS
        )
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("research")
    sim = MarketSimulator(seed=4, signal_strength=3.0, effects=["news_sentiment", "social_sentiment"])
    raw = sim.fetch(list(RAW), dt.date(2024, 2, 1) - REQUIRED_LOOKBACK, dt.date(2024, 4, 2), FAR)
    events = sim.fetch(["events", "event_links", "entities"], dt.date(2024, 1, 1), dt.date(2024, 4, 1), FAR)
    matrix = _hourly_matrix(raw).filter(pl.col("date") >= dt.date(2024, 2, 1), pl.col("date") < dt.date(2024, 4, 1),
                                        pl.col("symbol").is_in(SYMBOLS))  # fmt: skip
    tables = {**events, "funding_rates": raw["funding_rates"], "feature_matrix_main": matrix}
    return d, tables


@pytest.fixture
def env(base, isolated_lake, tmp_path):
    """A lake with the tables written and recorded, a file-backed instance and an MLflow store."""
    _, tables = base
    (tmp_path / "instance").mkdir()
    inst = dg.DagsterInstance.local_temp(str(tmp_path / "instance"))
    for name, df in tables.items():
        lake.write_window(name, df, df["date"].min(), df["date"].max() + dt.timedelta(days=1))
        inst.report_runless_asset_event(
            dg.AssetMaterialization(name, metadata={"delta_version": lake.version(name)})
        )
    yield (
        inst,
        MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art")
        ),
    )
    inst.dispose()


def test_a_research_partition_trains_on_the_past_predicts_its_month_and_finds_the_planted_text_effect(env):
    inst, mlflow = env
    res = dg.materialize(research_assets, instance=inst, partition_key=MARCH, run_config=RUN_CONFIG,
                         resources={"mlflow": mlflow})  # fmt: skip
    meta = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in res.get_asset_materialization_events()}  # fmt: skip
    assert set(meta) == {"vc_model", "multimodal_candidate", "multimodal_eval"}

    # vc_model: events before the cut-off only, and a clearly informative model on March's events
    vc = meta["vc_model"]
    last_train = dt.datetime.fromisoformat(vc["training_available_at"].split(" .. ")[1])
    assert last_train < CUTOFF and vc["training_events"] > 300 and vc["oos_events"] > 100
    assert vc["oos_auc_student"] > 0.95 and vc["oos_auc_teacher"] > 0.6, vc
    # the labels make the student better calibrated than its linear teacher
    assert 0 <= vc["oos_ece_student"] < min(0.1, vc["oos_ece_teacher"]), vc
    client = mlflow.client()
    [v] = client.search_model_versions("name = 'vc_model'")
    assert v.tags["partition"] == MARCH

    # candidates: every March row predicted, per model and horizon, registered per coin
    preds = read_partition(MODEL_PREDICTIONS, CUTOFF)
    march = (
        lake.read("feature_matrix_main", "2024-03-01", "2024-04-01")
        .select("symbol", "ts")
        .sort("symbol", "ts")
    )
    for model in ("multimodal_single_ridge", "multimodal_residual_gate"):
        for h in ("1h", "4h"):
            keys = preds.filter(model=model, horizon=h).select("symbol", "ts").sort("symbol", "ts")
            assert keys.equals(march), (model, h)
    assert preds["prediction"].is_finite().all() and preds["ts"].min() >= CUTOFF and preds["ts"].max() < APRIL
    names = {m.name for m in client.search_registered_models()}
    assert {"multimodal_residual_gate_BTC_1h", "multimodal_single_ridge_XRP_4h", "vc_model"} <= names
    cand = meta["multimodal_candidate"]
    assert cand["table_versions"] == {"feature_matrix_main": lake.version("feature_matrix_main"),
                                      "funding_rates": lake.version("funding_rates")}  # fmt: skip

    # eval: 2 candidates x 2 horizons x 2 schemes x 4 ablations, the planted text shows, macro does not matter
    abl = read_ablations(CUTOFF)
    assert abl.height == 32 and abl["version"].n_unique() == 1
    wf_1h = abl.filter(scheme="walk_forward", horizon="1h")
    for model in ("multimodal_single_ridge", "multimodal_residual_gate"):
        no_text = wf_1h.filter(model=model, ablation="no_text").row(0, named=True)
        assert no_text["delta_ic"] < -0.03 and no_text["delta_ic_high"] < 0, no_text
        no_macro = wf_1h.filter(model=model, ablation="no_macro").row(0, named=True)
        assert no_macro["delta_ic_low"] <= 0 <= no_macro["delta_ic_high"], no_macro
    assert (
        abl.filter(ablation="full")["pnl"].is_finite().all()
        and abl.filter(ablation="full")["delta_ic"].is_null().all()
    )
    ev = meta["multimodal_eval"]
    assert "delta_ic_no_text_vs_full" in ev and "![plot](data:image/png;base64," in ev["ablation_plot"]
    [check] = res.get_asset_check_evaluations()
    assert check.check_name == "multimodal_text_helps" and check.passed, check.metadata


def test_the_eval_needs_its_candidate_and_the_layer_is_wired_on_model_cutoffs(env):
    inst, mlflow = env
    res = dg.materialize(research_assets, selection=[multimodal_eval], instance=inst, partition_key=MARCH,
                         run_config={"ops": {"multimodal_eval": RUN_CONFIG["ops"]["multimodal_eval"]}},
                         resources={"mlflow": mlflow}, raise_on_error=False)  # fmt: skip
    assert not res.success
    [failure] = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "multimodal_candidate has no materialisation" in str(failure.event_specific_data.error)
    layer = LAYER_BY_NAME["research"]
    assert layer.group == "research" and layer.partitions_def is model_cutoffs
    assert {a.key.to_user_string() for a in layer.assets} == {
        "vc_model",
        "multimodal_candidate",
        "multimodal_eval",
    }
    assert vc_model.partitions_def is model_cutoffs and multimodal_candidate.partitions_def is model_cutoffs
