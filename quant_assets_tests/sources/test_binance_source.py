"""BinanceSource end to end, in domain terms: archive mirror (+ REST replay) -> raw tables."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from binance_fixtures import (
    MIRROR_SYMBOLS,
    USDM_PREMIUM,
    LocalServer,
    RestReplay,
    build_mirror,
    kline_rows,
    real_bars,
    rest_kline,
    usdm_bars,
)

from quant_assets.schemas import RAW_TABLES
from quant_assets.sources.binance import FUNDING_PERIODS_PER_YEAR, BinanceSource
from quant_assets.universe import SYMBOLS

UTC = dt.UTC
AUG4, AUG5, AUG6 = dt.date(2025, 8, 4), dt.date(2025, 8, 5), dt.date(2025, 8, 6)
TABLES = ["market_bars", "funding_rates", "derivatives_metrics", "orderbook_l2"]


def assert_lake_ready(out: dict[str, pl.DataFrame]) -> None:
    for table, df in out.items():
        schema = RAW_TABLES[table]
        assert schema.conform(df).equals(df), table
        assert df.select(pl.struct(list(schema.key)).is_duplicated().any()).item() is False, table
        for col in set(schema.columns) - schema.nullable:
            assert df[col].null_count() == 0, f"{table}.{col}"


def test_a_local_mirror_yields_all_four_tables_ready_for_the_lake(tmp_path):
    build_mirror(tmp_path)
    src = BinanceSource(archive_root=str(tmp_path), use_rest=False)
    out = src.fetch(TABLES, AUG4, AUG6, dt.datetime(2025, 8, 7, tzinfo=UTC))
    assert_lake_ready(out)
    bars, metrics, book, funding = (
        out[t] for t in ("market_bars", "derivatives_metrics", "orderbook_l2", "funding_rates")
    )
    assert bars.height == 3 * 2 * 2 * (288 + 24)  # coins x markets x days x (5m + 1h)
    assert sorted(bars["symbol"].unique()) == sorted(MIRROR_SYMBOLS)
    assert funding.height == 3 * 2 * 3
    # basis = the premium index close of the bar closing at ts; the mirror's perp trades USDM_PREMIUM over spot
    assert metrics.height == 3 * 2 * 288
    expected = pl.concat(
        real_bars(sym, "5m")
        .join(usdm_bars(real_bars(sym, "5m")), on="ts", suffix="_perp")
        .select(
            pl.lit(sym).alias("symbol"),
            (pl.col("ts") + dt.timedelta(minutes=5)).dt.cast_time_unit("ms").alias("ts"),
            (pl.col("close_perp") / pl.col("close") - 1).round(8).alias("expected"),
        )
        for sym in MIRROR_SYMBOLS
    )
    joined = metrics.join(expected, on=["symbol", "ts"], how="left")
    assert (joined["basis"] == joined["expected"]).all()
    assert ((metrics["basis"] - USDM_PREMIUM).abs() < 4e-5).all()  # the perp's price is rounded to the cent
    assert (
        (metrics["annualized_basis"] - metrics["basis"] * 1095).abs() < 1e-12
    ).all() and FUNDING_PERIODS_PER_YEAR == 1095
    assert (metrics["available_at"] - metrics["ts"] == dt.timedelta(minutes=5)).all()
    # the bookDepth mirror has a snapshot each minute at :07; the 5m row keeps the last one (4 min in)
    first = book.filter(pl.col("symbol") == "BTCUSDT").row(0, named=True)
    assert first["ts"] == dt.datetime(2025, 8, 4, tzinfo=UTC)
    assert (first["bid_depth_1pct"], first["ask_depth_5pct"]) == (104.0, 504.0)
    assert first["best_bid"] is None and book.height == 3 * 2 * 288
    # the seven coins the mirror lacks are reported gaps, not errors
    rep = src.last_report
    missing_coins = set(SYMBOLS) - set(MIRROR_SYMBOLS)
    assert {k.split()[0] for k in rep["market_bars"]["gap_days"]} == missing_coins
    assert rep["market_bars"]["gap_days"]["ADAUSDT spot 5m"] == ["2025-08-04", "2025-08-05"]
    assert set(rep["orderbook_l2"]["gap_days"]) == missing_coins
    json.dumps(src.last_report)  # the report is plain data, ready for asset metadata


def test_rows_are_limited_to_what_was_closed_or_published_by_until(tmp_path):
    build_mirror(tmp_path, symbols=["BTCUSDT"])
    until = dt.datetime(2025, 8, 5, 12, 2, tzinfo=UTC)
    out = BinanceSource(archive_root=str(tmp_path), use_rest=False, symbols=["BTCUSDT"]).fetch(
        TABLES, AUG4, AUG6, until
    )
    bars = out["market_bars"]
    assert bars.filter(pl.col("timeframe") == "5m")["ts"].max() == dt.datetime(2025, 8, 5, 11, 55, tzinfo=UTC)
    assert bars.filter(pl.col("timeframe") == "1h")["ts"].max() == dt.datetime(2025, 8, 5, 11, tzinfo=UTC)
    assert out["derivatives_metrics"]["available_at"].max() <= until
    assert out["funding_rates"]["ts"].max() == dt.datetime(2025, 8, 5, 8, tzinfo=UTC)
    book = out["orderbook_l2"].filter(pl.col("ts") == dt.datetime(2025, 8, 5, 12, tzinfo=UTC))
    assert book["bid_depth_1pct"].item() == 101.0  # the 12:01:07 snapshot; 12:02:07 had not happened yet


def _replay_btc_day(day: dt.date, clock: dt.datetime) -> RestReplay:
    spot, perp = real_bars("BTCUSDT", "5m"), usdm_bars(real_bars("BTCUSDT", "5m"))
    r = RestReplay()
    r.klines[("/api/v3/klines", "BTCUSDT", "5m")] = [rest_kline(x) for x in kline_rows(spot, "5m")]
    r.klines[("/fapi/v1/klines", "BTCUSDT", "5m")] = [rest_kline(x) for x in kline_rows(perp, "5m")]
    prem = []
    for s, p in zip(kline_rows(spot, "5m"), kline_rows(perp, "5m"), strict=True):
        v = f"{float(p[4]) / float(s[4]) - 1:.8f}"
        prem.append([int(p[0]), v, v, v, v, "0", int(p[6]), "0", 12, "0", "0", "0"])
    r.klines[("/fapi/v1/premiumIndexKlines", "BTCUSDT", "5m")] = prem
    ts = [
        int(t.timestamp() * 1000)
        for t in pl.datetime_range(
            dt.datetime.combine(day, dt.time(), UTC), clock, "5m", eager=True, time_unit="ms", closed="left"
        )
    ]
    r.records[("/futures/data/openInterestHist", "BTCUSDT")] = [
        {"symbol": "BTCUSDT", "sumOpenInterest": "81000.5", "sumOpenInterestValue": "9.1e9", "timestamp": t}
        for t in ts
    ]
    for ep in ("globalLongShortAccountRatio", "topLongShortAccountRatio", "topLongShortPositionRatio"):
        r.records[(f"/futures/data/{ep}", "BTCUSDT")] = [
            {"longShortRatio": "1.5", "timestamp": t} for t in ts
        ]
    r.records[("/futures/data/takerlongshortRatio", "BTCUSDT")] = [
        {"buySellRatio": "0.9", "timestamp": t} for t in ts
    ]
    return r


def test_rest_fills_the_days_the_archive_lacks_and_matches_the_archive(tmp_path):
    build_mirror(tmp_path / "partial", symbols=["BTCUSDT"], days=[AUG4])  # Aug 5 not published yet
    build_mirror(tmp_path / "full", symbols=["BTCUSDT"], days=[AUG4, AUG5])
    until = dt.datetime(2025, 8, 6, tzinfo=UTC)
    clock = until + dt.timedelta(minutes=1)
    with LocalServer(_replay_btc_day(AUG5, until)) as rest:
        src = BinanceSource(
            archive_root=str(tmp_path / "partial"),
            rest_base_spot=rest.url,
            rest_base_futures=rest.url,
            symbols=["BTCUSDT"],
            sleep=lambda s: None,
            clock=clock.timestamp,
        )
        out = src.fetch(TABLES, AUG4, AUG6, until)
    assert_lake_ready(out)
    full = BinanceSource(archive_root=str(tmp_path / "full"), use_rest=False, symbols=["BTCUSDT"]).fetch(
        ["market_bars"], AUG4, AUG6, until
    )["market_bars"]
    five = pl.col("timeframe") == "5m"
    assert out["market_bars"].filter(five).equals(full.filter(five))  # a REST day == the archive's day
    # 1h of the REST day = aggregate of its 5m bars; compare the columns the real sample has
    # (the mirror's trade counts and quote volumes are derived per file, so they do not add up)
    real_cols = ["symbol", "market", "ts", "open", "high", "low", "close", "volume"]
    assert out["market_bars"].filter(~five).select(real_cols).equals(full.filter(~five).select(real_cols))
    rep = src.last_report
    assert rep["market_bars"]["rest_days"] == 2 and rep["market_bars"]["gap_days"] == {}
    paths = {p for p, _ in rest.requests}
    assert {
        "/api/v3/klines",
        "/fapi/v1/klines",
        "/fapi/v1/premiumIndexKlines",
        "/futures/data/openInterestHist",
    } <= paths
    assert all(
        dt.datetime.fromtimestamp(int(q["startTime"]) / 1000, UTC).date() != AUG4
        for p, q in rest.requests
        if p.endswith("klines") and "premium" not in p
    )  # archive days are not re-asked
    metrics = out["derivatives_metrics"]
    assert metrics.height == 2 * 288 and metrics["basis"].null_count() == 0
    assert metrics.filter(pl.col("date") == AUG5)["open_interest"].unique().to_list() == [81000.5]
    assert rep["rest"]["requests"] == len(rest.requests)
    assert out["orderbook_l2"]["date"].unique().to_list() == [AUG4]
    assert rep["orderbook_l2"]["gap_days"] == {"BTCUSDT": ["2025-08-05"]}
    assert any("REST has only the current book" in n for n in rep["orderbook_l2"]["notes"])


def test_the_live_day_gets_a_rest_depth_snapshot_and_closed_bars_only(tmp_path):
    now = dt.datetime(2025, 8, 6, 13, 58, 10, tzinfo=UTC)
    replay = _replay_btc_day(AUG6, now)
    replay.depth["BTCUSDT"] = {
        "lastUpdateId": 1,
        "E": int(now.timestamp() * 1000),
        "T": int(now.timestamp() * 1000),
        "bids": [["114000.0", "2.0"], ["113000.0", "5.0"], ["109000.0", "9.0"]],
        "asks": [["114010.0", "1.0"], ["115000.0", "4.0"], ["119000.0", "8.0"]],
    }
    with LocalServer(replay) as rest:
        src = BinanceSource(
            archive_root=str(tmp_path),
            rest_base_spot=rest.url,
            rest_base_futures=rest.url,
            symbols=["BTCUSDT"],
            sleep=lambda s: None,
            clock=now.timestamp,
        )
        out = src.fetch(["market_bars", "orderbook_l2"], AUG6, AUG6 + dt.timedelta(days=1), now)
    book = out["orderbook_l2"].row(0, named=True)
    assert out["orderbook_l2"].height == 1 and book["ts"] == dt.datetime(2025, 8, 6, 13, 55, tzinfo=UTC)
    assert (book["best_bid"], book["best_ask"], book["bid_depth_1pct"], book["ask_depth_1pct"]) == (
        114000.0,
        114010.0,
        7.0,
        5.0,
    )
    assert (
        book["bid_depth_4pct"],
        book["ask_depth_4pct"],
        book["bid_depth_5pct"],
        book["ask_depth_5pct"],
    ) == (7.0, 5.0, 16.0, 13.0)
    five = out["market_bars"].filter(pl.col("timeframe") == "5m", pl.col("market") == "spot")
    assert five["ts"].max() == dt.datetime(2025, 8, 6, 13, 25, tzinfo=UTC)  # the real sample ends there
    assert out["market_bars"].filter(pl.col("timeframe") == "1h")["ts"].max() == dt.datetime(
        2025, 8, 6, 12, tzinfo=UTC
    )


def test_old_missing_metrics_days_stay_gaps_with_the_30_day_note(tmp_path):
    now = dt.datetime(2025, 10, 1, tzinfo=UTC)
    with LocalServer(RestReplay()) as rest:
        src = BinanceSource(
            archive_root=str(tmp_path),
            rest_base_spot=rest.url,
            rest_base_futures=rest.url,
            symbols=["BTCUSDT"],
            sleep=lambda s: None,
            clock=now.timestamp,
        )
        out = src.fetch(["derivatives_metrics"], AUG4, AUG6, now)
    assert out["derivatives_metrics"].height == 0
    assert rest.requests == []  # nothing asked: the endpoints no longer hold August
    rep = src.last_report["derivatives_metrics"]
    assert rep["gap_days"] == {"BTCUSDT": ["2025-08-04", "2025-08-05"]}
    assert any("futures/data endpoints keep only 30 days" in n for n in rep["notes"])


def test_tables_binance_does_not_have_come_back_empty_with_a_note(tmp_path):
    src = BinanceSource(archive_root=str(tmp_path), use_rest=False, symbols=["BTCUSDT"])
    out = src.fetch(["prices", "onchain_signals", "events"], AUG4, AUG6, dt.datetime(2025, 8, 7, tzinfo=UTC))
    for t in ("prices", "onchain_signals", "events"):
        assert out[t].height == 0 and out[t].schema == RAW_TABLES[t].schema
        assert src.last_report[t]["notes"]
    with pytest.raises(KeyError, match="unknown raw tables"):
        src.fetch(["klines"], AUG4, AUG6, dt.datetime(2025, 8, 7, tzinfo=UTC))


def test_environment_chooses_archive_root_cache_and_events_feed(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANT_ASSETS_ARCHIVE_ROOT", str(tmp_path / "mirror"))
    monkeypatch.setenv("QUANT_ASSETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("QUANT_ASSETS_EVENTS_JSONL", str(tmp_path / "feed.jsonl"))
    src = BinanceSource()
    assert src.store.root == str(tmp_path / "mirror") and not src.store.remote
    assert src.store.cache_dir == str(tmp_path / "cache")
    assert src.events_jsonl == str(tmp_path / "feed.jsonl")
    monkeypatch.delenv("QUANT_ASSETS_ARCHIVE_ROOT")
    assert BinanceSource().store.root == "https://data.binance.vision"
