"""Bars with gaps: missing bars are rows, flagged; volume is never forward-filled; nothing crashes."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import polars as pl
import pytest
from features_rawdata import STEP, build_matrix, make_raw

from quant_assets.features.keys import LIQUID_FULL_FEATURE_KEYS
from quant_assets.features.snapshots import feature_snapshots, min_samples
from quant_assets_tests.real_data import REAL_DATA

REAL = REAL_DATA / "freqtrade"


@pytest.fixture(scope="module")
def xrp():
    """Real Binance XRP/ETH 5m bars built from trades: bars without trades are missing (6 gaps)."""
    df = pl.from_pandas(pd.read_feather(REAL / "XRP_ETH-5m.feather"))
    bars = df.select(
        pl.lit("XRPUSDT").alias("symbol"),  # the universe's symbol stands in for XRPETH
        pl.lit("spot").alias("market"),
        pl.lit("5m").alias("timeframe"),
        pl.col("date").cast(pl.Datetime("ms", "UTC")).alias("ts"),
        "close",
        "volume",
        (pl.col("volume") * pl.col("close")).alias("quote_volume"),
    )
    return bars, feature_snapshots(bars.lazy()).collect()


def test_real_gaps_become_flagged_rows_on_a_complete_grid(xrp):
    bars, out = xrp
    present = set(bars["ts"].to_list())
    assert out.height == bars.height + 6  # one missing bar per gap in this file
    assert out["ts"].diff().drop_nulls().unique().to_list() == [dt.timedelta(minutes=5)]
    missing = out.filter(~pl.col("ts").is_in(list(present)))
    assert missing.height == 6
    assert missing["bar_missing_flag"].to_list() == [1] * 6
    assert missing["close_from_fallback"].to_list() == [0] * 6  # no prices given: nothing to fall back on
    # no fill of any kind on a missing bar: close, volume and every volume or 1-bar feature is null
    for col in ("close", "volume", "log_volume", "vol_z", "volume_impact", "ret_1", "ret_12"):
        assert missing[col].null_count() == 6, col
    assert out.filter(pl.col("bar_missing_flag") == 0)["volume"].null_count() == 0


def test_rolling_windows_count_time_not_rows_across_a_gap(xrp):
    _, out = xrp
    i = out["bar_missing_flag"].arg_max()  # first missing bar
    after = out.row(i + 1, named=True)
    assert after["ret_1"] is None  # the previous close is missing: no 1-bar return
    # ret_3 spans the gap on the grid (3 bars back in time), not 3 rows of the raw file
    closes = out["close"].to_list()
    assert after["ret_3"] == pytest.approx(closes[i + 1] / closes[i - 2] - 1, rel=1e-12)
    # vol_12 still has >= 80% of its window: computed; vol_3 has 1 of 3 returns: null
    assert after["vol_12"] is not None and after["vol_3"] is None
    assert min_samples(12) == 10 and min_samples(3) == 3


def test_fallback_prices_fill_closes_of_missing_bars_and_are_flagged():
    start = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    raw = make_raw(4, start, 300, ("BTCUSDT",), gap_fraction=0.0)
    holes = [start + k * STEP for k in (100, 101, 102, 200)]
    bars = raw["market_bars"].filter(~((pl.col("timeframe") == "5m") & pl.col("ts").is_in(holes)))
    prices = raw["prices"].with_columns(pl.col("price") * 1.0)  # the table as is (30% of snapshots missing)
    out = feature_snapshots(bars.lazy(), prices.lazy()).collect()
    price_at = dict(zip(prices["ts"].to_list(), prices["price"].to_list(), strict=True))
    for ts in holes:
        row = out.filter(pl.col("ts") == ts).row(0, named=True)
        assert row["bar_missing_flag"] == 1 and row["volume"] is None and row["log_volume"] is None
        # the snapshot taken in (ts - 5m, ts]: on the 5m grid, the one at ts; none -> no fallback
        expected = price_at.get(ts)
        assert row["close"] == expected
        assert row["close_from_fallback"] == (expected is not None)
    # volume is never forward-filled, even where the close was
    assert out.filter(pl.col("bar_missing_flag") == 1)["volume"].null_count() == len(holes)


def test_feature_matrix_survives_heavy_gaps():
    start = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    raw = make_raw(9, start, 400, ("BTCUSDT", "ETHUSDT"), gap_fraction=0.5)
    m = build_matrix(raw)
    b5 = raw["market_bars"].filter(pl.col("timeframe") == "5m").select("symbol", "ts")
    last = b5["ts"].max()
    firsts = b5.group_by("symbol").agg(pl.col("ts").min())
    expected = sum(int((last - f) / STEP) + 1 for f in firsts["ts"])
    assert m.height == expected  # one row per coin per 5 minutes from its first bar to the last bar
    assert set(LIQUID_FULL_FEATURE_KEYS) <= set(m.columns)
    missing = m.filter(pl.col("bar_missing_flag") == 1)
    assert missing.height > 300
    assert missing["log_volume"].null_count() == missing.height  # volume features never filled
    assert missing["vol_z"].null_count() == missing.height


def test_feature_matrix_with_only_bars():
    raw = make_raw(2, dt.datetime(2024, 2, 1, tzinfo=dt.UTC), 150)
    m = build_matrix({"market_bars": raw["market_bars"]})
    flags = [
        "orderbook_missing_flag",
        "funding_missing_flag",
        "onchain_missing_flag",
        "derivatives_missing_flag",
    ]
    assert m.select(flags).to_series(0).to_list() == [1] * m.height
    assert m["event_count_24h"].sum() == 0 and m["social_post_count_6h"].sum() == 0
    assert m["label_1h"].drop_nulls().len() > 0
