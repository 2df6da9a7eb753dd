"""Prepare $DAGSTER_HOME: SQLite by default, Postgres when DAGSTER_PG_HOST is set.

Dagster reads one dagster.yaml from DAGSTER_HOME and cannot branch on the environment,
so the repo keeps both files and this picks one. Unset Postgres settings get defaults
(port 5432, user postgres, empty password, database postgres) so a trust-auth server works
with only DAGSTER_PG_HOST set.

    python -m quant_assets.instance      # prints which storage DAGSTER_HOME will use
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PG_DEFAULTS = {
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "postgres",
    "DAGSTER_PG_PASSWORD": "",
    "DAGSTER_PG_DB": "postgres",
}


def uses_postgres(env=os.environ) -> bool:
    return bool(env.get("DAGSTER_PG_HOST"))


def prepare_home(home: str | os.PathLike | None = None, env=os.environ) -> Path:
    """Write $DAGSTER_HOME/dagster.yaml for the chosen storage and return the home directory."""
    home = Path(home or env.get("DAGSTER_HOME") or REPO / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not uses_postgres(env):
        shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
        return home
    config = yaml.safe_load((REPO / "dagster-postgres.yaml").read_text())
    db = config["storage"]["postgres"]["postgres_db"]
    for field, ref in db.items():
        var = ref["env"]
        if var not in env:  # an unset setting becomes its default literal: yaml cannot default an env ref
            db[field] = int(PG_DEFAULTS[var]) if field == "port" else PG_DEFAULTS[var]
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def main() -> int:
    home = prepare_home()
    pg = {**PG_DEFAULTS, **os.environ}
    where = (
        f"postgres {pg['DAGSTER_PG_USER']}@{pg['DAGSTER_PG_HOST']}:{pg['DAGSTER_PG_PORT']}/{pg['DAGSTER_PG_DB']}"
        if uses_postgres()
        else f"sqlite under {home}"
    )
    print(f"DAGSTER_HOME={home} ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
