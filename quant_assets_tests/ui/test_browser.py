"""The Dagster UI as a first user meets it, in a real browser (Debian's Chromium driven by Playwright).

`python -m quant_assets.ui` (what `make ui` runs) starts `dagster dev` on 127.0.0.1 over a temporary
DAGSTER_HOME and lake, the way a script starts it in the background (SIGINT ignored). The test then
opens the asset graph, launches one raw month from the asset page's partition picker, waits for the
run, reads the asset check results and a model asset's page, trains `vc_model` for that month's cut-off
in the test's process against the same instance and lake (it needs only the raw event tables: those
of the month before and of the month), reads its materialisation metadata (AUC, calibration) on its
asset page, and stops `dagster dev` with SIGTERM.
Screenshots go to artifacts/ui/ (the path is printed).

Needs /usr/bin/chromium (`make install` installs it as root: apt-get install chromium) and the
`playwright` package of the dev extra; never a Playwright browser download. Skipped without them,
except under CI=true, where their absence fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from quant_assets.partitions import monthly
from quant_assets.schemas import RAW_TABLES

# 71-154 s measured here with the machine shared (load average 9-12): dagster dev's start, the run's
# worker loading the definitions and the shutdown are most of it. Training vc_model in process (two
# months of raw events, MLflow's SQLite store created, 200 steps) adds ~27 s: 100 s in all at load 11.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A loaded two-core box: the code location takes ~40 s to load, a run's worker ~25 s to start.
STARTUP_TIMEOUT_S = 180
RUN_TIMEOUT_S = 240
UI_TIMEOUT_MS = 120_000
STOP_TIMEOUT_S = 30


def _require_browser():
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install -y --no-install-recommends chromium fonts-liberation)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires them (`make install` installs both)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ignore_sigint():
    # What a shell without job control does to a background command (`make ui &` from a script):
    # before quant_assets.ui restored the handler, dagster dev then ignored SIGTERM too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def dagster_dev(tmp_path):
    """`dagster dev` through quant_assets.ui on a free port; yields (process, base url, DAGSTER_HOME, log,
    the environment naming its instance, lake and MLflow store)."""
    _require_browser()
    home, port = tmp_path / "dagster_home", _free_port()
    stores = {
        "DAGSTER_HOME": str(home),
        "QUANT_ASSETS_LAKE": str(tmp_path / "lake"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    env = {**os.environ, **stores}
    log = (tmp_path / "dagster_dev.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "quant_assets.ui", "-p", str(port)],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_ignore_sigint,
        start_new_session=True,  # its own process group: the teardown can clean up what it leaves
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail(
                f"dagster dev did not serve {base}: {(tmp_path / 'dagster_dev.log').read_text()[-3000:]}"
            )
        time.sleep(1)
    try:
        yield proc, base, home, tmp_path / "dagster_dev.log", stores
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):  # the group this fixture started, if anything is left
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _events(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogEntry]:
    return [r.event_log_entry for r in instance.get_records_for_run(run_id).records]


def _train_vc_model(home: Path, month: str) -> tuple[str, dict]:
    """vc_model for cut-off `month`, in this process against dagster dev's instance, lake and MLflow store
    (the definitions' resources): the raw event tables of the month before and of `month` first, so the
    model learns from the earlier month's news events and is scored on `month`'s. Returns the run id and
    the materialisation's metadata."""
    from quant_assets.defs.raw.assets import raw_tables
    from quant_assets.defs.research.assets import EVENT_TABLES, vc_model
    from quant_assets.resources import default_resources

    keys = monthly.get_partition_keys()
    resources = default_resources()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        raw = dg.materialize(
            [raw_tables],
            selection=list(EVENT_TABLES),
            instance=instance,
            resources=resources,
            tags={
                "dagster/asset_partition_range_start": keys[keys.index(month) - 1],
                "dagster/asset_partition_range_end": month,
            },
        )
        assert raw.success
        # `fast` keeps the 5,000 most recent events (all of one simulated month's ~150 here); 200 steps.
        config = {"kind": "fast", "steps": 200}
        res = dg.materialize(
            [vc_model],
            instance=instance,
            resources=resources,
            partition_key=month,
            run_config={"ops": {"vc_model": {"config": config}}},
        )
        assert res.success
        [mat] = res.get_asset_materialization_events()
        return res.run_id, {k: v.value for k, v in mat.materialization.metadata.items()}


def test_a_first_user_materialises_a_raw_month_from_the_ui_reads_its_checks_and_stops_dagster_dev(
    dagster_dev, monkeypatch
):
    from playwright.sync_api import expect, sync_playwright

    proc, base, home, log, stores = dagster_dev
    month = monthly.get_partition_keys()[-3]  # inside the picker's default "last 90 days", not the latest
    shots: list[Path] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            # 1. The asset graph: every layer is a group.
            page.goto(f"{base}/asset-groups")
            graph = page.locator("body")
            for group in ("raw", "features", "audit", "models"):
                expect(graph).to_contain_text(group)
            shots.append(_shot(page, "01_asset_graph"))

            # 2. One raw month from the asset page: Materialize… -> type the month's key -> Launch 1 run.
            page.goto(f"{base}/assets/market_bars")
            expect(page.locator("body")).to_contain_text(RAW_TABLES["market_bars"].description)
            page.locator("button", has_text="Materialize…").first.click()
            dialog = page.locator(".bp5-dialog").first
            expect(dialog).to_contain_text("Partition selection")
            # The picker lists the last 90 days by default (months since 2018 are more): a month near
            # that edge needs them all.
            dialog.get_by_text("Show all partitions").first.click()
            expect(dialog).not_to_contain_text("Showing the last 90 days")
            # With every partition listed, the picker's placeholder shows the key format itself.
            picker = dialog.get_by_placeholder(re.compile(r"^ex: 2018-01-01, 2018-02-01, \[2018-03-01\.\.\."))
            picker.fill(month)
            picker.press("Enter")
            expect(dialog).to_contain_text("1 partition")
            shots.append(_shot(page, "02_partition_picker"))
            dialog.get_by_role("button", name="Launch 1 run").click()

            with dg.DagsterInstance.from_config(str(home)) as instance:
                deadline = time.monotonic() + RUN_TIMEOUT_S
                runs = []
                while time.monotonic() < deadline:
                    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": month}))
                    if runs and runs[0].is_finished:
                        break
                    time.sleep(1)
                assert runs, f"no run for partition {month} was launched from the UI"
                run = runs[0]
                assert run.status == dg.DagsterRunStatus.SUCCESS, f"run {run.run_id}: {run.status}"
                events = _events(instance, run.run_id)

            # The run wrote market_bars for that month and every check of the table passed, naming it.
            [mat] = [e.asset_materialization for e in events if e.asset_materialization]
            assert mat.asset_key == dg.AssetKey("market_bars") and mat.partition == month
            assert mat.metadata["rows"].value > 0
            checks = {
                e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data
                for e in events
                if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
            }
            assert set(checks) >= {"schema", "unique_key", "in_window_on_grid", "ohlc_sanity"}
            for name, evaluation in checks.items():
                assert evaluation.passed, name
                assert evaluation.metadata["partition"].value == month, name

            # How long the run waited in the queue (dagster.yaml: dequeue_interval_seconds) and for its worker.
            at = {}
            for e in events:
                if e.dagster_event and e.dagster_event.event_type_value not in at:
                    at[e.dagster_event.event_type_value] = e.timestamp
            figures = {
                "queued_to_starting_s": round(at["PIPELINE_STARTING"] - at["PIPELINE_ENQUEUED"], 2),
                "starting_to_started_s": round(at["PIPELINE_START"] - at["PIPELINE_STARTING"], 2),
                "run_s": round(at["PIPELINE_SUCCESS"] - at["PIPELINE_START"], 2),
            }
            print(f"\nrun {run.run_id} ({month}) from the UI: {figures}")

            # The run page shows its success.
            page.goto(f"{base}/runs/{run.run_id}")
            expect(page.locator("body")).to_contain_text("Success")
            shots.append(_shot(page, "03_run_success"))

            # 3. The asset check results of market_bars, each with its partition.
            page.goto(f"{base}/assets/market_bars?view=checks")
            body = page.locator("body")
            for name in ("schema", "unique_key", "ohlc_sanity"):
                expect(body).to_contain_text(name)
            expect(body).to_contain_text(re.compile("Passed|Succeeded"))
            shots.append(_shot(page, "04_asset_checks"))

            # 4. A model asset's page: its description, kinds and cut-off partitions.
            page.goto(f"{base}/assets/liquid_teacher")
            body = page.locator("body")
            expect(body).to_contain_text("LightGBM per coin and horizon")
            expect(body).to_contain_text("lightgbm", ignore_case=True)
            shots.append(_shot(page, "05_model_asset"))

            # 5. A trained model's materialisation metadata: vc_model for cut-off `month` (the raw event
            # tables only, no feature layer), trained in this process against the same instance and lake.
            for name, value in stores.items():
                monkeypatch.setenv(name, value)
            t0 = time.monotonic()
            vc_run_id, vc = _train_vc_model(home, month)
            figures["vc_model_in_process_s"] = round(time.monotonic() - t0, 1)
            assert vc["cutoff"].startswith(month) and vc["training_events"] >= 100 and vc["oos_events"] >= 100
            assert vc["oos_auc_student"] > 0.8  # funding / M&A told apart on the month's unseen events
            page.goto(f"{base}/assets/vc_model")
            body = page.locator("body")
            # The latest materialisation is that run's: its MLflow run id and every figure below.
            expect(body).to_contain_text(vc["mlflow_run_id"])
            for key in ("oos_auc_student", "oos_ece_student", "training_events", "registered_version"):
                expect(body).to_contain_text(key)
            expect(body).to_contain_text(str(vc["training_events"]))
            shots.append(_shot(page, "06_model_metadata"))
            print(f"vc_model {month} (run {vc_run_id}) in process: {figures['vc_model_in_process_s']} s, "
                  f"OOS AUC {vc['oos_auc_student']:.3f} on {vc['oos_events']} events")  # fmt: skip
        except Exception:
            print(f"\nfailed at {page.url}; screenshot {_shot(page, 'failure')}")
            raise
        finally:
            browser.close()

    (ARTIFACTS / "figures.json").write_text(json.dumps({"run_id": run.run_id, "partition": month, **figures}))
    print(f"screenshots in {ARTIFACTS}: {', '.join(p.name for p in shots)}")

    # 6. SIGTERM stops dagster dev, its webserver and its daemon, though started with SIGINT ignored.
    services = _children(proc.pid)
    assert len(services) >= 2, f"dagster dev runs a webserver and a daemon, found children {services}"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
    stopped_in = time.monotonic() - t0
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(_alive(p) for p in services) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in services if _alive(p)], f"still running after SIGTERM: {services}"
    print(f"dagster dev stopped {stopped_in:.1f} s after SIGTERM")
    # Started from DAGSTER_HOME: no warning about the repo-root dagster.yaml (the template) in its log.
    text = log.read_text()
    assert "Launching Dagster services" in text and "Found a dagster instance configuration" not in text
