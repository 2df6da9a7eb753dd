"""Benchmark: one month of the Binance archive -> raw tables, local mirror and over HTTP (cold, warm cache).

Builds a month-sized mirror in a temp dir from the real sample bars (tiled over August 2025):
per coin a monthly 5m and 1h kline file per market, monthly premium index and funding, and 31
daily metrics and bookDepth files (bookDepth at the archive's ~30 s cadence: ~29k rows a day).
Then times `BinanceSource.fetch` of market_bars, funding_rates, derivatives_metrics and
orderbook_l2 for the month, and prints rows, seconds, rows/s and requests.

    .venv/bin/python benchmarks/binance_archive.py [--coins 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant_assets_tests" / "sources"))

from binance_fixtures import (  # noqa: E402
    FUNDING_HEADER,
    KLINE_HEADER,
    METRICS_HEADER,
    LocalServer,
    book_depth_rows,
    csv_text,
    directory_handler,
    funding_rows,
    kline_rows,
    metrics_rows,
    real_bars,
    spot_rel,
    um_rel,
    usdm_bars,
    write_archive_file,
)

from quant_assets.sources.binance import BinanceSource  # noqa: E402

MONTH = dt.date(2025, 8, 1)
DAYS = [MONTH + dt.timedelta(days=i) for i in range(31)]
TABLES = ["market_bars", "funding_rates", "derivatives_metrics", "orderbook_l2"]


def tiled(symbol: str, tf: str) -> pl.DataFrame:
    """The real bars repeated over every slot of the month (prices real, times reassigned)."""
    bars = real_bars(symbol, tf)
    step = dt.timedelta(minutes=5) if tf == "5m" else dt.timedelta(hours=1)
    start = dt.datetime.combine(
        MONTH - dt.timedelta(days=1), dt.time(), dt.UTC
    )  # + the day before, for basis
    n = int(dt.timedelta(days=32) / step)
    idx = pl.int_range(0, n, eager=True) % bars.height
    out = bars[idx.to_list()]
    ts = pl.datetime_range(start, start + step * (n - 1), step, eager=True, time_zone="UTC", time_unit="us")
    return out.with_columns(ts=ts)


def build(root: Path, symbols: list[str]) -> None:
    for sym in symbols:
        for tf in ("5m", "1h"):
            spot = tiled(sym, tf)
            perp = usdm_bars(spot)
            month_rows = lambda b: b.filter(pl.col("ts").dt.month() == 8)  # noqa: E731
            write_archive_file(
                root,
                spot_rel(sym, tf, MONTH, "monthly"),
                csv_text(kline_rows(month_rows(spot), tf, micro=True)),
            )
            write_archive_file(
                root,
                um_rel("klines", sym, MONTH, tf, "monthly"),
                csv_text(kline_rows(month_rows(perp), tf), KLINE_HEADER),
            )
            if tf == "5m":
                prem = [r[:5] + ["0"] * 7 for r in kline_rows(perp, tf)]
                for r in prem:
                    r[1] = r[2] = r[3] = r[4] = "0.00040000"
                july31 = [
                    r
                    for r in prem
                    if int(r[0]) < int(dt.datetime(2025, 8, 1, tzinfo=dt.UTC).timestamp() * 1000)
                ]
                write_archive_file(
                    root,
                    um_rel("premiumIndexKlines", sym, MONTH, tf, "monthly"),
                    csv_text(prem[len(july31) :], KLINE_HEADER),
                )
                write_archive_file(
                    root,
                    um_rel("premiumIndexKlines", sym, MONTH - dt.timedelta(days=1), tf),
                    csv_text(july31, KLINE_HEADER),
                )
                for day in DAYS:
                    b = spot.filter(pl.col("ts").dt.date() == day)
                    write_archive_file(
                        root, um_rel("metrics", sym, day), csv_text(metrics_rows(sym, b), METRICS_HEADER)
                    )
                    write_archive_file(
                        root,
                        um_rel("bookDepth", sym, day),
                        csv_text(book_depth_rows(b, every_s=30), "timestamp,percentage,depth,notional"),
                    )
        write_archive_file(
            root,
            um_rel("fundingRate", sym, MONTH, period="monthly"),
            csv_text(funding_rows(MONTH, 31), FUNDING_HEADER),
        )


def timed(src: BinanceSource, label: str) -> None:
    t0 = time.perf_counter()
    out = src.fetch(TABLES, MONTH, dt.date(2025, 9, 1), dt.datetime(2025, 9, 3, tzinfo=dt.UTC))
    secs = time.perf_counter() - t0
    rows = sum(df.height for df in out.values())
    rep = src.last_report["archive"]
    print(
        f"{label:<28} {secs:6.2f} s  {rows:>9,} rows  {rows / secs:>10,.0f} rows/s  "
        f"files read {rep['files_read']:>4}  downloaded {rep['downloaded']:>4}  cache hits {rep['cache_hits']:>4}  "
        f"HTTP requests {rep['http']['requests']:>4}"
    )
    for t in TABLES:
        print(f"    {t:<22} {out[t].height:>9,} rows")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coins", type=int, default=3)
    args = ap.parse_args()
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"][: args.coins]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mirror"
        t0 = time.perf_counter()
        build(root, symbols)
        size = sum(f.stat().st_size for f in root.rglob("*.zip"))
        print(
            f"mirror: {len(symbols)} coins x 1 month, {size / 1e6:.1f} MB of zips, built in {time.perf_counter() - t0:.1f} s"
        )
        timed(BinanceSource(archive_root=str(root), use_rest=False, symbols=symbols), "local mirror")
        with LocalServer(directory_handler(root)) as server:
            cache = str(Path(tmp) / "cache")
            timed(
                BinanceSource(archive_root=server.url, cache_dir=cache, use_rest=False, symbols=symbols),
                "http, cold cache",
            )
            timed(
                BinanceSource(archive_root=server.url, cache_dir=cache, use_rest=False, symbols=symbols),
                "http, warm cache",
            )


if __name__ == "__main__":
    main()
