#!/usr/bin/env bash
# Runs once, on the first start of an empty data volume (the postgres image's initdb hook):
# MLflow's tracking store gets its own database beside Dagster's, owned by the same role.
set -euo pipefail
: "${MLFLOW_DB:?MLFLOW_DB must name the MLflow database}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v db="$MLFLOW_DB" -v owner="$POSTGRES_USER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
