"""feature_snapshots on real Binance BTCUSDT bars, checked against values computed by hand (plain math)."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import polars as pl
import pytest

from quant_assets.features.snapshots import feature_snapshots
from quant_assets_tests.real_data import REAL_DATA

REAL = REAL_DATA / "binance_spot"


def load(name: str, timeframe: str) -> pl.DataFrame:
    """A real kline CSV as market_bars rows (the CSV has no quote volume: volume * close stands in)."""
    df = pl.read_csv(REAL / name, try_parse_dates=True)
    return df.select(
        pl.lit("BTCUSDT").alias("symbol"),
        pl.lit("spot").alias("market"),
        pl.lit(timeframe).alias("timeframe"),
        pl.col("Date").dt.replace_time_zone("UTC").cast(pl.Datetime("ms", "UTC")).alias("ts"),
        pl.col("Close").alias("close"),
        pl.col("Volume").alias("volume"),
        (pl.col("Volume") * pl.col("Close")).alias("quote_volume"),
    )


@pytest.fixture(scope="module")
def real():
    b5, b1 = load("BTCUSDT_5m.csv", "5m"), load("BTCUSDT_1h.csv", "1h")
    out = feature_snapshots(pl.concat([b5, b1]).lazy()).collect()
    return b5, b1, out


def row_at(out: pl.DataFrame, ts: dt.datetime) -> dict:
    return out.filter(pl.col("ts") == ts).row(0, named=True)


def test_real_btc_5m_features_match_hand_computation(real):
    b5, _, out = real
    closes, vols = b5["close"].to_list(), b5["volume"].to_list()
    i = 700  # 2025-08-05 12:30 UTC: well past the longest (288-bar) window
    row = row_at(out, b5["ts"][i])
    lr = [math.log(closes[k] / closes[k - 1]) for k in range(1, len(closes))]  # lr[k-1] ends at bar k
    assert row["close"] == closes[i]
    assert row["ret_1"] == pytest.approx(closes[i] / closes[i - 1] - 1, rel=1e-12)
    assert row["ret_12"] == pytest.approx(closes[i] / closes[i - 12] - 1, rel=1e-12)
    assert row["ret_288"] == pytest.approx(closes[i] / closes[i - 288] - 1, rel=1e-12)
    assert row["vol_12"] == pytest.approx(statistics.stdev(lr[i - 12 : i]), rel=1e-9)
    assert row["vol_288"] == pytest.approx(statistics.stdev(lr[i - 288 : i]), rel=1e-9)
    assert row["vol_term_12_48"] == pytest.approx(
        statistics.stdev(lr[i - 12 : i]) / statistics.stdev(lr[i - 48 : i])
    )
    assert row["ret_accel_3_12"] == pytest.approx(
        (closes[i] / closes[i - 3] - 1) / 3 - (closes[i] / closes[i - 12] - 1) / 12, rel=1e-9
    )
    lv = [math.log1p(v) for v in vols[i - 287 : i + 1]]
    assert row["log_volume"] == pytest.approx(math.log1p(vols[i]))
    assert row["vol_z"] == pytest.approx((lv[-1] - statistics.fmean(lv)) / statistics.stdev(lv), rel=1e-9)
    assert row["volume_impact"] == pytest.approx(abs(lr[i - 1]) / math.log1p(vols[i] * closes[i]), rel=1e-12)
    assert (row["close_from_fallback"], row["bar_missing_flag"]) == (0, 0)


def test_real_btc_1h_features_use_the_last_closed_hour(real):
    _, b1, out = real
    h = {r["ts"]: r["close"] for r in b1.iter_rows(named=True)}
    utc = dt.UTC
    # the 10:50 row decides at 10:55: the 10:00 hour is still open, so it reads the 09:00 hour
    r1050 = row_at(out, dt.datetime(2025, 8, 5, 10, 50, tzinfo=utc))
    at09, at08, at06 = (dt.datetime(2025, 8, 5, k, tzinfo=utc) for k in (9, 8, 6))
    assert r1050["h1_ret_1"] == pytest.approx(h[at09] / h[at08] - 1, rel=1e-12)
    assert r1050["h1_ret_3"] == pytest.approx(h[at09] / h[at06] - 1, rel=1e-12)
    # the 10:55 row decides at 11:00, when the 10:00 hour has closed
    r1055 = row_at(out, dt.datetime(2025, 8, 5, 10, 55, tzinfo=utc))
    at10 = dt.datetime(2025, 8, 5, 10, tzinfo=utc)
    assert r1055["h1_ret_1"] == pytest.approx(h[at10] / h[at09] - 1, rel=1e-12)
    hours = sorted(h)
    k = hours.index(at10)
    lr = [math.log(h[hours[j]] / h[hours[j - 1]]) for j in range(k - 47, k + 1)]
    assert r1055["h1_vol_48"] == pytest.approx(statistics.stdev(lr), rel=1e-9)


def test_real_1h_close_equals_last_5m_close_of_the_hour(real):
    """The data's own contract (1h = aggregate of 5m): the 1h family reads the same prices the 5m bars show."""
    b5, b1, _ = real
    c5 = dict(zip(b5["ts"].to_list(), b5["close"].to_list(), strict=True))
    pairs = [(c, c5.get(t + dt.timedelta(minutes=55))) for t, c in zip(b1["ts"], b1["close"], strict=True)]
    pairs = [(a, b) for a, b in pairs if b is not None]
    assert len(pairs) > 50 and all(a == b for a, b in pairs)
