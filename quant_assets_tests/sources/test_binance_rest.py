"""The REST client against a local server replaying Binance's JSON shapes."""

from __future__ import annotations

import csv
import datetime as dt
import math

import polars as pl
import pytest
from binance_fixtures import REAL, LocalServer, RestReplay, json_response, kline_rows, real_bars, rest_kline

from quant_assets.schemas import DEPTH_BANDS, RAW_TABLES
from quant_assets.sources import binance_rest
from quant_assets.sources.binance_format import ArchiveFormatError, ParseNotes, StringRows, klines_frame
from quant_assets.sources.binance_http import RestError
from quant_assets.sources.binance_rest import BinanceRest

UTC = dt.UTC
BTC5 = real_bars("BTCUSDT", "5m")  # 1,000 real bars, 2025-08-03 02:10 -> 08-06 13:25
T0, T1 = dt.datetime(2025, 8, 3, tzinfo=UTC), dt.datetime(2025, 8, 7, tzinfo=UTC)
NOW = dt.datetime(2025, 8, 6, 14, 0, tzinfo=UTC).timestamp()


class Sleeps(list):
    def __call__(self, s: float) -> None:
        self.append(s)


def client(server: LocalServer, sleeps: Sleeps | None = None, **kw) -> BinanceRest:
    return BinanceRest(
        server.url, server.url, sleep=sleeps if sleeps is not None else Sleeps(), clock=lambda: NOW, **kw
    )


def replay_with_btc() -> RestReplay:
    r = RestReplay()
    r.klines[("/api/v3/klines", "BTCUSDT", "5m")] = [rest_kline(x) for x in kline_rows(BTC5, "5m")]
    return r


def test_klines_paginate_by_time_and_match_the_archive_parse(monkeypatch):
    monkeypatch.setitem(binance_rest.KLINE_LIMIT, "spot", 300)
    replay = replay_with_btc()
    with LocalServer(replay) as server:
        df, _ = client(server).klines("spot", "BTCUSDT", "5m", T0, T1)
    starts = [int(q["startTime"]) for p, q in server.requests]
    assert len(starts) == 4 and all(q["limit"] == "300" for _, q in server.requests)
    step = 300 * 300_000
    assert starts[1:] == [starts[1], starts[1] + step, starts[1] + 2 * step]
    assert (
        starts[1] == int(BTC5["ts"][299].timestamp() * 1000) + 300_000
    )  # resumes after the last bar received
    expected = klines_frame(
        StringRows.from_json([rest_kline(x) for x in kline_rows(BTC5, "5m")], "x", 12),
        "BTCUSDT",
        "spot",
        "5m",
        ParseNotes(),
    )
    assert df.height == 1000 and df.equals(expected)
    assert df["close"].to_list() == BTC5["close"].to_list()


def test_429_waits_for_retry_after_then_succeeds():
    replay = replay_with_btc()
    replay.queued["/api/v3/klines"] = [
        json_response({"code": -1003, "msg": "Too many requests"}, 429, {"Retry-After": "7"})
    ]
    sleeps = Sleeps()
    with LocalServer(replay) as server:
        rest = client(server, sleeps)
        df, _ = rest.klines("spot", "BTCUSDT", "5m", T0, T1)
    assert sleeps == [7.0]
    assert rest.stats.retries == 1 and rest.stats.requests == 3  # 429, the full page, the empty tail
    assert df.height == 1000


def test_418_ban_longer_than_we_wait_is_a_clear_error_without_sleeping():
    replay = replay_with_btc()
    replay.queued["/api/v3/klines"] = [
        json_response({"code": -1003, "msg": "banned"}, 418, {"Retry-After": "7200"})
    ]
    sleeps = Sleeps()
    with (
        LocalServer(replay) as server,
        pytest.raises(RestError, match=r"HTTP 418 with Retry-After 7200s.*banned"),
    ):
        client(server, sleeps).klines("spot", "BTCUSDT", "5m", T0, T1)
    assert sleeps == []


def test_server_errors_are_retried_a_bounded_number_of_times():
    replay = replay_with_btc()
    replay.queued["/api/v3/klines"] = [(503, {}, b"busy")] * 10
    sleeps = Sleeps()
    with (
        LocalServer(replay) as server,
        pytest.raises(RestError, match=r"gave up after 3 attempts; last failure: HTTP 503"),
    ):
        client(server, sleeps, max_retries=2).klines("spot", "BTCUSDT", "5m", T0, T1)
    assert sleeps == [0.5, 1.0, 2.0] and len(server.requests) == 3


def test_a_timeout_is_retried_then_reported():
    import time

    def slow(path, q):
        time.sleep(0.5)
        return json_response([])

    with (
        LocalServer(slow) as server,
        pytest.raises(RestError, match=r"gave up after 2 attempts; last failure: ReadTimeout"),
    ):
        client(server, timeout=0.1, max_retries=1).klines("spot", "BTCUSDT", "5m", T0, T1)


