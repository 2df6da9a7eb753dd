"""Postgres for real: Dagster's instance and MLflow's tracking store on a server this test starts and restarts.

The server is the test's own (`initdb` + `pg_ctl` in a temporary directory, 127.0.0.1 and a free port,
trust auth), not the shared one on 5432: stopping and restarting it is the point. One raw month is
materialised through Dagster and one MLflow run registers a model version; after `pg_ctl stop` and
`pg_ctl start` the runs, the materialisations and the registered model are read back.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from quant_assets import instance
from quant_assets.defs.models.tracking import MlflowTracking, registered_name
from quant_assets.defs.raw.assets import raw_tables
from quant_assets.ml.launch import free_loopback_port
from quant_assets.resources import default_resources

MARCH = "2024-03-01"


def _fail_or_skip(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}, and CI=true requires the Postgres restart test to run")
    pytest.skip(reason)


def _bindir() -> Path | None:
    """Where initdb and pg_ctl are: `pg_config --bindir` first (Debian puts them in a versioned dir)."""
    candidates = []
    if shutil.which("pg_config"):
        r = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(r.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for d in map(Path, filter(None, candidates)):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


@dataclass
class PgServer:
    bindir: Path
    data: Path
    port: int
    user_prefix: list[str]  # `runuser -u postgres --` when the test runs as root (initdb refuses root)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*self.user_prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        if check and r.returncode != 0:
            log = (self.data.parent / "server.log").read_text()[-2000:]
            raise AssertionError(f"pg_ctl {' '.join(args)} failed: {r.stdout}{r.stderr}\n{log}")
        return r

    def start(self) -> None:
        # only 127.0.0.1, the socket in the test's directory (not /var/run/postgresql, maybe not ours)
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.data.parent}"
        self.ctl("start", "-o", opts, "-l", str(self.data.parent / "server.log"))

    def stop(self, mode: str = "fast") -> None:
        self.ctl("stop", "-m", mode)

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def uri(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"


@pytest.fixture
def pg_server():
    bindir = _bindir()
    if bindir is None:
        _fail_or_skip("no initdb/pg_ctl (pg_config --bindir, /usr/lib/postgresql/*/bin): "
                      "apt-get install postgresql")  # fmt: skip
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb and pg_ctl refuse to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _fail_or_skip("running as root and there is no `postgres` user to run initdb as")
        prefix = ["runuser", "-u", "postgres", "--"]
    top = Path(tempfile.mkdtemp(prefix="qa_pg_"))  # not pytest's tmp_path: its parents are root-only
    server = PgServer(bindir, top / "data", free_loopback_port(), prefix)
    try:
        if owner is not None:
            os.chown(top, owner.pw_uid, owner.pw_gid)
        r = subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(server.data), "-U", "postgres", "-A", "trust",
                            "-E", "UTF8", "--no-sync", "--no-instructions"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, f"initdb failed: {r.stdout}{r.stderr}"
        server.start()
        yield server
    finally:
        if server.pid() is not None and server.ctl("stop", "-m", "immediate", check=False).returncode != 0:
            pid = server.pid()  # our own postmaster, by the pid it wrote
            if pid:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(top, ignore_errors=True)


def _sql(server: PgServer, *statements: str) -> list[tuple] | None:
    """Run statements on the server's `postgres` database; the last one's rows, if it returns any."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def test_runs_materialisations_and_registered_models_survive_a_postgres_restart(
    tmp_path, pg_server, monkeypatch
):
    _sql(pg_server, "CREATE DATABASE dagster", "CREATE DATABASE mlflow")
    pg_env = {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(pg_server.port),
              "DAGSTER_PG_USER": "postgres", "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": "dagster"}  # fmt: skip
    for k, v in pg_env.items():
        monkeypatch.setenv(k, v)
    home = instance.prepare_home(tmp_path / "home", env=pg_env)

    # --- Dagster: one raw month of one table, through the repo's Postgres instance file
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert type(inst.run_storage).__name__ == "PostgresRunStorage"
        assert type(inst.event_log_storage).__name__ == "PostgresEventLogStorage"
        raw = dg.materialize([raw_tables], instance=inst, partition_key=MARCH, selection=["market_bars"],
                             resources=default_resources())  # fmt: skip
        assert raw.success
        [event] = raw.get_asset_materialization_events()
        rows = event.materialization.metadata["rows"].value
        assert rows > 100_000  # ten coins x 31 days of 5-minute bars, less the simulator's gaps

    # --- MLflow: a run with a metric and an artifact, registered as a model version with an alias
    tracking = MlflowTracking(tracking_uri=pg_server.uri("mlflow"), artifact_root=str(tmp_path / "artifacts"))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "student.json").write_text('{"n_params": 1906}')
    run = tracking.start_run("restart_test", params={"steps": 20}, tags={"partition": MARCH})
    run.log_metrics({"val_ic_1h": 0.0421}, step=20)
    run.log_artifacts(model_dir, "model")
    version = run.register("student", "BTCUSDT", "1h", "model", partition=MARCH)
    name = registered_name("student", "BTCUSDT", "1h")
    run.client.set_registered_model_alias(name, "champion", version)
    run.end()
    assert version == "1"

    # --- restart the server: a new postmaster, the same data directory
    before = pg_server.pid()
    pg_server.stop()
    assert pg_server.pid() is None
    pg_server.start()
    assert pg_server.pid() not in (None, before)

    # --- read everything back through new connections
    with dg.DagsterInstance.from_config(str(home)) as fresh:
        stored = fresh.get_run_by_id(raw.run_id)
        assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS
        latest = fresh.get_latest_materialization_event(dg.AssetKey("market_bars"))
        assert latest.run_id == raw.run_id
        assert latest.asset_materialization.partition == MARCH
        assert latest.asset_materialization.metadata["rows"].value == rows
        assert fresh.get_materialized_partitions(dg.AssetKey("market_bars")) == {MARCH}
    client = MlflowTracking(tracking_uri=pg_server.uri("mlflow")).client()
    back = client.get_run(run.run_id)
    assert (back.info.status, back.data.metrics["val_ic_1h"], back.data.params["steps"]) == (
        "FINISHED",
        0.0421,
        "20",
    )
    assert back.data.tags["partition"] == MARCH
    champion = client.get_model_version_by_alias(name, "champion")
    assert (str(champion.version), champion.run_id, champion.tags["partition"]) == ("1", run.run_id, MARCH)
    assert [a.path for a in client.list_artifacts(run.run_id, "model")] == ["model/student.json"]
    # the store is live after the restart, not only readable: a second version registers as 2
    again = MlflowTracking(tracking_uri=pg_server.uri("mlflow"), artifact_root=str(tmp_path / "artifacts"))
    run2 = again.start_run("after_restart")
    assert run2.register("student", "BTCUSDT", "1h", "model", partition=MARCH) == "2"
    run2.end()
    # and the restarted server listens on 127.0.0.1 only
    assert _sql(pg_server, "SHOW listen_addresses") == [("127.0.0.1",)]
