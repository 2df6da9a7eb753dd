"""Shared fixtures: every test gets its own empty lake; Postgres when a server answers."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

PG_HOST, PG_PORT = (
    os.environ.get("QA_TEST_PG_HOST", "127.0.0.1"),
    int(os.environ.get("QA_TEST_PG_PORT", "5432")),
)


@pytest.fixture(autouse=True)
def isolated_lake(tmp_path, monkeypatch):
    """A fresh lake root per test, so no test reads another's tables (or the user's .lake)."""
    root = tmp_path / "lake"
    monkeypatch.setenv("QUANT_ASSETS_LAKE", str(root))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return root


def _postgres_answers() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def postgres_db():
    """A throw-away database on the local server; skipped without one, except under CI=true."""
    if not _postgres_answers():
        reason = f"no PostgreSQL server answers on {PG_HOST}:{PG_PORT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}, and CI=true requires one")
        pytest.skip(reason)
    import psycopg2

    name = f"qa_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "DAGSTER_PG_HOST": PG_HOST,
            "DAGSTER_PG_PORT": str(PG_PORT),
            "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": name,
        }
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
