"""The archive reader on real rows: verbatim files, time units, headers, 5m->1h, funding as-of, caching."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest
from binance_fixtures import (
    FUNDING_HEADER,
    KLINE_HEADER,
    REAL,
    LocalServer,
    build_mirror,
    csv_text,
    day_slice,
    directory_handler,
    kline_rows,
    real_bars,
    spot_rel,
    um_rel,
    write_archive_file,
)

from quant_assets.sources.binance import BinanceSource
from quant_assets.sources.binance_archive import ArchiveStore, BinanceArchive
from quant_assets.sources.binance_format import aggregate_klines

UTC = dt.UTC
AUG4 = dt.date(2025, 8, 4)


def archive(root: Path, **kw) -> BinanceArchive:
    return BinanceArchive(ArchiveStore(str(root), cache_dir=str(root / "_cache")), **kw)


def copy_verbatim(root: Path, name: str, rel: str) -> None:
    write_archive_file(root, rel, (REAL / "binance_archive" / name).read_bytes())


# -- verbatim archive rows ------------------------------------------------------------------------


def test_verbatim_spot_kline_files_parse_as_published(tmp_path):
    for d in (27, 28):
        copy_verbatim(
            tmp_path,
            f"ADABTC-1m-2021-11-{d}.csv",
            f"data/spot/daily/klines/ADABTC/1m/ADABTC-1m-2021-11-{d}.zip",
        )
    days = [dt.date(2021, 11, 27), dt.date(2021, 11, 28)]
    read = archive(tmp_path).read("spot_klines", "ADABTC", days, dt.date(2021, 12, 1), "1m")
    df = read.frame
    assert read.missing_files == [] and read.covered == set(days)
    assert df.height == 10 + 11
    first = df.row(0, named=True)
    assert first["ts"] == dt.datetime(2021, 11, 27, tzinfo=UTC)
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        0.00002853,
        0.00002854,
        0.00002851,
        0.00002854,
    )
    assert (first["volume"], first["quote_volume"], first["trades"]) == (36304.2, 1.03547608, 79)
    assert (first["taker_buy_volume"], first["taker_buy_quote_volume"]) == (19523.0, 0.55694227)
    assert df["ts"].is_sorted() and df["ts"].is_unique().all()


def test_verbatim_funding_excerpt_puts_jittered_settlements_on_the_hour(tmp_path):
    copy_verbatim(
        tmp_path,
        "BTCUSDT-funding-2020-01.EXCERPT.csv",
        um_rel("fundingRate", "BTCUSDT", dt.date(2020, 1, 1), period="monthly"),
    )
    src = BinanceSource(archive_root=str(tmp_path), use_rest=False, symbols=["BTCUSDT"])
    df = src.fetch(
        ["funding_rates"], dt.date(2020, 1, 1), dt.date(2020, 2, 1), dt.datetime(2020, 3, 1, tzinfo=UTC)
    )["funding_rates"]
    assert df.height == 12
    # 1577923200002 (2 ms late) is the 2020-01-02 00:00 settlement
    assert df.filter(pl.col("ts") == dt.datetime(2020, 1, 2, tzinfo=UTC))["funding_rate"].item() == 0.00003662
    assert df.filter(pl.col("ts") == dt.datetime(2020, 1, 4, 8, tzinfo=UTC))["funding_rate"].item() == 8.4e-7
    assert (df["ts"].dt.epoch("ms") % (8 * 3600 * 1000) == 0).all()
    assert (df["available_at"] == df["ts"]).all() and df["mark_price"].is_null().all()


def test_verbatim_metrics_excerpt_maps_the_archive_columns(tmp_path):
    copy_verbatim(
        tmp_path,
        "HYPEUSDT-metrics-2025-05-30.EXCERPT.csv",
        um_rel("metrics", "HYPEUSDT", dt.date(2025, 5, 30)),
    )
    read = archive(tmp_path).read("metrics", "HYPEUSDT", [dt.date(2025, 5, 30)], dt.date(2025, 6, 1))
    df = read.frame
    assert df.height == 12
    r = df.row(0, named=True)
    assert r["ts"] == dt.datetime(2025, 5, 30, 10, 30, tzinfo=UTC)
    assert r["available_at"] == dt.datetime(2025, 5, 30, 10, 35, tzinfo=UTC)
    assert (r["open_interest"], r["open_interest_value"]) == (14088.01, 473864.30436)
    assert r["long_short_ratio_top_accounts"] == 0.51818182  # count_toptrader_long_short_ratio
    assert r["long_short_ratio_top_positions"] == 0.802265  # sum_toptrader_long_short_ratio
    assert r["long_short_ratio_global"] == 0.61231884  # count_long_short_ratio
    assert r["taker_buy_sell_ratio"] == 1.302922


# -- time units and headers -----------------------------------------------------------------------


@pytest.mark.parametrize("micro", [False, True])
@pytest.mark.parametrize("header", [False, True])
def test_ms_and_us_files_with_or_without_header_give_the_same_bars(tmp_path, micro, header):
    bars = day_slice(real_bars("BTCUSDT", "5m"), AUG4)
    reference = tmp_path / "ref"
    write_archive_file(reference, spot_rel("BTCUSDT", "5m", AUG4), csv_text(kline_rows(bars, "5m")))
    variant = tmp_path / "variant"
    rows = kline_rows(bars, "5m", micro=micro)
    write_archive_file(
        variant, spot_rel("BTCUSDT", "5m", AUG4), csv_text(rows, KLINE_HEADER if header else None)
    )
    got = archive(variant).read("spot_klines", "BTCUSDT", [AUG4], AUG4 + dt.timedelta(days=2), "5m").frame
    ref = archive(reference).read("spot_klines", "BTCUSDT", [AUG4], AUG4 + dt.timedelta(days=2), "5m").frame
    assert got.height == 288
    assert got.equals(ref)
    assert got["ts"][0] == dt.datetime(2025, 8, 4, tzinfo=UTC) and got["close"][0] == bars["close"][0]


# -- 5m -> 1h -------------------------------------------------------------------------------------


def test_real_5m_bars_aggregated_to_1h_reproduce_the_real_1h_file_exactly(tmp_path):
    build_mirror(tmp_path)
    src = BinanceSource(archive_root=str(tmp_path), use_rest=False, symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    bars = src.fetch(
        ["market_bars"], dt.date(2025, 8, 3), dt.date(2025, 8, 7), dt.datetime(2025, 8, 8, tzinfo=UTC)
    )["market_bars"].filter(pl.col("market") == "spot")
    agg = aggregate_klines(bars)
    real_1h = bars.filter(pl.col("timeframe") == "1h")
    cols = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    joined = agg.select(cols).join(real_1h.select(cols), on=["symbol", "ts"], suffix="_real")
    assert joined.height == 3 * 82  # every complete hour of the 5m sample, per coin
    for c in ("open", "high", "low", "close", "volume"):
        assert (joined[c] == joined[f"{c}_real"]).all(), c  # bit-exact, volumes included


# -- funding as-of onto bars ----------------------------------------------------------------------


def _xrp_funding_mirror(root: Path) -> pl.DataFrame:
    f = pl.read_ipc(REAL / "freqtrade" / "XRP_USDT_USDT-8h-funding_rate.feather")
    f = f.with_columns(ms=pl.col("date").dt.epoch("ms"), month=pl.col("date").dt.strftime("%Y-%m"))
    for month, part in f.group_by("month"):
        rows = [[str(ms), "8", repr(rate)] for ms, rate in zip(part["ms"], part["open"], strict=True)]
        day = dt.date.fromisoformat(f"{month[0]}-01")
        write_archive_file(
            root, um_rel("fundingRate", "XRPUSDT", day, period="monthly"), csv_text(rows, FUNDING_HEADER)
        )
    bars = pl.read_ipc(REAL / "freqtrade" / "XRP_USDT_USDT-5m-futures.feather").with_columns(
        pl.col("date").dt.cast_time_unit("ms")
    )
    for day, part in bars.group_by(pl.col("date").dt.date()):
        b = part.rename({"date": "ts"}).sort("ts")
        write_archive_file(
            root, um_rel("klines", "XRPUSDT", day[0], "5m"), csv_text(kline_rows(b, "5m"), KLINE_HEADER)
        )
    return bars


def test_freqtrade_xrp_funding_asof_on_5m_bars_puts_its_minimum_at_2021_12_04_0800(tmp_path):
    raw_bars = _xrp_funding_mirror(tmp_path)
    src = BinanceSource(archive_root=str(tmp_path), use_rest=False, symbols=["XRPUSDT"])
    out = src.fetch(
        ["funding_rates", "market_bars"],
        dt.date(2021, 11, 1),
        dt.date(2022, 1, 1),
        dt.datetime(2022, 1, 1, tzinfo=UTC),
    )
    funding = out["funding_rates"].select("ts", "funding_rate")
    minimum = funding["funding_rate"].min()
    assert funding.height == 91 and round(minimum, 6) == -0.002193
    bars = out["market_bars"].filter(pl.col("timeframe") == "5m", pl.col("market") == "usdm")
    assert bars.height == raw_bars.height == 1999
    # the real bars (Nov 15-21): each carries the latest settlement at or before its open time
    on_bars = bars.select("ts").join_asof(funding, on="ts", strategy="backward")
    assert (
        on_bars.filter(pl.col("ts") == dt.datetime(2021, 11, 18, 8, tzinfo=UTC))["funding_rate"].item()
        == 0.0001
    )
    assert (
        on_bars.filter(pl.col("ts") < dt.datetime(2021, 11, 18, tzinfo=UTC))["funding_rate"].is_null().all()
    )
    # the bars stop on Nov 21; continue the same 5m clock over the funding file's span
    clock = pl.DataFrame(
        {
            "ts": pl.datetime_range(
                dt.datetime(2021, 11, 18, tzinfo=UTC),
                dt.datetime(2021, 12, 18, 8, tzinfo=UTC),
                "5m",
                eager=True,
                time_unit="ms",
            )
        }
    )
    asof = clock.join_asof(funding, on="ts", strategy="backward")
    at_min = asof.filter(pl.col("funding_rate") == minimum)["ts"]
    assert at_min.min() == dt.datetime(
        2021, 12, 4, 8, tzinfo=UTC
    )  # not 08:05: the 4 ms jitter is rounded away
    assert at_min.max() == dt.datetime(2021, 12, 4, 15, 55, tzinfo=UTC)  # until the next settlement
    before = asof.filter(pl.col("ts") == dt.datetime(2021, 12, 4, 7, 55, tzinfo=UTC))["funding_rate"].item()
    assert before != minimum


# -- monthly vs daily, gaps, listing ------------------------------------------------------------


def _july_1h(root: Path, monthly: bool, daily: bool) -> None:
    bars = real_bars("BTCUSDT", "1h").filter(pl.col("ts").dt.month() == 7)
    if monthly:
        write_archive_file(
            root,
            spot_rel("BTCUSDT", "1h", dt.date(2025, 7, 1), "monthly"),
            csv_text(kline_rows(bars, "1h", micro=True)),
        )
    if daily:
        for d in range(1, 32):
            day = dt.date(2025, 7, d)
            write_archive_file(
                root,
                spot_rel("BTCUSDT", "1h", day),
                csv_text(kline_rows(day_slice(bars, day), "1h", micro=True)),
            )


@pytest.mark.parametrize("monthly", [True, False])
def test_a_finished_whole_month_reads_the_monthly_file_else_falls_back_to_dailies(tmp_path, monthly):
    _july_1h(tmp_path / "m", monthly=monthly, daily=True)
    with LocalServer(directory_handler(tmp_path / "m")) as server:
        store = ArchiveStore(server.url, cache_dir=str(tmp_path / "cache"))
        july = [dt.date(2025, 7, d) for d in range(1, 32)]
        read = BinanceArchive(store).read("spot_klines", "BTCUSDT", july, dt.date(2025, 8, 10), "1h")
    assert read.frame.height == 31 * 24 and read.covered == set(july)
    if monthly:
        assert server.paths() == ["/" + spot_rel("BTCUSDT", "1h", dt.date(2025, 7, 1), "monthly")] * 1 + [
            "/" + spot_rel("BTCUSDT", "1h", dt.date(2025, 7, 1), "monthly") + ".CHECKSUM"
        ]
    else:
        assert len(server.paths()) == 1 + 31 * 2  # the monthly 404, then each daily zip and its CHECKSUM


def test_the_running_month_reads_daily_files(tmp_path):
    _july_1h(tmp_path, monthly=True, daily=True)
    july = [dt.date(2025, 7, d) for d in range(1, 32)]
    read = archive(tmp_path).read("spot_klines", "BTCUSDT", july, dt.date(2025, 7, 31), "1h")
    assert len(read.covered_files) == 31 and all("/daily/" in f for f in read.covered_files)


def test_a_missing_file_is_a_reported_gap_not_an_error(tmp_path):
    build_mirror(tmp_path, symbols=["BTCUSDT"])
    (tmp_path / spot_rel("BTCUSDT", "5m", AUG4)).unlink()
    src = BinanceSource(archive_root=str(tmp_path), use_rest=False, symbols=["BTCUSDT"])
    out = src.fetch(["market_bars"], AUG4, dt.date(2025, 8, 6), dt.datetime(2025, 8, 7, tzinfo=UTC))[
        "market_bars"
    ]
    spot5 = out.filter(pl.col("market") == "spot", pl.col("timeframe") == "5m")
    assert spot5["date"].unique().to_list() == [dt.date(2025, 8, 5)]
    rep = src.last_report["market_bars"]
    assert rep["gap_days"] == {"BTCUSDT spot 5m": ["2025-08-04"]}
    assert spot_rel("BTCUSDT", "5m", AUG4) in rep["missing_files"]


def test_days_before_a_coins_listing_are_not_requested(tmp_path):
    with LocalServer(directory_handler(tmp_path)) as server:
        src = BinanceSource(
            archive_root=server.url, cache_dir=str(tmp_path / "c"), use_rest=False, symbols=["SOLUSDT"]
        )
        src.fetch(
            ["market_bars"], dt.date(2020, 8, 1), dt.date(2020, 8, 11), dt.datetime(2020, 9, 1, tzinfo=UTC)
        )
    assert server.requests == []  # SOL spot opened 2020-08-11, its perpetual 2020-09-14
    assert src.last_report["market_bars"]["before_listing_days"] == 10 * 4


# -- download cache -------------------------------------------------------------------------------


def test_a_rerun_downloads_nothing_it_already_has(tmp_path):
    build_mirror(tmp_path / "mirror", symbols=["BTCUSDT"])
    tables = ["market_bars", "funding_rates", "derivatives_metrics", "orderbook_l2"]
    window = (AUG4, dt.date(2025, 8, 6), dt.datetime(2025, 8, 7, tzinfo=UTC))
    with LocalServer(directory_handler(tmp_path / "mirror")) as server:
        src = BinanceSource(
            archive_root=server.url, cache_dir=str(tmp_path / "cache"), use_rest=False, symbols=["BTCUSDT"]
        )
        first = src.fetch(tables, *window)
        n_first = len(server.requests)
        downloaded = src.last_report["archive"]["downloaded"]
        second = BinanceSource(
            archive_root=server.url, cache_dir=str(tmp_path / "cache"), use_rest=False, symbols=["BTCUSDT"]
        ).fetch(tables, *window)
        n_second = len(server.requests) - n_first
    assert (
        downloaded == 2 * 4 + 3 + 2 + 2 + 1
    )  # klines 2 markets x 2 tf x 2 days, premium 3 days, metrics, depth, funding
    assert n_first == 2 * downloaded + src.last_report["archive"]["missing"]
    assert n_second == 0  # zips re-verified from the cache; old 404s remembered
    for t in tables:
        assert first[t].equals(second[t]), t


def test_a_damaged_cache_entry_is_downloaded_again(tmp_path):
    build_mirror(tmp_path / "mirror", symbols=["BTCUSDT"], days=[AUG4])
    with LocalServer(directory_handler(tmp_path / "mirror")) as server:
        kw = dict(
            archive_root=server.url, cache_dir=str(tmp_path / "cache"), use_rest=False, symbols=["BTCUSDT"]
        )
        window = (AUG4, dt.date(2025, 8, 5), dt.datetime(2025, 8, 6, tzinfo=UTC))
        good = BinanceSource(**kw).fetch(["market_bars"], *window)["market_bars"]
        cached = tmp_path / "cache" / spot_rel("BTCUSDT", "5m", AUG4)
        cached.write_bytes(cached.read_bytes()[:100])
        n = len(server.requests)
        again = BinanceSource(**kw).fetch(["market_bars"], *window)["market_bars"]
    assert server.paths()[n:] == [
        "/" + spot_rel("BTCUSDT", "5m", AUG4),
        "/" + spot_rel("BTCUSDT", "5m", AUG4) + ".CHECKSUM",
    ]
    assert again.equals(good)
    assert not list((tmp_path / "cache").rglob(".part-*"))  # atomic writes leave no temporaries


def test_local_mirror_and_https_root_give_identical_frames(tmp_path):
    build_mirror(tmp_path / "mirror", symbols=["ETHUSDT"])
    tables = ["market_bars", "funding_rates", "derivatives_metrics", "orderbook_l2"]
    window = (dt.date(2025, 8, 3), dt.date(2025, 8, 7), dt.datetime(2025, 8, 7, tzinfo=UTC))
    local = BinanceSource(archive_root=str(tmp_path / "mirror"), use_rest=False, symbols=["ETHUSDT"]).fetch(
        tables, *window
    )
    with LocalServer(directory_handler(tmp_path / "mirror")) as server:
        remote = BinanceSource(
            archive_root=server.url, cache_dir=str(tmp_path / "c"), use_rest=False, symbols=["ETHUSDT"]
        ).fetch(tables, *window)
    for t in tables:
        assert local[t].height > 0 and local[t].equals(remote[t]), t
    shutil.rmtree(tmp_path / "c")
