"""Promotion and rollback on a real SQLite MLflow registry and real Delta tables in a temp dir.

Candidate rows are written through CANDIDATE_SCHEMA the way the `candidate_models` asset writes them;
versions are registered through `MlflowTracking` as the model assets register theirs.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import polars as pl
import pytest

from quant_assets import lake
from quant_assets.defs.evaluation import promotion
from quant_assets.defs.evaluation.jobs import promote_model, rollback_model
from quant_assets.defs.evaluation.tables import CANDIDATE_SCHEMA, PROMOTIONS, replace_candidates
from quant_assets.defs.models.tracking import MlflowTracking

FEB, MAR = dt.datetime(2024, 2, 1, tzinfo=dt.UTC), dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
TEACHER, STUDENT = "liquid_BTC_1h_teacher", "liquid_BTC_1h_student"
GATE_NAMES = ("oos_ic_interval_above_zero", "hit_rate_above_half", "pnl_after_cost_positive")


def tracking(d) -> MlflowTracking:
    return MlflowTracking(tracking_uri=f"sqlite:///{d / 'mlflow.db'}", artifact_root=str(d / "art"))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One registry built once (creating a SQLite store costs seconds): BTC 1h teacher v1 (Feb) and
    v2 (Mar), BTC 1h student v1 (Mar), ETH 4h teacher v1 (Mar)."""
    d = tmp_path_factory.mktemp("registry")
    run = tracking(d).start_run("test")
    for kind, sym, h, part in (("teacher", "BTCUSDT", "1h", "2024-02-01"), ("teacher", "BTCUSDT", "1h", "2024-03-01"),
                               ("student", "BTCUSDT", "1h", "2024-03-01"), ("teacher", "ETHUSDT", "4h", "2024-03-01")):  # fmt: skip
        run.register(kind, sym, h, f"{kind}/{sym}_{h}", part)
    run.end()
    return d / "mlflow.db"


@pytest.fixture
def mlflow(template, tmp_path) -> MlflowTracking:
    shutil.copy(template, tmp_path / "mlflow.db")
    return tracking(tmp_path)


def candidate(kind: str, version: str, cutoff: dt.datetime, failed: tuple[str, ...] = (), symbol="BTCUSDT",
              horizon="1h", oos_ic=0.03) -> dict:  # fmt: skip
    gates = [{"name": g, "value": -0.01 if g in failed else 0.02, "threshold": 0.0, "passed": g not in failed,
              "reason": "interval [-0.030, 0.010] reaches zero" if g in failed else ""} for g in GATE_NAMES]  # fmt: skip
    return {
        "cutoff": cutoff, "model": f"liquid_{kind}", "kind": kind, "symbol": symbol, "horizon": horizon,
        "registered_name": f"liquid_{symbol[:-4]}_{horizon}_{kind}", "registered_version": version,
        "n_oos": 8000, "oos_ic": oos_ic, "oos_ic_lo": 0.01, "oos_ic_hi": 0.05, "oos_rank_ic": 0.025,
        "hit_rate": 0.52, "pnl_after_cost": 0.004, "max_drawdown": -0.01, "turnover_per_day": 3.0,
        "improved_wf_windows": 2, "entry_threshold": 0.001, "confidence_min": 0.5,
        "gates": json.dumps(gates), "passed": not failed, "evaluated_at": cutoff + dt.timedelta(days=35),
        "date": cutoff.date(),
    }  # fmt: skip


def write_candidates(*rows: dict) -> None:
    """As the candidate_models asset writes them: one replace per model partition (cut-off)."""
    df = pl.DataFrame(list(rows), schema=CANDIDATE_SCHEMA)
    for (cutoff,), part in df.group_by("cutoff"):
        replace_candidates(cutoff, part)


def aliases(mlflow: MlflowTracking, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in mlflow.client().get_registered_model(name).aliases.items()}


def run_job(job, mlflow, op: str, tags=None, **config):
    return job.execute_in_process(
        run_config={"ops": {op: {"config": config}}},
        resources={"mlflow": mlflow},
        instance=dg.DagsterInstance.ephemeral(),
        tags=tags,
        raise_on_error=False,
    )


def failure(res, op: str) -> str:
    assert not res.success
    return res.failure_data_for_node(op).user_failure_data.description


def test_promote_refuses_a_candidate_whose_gate_failed_and_names_the_gate(mlflow):
    write_candidates(candidate("teacher", "2", MAR, failed=("oos_ic_interval_above_zero",)))
    res = run_job(promote_model, mlflow, "promote", symbol="BTC", horizon="1h", why="try")
    msg = failure(res, "promote")
    assert (
        "liquid_BTC_1h_teacher v2" in msg and "oos_ic_interval_above_zero (value -0.01, threshold 0.0" in msg
    )
    assert "reaches zero" in msg and "hit_rate_above_half" not in msg  # only the failed gate is named
    assert aliases(mlflow, TEACHER) == {}
    assert not lake.exists(PROMOTIONS)  # a refusal records nothing
    # naming the version explicitly does not get around the verdict either
    res = run_job(promote_model, mlflow, "promote", symbol="BTCUSDT", horizon="1h", kind="teacher", version="2",
                  why="try")  # fmt: skip
    assert "oos_ic_interval_above_zero" in failure(res, "promote")


