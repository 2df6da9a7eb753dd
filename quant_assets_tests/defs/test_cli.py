"""What a terminal user sees: INFO logs with progress, no Dagster DEBUG lines or Beta warnings."""

import subprocess
import sys

import dagster as dg

from quant_assets import instance
from quant_assets.cli import run_layer
from quant_assets.defs.layers import AUDIT, RAW


def test_the_cli_imports_without_beta_or_preview_warnings():
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-m", "quant_assets.cli", "--help"],
        cwd=instance.REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "demo" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr[-2000:]


def test_a_layer_run_logs_progress_at_info_and_no_debug_events(capfd):
    inst = dg.DagsterInstance.ephemeral()
    res = run_layer(
        inst, AUDIT, run_config={"ops": {"required_data_readiness": {"config": {"window_days": 1}}}}
    )
    assert res.success is False  # an empty lake is not ready: the gate fails, the logs still show it
    err = capfd.readouterr().err
    assert " - INFO - " in err and "readiness as of" in err
    assert " - DEBUG - " not in err  # STEP_START, HANDLED_OUTPUT, ... (~190 lines for the demo)


def test_a_layer_takes_a_partition_range_only_when_partitioned():
    inst = dg.DagsterInstance.ephemeral()
    for layer, keys in ((AUDIT, ("2024-03-01", "2024-03-01")), (RAW, (None, None))):
        try:
            run_layer(inst, layer, *keys)
        except ValueError as exc:
            assert layer.name in str(exc)
        else:
            raise AssertionError(f"{layer.name}: a wrong partition range was accepted")
