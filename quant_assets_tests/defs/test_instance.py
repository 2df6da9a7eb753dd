"""The Dagster instance: SQLite by default, Postgres when DAGSTER_PG_* are set; run monitoring in both."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.launcher import WorkerStatus

from quant_assets import instance
from quant_assets.defs.audit.assets import required_data_readiness
from quant_assets_tests.defs.monitoring_defs import SLEEPER_JOB

REPO = instance.REPO


def test_default_home_uses_sqlite(tmp_path):
    home = instance.prepare_home(tmp_path / "home", env={})
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert "Sqlite" in type(inst.run_storage).__name__
        assert isinstance(inst.run_launcher, instance.LocalRunLauncher)
        assert inst.run_monitoring_enabled and inst.run_launcher.supports_check_run_worker_health


def test_prepared_instance_limits_the_gpu_pool_to_one_and_keeps_a_users_limit(tmp_path):
    """Two trainings never share a device: the `gpu` pool starts at 1 slot; a limit a user set survives."""
    home = instance.prepare_home(tmp_path / "home", env={})
    with dg.DagsterInstance.from_config(str(home)) as inst:
        info = inst.event_log_storage.get_concurrency_info("gpu")
        assert info.slot_count == 1 and not info.claimed_slots
        assert {p.name: p.limit for p in inst.event_log_storage.get_pool_limits()} == {"gpu": 1}
        inst.event_log_storage.set_concurrency_slots("gpu", 2)  # as `dagster instance concurrency set gpu 2`
    instance.prepare_home(home, env={})  # `make ui` again
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert inst.event_log_storage.get_concurrency_info("gpu").slot_count == 2
    # the module entry point prints the limits in force
    out = subprocess.run([sys.executable, "-m", "quant_assets.instance"], capture_output=True, text=True,
                         env={**os.environ, "DAGSTER_HOME": str(home)}, check=True).stdout  # fmt: skip
    assert "pool limits {'gpu': 2}" in out
    # the pool the models take is the one limited
    from quant_assets.defs.models.assets import liquid_student

    assert liquid_student.op.pool == "gpu" and "gpu" in instance.POOL_LIMITS


@pytest.mark.postgres
def test_materialisation_is_recorded_in_postgres_and_read_back(tmp_path, postgres_db, monkeypatch):
    for k, v in postgres_db.items():
        monkeypatch.setenv(k, v)
    home = instance.prepare_home(tmp_path / "home", env=dict(os.environ))
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert "Postgres" in type(inst.run_storage).__name__
        assert isinstance(inst.run_launcher, instance.LocalRunLauncher) and inst.run_monitoring_enabled
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


# --- Run monitoring: a killed run must not hold a run slot forever --------------------------------

MONITORING_DEFS = Path(__file__).with_name("monitoring_defs.py")
# One in-process run of `sleeper`, as the CLI runs layers (argv: extra run tags as key=value).
SLEEPER_RUN = """
import sys
import dagster as dg
from quant_assets_tests.defs.monitoring_defs import sleeper
with dg.DagsterInstance.get() as inst:
    dg.materialize([sleeper], instance=inst, tags=dict(a.split("=", 1) for a in sys.argv[1:]))
