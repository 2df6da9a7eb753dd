"""Benchmark: feature_snapshots (polars) against a plain pandas groupby-rolling version of the same features.

    .venv/bin/python benchmarks/features.py [--bars 855000] [--coins 10] [--repeat 3] [--strict]

Builds 10 coins x ~855,000 5m bars (2018 -> 2026, ~8.6M rows) deterministically (seeded stochastic
volatility, gaps: scattered missing bars and a one-day outage per coin, fallback prices that are
themselves sometimes missing, 1h bars aggregated from the complete 5m path), then in the same run:
- polars: `quant_assets.features.snapshots.feature_snapshots` (lazy, one collect);
- pandas: the same features written the way a pandas user would, with groupby(...).rolling(...),
  groupby(...).shift(...), reindex to the complete grid, merge_asof for the fallback prices.
It checks that both agree (same nulls, values within tolerance; a disagreement fails the run), prints
timings, the speed ratio against the 15x target (--strict fails the run when missed), peak RSS, and a
final JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_assets.features.keys import (  # noqa: E402
    ACCEL_PAIRS,
    H1_PREFIX,
    RET_WINDOWS,
    SNAPSHOT_FEATURE_KEYS,
    TERM_PAIRS,
    VOL_WINDOWS,
    VOLZ_WINDOW,
)
from quant_assets.features.snapshots import H1_FALLBACK_AT, feature_snapshots, min_samples  # noqa: E402
from quant_assets.universe import SYMBOLS  # noqa: E402

START = dt.datetime(2018, 1, 1, tzinfo=dt.UTC)
STEP_MS = 300_000
HOUR_MS = 3_600_000
TARGET_SPEEDUP = 15.0
RTOL, ATOL, ATOL_SCALE = 1e-7, 1e-12, 1e-7


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


# ---------------------------------------------------------------------------------------- data
def make_inputs(n_bars: int, n_coins: int, seed: int = 7) -> tuple[pl.DataFrame, pl.DataFrame]:
    """market_bars (5m + 1h, spot) and prices for n_coins x n_bars, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    t0 = int(START.timestamp() * 1000)
    ts_all = t0 + np.arange(n_bars, dtype=np.int64) * STEP_MS
    bars5, bars1, prices = [], [], []
    for symbol in SYMBOLS[:n_coins]:
        # stochastic volatility: AR(1) log-vol, Student-t shocks
        eps = rng.standard_normal(n_bars) * 0.05
        logvol = math.log(0.002) + lfilter([1.0], [1.0, -0.995], eps)
        r = np.exp(logvol) * rng.standard_t(4, n_bars) / math.sqrt(2.0)
        close = 100.0 * np.exp(np.cumsum(r))
        volume = np.exp(rng.normal(5.0, 0.6, n_bars) + 80.0 * np.abs(r))
        quote = volume * close
        # 1h bars aggregate the complete 5m path (the exchange has them even where our 5m download has a hole)
        n_h = n_bars // 12
        h_close = close[11 : n_h * 12 : 12]
        h_vol = volume[: n_h * 12].reshape(n_h, 12).sum(axis=1)
        h_quote = quote[: n_h * 12].reshape(n_h, 12).sum(axis=1)
        h_ts = ts_all[: n_h * 12 : 12]
        keep_h = rng.random(n_h) > 0.002
        # gaps: 0.2% scattered 5m bars and one whole day per coin
        keep = rng.random(n_bars) > 0.002
        outage = int(rng.integers(300, n_bars - 600))
        keep[outage : outage + 288] = False
        bars5.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "ts": ts_all[keep],
                    "close": close[keep],
                    "volume": volume[keep],
                    "quote_volume": quote[keep],
                    "timeframe": "5m",
                }
            )
        )
        bars1.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "ts": h_ts[keep_h],
                    "close": h_close[keep_h],
                    "volume": h_vol[keep_h],
                    "quote_volume": h_quote[keep_h],
                    "timeframe": "1h",
                }
            )
        )
        # last-trade snapshot at ts: the previous bar's close (known at ts), 1% of snapshots missing
        keep_p = rng.random(n_bars) > 0.01
        prev_close = np.concatenate([[close[0]], close[:-1]])
        prices.append(pl.DataFrame({"symbol": symbol, "ts": ts_all[keep_p], "price": prev_close[keep_p]}))
    ts_type = pl.Datetime("ms", "UTC")
    bars = (
        pl.concat(bars5 + bars1)
        .with_columns(pl.col("ts").cast(ts_type), pl.lit("spot").alias("market"))
        .sort("symbol", "timeframe", "ts")
    )
    price_df = pl.concat(prices).with_columns(pl.col("ts").cast(ts_type))
    return bars, price_df