def test_promote_sets_champion_and_the_old_champion_becomes_previous(mlflow):
    write_candidates(candidate("teacher", "1", FEB), candidate("teacher", "2", MAR))
    first = promotion.promote(mlflow.client(), "BTC", "1h", cutoff="2024-02-01", who="ana", why="first")
    assert (first.champion, first.replaced) == (promotion.ModelRef(TEACHER, "1"), None)
    assert aliases(mlflow, TEACHER) == {"champion": "1"}

    res = run_job(promote_model, mlflow, "promote", tags={"user": "bo"}, symbol="btcusdt", horizon="1h",
                  why="March passed")  # fmt: skip
    assert res.success
    assert aliases(mlflow, TEACHER) == {"champion": "2", "previous": "1"}
    rows = promotion.read_promotions()
    assert rows.select("action", "registered_name", "version", "replaced_version", "who", "why").rows() == [
        ("promote", TEACHER, "1", "", "ana", "first"),
        ("promote", TEACHER, "2", "1", "bo", "March passed"),
    ]
    assert rows["cutoff"].to_list() == [FEB, MAR] and rows["dagster_run_id"][1] == res.run_id
    # promoting the champion again is refused, not recorded twice
    res = run_job(promote_model, mlflow, "promote", symbol="BTC", horizon="1h", why="again")
    assert "already the champion" in failure(res, "promote")
    assert promotion.read_promotions().height == 2


def test_one_champion_per_coin_and_horizon_across_kinds(mlflow):
    write_candidates(candidate("teacher", "2", MAR, oos_ic=0.04), candidate("student", "1", MAR, oos_ic=0.02))
    c = mlflow.client()
    promotion.promote(c, "BTC", "1h", who="ana", why="best IC")  # no kind: the passed one with the best IC
    assert aliases(mlflow, TEACHER) == {"champion": "2"} and aliases(mlflow, STUDENT) == {}
    change = promotion.promote(c, "BTC", "1h", kind="student", who="ana", why="student")
    assert aliases(mlflow, TEACHER) == {"previous": "2"} and aliases(mlflow, STUDENT) == {"champion": "1"}
    assert change.row["replaced_version"] == "liquid_BTC_1h_teacher/2"
    assert [ch["registered_name"] for ch in promotion.all_champions(c)] == [STUDENT]
    assert aliases(mlflow, "liquid_ETH_4h_teacher") == {}  # other coins and horizons untouched


def test_rollback_restores_previous_and_refuses_when_there_is_none(mlflow):
    write_candidates(candidate("teacher", "1", FEB), candidate("student", "1", MAR))
    c = mlflow.client()
    promotion.promote(c, "BTC", "1h", cutoff="2024-02-01", who="ana", why="feb")
    promotion.promote(c, "BTC", "1h", who="ana", why="student")
    res = run_job(rollback_model, mlflow, "rollback", symbol="BTC", horizon="1h", why="paper PnL fell")
    assert res.success
    assert aliases(mlflow, TEACHER) == {"champion": "1"} and aliases(mlflow, STUDENT) == {}
    last = promotion.read_promotions().row(-1, named=True)
    assert (last["action"], last["registered_name"], last["version"], last["replaced_version"]) == (
        "rollback",
        TEACHER,
        "1",
        "liquid_BTC_1h_student/1",
    )
    assert last["cutoff"] == FEB and last["why"] == "paper PnL fell"  # fmt: skip
    res = run_job(rollback_model, mlflow, "rollback", symbol="BTC", horizon="1h", why="again")
    assert "no `previous` model" in failure(res, "rollback")
    assert promotion.read_promotions()["action"].to_list() == ["promote", "promote", "rollback"]


def test_without_a_candidate_row_only_the_candidate_alias_promotes(mlflow):
    c = mlflow.client()
    with pytest.raises(promotion.PromotionRefused, match="no candidate"):
        promotion.promote(c, "ETH", "4h", who="ana", why="x")
    with pytest.raises(promotion.PromotionRefused, match="no candidate_models row and no `candidate` alias"):
        promotion.promote(c, "ETH", "4h", kind="teacher", version="1", who="ana", why="x")
    c.set_registered_model_alias("liquid_ETH_4h_teacher", "candidate", "1")
    change = promotion.promote(c, "ETH", "4h", who="ana", why="gates set the alias")
    assert change.champion == promotion.ModelRef("liquid_ETH_4h_teacher", "1")
    assert change.row["cutoff"] == MAR  # from the version's `partition` tag
    write_candidates(candidate("teacher", "9", MAR))  # a passed row of a version never registered
    with pytest.raises(
        promotion.PromotionRefused, match="liquid_BTC_1h_teacher/9 is not in the MLflow registry"
    ):
        promotion.promote(c, "BTC", "1h", who="ana", why="x")


def test_bad_symbol_or_horizon_fails_before_mlflow_or_the_lake(tmp_path):
    store = tmp_path / "untouched"
    mlflow = tracking(store)
    for sym, h, text in (("XYZ", "1h", "symbol 'XYZ' is not in the universe"), ("BTC", "2h", "horizon '2h'")):
        res = run_job(promote_model, mlflow, "promote", symbol=sym, horizon=h, why="x")
        assert text in failure(res, "promote")
        res = run_job(rollback_model, mlflow, "rollback", symbol=sym, horizon=h, why="x")
        assert text in failure(res, "rollback")
    assert not store.exists() and not lake.exists(PROMOTIONS)
    assert [promotion.resolve_symbol(s) for s in ("btc", "BTC", "BTCUSDT", " dogeusdt ")] == [
        "BTCUSDT", "BTCUSDT", "BTCUSDT", "DOGEUSDT"]  # fmt: skip
