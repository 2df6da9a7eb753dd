"""Benchmark: the after-cost backtest over 10 coins x 855,935 5m bars, beside vectorbt in the same run.

Work (as ../shared/peers/vectorbt_backtest.py, same seed, so the same prices): seeded
random-walk closes, long when the 12-bar return is positive and short when it is
negative, one coin unit per position, reversals in one order, fees 0.0004 and
slippage 0.0002 per trade, no impact. Ours: `run_backtest` on a long polars frame
(input checks, positions, trades table, equity curve, per-symbol and pooled
metrics); vectorbt: `Portfolio.from_signals` + `total_return`, run by the peer
script in its own venv ($PEER_VENV, default ~/.cache/peer-venv; create it with
`bash ../shared/peers/setup.sh`). Both report the best of --repeat runs after a
warm-up. A second figure times our default 1h configuration (notional sizing,
12-bar holding, sqrt impact on the `cost_depth_notional` column, 8-hourly funding
settlements passed as events, as `backtest_inputs` builds them from the lake).

Targets (issue 5): ours < 1 s and >= 2x faster than vectorbt.
Run: .venv/bin/python benchmarks/backtest.py [--repeat 5] [--no-peer]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.costs import CostModel
from quant_assets.backtest.engine import run_backtest

ROOT = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("QA_PEERS_DIR", ROOT.parent / "shared" / "peers"))
PEER_SCRIPT = PEERS / "vectorbt_backtest.py"
SEED = 20240501
FEES, SLIPPAGE = 0.0004, 0.0002

# Runs inside the peer venv: the peer's own input builder and backtest, then the
# per-asset figures the peer script does not print (profit in USD, fees, orders).
PEER_TOTALS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import vectorbt_backtest as peer
close, go_long, go_short = peer.make_inputs(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
pf, _ = peer.backtest(close, go_long, go_short, "numba")
print(json.dumps({
    "total_profit": [float(v) for v in pf.total_profit().values],
    "fees": float(pf.orders.fees.sum().sum()),
    "orders": int(pf.order_records.shape[0]),
}))
"""


def make_panel(n_bars: int, n_assets: int, seed: int) -> pl.DataFrame:
    """The peer's prices and signals (same generator calls), as our long frame sorted by (symbol, ts)."""
    rng = np.random.default_rng(seed)
    log_ret = rng.normal(0.0, 0.001, size=(n_bars, n_assets))
    close = 100.0 * np.exp(np.cumsum(log_ret, axis=0))
    ret12 = np.full_like(close, np.nan)
    ret12[12:] = close[12:] / close[:-12] - 1.0
    start = np.datetime64("2017-01-01T00:00", "ms").astype(np.int64)
    ts = start + np.arange(n_bars, dtype=np.int64) * 300_000
    return pl.DataFrame(
        {
            "ts": pl.Series(np.tile(ts, n_assets)).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            "symbol": np.repeat([f"asset{i}" for i in range(n_assets)], n_bars),
            "close": close.T.reshape(-1),
            "score": ret12.T.reshape(-1),
        }
    )


