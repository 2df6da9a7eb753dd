"""The asset graph as a reviewed snapshot: any change to keys, deps, partitions, checks,
policies or automation shows up in review as a diff of snapshots/asset_graph.json.
Regenerate deliberately with `UPDATE_SNAPSHOTS=1 pytest quant_assets_tests/defs/test_asset_graph.py`."""

import json
import os
from pathlib import Path

from quant_assets.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def graph_snapshot() -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        pdef = node.partitions_def
        policy = node.backfill_policy
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitions": None
            if pdef is None
            else f"{type(pdef).__name__}({pdef.get_first_partition_key()}..)",
            "backfill_policy": None if policy is None else policy.policy_type.value,
            "checks": sorted(
                f"{ck.name}{' (blocking)' if graph.get(ck).blocking else ''}" for ck in node.check_keys
            ),
            "automation": None
            if node.automation_condition is None
            else node.automation_condition.get_label() or type(node.automation_condition).__name__,
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in defs.schedules or []),
        "sensors": sorted(s.name for s in defs.sensors or []),
    }


def test_asset_graph_matches_reviewed_snapshot():
    current = graph_snapshot()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), "asset graph changed: review and UPDATE_SNAPSHOTS=1"


def test_every_raw_table_is_monthly_single_run_with_blocking_checks():
    snap = graph_snapshot()["assets"]
    raw = [k for k, v in snap.items() if v["group"] == "raw"]
    assert len(raw) == 9
    for name in raw:
        assert snap[name]["partitions"] == "MonthlyPartitionsDefinition(2018-01-01..)"
        assert snap[name]["backfill_policy"] == "SINGLE_RUN"
        assert {"schema (blocking)", "unique_key (blocking)"} <= set(snap[name]["checks"])