# ------------------------------------------------------------------------------------- pandas
def pandas_family(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The bar family on a complete per-coin grid (df sorted by symbol, ts), plain pandas."""
    g = df.groupby("symbol", sort=False)
    close = df["close"]
    df["lr"] = np.log(close / g["close"].shift(1))
    df[f"{prefix}log_volume"] = np.log1p(df["volume"])
    for n in RET_WINDOWS:
        df[f"{prefix}ret_{n}"] = close / g["close"].shift(n) - 1
    g = df.groupby("symbol", sort=False)
    for n in VOL_WINDOWS:
        df[f"{prefix}vol_{n}"] = (
            g["lr"].rolling(n, min_periods=min_samples(n)).std().reset_index(level=0, drop=True)
        )
    lv = g[f"{prefix}log_volume"]
    m = min_samples(VOLZ_WINDOW)
    mean = lv.rolling(VOLZ_WINDOW, min_periods=m).mean().reset_index(level=0, drop=True)
    std = lv.rolling(VOLZ_WINDOW, min_periods=m).std().reset_index(level=0, drop=True)
    df[f"{prefix}vol_z"] = (df[f"{prefix}log_volume"] - mean) / std.where(std > 0)
    qv = df["quote_volume"].where(df["quote_volume"] > 0)
    df[f"{prefix}volume_impact"] = df["lr"].abs() / np.log1p(qv)
    for a, b in ACCEL_PAIRS:
        df[f"{prefix}ret_accel_{a}_{b}"] = df[f"{prefix}ret_{a}"] / a - df[f"{prefix}ret_{b}"] / b
    for a, b in TERM_PAIRS:
        vb = df[f"{prefix}vol_{b}"]
        df[f"{prefix}vol_term_{a}_{b}"] = df[f"{prefix}vol_{a}"] / vb.where(vb > 0)
    return df.drop(columns=["lr"])


def pandas_grid(
    bars: pd.DataFrame, prices: pd.DataFrame, step: str, fallback_at: pd.Timedelta
) -> pd.DataFrame:
    """Reindex each coin to a complete grid and fill missing closes from the prices (merge_asof)."""
    price_start = (prices["ts"] - fallback_at).dt.floor(step)
    firsts = (
        pd.concat([bars[["symbol", "ts"]], pd.DataFrame({"symbol": prices["symbol"], "ts": price_start})])
        .groupby("symbol")["ts"]
        .min()
    )
    last = max(bars["ts"].max(), price_start.max())
    index = pd.MultiIndex.from_tuples([], names=["symbol", "ts"]).append(
        [
            pd.MultiIndex.from_product([[s], pd.date_range(f, last, freq=step)], names=["symbol", "ts"])
            for s, f in firsts.items()
        ]
    )
    df = bars.set_index(["symbol", "ts"])[["close", "volume", "quote_volume"]].reindex(index).reset_index()
    df = df.rename(columns={"close": "bar_close"})
    px = prices.assign(key=prices["ts"] - fallback_at)[["symbol", "key", "price"]].sort_values("key")
    df = (
        pd.merge_asof(
            df.sort_values("ts"),
            px,
            left_on="ts",
            right_on="key",
            by="symbol",
            tolerance=pd.Timedelta("5min") - pd.Timedelta("1ms"),  # snapshots in (F - 5m, F]
            direction="backward",
        )
        .sort_values(["symbol", "ts"], kind="stable")
        .reset_index(drop=True)
    )
    df["close"] = df["bar_close"].fillna(df["price"])
    df["close_from_fallback"] = (df["bar_close"].isna() & df["price"].notna()).astype("int8")
    df["bar_missing_flag"] = df["bar_close"].isna().astype("int8")
    return df.drop(columns=["key", "price"])


def pandas_snapshots(bars: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    b5 = bars[bars["timeframe"] == "5m"]
    b1 = bars[bars["timeframe"] == "1h"]
    f5 = pandas_family(pandas_grid(b5, prices, "5min", pd.Timedelta(0)), "")
    f1 = pandas_family(pandas_grid(b1, prices, "1h", pd.Timedelta(H1_FALLBACK_AT)), H1_PREFIX)
    f1 = f1.rename(
        columns={"close_from_fallback": "h1_close_from_fallback", "bar_missing_flag": "h1_bar_missing_flag"}
    )
    h1_cols = [c for c in SNAPSHOT_FEATURE_KEYS if c.startswith(H1_PREFIX)]
    f1 = f1[["symbol", "ts", *h1_cols]].rename(columns={"ts": "h1_key"})
    f5["h1_key"] = (f5["ts"] + pd.Timedelta("5min")).dt.floor("h") - pd.Timedelta("1h")
    out = f5.merge(f1, on=["symbol", "h1_key"], how="left")
    out["h1_close_from_fallback"] = out["h1_close_from_fallback"].fillna(0).astype("int8")
    out["h1_bar_missing_flag"] = out["h1_bar_missing_flag"].fillna(1).astype("int8")
    return out[["symbol", "ts", "close", "volume", *SNAPSHOT_FEATURE_KEYS]]


# -------------------------------------------------------------------------------------- compare
def compare(pl_out: pl.DataFrame, pd_out: pd.DataFrame) -> dict[str, float]:
    if pl_out.height != len(pd_out):
        raise AssertionError(f"row counts differ: polars {pl_out.height}, pandas {len(pd_out)}")
    ts_pl = pl_out["ts"].dt.epoch("ms").to_numpy()
    ts_pd = pd_out["ts"].astype("int64").to_numpy() // 10**6 if pd_out["ts"].dt.unit == "ns" else None
    if ts_pd is None:
        ts_pd = pd_out["ts"].dt.as_unit("ms").astype("int64").to_numpy()
    if not (
        np.array_equal(ts_pl, ts_pd) and (pl_out["symbol"].to_numpy() == pd_out["symbol"].to_numpy()).all()
    ):
        raise AssertionError("row keys (symbol, ts) differ between polars and pandas")
    diffs = {}
    for col in ("close", "volume", *SNAPSHOT_FEATURE_KEYS):
        a = pl_out[col].cast(pl.Float64).to_numpy()
        b = pd_out[col].to_numpy(dtype=np.float64, na_value=np.nan)
        na, nb = np.isnan(a), np.isnan(b)
        if not np.array_equal(na, nb):
            bad = int(np.flatnonzero(na != nb)[0])
            raise AssertionError(
                f"{col}: null patterns differ, first at row {bad}: polars {a[bad]}, pandas {b[bad]}"
            )
        ok = ~na
        diff = np.abs(a[ok] - b[ok])
        diffs[col] = float(diff.max()) if diff.size else 0.0
        # Both libraries update rolling moments incrementally, so each carries rounding from earlier
        # rows; where a short-window vol is ~1e-4 of its typical size (vol_3 of three near-equal
        # returns) that rounding is large relative to the value. Tolerance: RTOL of the value plus
        # ATOL_SCALE of the column's typical magnitude.
        scale = float(np.median(np.abs(b[ok]))) if diff.size else 0.0
        tol = ATOL + ATOL_SCALE * scale + RTOL * np.abs(b[ok])
        if (diff > tol).any():
            i = int(np.argmax(diff / tol))
            raise AssertionError(
                f"{col}: values differ beyond tolerance, e.g. polars {a[ok][i]} vs pandas {b[ok][i]}"
            )
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--bars", type=int, default=855_000, help="5m bars per coin (855,000 ~ 2018-01 -> 2026-02)"
    )
    ap.add_argument("--coins", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="polars runs (best is reported)")
    ap.add_argument("--strict", action="store_true", help="exit non-zero when the speed target is missed")
    args = ap.parse_args()

    t = time.perf_counter()
    bars, prices = make_inputs(args.bars, args.coins)
    n5 = bars.filter(pl.col("timeframe") == "5m").height
    print(
        f"inputs: {args.coins} coins, {n5:,} 5m bars, {bars.height - n5:,} 1h bars, {prices.height:,} prices "
        f"({time.perf_counter() - t:.1f} s to generate); peak RSS so far {peak_rss_gib():.2f} GiB"
    )
    rss_before = peak_rss_gib()

    pl_times = []
    for _ in range(args.repeat):
        gc.collect()
        t = time.perf_counter()
        out = feature_snapshots(bars.lazy(), prices.lazy()).collect()
        pl_times.append(time.perf_counter() - t)
    rss_polars = peak_rss_gib()
    t_pl = min(pl_times)
    print(
        f"polars feature_snapshots: {out.height:,} rows x {out.width} cols, best {t_pl:.2f} s "
        f"(runs: {', '.join(f'{x:.2f}' for x in pl_times)}); peak RSS {rss_polars:.2f} GiB"
    )

    bars_pd = bars.to_pandas()
    prices_pd = prices.to_pandas()
    gc.collect()
    t = time.perf_counter()
    pd_out = pandas_snapshots(bars_pd, prices_pd)
    t_pd = time.perf_counter() - t
    rss_all = peak_rss_gib()
    print(f"pandas groupby-rolling:   {len(pd_out):,} rows, {t_pd:.2f} s; peak RSS {rss_all:.2f} GiB")

    diffs = compare(out, pd_out)
    worst = max(diffs, key=diffs.get)
    ratio = t_pd / t_pl
    print(
        f"agreement: {len(diffs)} columns, identical null patterns, max abs diff {diffs[worst]:.3e} ({worst}); "
        f"tolerance {RTOL:g} relative + {ATOL_SCALE:g} x the column's median magnitude"
    )
    print(f"speed-up polars vs pandas: {ratio:.1f}x (target >= {TARGET_SPEEDUP:.0f}x)")
    print(
        json.dumps(
            {
                "benchmark": "feature_snapshots",
                "coins": args.coins,
                "rows": out.height,
                "polars_s": round(t_pl, 3),
                "pandas_s": round(t_pd, 3),
                "speedup": round(ratio, 2),
                "max_abs_diff": diffs[worst],
                "max_abs_diff_column": worst,
                "peak_rss_gib_inputs": round(rss_before, 2),
                "peak_rss_gib_after_polars": round(rss_polars, 2),
                "peak_rss_gib_total": round(rss_all, 2),
            }
        )
    )
    if ratio < TARGET_SPEEDUP:
        print(f"TARGET MISSED: speed-up {ratio:.1f}x is below {TARGET_SPEEDUP:.0f}x")
        if args.strict:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