"""
BLOCKED = "won't launch more"  # what the run queue logs when every slot is taken


def _wait_for(what: str, timeout: float, probe):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.25)
    pytest.fail(f"no {what} within {timeout:.0f} s")


def _home_polling_each_second(home: Path) -> Path:
    """The repo's instance file as prepare_home wrote it, with the daemon's intervals cut to 1 s."""
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    monitoring, queue = config["run_monitoring"], config["run_coordinator"]["config"]
    assert monitoring["enabled"] is True and monitoring["max_resume_run_attempts"] == 0
    assert config["run_launcher"]["class"] == instance.LocalRunLauncher.__name__
    assert queue["max_concurrent_runs"] == 2
    monitoring["poll_interval_seconds"] = 1
    queue["dequeue_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _runs(inst: dg.DagsterInstance, job: str, status=None) -> list[dg.DagsterRun]:
    return list(inst.get_runs(dg.RunsFilter(job_name=job, statuses=[status] if status else None)))


def _killed_runs_fail_and_the_queue_moves_on(home: Path, env: dict) -> None:
    """Two in-process runs hold both slots and are killed with kill -9; the daemon must mark
    them FAILURE (run monitoring) and then launch the run that waited in the queue."""
    env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
    here = socket.gethostname()
    daemon_log = home / "daemon.log"
    daemon, sleepers = None, []
    # Open the instance first: its storage is created once, not raced by three processes.
    with dg.DagsterInstance.from_config(str(home)) as inst:
        try:
            with daemon_log.open("w") as log:
                daemon = subprocess.Popen(
                    [Path(sys.executable).with_name("dagster-daemon"), "run", "-f", MONITORING_DEFS],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # one process group: daemon, code server, run workers
                )
            sleepers = [
                subprocess.Popen(
                    [sys.executable, "-c", SLEEPER_RUN, *tags],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for tags in ([f"{instance.HOST_TAG}={here}"], [])  # tagged like cli.run_layer; untagged
            ]
            # The sensor requests its run only once both sleepers have started.
            [queued] = _wait_for(
                "queued run from the sensor",
                180,
                lambda: _runs(inst, "after_crash_job", dg.DagsterRunStatus.QUEUED),
            )
            started = _runs(inst, SLEEPER_JOB, dg.DagsterRunStatus.STARTED)
            assert len(started) == 2
            # Both slots are held by live workers: the queue refuses to launch, monitoring finds them alive.
            seen = daemon_log.read_text().count(BLOCKED)
            _wait_for("a blocked dequeue", 30, lambda: daemon_log.read_text().count(BLOCKED) > seen)
            assert inst.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.QUEUED, (
                daemon_log.read_text()
            )
            assert {r.status for r in _runs(inst, SLEEPER_JOB)} == {dg.DagsterRunStatus.STARTED}

            for proc in sleepers:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            done = _wait_for(
                "the queued run to finish",
                120,
                lambda: (r := inst.get_run_by_id(queued.run_id)).is_finished and r,
            )
            assert done.status == dg.DagsterRunStatus.SUCCESS, daemon_log.read_text()[-3000:]
            for run in started:
                assert inst.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
                [failure] = inst.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
                assert f"pid {failure_pid(inst, run.run_id)} on {here}) is gone" in failure.message
            # Monitoring freed the slots before the queued run was launched.
            failed_at = max(inst.get_run_record_by_id(r.run_id).end_time for r in started)
            assert inst.get_run_record_by_id(queued.run_id).start_time >= failed_at

            # A run whose worker is on another machine is not judged from here, dead pid or not.
            foreign = started[0].with_tags({**started[0].tags, instance.HOST_TAG: "another-host"})
            health = inst.run_launcher.check_run_worker_health(foreign)
            assert health.status == WorkerStatus.RUNNING and "another-host" in health.msg
        finally:
            _stop(sleepers, daemon)


def _stop(sleepers: list[subprocess.Popen], daemon: subprocess.Popen | None) -> None:
    for proc in sleepers:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if daemon is not None and daemon.poll() is None:
        # The process group this test started: the daemon, its code server and run workers.
        # SIGKILL: a polite SIGTERM costs ~8 s of daemon shutdown and nothing here needs it.
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()


def failure_pid(inst: dg.DagsterInstance, run_id: str) -> int:
    [start] = inst.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
    return start.dagster_event.pid


@pytest.mark.slow  # three dagster processes start (~15 s on an idle two-core box)
def test_a_killed_run_is_marked_failed_and_frees_its_slot_sqlite(tmp_path):
    home = _home_polling_each_second(instance.prepare_home(tmp_path / "home", env={}))
    _killed_runs_fail_and_the_queue_moves_on(home, {})


@pytest.mark.slow
@pytest.mark.postgres
def test_a_killed_run_is_marked_failed_and_frees_its_slot_postgres(tmp_path, postgres_db, monkeypatch):
    for k, v in postgres_db.items():
        monkeypatch.setenv(k, v)
    home = _home_polling_each_second(instance.prepare_home(tmp_path / "home", env=postgres_db))
    assert "postgres" in yaml.safe_load((home / "dagster.yaml").read_text())["storage"]
    _killed_runs_fail_and_the_queue_moves_on(home, postgres_db)


def test_a_recycled_or_missing_pid_is_not_a_live_worker():
    now = time.time()
    assert instance.worker_alive(os.getpid(), run_started=now)
    # This process exists, but a run that began an hour ago cannot have it as its worker.
    assert not instance.worker_alive(os.getpid(), run_started=now - 3600)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not instance.worker_alive(dead.pid, run_started=now)
    # Killed but not yet reaped by its parent (a code server's child): a zombie is no worker.
    zombie = subprocess.Popen(["sleep", "60"])
    assert instance.worker_alive(zombie.pid, run_started=time.time())
    zombie.kill()
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
    assert not instance.worker_alive(zombie.pid, run_started=now)
    zombie.wait()
