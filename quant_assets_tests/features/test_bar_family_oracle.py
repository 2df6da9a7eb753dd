"""The numba bar family (feature_snapshots) equals the plain-polars oracle (bar_family_oracle.py).

Same rows, same nulls, Int8 flags equal, floats within RTOL of the oracle (see `assert_matches`),
on simulated coins, on real Binance bars and on inputs full of gaps and duplicates. The comparison is
shown to fail when a kernel reads a window one bar off.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from bar_family_oracle import oracle_snapshots

from quant_assets.features import family
from quant_assets.features.rows import select_bars, select_prices
from quant_assets.features.snapshots import compute_snapshots, feature_snapshots
from quant_assets_tests.real_data import REAL_DATA

START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
TS = pl.Datetime("ms", "UTC")
BAR_COLUMNS = ("symbol", "market", "timeframe", "ts", "close", "volume", "quote_volume")
# Relative only, no absolute floor: the kernels sum each window from its own rows and polars' rolling
# std is as exact, so they agree to ~1e-11 even on near-zero values (seen: worst 5e-12, on vol_z).
RTOL = 1e-9


def assert_matches(kernel: pl.DataFrame, oracle: pl.DataFrame) -> None:
    """Equal columns, row keys and null patterns; Int8 columns equal; floats |k - o| <= RTOL |o|.
    Raises naming the column and the first bad row."""
    assert kernel.schema == oracle.schema
    assert kernel.height == oracle.height, f"rows: kernel {kernel.height}, oracle {oracle.height}"
    for key in ("symbol", "ts", "date"):
        assert kernel[key].equals(oracle[key]), f"row keys differ in {key}"
    for col in kernel.columns[3:]:
        k, o = kernel[col], oracle[col]
        bad = k.is_null() != o.is_null()
        if kernel.schema[col] == pl.Int8:
            bad = bad | (k != o).fill_null(False)
        else:
            kv, ov = k.to_numpy(), o.to_numpy()
            with np.errstate(invalid="ignore"):
                far = ~(np.abs(kv - ov) <= RTOL * np.abs(ov))
            bad = bad | pl.Series(far & ~np.isnan(ov) & ~np.isnan(kv))
        if bad.any():
            i = int(bad.arg_max())
            row = f"{kernel['symbol'][i]} {kernel['ts'][i]}"
            raise AssertionError(
                f"{col} at {row}: kernel {k[i]}, oracle {o[i]} ({int(bad.sum())} rows differ)"
            )


def kernel_and_oracle(bars, prices=None, end=None):
    kernel = feature_snapshots(bars.lazy(), None if prices is None else prices.lazy(), end=end).collect()
    return kernel, oracle_snapshots(bars, prices, end)


def simulate(seed: int, n_bars: int, symbols: tuple[str, ...]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """market_bars (5m and 1h) and prices: Student-t returns with a volatility regime, 3% of 5m and 1h
    bars missing, 30% of price snapshots missing (a snapshot at ts is the previous bar's close), and
    every coin but the first listed up to a day late. Volume is 0 on 1% of bars (quote volume 0:
    volume_impact is null there)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n_bars)
    ts = pl.Series((int(START.timestamp() * 1000) + steps * 300_000).astype(np.int64)).cast(TS)
    bars, prices = [], []
    for k, sym in enumerate(symbols):
        listed = steps >= (int(rng.integers(0, 288)) if k else 0)
        vol = np.where(steps % 2000 < 1000, 0.002, 0.006)
        close = 100.0 * (k + 1) * np.exp(np.cumsum(rng.standard_t(4, n_bars) * vol))
        volume = np.exp(rng.normal(3.0, 0.7, n_bars)) * (rng.random(n_bars) > 0.01)
        b = pl.DataFrame({"symbol": sym, "market": "spot", "ts": ts, "close": close, "volume": volume})
        b = b.with_columns(quote_volume=pl.col("volume") * pl.col("close")).filter(pl.Series(listed))
        hourly = (
            b.group_by_dynamic("ts", every="1h")
            .agg(pl.col("close").last(), pl.col("volume").sum(), pl.col("quote_volume").sum())
            .with_columns(symbol=pl.lit(sym), market=pl.lit("spot"), timeframe=pl.lit("1h"))
        )
        b = b.with_columns(timeframe=pl.lit("5m"))
        for frame in (b, hourly):
            bars.append(frame.filter(pl.Series(rng.random(frame.height) > 0.03)).select(BAR_COLUMNS))
        previous = np.concatenate([[close[0]], close[:-1]])
        keep = listed & (rng.random(n_bars) > 0.3)
        prices.append(pl.DataFrame({"symbol": sym, "ts": ts, "price": previous}).filter(pl.Series(keep)))
    return pl.concat(bars), pl.concat(prices)


