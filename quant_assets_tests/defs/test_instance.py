"""The Dagster instance: SQLite by default, Postgres when DAGSTER_PG_* are set."""

import os

import dagster as dg
import pytest

from quant_assets import instance
from quant_assets.defs.audit.assets import required_data_readiness


def test_default_home_uses_sqlite(tmp_path):
    home = instance.prepare_home(tmp_path / "home", env={})
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert "Sqlite" in type(inst.run_storage).__name__


@pytest.mark.postgres
def test_materialisation_is_recorded_in_postgres_and_read_back(tmp_path, postgres_db, monkeypatch):
    for k, v in postgres_db.items():
        monkeypatch.setenv(k, v)
    home = instance.prepare_home(tmp_path / "home", env=dict(os.environ))
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert "Postgres" in type(inst.run_storage).__name__
        res = dg.materialize(
            [required_data_readiness],
            instance=inst,
            run_config={"ops": {"required_data_readiness": {"config": {"window_days": 1}}}},
        )
        assert res.success
        run_id = res.run_id
    # A second, independent instance reads the run and the materialisation back from the server.
    with dg.DagsterInstance.from_config(str(home)) as fresh:
        run = fresh.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        event = fresh.get_latest_materialization_event(dg.AssetKey("required_data_readiness"))
        assert event.run_id == run_id
        assert event.asset_materialization.metadata["ready"].value is False  # the lake is empty
