"""Benchmark: the market simulator's fetch, without Dagster or Delta writes.

    .venv/bin/python benchmarks/synthetic.py [--repeat 5] [--full] [--signal 0.0]

- one month x 10 coins x every raw table (March 2024, 31 days): best and median of
  `--repeat` runs after one warm-up, rows per table and rows per second;
- with `--full`: every month from 2018-01 to the current month, month by month, as the
  backfill calls it: total wall time, rows, rows per second, peak RSS;
- `max_ic` (first call, simulated) at 1h and 4h when `--signal` > 0.
Prints a final JSON line with the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import time

from quant_assets.schemas import RAW_TABLES
from quant_assets.sources.synthetic import MarketSimulator
from quant_assets.universe import HISTORY_START

TABLES = list(RAW_TABLES)


def _next_month(d: dt.date) -> dt.date:
    return dt.date(d.year + d.month // 12, d.month % 12 + 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--signal", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--full", action="store_true", help="also run 2018-01 -> now, month by month")
    args = ap.parse_args()
    sim = MarketSimulator(seed=args.seed, signal_strength=args.signal)
    now = dt.datetime.now(dt.UTC)
    start, end = dt.date(2024, 3, 1), dt.date(2024, 4, 1)
    out = sim.fetch(TABLES, start, end, now)  # warm-up: imports, daily anchors for this seed
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        out = sim.fetch(TABLES, start, end, now)
        times.append(time.perf_counter() - t)
    rows = {k: v.height for k, v in out.items()}
    result = {
        "seed": args.seed, "signal_strength": args.signal,
        "month_best_s": round(min(times), 3), "month_median_s": round(statistics.median(times), 3),
        "month_rows": sum(rows.values()), "month_rows_per_s": round(sum(rows.values()) / min(times)),
    }  # fmt: skip
    print(f"one month (2024-03) x 10 coins x {len(TABLES)} tables, seed {args.seed}, signal {args.signal}:")
    print(f"  best {min(times):.3f} s, median {statistics.median(times):.3f} s over {args.repeat} runs")
    for k, v in rows.items():
        print(f"  {k:22s} {v:>9,d} rows")
    if args.full:
        t, total, month = time.perf_counter(), 0, HISTORY_START
        while month <= now.date():
            got = sim.fetch(TABLES, month, _next_month(month), now)
            total += sum(v.height for v in got.values())
            month = _next_month(month)
        wall = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result |= {"full_s": round(wall, 1), "full_rows": total, "full_rows_per_s": round(total / wall),
                   "peak_rss_mib": round(peak)}  # fmt: skip
        print(f"2018-01 -> {now:%Y-%m}, month by month: {wall:.1f} s, {total:,d} rows, {total / wall:,.0f} rows/s, "
              f"peak RSS {peak:,.0f} MiB")  # fmt: skip
    if args.signal > 0:
        t = time.perf_counter()
        ic = {h: round(sim.max_ic(h), 4) for h in ("1h", "4h")}
        result |= {"max_ic": ic, "max_ic_s": round(time.perf_counter() - t, 2)}
        print(f"max_ic {ic} in {time.perf_counter() - t:.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
