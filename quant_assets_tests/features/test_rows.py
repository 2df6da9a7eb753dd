"""Raw rows in any order: grouped, shuffled or repeated inputs give the same snapshots; bad rows fail clearly."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from features_rawdata import make_raw
from polars.testing import assert_frame_equal

from quant_assets.features.rows import _symbol_runs, coin_rows
from quant_assets.features.snapshots import feature_snapshots

START = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def raw():
    return make_raw(11, START, 500, ("SOLUSDT", "BTCUSDT", "ETHUSDT"), gap_fraction=0.05)


def snaps(bars: pl.DataFrame, prices: pl.DataFrame | None = None) -> pl.DataFrame:
    return feature_snapshots(bars.lazy(), None if prices is None else prices.lazy()).collect()


def test_shuffled_input_gives_the_same_snapshots_as_sorted_input(raw):
    bars, prices = raw["market_bars"], raw["prices"]
    expected = snaps(bars.sort("symbol", "timeframe", "ts"), prices.sort("symbol", "ts"))
    shuffled = snaps(
        bars.sample(fraction=1.0, shuffle=True, seed=1), prices.sample(fraction=1.0, shuffle=True, seed=2)
    )
    assert_frame_equal(shuffled, expected)
    assert expected["symbol"].unique(maintain_order=True).to_list() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def test_a_repeated_bar_keeps_its_last_version_in_input_order(raw):
    bars = raw["market_bars"]
    first5 = bars.filter(pl.col("timeframe") == "5m").sort("symbol", "ts")
    row = first5.slice(100, 1)
    out = snaps(pl.concat([bars, row.with_columns(pl.col("close") * 2)]))
    ts, sym = row["ts"][0], row["symbol"][0]
    assert out.filter((pl.col("ts") == ts) & (pl.col("symbol") == sym))["close"][0] == row["close"][0] * 2


def test_a_symbol_outside_the_universe_fails_naming_it(raw):
    bars = raw["market_bars"].with_columns(pl.col("symbol").replace({"ETHUSDT": "FOOUSDT"}))
    with pytest.raises(ValueError, match="FOOUSDT"):
        snaps(bars)


def test_a_bar_off_the_five_minute_grid_fails_naming_coin_and_time(raw):
    bars = raw["market_bars"]
    odd = bars.filter((pl.col("symbol") == "BTCUSDT") & (pl.col("timeframe") == "5m")).slice(40, 1)
    bad_ts = odd["ts"][0] + dt.timedelta(minutes=2)
    with pytest.raises(
        ValueError, match=f"BTCUSDT bar at {bad_ts:%Y-%m-%d %H:%M}.* not on the 5-minute grid"
    ):
        snaps(pl.concat([bars, odd.with_columns(pl.lit(bad_ts).cast(bars["ts"].dtype).alias("ts"))]))


def test_symbol_runs_find_every_coin_change_across_chunks_and_long_names():
    long_a, long_b = "A" * 20, "B" * 20  # beyond 12 bytes the view holds a pointer, not the string
    parts = [pl.Series(["X", "X", long_a]), pl.Series([long_a, long_a, "Y"]), pl.Series(["Y", long_b])]
    s = pl.concat(parts, rechunk=False)
    starts = set(_symbol_runs(s).tolist())
    assert {0, 2, 5, 7} <= starts  # every true change is found (long names may add extra splits)
    df = pl.DataFrame(
        {"symbol": ["BTCUSDT"] * 3 + ["ADAUSDT"] * 2, "ts": [1, 2, 3, 1, 2], "v": np.arange(5.0)}
    )
    rows = coin_rows(df, "t", dedupe=True)
    assert rows.coins == {0: slice(3, 5), 3: slice(0, 3)}  # ranks in the sorted universe: ADA 0, BTC 3