def test_binance_error_body_is_in_the_message():
    replay = RestReplay()
    replay.queued["/fapi/v1/klines"] = [json_response({"code": -1121, "msg": "Invalid symbol."}, 400)]
    with (
        LocalServer(replay) as server,
        pytest.raises(RestError, match=r"/fapi/v1/klines.*HTTP 400: code -1121: Invalid symbol"),
    ):
        client(server).klines("usdm", "NOPEUSDT", "5m", T0, T1)


def test_used_weight_near_the_limit_pauses_until_the_next_minute():
    replay = replay_with_btc()
    replay.weight = 5_500  # of 6,000 for /api/v3
    sleeps = Sleeps()
    with LocalServer(replay) as server:
        rest = client(server, sleeps)
        rest.klines("spot", "BTCUSDT", "5m", T0, T1)
    # NOW is 14:00:00 exactly -> 60 s to the next minute boundary, plus half a second of margin
    assert sleeps == [60.5, 60.5] and rest.stats.throttle_sleeps == 2
    assert rest.stats.used_weight_1m == {server.url.removeprefix("http://"): 5_500}


def test_funding_rates_paginate_and_round_settlement_times(monkeypatch):
    monkeypatch.setattr(binance_rest, "FUNDING_LIMIT", 30)
    f = pl.read_ipc(REAL / "freqtrade" / "XRP_USDT_USDT-8h-funding_rate.feather")
    replay = RestReplay()
    replay.records[("/fapi/v1/fundingRate", "XRPUSDT")] = [
        {
            "symbol": "XRPUSDT",
            "fundingTime": int(t.timestamp() * 1000),
            "fundingRate": repr(r),
            "markPrice": "1.0",
        }
        for t, r in zip(f["date"], f["open"], strict=True)
    ]
    with LocalServer(replay) as server:
        df = client(server).funding_rates(
            "XRPUSDT", dt.datetime(2021, 11, 1, tzinfo=UTC), dt.datetime(2022, 1, 1, tzinfo=UTC)
        )
    assert len(server.requests) == 4  # 30 + 30 + 30 + 1
    assert df.height == 91 and df["ts"].is_sorted() and df["ts"].is_unique().all()
    assert df.filter(pl.col("funding_rate") == f["open"].min())["ts"].item() == dt.datetime(
        2021, 12, 4, 8, tzinfo=UTC
    )
    assert (df["mark_price"] == 1.0).all()


def _futures_data_replay(start: dt.datetime, n: int) -> RestReplay:
    replay = RestReplay()
    ts = [int((start + dt.timedelta(minutes=5 * i)).timestamp() * 1000) for i in range(n)]
    rec = replay.records
    rec[("/futures/data/openInterestHist", "BTCUSDT")] = [
        {
            "symbol": "BTCUSDT",
            "sumOpenInterest": f"{80000 + i}.5",
            "sumOpenInterestValue": f"{9e9 + i}",
            "timestamp": t,
        }
        for i, t in enumerate(ts)
    ]
    for ep, val in (
        ("globalLongShortAccountRatio", "1.9"),
        ("topLongShortAccountRatio", "1.6"),
        ("topLongShortPositionRatio", "1.3"),
    ):
        rec[(f"/futures/data/{ep}", "BTCUSDT")] = [
            {
                "symbol": "BTCUSDT",
                "longShortRatio": val,
                "longAccount": "0.6",
                "shortAccount": "0.4",
                "timestamp": t,
            }
            for t in ts
        ]
    rec[("/futures/data/takerlongshortRatio", "BTCUSDT")] = [
        {"buySellRatio": "1.05", "sellVol": "10", "buyVol": "10.5", "timestamp": t}
        for t in ts[1:]  # one row short
    ]
    return replay


def test_futures_data_endpoints_merge_into_derivatives_metrics():
    start = dt.datetime(2025, 8, 5, tzinfo=UTC)
    replay = _futures_data_replay(start, 600)
    with LocalServer(replay) as server:
        rest = client(server)
        df = rest.futures_data("BTCUSDT", start, start + dt.timedelta(days=1))
    assert df.height == 288 and df.columns == list(RAW_TABLES["derivatives_metrics"].columns)
    r0 = df.row(0, named=True)
    assert (r0["open_interest"], r0["long_short_ratio_global"], r0["long_short_ratio_top_accounts"]) == (
        80000.5,
        1.9,
        1.6,
    )
    assert r0["long_short_ratio_top_positions"] == 1.3 and r0["taker_buy_sell_ratio"] is None
    assert df["taker_buy_sell_ratio"][1] == 1.05
    assert (df["available_at"] - df["ts"] == dt.timedelta(minutes=5)).all()
    assert len(server.requests) == 5  # one page of 288 (< 500) per endpoint
    assert rest.notes == []