@pytest.fixture(scope="module")
def simulated():
    """Four coins, two weeks (the 1h family's 288-hour windows fill in the second week)."""
    return simulate(11, 288 * 14, ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"))


def test_kernels_match_the_oracle_on_simulated_coins(simulated):
    bars, prices = simulated
    kernel, oracle = kernel_and_oracle(bars, prices)
    assert kernel["symbol"].n_unique() == 4
    # the comparison is not vacuous: late windows are full, fallbacks and missing bars occur
    late = kernel.filter(pl.col("ts") >= START + dt.timedelta(days=13))
    for col in ("vol_288", "vol_z", "h1_vol_288", "h1_vol_z", "h1_ret_accel_48_288"):
        assert late[col].null_count() < late.height / 5, col
    assert kernel["close_from_fallback"].sum() > 100 and kernel["h1_bar_missing_flag"].sum() > 100
    assert_matches(kernel, oracle)


def test_kernels_match_the_oracle_with_an_end_inside_the_data(simulated):
    bars, prices = simulated
    end = START + dt.timedelta(days=9, hours=7, minutes=20)  # not on an hour
    kernel, oracle = kernel_and_oracle(bars, prices, end)
    assert kernel["ts"].max() == end - dt.timedelta(minutes=5)
    assert_matches(kernel, oracle)


def real_bars(symbol: str, timeframe: str) -> pl.DataFrame:
    """A real kline CSV as market_bars rows (no quote volume in the file: volume * close stands in)."""
    df = pl.read_csv(REAL_DATA / "binance_spot" / f"{symbol}_{timeframe}.csv", try_parse_dates=True)
    return df.select(
        pl.lit(symbol).alias("symbol"),
        pl.lit("spot").alias("market"),
        pl.lit(timeframe).alias("timeframe"),
        pl.col("Date").dt.replace_time_zone("UTC").cast(pl.Datetime("ms", "UTC")).alias("ts"),
        pl.col("Close").alias("close"),
        pl.col("Volume").alias("volume"),
        (pl.col("Volume") * pl.col("Close")).alias("quote_volume"),
    )


def test_kernels_match_the_oracle_on_real_binance_bars():
    bars = pl.concat([real_bars(s, tf) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT") for tf in ("5m", "1h")])
    kernel, oracle = kernel_and_oracle(bars)
    assert kernel.height == 3 * 1000 and kernel["vol_288"].null_count() < 3 * 300
    assert kernel["h1_vol_288"].null_count() == 0  # 1000 hours of 1h bars precede the 5m file's end
    assert_matches(kernel, oracle)


def test_kernels_match_the_oracle_through_gaps_duplicates_and_fallbacks(simulated):
    """Every fallback and null rule at once: a one-day 5m outage, a 30-hour 1h outage, a coin whose 1h
    bars start late and one with none, a coin that stops early, duplicate bars and snapshots (the last
    wins), a bar without a close, null snapshots, and snapshots before a coin's first bar."""
    bars, prices = simulated
    ms = dt.timedelta(milliseconds=1)
    five = pl.col("timeframe") == "5m"
    day = (pl.col("ts") >= START + dt.timedelta(days=4)) & (pl.col("ts") < START + dt.timedelta(days=5))
    hours = (pl.col("ts") >= START + dt.timedelta(days=7)) & (
        pl.col("ts") < START + dt.timedelta(days=8, hours=6)
    )
    btc, eth, sol, xrp = (pl.col("symbol") == s for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"))
    bars = bars.filter(
        ~(btc & five & day)
        & ~(eth & ~five & hours)
        & ~(sol & ~five & (pl.col("ts") < START + dt.timedelta(days=6)))
        & ~(xrp & ~five)
        & ~(xrp & (pl.col("ts") > START + dt.timedelta(days=12)))
    )
    # a later copy of some BTC bars with another close and volume: it must win
    dupes = bars.filter(btc & (pl.col("ts").dt.hour() == 3)).with_columns(
        pl.col("close") * 1.01, pl.col("volume") * 2
    )
    no_close = bars.filter(eth & five).slice(2000, 1).with_columns(close=pl.lit(None, pl.Float64))
    bars = pl.concat([bars, dupes, no_close])
    # snapshots: a later null copy at some times (the null must win: no close, no fallback flag), and
    # 24h of snapshots before BTC's first bar (windows reaching before the listing see them)
    first_btc = bars.filter(btc & five)["ts"].min()
    early = pl.DataFrame(
        {
            "symbol": "BTCUSDT",
            "ts": pl.Series([first_btc - k * dt.timedelta(minutes=5) + 7 * ms for k in range(1, 289)]).cast(
                TS
            ),
            "price": 100.0 * np.exp(np.random.default_rng(5).standard_normal(288) * 0.002),
        }
    )
    null_copy = prices.filter(pl.col("ts").dt.minute() == 40).with_columns(price=pl.lit(None, pl.Float64))
    prices = pl.concat([prices, early.select(prices.columns), null_copy])
    kernel, oracle = kernel_and_oracle(bars, prices)
    # the cases occur
    btc_out = kernel.filter(pl.col("symbol") == "BTCUSDT")
    assert btc_out["h1_close_from_fallback"].sum() + btc_out["close_from_fallback"].sum() > 0
    assert kernel.filter(pl.col("symbol") == "XRPUSDT")["h1_bar_missing_flag"].min() == 1
    assert kernel.filter(pl.col("symbol") == "SOLUSDT")["h1_ret_1"].null_count() > 288 * 4
    assert (
        kernel.filter((pl.col("symbol") == "BTCUSDT") & (pl.col("ts") == first_btc))["ret_12"][0] is not None
    )
    assert_matches(kernel, oracle)


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"ret_w": (1, 4, 12, 48, 96, 288), "accel": ((4, 12), (12, 48), (48, 288))}, "ret_3"),  # close_{t-4}
        ({"vol_w": (3, 11, 48, 96, 288), "term": ((3, 11), (11, 48), (48, 288))}, "vol_12"),  # 11 returns
        ({"volz_w": 287}, "vol_z"),
        ({"vol_min": (3, 9, 39, 77, 231)}, "vol_12"),  # one present value fewer suffices
    ],
)
def test_a_kernel_reading_one_bar_off_fails_the_comparison(simulated, change, column):
    bars, prices = simulated
    queries = [select_bars(bars.lazy(), "5m", "spot"), select_bars(bars.lazy(), "1h", "spot")]
    inputs = (*pl.collect_all([*queries, select_prices(prices.lazy())]), None)
    assert_matches(compute_snapshots(*inputs), oracle := oracle_snapshots(bars, prices))
    broken = compute_snapshots(*inputs, params=family.params(**change))
    with pytest.raises(AssertionError, match=f"^{column} at"):
        assert_matches(broken, oracle)
