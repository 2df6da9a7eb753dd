"""docker/dagster.yaml and the Kubernetes instance ConfigMap load as Dagster instance config
(Dagster's own schema, env vars resolved), their launchers accept their config, and the compose
instance starts for real on Postgres."""

from __future__ import annotations

import shutil

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes import class_from_code_pointer

from quant_assets_tests.deploy.conftest import DOCKER, K8S

PG_ENV = {"DAGSTER_PG_HOST": "postgres", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "quant",
          "DAGSTER_PG_PASSWORD": "pw-from-env", "DAGSTER_PG_DB": "dagster"}  # fmt: skip


def load(path, tmp_path, monkeypatch, env=PG_ENV) -> dict:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copyfile(path, home / "dagster.yaml")
    config, custom = dagster_instance_config(str(home))
    assert custom is None
    return config


def check_class(entry: dict):
    cls = class_from_code_pointer(entry["module"], entry["class"])
    result = process_config(cls.config_type(), entry.get("config", {}))
    assert result.success, [e.message for e in result.errors]
    return cls, result.value


@pytest.mark.parametrize(
    "path", [DOCKER / "dagster.yaml", K8S / "base" / "dagster.yaml"], ids=["docker", "k8s"]
)
def test_instance_files_are_valid_dagster_config(path, tmp_path, monkeypatch):
    config = load(path, tmp_path, monkeypatch)
    pg = config["storage"]["postgres"]["postgres_db"]
    assert pg["password"] == {"env": "DAGSTER_PG_PASSWORD"}  # an env reference, never a literal
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    assert config["run_monitoring"]["enabled"] is True
    _, coordinator = check_class(config["run_coordinator"])
    assert coordinator["dequeue_interval_seconds"] == 5
    cls, launcher = check_class(config["run_launcher"])
    expected = "DockerRunLauncher" if "docker" in str(path.parent.name) else "K8sRunLauncher"
    assert cls.__name__ == expected
    # a misspelt launcher field is refused by the same check
    broken = {**config["run_launcher"], "config": {**config["run_launcher"]["config"], "netwrok": "x"}}
    with pytest.raises(AssertionError, match="netwrok"):
        check_class(broken)


def test_a_conflicting_instance_file_is_refused(tmp_path, monkeypatch):
    """`concurrency.runs` and a run-coordinator max_concurrent_runs together: Dagster refuses it."""
    doc = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    doc["run_coordinator"]["config"]["max_concurrent_runs"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(Exception, match="max_concurrent_runs"):
        load(bad, tmp_path, monkeypatch)


@pytest.mark.postgres
def test_compose_instance_starts_on_postgres(postgres_db, tmp_path, monkeypatch):
    """The compose instance for real: Postgres storage from the env, DockerRunLauncher (it
    connects to the Docker engine only when launching), the gpu pool's limit of 1."""
    from dagster import DagsterInstance
    from dagster_docker import DockerRunLauncher
    from dagster_postgres import PostgresRunStorage

    load(DOCKER / "dagster.yaml", tmp_path, monkeypatch, env=postgres_db)
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.run_launcher, DockerRunLauncher)
        assert instance.run_launcher.networks == ["quant_assets_network"]
        assert instance.run_launcher.container_kwargs["volumes"] == ["quant_assets_lake:/opt/dagster/lake"]
        assert "QUANT_ASSETS_LAKE_STORAGE_OPTIONS" in instance.run_launcher.env_vars
        settings = instance.get_concurrency_config()
        assert settings.pool_config.default_pool_limit == 1
        assert settings.run_queue_config.max_concurrent_runs == 4
        assert instance.run_monitoring_enabled
        assert instance.get_runs_count() == 0
