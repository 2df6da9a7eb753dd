"""Safe defaults: typed values are checked before a path or a query, secrets stay in the environment,
servers bind 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from quant_assets import instance, lake, safe_inputs
from quant_assets.defs.models.tracking import MlflowTracking, registered_name
from quant_assets.partitions import monthly
from quant_assets.resources import default_resources
from quant_assets.universe import SYMBOLS

REPO = Path(__file__).resolve().parents[1]
BARS = pl.DataFrame({"date": [dt.date(2024, 3, 1)], "x": [1.0]})


@pytest.mark.parametrize(
    "name", ["../escape", "a/b", "/abs", "Bars", "bars; DROP", "", "..", "x'y", "bars\n"]
)
def test_a_table_name_that_is_not_an_identifier_is_refused_before_any_file_is_written(isolated_lake, name):
    with pytest.raises(ValueError, match=re.escape(f"lake table name {name!r} is not allowed")):
        lake.write_window(name, BARS, "2024-03-01", "2024-04-01")
    with pytest.raises(ValueError, match="is not allowed"):
        lake.scan(name)
    assert not (isolated_lake.parent / "escape").exists() and not Path("/abs").exists()
    assert not isolated_lake.exists() or list(isolated_lake.iterdir()) == []


def test_good_names_still_write_and_a_hand_made_directory_is_not_listed_as_a_table(isolated_lake):
    assert lake.write_window("market_bars", BARS, "2024-03-01", "2024-04-01") == 1
    (isolated_lake / "My Notes").mkdir()
    (isolated_lake / "My Notes" / "_delta_log").mkdir()  # looks like a table to a directory walk
    assert lake.tables() == ["market_bars"]
    assert lake.read("market_bars")["x"].to_list() == [1.0]


def test_symbols_are_checked_against_the_universe_and_normalised():
    assert safe_inputs.symbol("btc") == safe_inputs.symbol("BTCUSDT") == "BTCUSDT"
    assert safe_inputs.symbols(["eth", "BTC", "ETHUSDT"]) == ["ETHUSDT", "BTCUSDT"]
    with pytest.raises(ValueError, match=r"symbol 'PEPE' is not in the universe: one of BTCUSDT, ETHUSDT"):
        safe_inputs.symbol("PEPE")
    with pytest.raises(ValueError, match=re.escape("symbols ['../x', 'FOO'] are not in the universe")):
        safe_inputs.symbols(["btc", "../x", "FOO"])
    assert len(SYMBOLS) == 10


def test_registered_model_names_refuse_parts_that_would_change_a_registry_filter():
    assert registered_name("student", "BTCUSDT", "1h") == "liquid_BTC_1h_student"
    # these names go into `name LIKE '...%'` and `name='...'` filters: a quote would end the string
    with pytest.raises(ValueError, match=r"symbol \"BTC'USDT\" is not allowed"):
        registered_name("student", "BTC'USDT", "1h")
    with pytest.raises(ValueError, match="horizon '2h' is not one of 1h, 4h"):
        registered_name("student", "BTCUSDT", "2h")
    with pytest.raises(ValueError, match=r"model kind 'x%' is not allowed"):
        registered_name("x%", "BTCUSDT", "1h")


def test_month_keys_accept_the_month_and_name_what_is_wrong():
    keys = monthly.get_partition_keys()
    assert safe_inputs.month_key("2024-06", keys) == safe_inputs.month_key("2024-06-01", keys) == "2024-06-01"
    for bad in ("2024-6", "2024-06-15", "2024-13", "2024-06-01' OR '1'='1", "june", "../2024-06"):
        with pytest.raises(ValueError, match=re.escape(f"month {bad!r} is not a month")):
            safe_inputs.month_key(bad, keys)
    with pytest.raises(
        ValueError,
        match=r"month '2017-12' \(2017-12-01\) is not a partition: the partitions are 2018-01-01 \.\. ",
    ):
        safe_inputs.month_key("2017-12", keys)


def test_the_cli_refuses_a_bad_month_before_anything_runs(capsys, tmp_path, monkeypatch):
    from quant_assets import cli

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["backfill", "--start", "2024-06", "--end", "2024-6"])
    assert exit_.value.code == 2
    assert "month '2024-6' is not a month" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["backfill", "--start", "2024-06", "--end", "2024-01"])
    assert "--end 2024-01-01 is before --start 2024-06-01" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()  # refused before the instance was even prepared


def test_the_mlflow_uri_with_a_password_stays_an_env_var(monkeypatch):
    secret = "postgresql://mlflow:s3cret-pw@db.internal:5432/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret)
    tracking = default_resources()["mlflow"]
    assert (
        isinstance(tracking.tracking_uri, dg.EnvVar)
        and tracking.tracking_uri.env_var_name == "MLFLOW_TRACKING_URI"
    )
    assert "s3cret" not in repr(tracking.tracking_uri)
    assert tracking.resolved_uri() == secret  # used directly (the CLI) and ...
    with dg.build_resources({"mlflow": tracking}) as res:  # ... as a resource of a run
        assert res.mlflow.resolved_uri() == secret
    assert safe_inputs.redact_uri(secret) == "postgresql://mlflow:***@db.internal:5432/mlflow"
    assert safe_inputs.redact_uri("sqlite:///x/mlflow.db") == "sqlite:///x/mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_resources()["mlflow"].tracking_uri is None  # the embedded store, no env var needed
    assert isinstance(MlflowTracking(tracking_uri="sqlite:///a.db").resolved_uri(), str)


@pytest.mark.postgres
def test_the_postgres_password_is_written_as_an_env_reference_not_its_value(
    tmp_path, postgres_db, monkeypatch
):
    # the local test server trusts 127.0.0.1 and ignores the password; a real one would check it
    env = {**postgres_db, "DAGSTER_PG_PASSWORD": "s3cret-pw"}
    for k, v in env.items():  # prepare_home also opens the instance, which reads them from the environment
        monkeypatch.setenv(k, v)
    home = instance.prepare_home(tmp_path / "home", env=env)
    text = (home / "dagster.yaml").read_text()
    assert "s3cret-pw" not in text
    db = yaml.safe_load(text)["storage"]["postgres"]["postgres_db"]
    assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"} and db["hostname"] == {"env": "DAGSTER_PG_HOST"}
    with dg.DagsterInstance.from_config(str(home)) as inst:  # and the instance resolves it from there
        assert inst.run_storage.postgres_url.startswith("postgresql://postgres:s3cret-pw@")


def test_every_server_the_makefile_starts_binds_127_0_0_1(monkeypatch):
    # what make would run (-n prints without running), with the environment a user may have: zsh sets
    # HOST to the machine's name, which is why the variable is BIND_HOST
    monkeypatch.setenv("HOST", "some-machine")
    monkeypatch.delenv("BIND_HOST", raising=False)

    def commands(*targets: str) -> list[str]:
        out = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", *targets], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return [ln for ln in out.replace("\\\n", " ").splitlines()
                if re.search(r"dagster dev|dagster-webserver|mlflow (ui|server)", ln)]  # fmt: skip

    servers = commands("ui", "mlflow")
    assert len(servers) == 2, servers
    for ln in servers:
        assert re.search(r"(-h|--host)[ =]127\.0\.0\.1 ", ln), (
            f"Makefile server not on 127.0.0.1: {ln.strip()}"
        )
    # told otherwise, they follow
    assert all(" -h 0.0.0.0 " in ln for ln in commands("ui", "mlflow", "BIND_HOST=0.0.0.0"))


def test_a_maintenance_run_naming_a_path_for_a_table_fails_naming_it_and_touches_nothing(isolated_lake):
    from quant_assets.defs.maintenance.assets import lake_maintenance

    lake.write_window("market_bars", BARS, "2024-03-01", "2024-04-01")
    outside = isolated_lake.parent / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the lake's")
    config = {"ops": {"lake_maintenance": {"config": {"tables": ["market_bars", "../outside"]}}}}
    res = dg.materialize([lake_maintenance], run_config=config, raise_on_error=False)
    assert not res.success
    [failure] = [e for e in res.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "lake table name '../outside' is not allowed" in failure.step_failure_data.error.cause.message
    assert (outside / "keep.txt").read_text() == "not the lake's"


def test_a_partition_key_that_is_not_a_month_start_is_refused_before_the_lake_is_touched(isolated_lake):
    from quant_assets.defs.raw.assets import raw_tables

    # Dagster checks keys against the partitions definition; '2024-06' is the month a user means
    with pytest.raises(dg.DagsterUnknownPartitionError, match="2024-06"):
        dg.materialize(
            [raw_tables], partition_key="2024-06", selection=["market_bars"], resources=default_resources()
        )
    assert not isolated_lake.exists()
    assert (
        safe_inputs.month_key("2024-06", monthly.get_partition_keys()) == "2024-06-01"
    )  # what the CLI accepts
