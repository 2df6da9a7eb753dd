"""Benchmark: the raw layer for 10 coins, 2018-01-01 -> today, through Dagster.

Runs `python -m quant_assets.cli backfill`'s raw layer in a child process against a fresh
lake and SQLite instance in a temp dir, exactly as `make backfill` batches it (monthly
partitions, BackfillPolicy.single_run -> one run), and prints wall time, rows written,
rows per second, peak memory of the child and the number of runs.

    .venv/bin/python benchmarks/backfill.py [--layers raw] [--start 2018-01-01]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time, dagster as dg, polars as pl
    from quant_assets import lake
    from quant_assets.cli import run_layer
    from quant_assets.defs.layers import LAYERS
    from quant_assets.partitions import monthly
    layers, start = sys.argv[1].split(","), sys.argv[2]
    inst = dg.DagsterInstance.get()
    keys = monthly.get_partition_keys()
    out = {"runs": 0, "layers": {}}
    for layer in LAYERS:
        name = layer.name
        if name not in layers:
            continue
        t0 = time.perf_counter()
        res = run_layer(inst, layer, *((start, keys[-1]) if layer.partitioned else ()))
        assert res.success, f"{name} run failed"
        out["runs"] += 1
        out.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        out.setdefault("peak_gib_after", {})[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        tables = [m.asset_key.to_user_string() for m in res.get_asset_materialization_events()]
        out["layers"][name] = sorted(set(tables))
    rows = {}
    for name in sorted({t for v in out["layers"].values() for t in v}):
        if lake.exists(name):
            try:
                rows[name] = lake.scan(name).select(pl.len()).collect().item()
            except Exception:
                rows[name] = lake.read_table(name).height
    out["rows"] = rows
    print("RESULT " + json.dumps(out))
    """
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="raw")
    parser.add_argument("--start", default="2018-01-01")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
        env = {**os.environ, "QUANT_ASSETS_LAKE": f"{tmp}/lake", "DAGSTER_HOME": f"{tmp}/home"}
        os.makedirs(env["DAGSTER_HOME"])
        subprocess.run(
            [sys.executable, "-m", "quant_assets.instance"], env=env, check=True, capture_output=True
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, args.layers, args.start], env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-5000:])
            return 1
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    total = sum(result["rows"].values())
    print(
        f"layers {args.layers} from {args.start}: {result['runs']} run(s), {wall:.1f} s wall, "
        f"{total:,} rows ({total / wall:,.0f} rows/s), peak RSS {peak_gib:.2f} GiB"
    )
    for name, secs in result["seconds"].items():
        print(
            f"  layer {name:<10} {secs:>7.1f} s  (peak RSS so far {result['peak_gib_after'][name]:.2f} GiB)"
        )
    for name, n in result["rows"].items():
        print(f"  {name:<24} {n:>12,}")
    print(
        json.dumps(
            {
                "benchmark": "backfill",
                "layers": args.layers,
                "start": args.start,
                "wall_s": round(wall, 1),
                "rows": total,
                "rows_per_s": round(total / wall),
                "peak_rss_gib": round(peak_gib, 2),
                "runs": result["runs"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