def test_futures_data_older_than_30_days_is_clamped_and_noted():
    start = dt.datetime(2025, 6, 1, tzinfo=UTC)  # NOW is 2025-08-06: more than 30 days back
    replay = _futures_data_replay(dt.datetime(2025, 7, 7, 14, 5, tzinfo=UTC), 300)
    with LocalServer(replay) as server:
        rest = client(server)
        df = rest.futures_data("BTCUSDT", start, dt.datetime(2025, 7, 8, tzinfo=UTC))
    assert df["ts"].min() >= dt.datetime(2025, 7, 7, 14, 5, tzinfo=UTC)
    assert any("futures/data endpoints keep only 30 days" in n for n in rest.notes)
    assert all(
        int(q["startTime"]) >= int(dt.datetime(2025, 7, 7, 14, 0, tzinfo=UTC).timestamp() * 1000)
        for _, q in server.requests
    )


def _depth_body() -> dict:
    """The real 100-level bid snapshot; asks from the same file's later diff stream (qty > 0)."""
    with open(REAL / "binance_futures_l2" / "btcusdt-depth-snap.csv") as f:
        snap = list(csv.DictReader(f))
    with open(REAL / "binance_futures_l2" / "btcusdt-depth-update.csv") as f:
        upd = [r for r in csv.DictReader(f) if r["side"] == "a" and float(r["qty"]) > 0]
    return {
        "lastUpdateId": int(snap[0]["last_update_id"]),
        "E": int(snap[0]["timestamp"]),
        "T": int(snap[0]["timestamp"]) - 3,
        "bids": [[r["price"], r["qty"]] for r in snap if r["side"] == "b"],
        "asks": sorted([[r["price"], r["qty"]] for r in upd], key=lambda x: float(x[0])),
    }


def test_depth_snapshot_becomes_one_orderbook_row_with_bands_from_mid():
    body = _depth_body()
    replay = RestReplay()
    replay.depth["BTCUSDT"] = body
    with LocalServer(replay) as server:
        row, notes = client(server).depth_snapshot("BTCUSDT")
    assert row.height == 1 and row.columns == list(RAW_TABLES["orderbook_l2"].columns)
    r = row.row(0, named=True)
    assert r["ts"] == dt.datetime(2022, 11, 1, 23, 45, tzinfo=UTC)  # 1667346579146 = 23:49:39 floored to 5m
    bids = [(float(p), float(q)) for p, q in body["bids"]]
    asks = [(float(p), float(q)) for p, q in body["asks"]]
    best_bid, best_ask = max(p for p, _ in bids), min(p for p, _ in asks)
    assert (r["best_bid"], r["best_ask"]) == (best_bid, best_ask) and best_bid == 20377.0
    mid = (best_bid + best_ask) / 2
    for b in DEPTH_BANDS:
        inb = [(p, q) for p, q in bids if p >= mid * (1 - b / 100)]
        ina = [(p, q) for p, q in asks if p <= mid * (1 + b / 100)]
        assert math.isclose(r[f"bid_depth_{b}pct"], sum(q for _, q in inb), rel_tol=1e-12)
        assert math.isclose(r[f"bid_notional_{b}pct"], sum(p * q for p, q in inb), rel_tol=1e-12)
        assert math.isclose(r[f"ask_depth_{b}pct"], sum(q for _, q in ina), rel_tol=1e-12)
        assert math.isclose(r[f"ask_notional_{b}pct"], sum(p * q for p, q in ina), rel_tol=1e-12)
    assert math.isclose(r["bid_depth_1pct"], sum(q for _, q in bids))  # 100 levels span only ~0.3%
    assert len(notes) == 1 and "wider bands are lower bounds" in notes[0]


def test_a_malformed_rest_row_names_the_endpoint_row_and_field():
    replay = replay_with_btc()
    bad = [rest_kline(x) for x in kline_rows(BTC5.head(5), "5m")]
    bad[2][4] = "NaN?"
    replay.klines[("/api/v3/klines", "BTCUSDT", "5m")] = bad
    with (
        LocalServer(replay) as server,
        pytest.raises(
            ArchiveFormatError,
            match=r"^GET /api/v3/klines BTCUSDT 5m row 3 field 'close': 'NaN\?' is not a number$",
        ),
    ):
        client(server).klines("spot", "BTCUSDT", "5m", T0, T1)


def test_premium_index_klines_give_the_premium_close():
    replay = RestReplay()
    rows = kline_rows(BTC5.head(12), "5m")
    replay.klines[("/fapi/v1/premiumIndexKlines", "BTCUSDT", "5m")] = [
        [int(r[0]), "0", "0", "0", f"{i * 1e-5:.8f}", "0", int(r[6]), "0", 12, "0", "0", "0"]
        for i, r in enumerate(rows)
    ]
    with LocalServer(replay) as server:
        df = client(server).premium_index_klines("BTCUSDT", T0, T1)
    assert df.columns == ["symbol", "ts", "premium"] and df.height == 12
    assert df["premium"][3] == 3e-5 and df["ts"][0] == BTC5["ts"][0]
