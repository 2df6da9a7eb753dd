"""Prepare $DAGSTER_HOME: SQLite by default, Postgres when DAGSTER_PG_HOST is set.

Dagster reads one dagster.yaml from DAGSTER_HOME and cannot branch on the environment,
so the repo keeps both files and this picks one. Unset Postgres settings get defaults
(port 5432, user postgres, empty password, database postgres) so a trust-auth server works
with only DAGSTER_PG_HOST set.

Both files turn on run monitoring with `LocalRunLauncher`: Dagster's default launcher cannot
tell whether a run's worker is alive, so a run killed with kill -9 stayed STARTED forever
and held a slot of `max_concurrent_runs`.

The prepared instance also gets the concurrency pool limits in POOL_LIMITS: the `gpu` pool (the
student's and the backbones' training steps) at 1, so two trainings never share a device. A pool
limit lives in the instance's storage, not in dagster.yaml (whose `concurrency: pools:` block has
only a `default_limit` for every pool), so it is set through the event log storage as
`dagster instance concurrency set gpu 1` does; a limit already set (by a user, to another value) is
left as it is.

    python -m quant_assets.instance      # prints which storage DAGSTER_HOME will use and the pool limits
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

REPO = Path(__file__).resolve().parent.parent
PG_DEFAULTS = {
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "postgres",
    "DAGSTER_PG_PASSWORD": "",
    "DAGSTER_PG_DB": "postgres",
}


# Set by the CLI on its in-process runs: where the worker runs, so a daemon on another machine
# sharing the Postgres instance leaves them alone.
HOST_TAG = "quant_assets/host"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# /proc/stat's boot time has whole seconds; a worker starts before its RUN_START event anyway.
START_SLACK_SECONDS = 2.0
# Dagster concurrency pools (asset `pool=`) and the limit a prepared instance starts with.
POOL_LIMITS = {"gpu": 1}


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def worker_alive(pid: int, run_started: float) -> bool:
    """Whether process `pid` exists, is not a zombie, and started before `run_started` (epoch s).

    The last condition rejects a recycled pid: a process started after the run began cannot
    be its worker. Without /proc (macOS) only existence can be checked.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        # Fields after the parenthesised command: state is field 3, starttime field 22 (clock ticks).
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return True
    return fields[0] not in ("Z", "X") and started <= run_started + START_SLACK_SECONDS


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (runs on the code server) plus a run worker health check.

    The worker of a run is the process that logged its RUN_START event: the code server's child
    for runs launched from the UI, schedules and sensors; the CLI process for `cli.run_layer` and
    `dagster asset materialize`. Run monitoring (dagster.yaml) asks `check_run_worker_health` for
    every STARTED run and marks the run FAILURE when that process is gone. A run whose worker is
    known to be on another machine (host tag, or a code server reached over a non-local address)
    is reported RUNNING: its pid means nothing here.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        here = socket.gethostname()
        host = run.tags.get(HOST_TAG)
        if host is None and GRPC_INFO_TAG in run.tags:
            grpc = json.loads(run.tags[GRPC_INFO_TAG])
            host = None if "socket" in grpc else grpc.get("host")
        if host is not None and host not in LOCAL_HOSTS | {here}:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker on {host}, not checkable from {here}")
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.RUN_START, limit=1
        ).records
        if not records:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no RUN_START event yet")
        entry = records[0].event_log_entry
        pid = entry.dagster_event.pid if entry.dagster_event else None
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "RUN_START carries no pid")
        if worker_alive(pid, entry.timestamp):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker pid {pid} alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker (pid {pid} on {here}) is gone: killed or crashed"
        )


def uses_postgres(env=os.environ) -> bool:
    return bool(env.get("DAGSTER_PG_HOST"))


def prepare_home(home: str | os.PathLike | None = None, env=os.environ) -> Path:
    """Write $DAGSTER_HOME/dagster.yaml for the chosen storage, set the pool limits, return the home directory."""
    home = Path(home or env.get("DAGSTER_HOME") or REPO / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not uses_postgres(env):
        shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
        set_pool_limits(home)
        return home
    config = yaml.safe_load((REPO / "dagster-postgres.yaml").read_text())
    db = config["storage"]["postgres"]["postgres_db"]
    for field, ref in db.items():
        var = ref["env"]
        if var not in env:  # an unset setting becomes its default literal: yaml cannot default an env ref
            db[field] = int(PG_DEFAULTS[var]) if field == "port" else PG_DEFAULTS[var]
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    set_pool_limits(home)
    return home


def set_pool_limits(home: str | os.PathLike, limits: dict[str, int] = POOL_LIMITS) -> dict[str, int]:
    """Give each pool in `limits` that has no limit yet in the instance at `home` its limit; return every pool's limit."""
    with DagsterInstance.from_config(str(home)) as inst:
        storage = inst.event_log_storage
        if not storage.supports_global_concurrency_limits:
            raise RuntimeError(
                f"{home}/dagster.yaml: its event log storage cannot hold concurrency pool limits"
            )
        have = {p.name for p in storage.get_pool_limits() if not p.from_default}  # explicitly set
        for pool, limit in limits.items():
            if pool not in have:
                storage.set_concurrency_slots(pool, limit)
        return {p.name: p.limit for p in storage.get_pool_limits()}


def main() -> int:
    home = prepare_home()
    pg = {**PG_DEFAULTS, **os.environ}
    where = (
        f"postgres {pg['DAGSTER_PG_USER']}@{pg['DAGSTER_PG_HOST']}:{pg['DAGSTER_PG_PORT']}/{pg['DAGSTER_PG_DB']}"
        if uses_postgres()
        else f"sqlite under {home}"
    )
    with DagsterInstance.from_config(str(home)) as inst:
        pools = {p.name: p.limit for p in inst.event_log_storage.get_pool_limits()}
    print(f"DAGSTER_HOME={home} ({where}); pool limits {pools}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