def with_book_and_funding(panel: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The panel with a depth column, and funding settlements at every 8-hour bar (symbol, ts, funding_rate)."""
    rng = np.random.default_rng(seed + 1)
    n = panel.height
    on_funding = (panel["ts"].dt.hour().to_numpy() % 8 == 0) & (panel["ts"].dt.minute().to_numpy() == 0)
    funding = panel.filter(pl.Series(on_funding)).select(
        "symbol", "ts", pl.Series("funding_rate", rng.normal(0.0001, 0.0002, on_funding.sum()))
    )
    return panel.with_columns(pl.Series("cost_depth_notional", rng.lognormal(np.log(2e6), 0.5, n))), funding


def timed(frame: pl.DataFrame, cfg: BacktestConfig, repeat: int, funding: pl.DataFrame | None = None):
    runs, result = [], None
    for _ in range(repeat):
        result = None  # free the previous run's arrays first, as the peer does
        t0 = time.perf_counter()
        result = run_backtest(frame, cfg, funding=funding)
        runs.append(time.perf_counter() - t0)
    return result, runs


def run_peer(n_bars: int, n_assets: int, repeat: int) -> tuple[dict | None, dict | None, str]:
    venv = Path(os.environ.get("PEER_VENV", Path.home() / ".cache" / "peer-venv"))
    python = venv / "bin" / "python"
    if not PEER_SCRIPT.exists():
        return (
            None,
            None,
            f"SKIP vectorbt: no peer script at {PEER_SCRIPT} (set QA_PEERS_DIR to ../shared/peers)",
        )
    if not python.exists():
        return None, None, f"SKIP vectorbt: no peer venv at {venv} (create it: bash {PEERS / 'setup.sh'})"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    args = ["--bars", str(n_bars), "--assets", str(n_assets), "--seed", str(SEED), "--repeat", str(repeat)]
    timing = subprocess.run(
        [str(python), str(PEER_SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=PEERS,
        timeout=900,
    )
    if timing.returncode != 0:
        return None, None, f"SKIP vectorbt: peer script failed: {timing.stderr.strip()[-500:]}"
    totals = subprocess.run(
        [str(python), "-c", PEER_TOTALS, str(PEERS), str(n_bars), str(n_assets), str(SEED)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    peer_totals = json.loads(totals.stdout.strip().splitlines()[-1]) if totals.returncode == 0 else None
    return json.loads(timing.stdout.strip().splitlines()[-1]), peer_totals, ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=855_935)
    ap.add_argument("--assets", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs; the best is reported")
    ap.add_argument("--no-peer", action="store_true", help="do not run vectorbt")
    args = ap.parse_args()
    cells = args.bars * args.assets

    cfg = BacktestConfig(
        holding_bars=None,  # hold until the opposite signal, as from_signals with entries and short entries
        units="coin",  # one coin per position, as size=1.0
        costs=CostModel(taker_fee=FEES, slippage=SLIPPAGE, impact_coef=0.0),
        instrument="spot",  # vectorbt charges no funding
    )
    run_backtest(make_panel(2_000, args.assets, SEED), cfg)  # warm-up: imports, allocator
    t0 = time.perf_counter()
    panel = make_panel(args.bars, args.assets, SEED)
    print(
        f"inputs: {args.assets} coins x {args.bars:,} 5m bars = {cells:,} bar-coins, built in {time.perf_counter() - t0:.1f} s"
    )

    ours, runs = timed(panel, cfg, args.repeat)
    best = min(runs)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = ours.metrics
    print(
        f"ours (vectorbt rules): best {best:.3f} s, median {statistics.median(runs):.3f} s, first {runs[0]:.3f} s "
        f"over {args.repeat} runs; {cells / best / 1e6:.1f}M bar-coins/s; peak RSS {peak_rss_mb:,.0f} MB"
    )
    print(
        f"  orders {m['n_trades']:,}; costs {m['cost']:,.2f}; total PnL {m['total_pnl']:,.2f} (coin units, USD)"
    )

    realistic, settlements = with_book_and_funding(panel, SEED)
    real_cfg = BacktestConfig.for_horizon("1h")
    real, real_runs = timed(realistic, real_cfg, max(2, args.repeat // 2), settlements)
    rm = real.metrics
    print(
        f"ours (1h config: notional, 12-bar hold, impact, funding): best {min(real_runs):.3f} s; "
        f"orders {rm['n_trades']:,}, costs {rm['cost']:,.0f}, funding {rm['funding']:,.0f}, PnL {rm['total_pnl']:,.0f}"
    )
    if real.assumptions:
        print(f"  assumed: {'; '.join(real.assumptions)}")
    del realistic, real

    peer = peer_totals = None
    ratio = None
    if args.no_peer:
        print("SKIP vectorbt: --no-peer")
    else:
        peer, peer_totals, skip = run_peer(args.bars, args.assets, max(3, args.repeat // 2))
        if skip:
            print(skip)
    comparison = {}
    if peer:
        ratio = peer["seconds"] / best
        print(
            f"vectorbt {peer['version']} ({peer['engine']}): best {peer['seconds']:.3f} s of {peer['runs']}; "
            f"orders {peer['orders']:,}"
        )
        print(f"speed: ours {best:.3f} s vs vectorbt {peer['seconds']:.3f} s -> {ratio:.2f}x faster")
    if peer_totals:
        ours_pnl = ours.per_symbol["total_pnl"].to_numpy()
        theirs = np.asarray(peer_totals["total_profit"])
        diff = np.abs(ours_pnl - theirs)
        comparison = {
            "orders_ours": m["n_trades"],
            "orders_vectorbt": peer_totals["orders"],
            "costs_ours": round(m["cost"], 2),
            "fees_ours": round(m["traded_notional"] * FEES, 2),
            "fees_vectorbt": round(peer_totals["fees"], 2),
            "total_pnl_ours": round(float(ours_pnl.sum()), 2),
            "total_profit_vectorbt": round(float(theirs.sum()), 2),
            "max_abs_diff_per_asset": round(float(diff.max()), 6),
            "same_sign_all_assets": bool((np.sign(ours_pnl) == np.sign(theirs)).all()),
        }
        print(
            f"totals: PnL ours {ours_pnl.sum():,.2f} vs vectorbt {theirs.sum():,.2f}, largest per-asset gap "
            f"{diff.max():.6f} USD (vectorbt takes the fee on the slipped fill price, +-p*s*f per unit, which "
            f"cancels between alternating buys and sells); orders {m['n_trades']:,} vs {peer_totals['orders']:,}; "
            f"fees ours {m['traded_notional'] * FEES:,.2f} vs vectorbt {peer_totals['fees']:,.2f} "
            f"(ours + slippage {m['cost']:,.2f})"
        )
    under_1s = best < 1.0
    print(
        f"targets: under 1 s: {'yes' if under_1s else 'NO'}; >= 2x vectorbt: "
        + ("skipped" if ratio is None else ("yes" if ratio >= 2 else "NO"))
    )
    print(
        json.dumps(
            {
                "benchmark": "backtest",
                "bar_coins": cells,
                "seconds": round(best, 4),
                "runs": [round(r, 4) for r in runs],
                "per_second": round(cells / best),
                "peak_rss_mb": round(peak_rss_mb, 1),
                "orders": m["n_trades"],
                "realistic_seconds": round(min(real_runs), 4),
                "vectorbt_seconds": None if peer is None else peer["seconds"],
                "speedup_vs_vectorbt": None if ratio is None else round(ratio, 2),
                "comparison": comparison,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
