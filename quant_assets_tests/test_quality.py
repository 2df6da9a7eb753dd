import datetime as dt
import json

import polars as pl

from quant_assets import quality
from quant_assets.schemas import RAW_TABLES
from quant_assets.sources.binance_format import aggregate_klines
from quant_assets_tests.real_data import REAL_DATA
from quant_assets_tests.sources.binance_fixtures import real_bars, usdm_bars

UTC = dt.UTC
BUILT = dt.datetime(2021, 6, 1, tzinfo=UTC)


def bars(n: int = 12, start=dt.datetime(2021, 5, 3, tzinfo=UTC), symbol="BTCUSDT") -> pl.DataFrame:
    ts = [start + dt.timedelta(minutes=5 * i) for i in range(n)]
    df = pl.DataFrame(
        {
            "date": [t.date() for t in ts],
            "ts": ts,
            "symbol": symbol,
            "market": "spot",
            "timeframe": "5m",
            "open": 100.0,
            "high": 101.0,
            "low": 99.0,
            "close": 100.5,
            "volume": 3.0,
            "quote_volume": 300.0,
            "trades": 10,
            "taker_buy_volume": 1.5,
            "taker_buy_quote_volume": 150.0,
        }
    )
    return RAW_TABLES["market_bars"].conform(df)


def outcomes(df, table="market_bars", start=dt.date(2021, 5, 1), end=dt.date(2021, 6, 1)):
    return {o.name: o for o in quality.raw_table_rules(table, df, start, end, BUILT)}


def test_clean_bars_pass_every_rule():
    res = outcomes(bars())
    assert set(res) == set(quality.rule_names("market_bars"))
    assert all(o.passed for o in res.values()), {n: o.failed_rows for n, o in res.items()}


def test_each_defect_is_counted_by_its_rule():
    df = bars(20)
    bad = pl.concat(
        [
            df,
            df.head(2),  # 2 duplicated keys -> 4 rows share a key
            df.slice(5, 1).with_columns(pl.col("ts") + pl.duration(minutes=2)),  # off grid
            df.slice(6, 1).with_columns(
                pl.col("ts") + pl.duration(minutes=1), pl.col("high") - 5.0
            ),  # off grid + OHLC
        ]
    )
    res = outcomes(bad)
    assert res["unique_key"].failed_rows == 4
    assert res["in_window_on_grid"].failed_rows == 2
    assert res["ohlc_sanity"].failed_rows == 1
    assert res["ohlc_sanity"].sample.height == 1 and "|" in res["ohlc_sanity"].sample_markdown()


def test_rows_before_listing_or_after_build_time_fail():
    early = bars(3, start=dt.datetime(2020, 8, 1, tzinfo=UTC), symbol="SOLUSDT")  # SOL listed 2020-08-11
    res = outcomes(early, start=dt.date(2020, 8, 1), end=dt.date(2020, 9, 1))
    assert res["listing_and_clock"].failed_rows == 3
    future = bars(3, start=dt.datetime(2021, 5, 31, 23, 55, tzinfo=UTC))
    assert (
        outcomes(future)["listing_and_clock"].failed_rows == 2
    )  # 23:55 is before the build time; 00:00 and 00:05 not


def test_wrong_dtype_and_missing_column_are_schema_failures():
    df = bars().with_columns(pl.col("trades").cast(pl.Float64))
    assert not outcomes(df)["schema"].passed
    res = outcomes(bars().drop("close"))
    assert not res["schema"].passed and not res["ohlc_sanity"].passed  # not evaluated counts as failed


def test_published_before_it_happened_fails():
    ts = dt.datetime(2021, 5, 3, 8, tzinfo=UTC)
    df = RAW_TABLES["funding_rates"].conform(
        pl.DataFrame(
            {
                "date": [ts.date()] * 2,
                "ts": [ts, ts + dt.timedelta(hours=8)],
                "symbol": ["BTCUSDT"] * 2,
                "funding_rate": [1e-4, 2e-4],
                "mark_price": [None, None],
                "available_at": [ts, ts + dt.timedelta(hours=7)],
            }
        )
    )
    res = outcomes(df, table="funding_rates")
    assert res["available_after_ts"].failed_rows == 1
    assert res["schema"].passed  # mark_price is nullable


# -- price continuity on real bars ---------------------------------------------------------------


def market_rows(b: pl.DataFrame, symbol: str, market: str, timeframe: str) -> pl.DataFrame:
    """Real OHLCV bars (ts, open, high, low, close, volume) as market_bars rows."""
    b = b.select("ts", "open", "high", "low", "close", "volume").with_columns(
        pl.col("ts").dt.cast_time_unit("ms").dt.convert_time_zone("UTC")
    )
    return RAW_TABLES["market_bars"].conform(
        b.with_columns(
            date=pl.col("ts").dt.date(),
            symbol=pl.lit(symbol),
            market=pl.lit(market),
            timeframe=pl.lit(timeframe),
            quote_volume=pl.col("volume") * pl.col("close"),
            trades=pl.lit(1),
            taker_buy_volume=pl.col("volume") / 2,
            taker_buy_quote_volume=pl.col("volume") * pl.col("close") / 2,
        )
    )


def real_market_bars() -> pl.DataFrame:
    """Every real bar sample: BTC/ETH/SOL spot 5m and 1h with their perpetual, BTC 2023 5m with its
    1h aggregate, XRP perpetual 5m, and XRP/ETH 5m with the missing bars of a thin market."""
    frames = []
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        for tf in ("5m", "1h"):
            b = real_bars(symbol, tf)
            frames += [market_rows(b, symbol, "spot", tf), market_rows(usdm_bars(b), symbol, "usdm", tf)]
    raw = json.loads((REAL_DATA / "freqtrade" / "BTC_USDT-5m-2023.candles.json").read_text())
    btc23 = pl.DataFrame({k: list(v.values()) for k, v in raw.items()}).with_columns(
        pl.from_epoch("date", time_unit="ms").dt.replace_time_zone("UTC").alias("ts")
    )
    five = market_rows(btc23, "BTCUSDT", "spot", "5m")
    frames += [five, aggregate_klines(five)]
    xrp = pl.read_ipc(REAL_DATA / "freqtrade" / "XRP_USDT_USDT-5m-futures.feather").rename({"date": "ts"})
    frames.append(market_rows(xrp, "XRPUSDT", "usdm", "5m"))
    thin = pl.read_ipc(REAL_DATA / "freqtrade" / "XRP_ETH-5m.feather").rename({"date": "ts"})
    frames.append(market_rows(thin, "XRPUSDT", "spot", "5m"))
    return pl.concat(frames)


def paste(df: pl.DataFrame, symbol: str, market: str, tf: str, ts: list, donor: str) -> pl.DataFrame:
    """`symbol`'s bars at `ts` replaced by the `donor` coin's bars at the same times (a wrong-coin row)."""
    at = (pl.col("symbol") == symbol) & (pl.col("market") == market) & (pl.col("timeframe") == tf)
    at = at & pl.col("ts").is_in(ts)
    pasted = df.filter(
        (pl.col("symbol") == donor) & (pl.col("market") == "spot") & (pl.col("timeframe") == tf)
    ).filter(pl.col("ts").is_in(ts))
    assert pasted.height == len(ts)
    return pl.concat([df.filter(~at), pasted.with_columns(symbol=pl.lit(symbol), market=pl.lit(market))])


def test_price_continuity_passes_every_real_sample_file():
    df = real_market_bars()
    assert df.height > 25_000 and df.get_column("symbol").n_unique() == 4
    res = quality.price_continuity_rule(df)
    assert res.failed_rows == 0, res.sample
    # the thin XRP/ETH market has missing bars: those gaps in time are not price jumps
    thin = df.filter(pl.col("market") == "spot", pl.col("symbol") == "XRPUSDT").sort("ts")
    assert (thin.get_column("ts").diff().drop_nulls() > dt.timedelta(minutes=5)).sum() == 6
    # real adjacent bars sit far inside the bound (largest: the thin XRP/ETH market, 0.4%), so
    # the bound is not tuned to just pass them
    series = ("symbol", "market", "timeframe")
    adjacent = pl.col("ts").diff().over(series) == pl.col("timeframe").replace_strict(
        {"5m": dt.timedelta(minutes=5), "1h": dt.timedelta(hours=1)}
    )
    gaps = df.sort(*series, "ts").select(
        pl.when(adjacent).then((pl.col("open") / pl.col("close").shift(1)).log().abs().over(series))
    )
    assert gaps.to_series().drop_nulls().len() > 25_000
    assert gaps.to_series().max() < quality.MAX_ADJACENT_LOG_GAP / 20


T0 = dt.datetime(2025, 8, 4, 12, 30, tzinfo=UTC)


def test_a_bar_at_another_coins_price_is_caught_and_named():
    df = paste(real_market_bars(), "BTCUSDT", "spot", "5m", [T0], donor="ETHUSDT")
    res = outcomes(df, start=dt.date(2025, 8, 1), end=dt.date(2025, 9, 1))["price_continuity"]
    assert res.failed_rows == 1  # the pasted bar only, not its innocent neighbours
    row = res.sample.row(0, named=True)
    assert (row["ts"], row["symbol"], row["market"], row["timeframe"]) == (T0, "BTCUSDT", "spot", "5m")
    assert row["close"] == real_bars("ETHUSDT", "5m").filter(pl.col("ts") == T0).get_column("close")[0]
    assert "opens -96.9% from the previous close" in row["reason"]
    assert "outside its 1h bar's [low, high]" in row["reason"]
    assert "perpetual close 3117.5% from the spot close" in row["reason"]


def test_a_pasted_1h_perpetual_bar_is_caught_without_blaming_its_5m_bars():
    hour = dt.datetime(2025, 8, 4, 12, tzinfo=UTC)
    df = paste(real_market_bars(), "BTCUSDT", "usdm", "1h", [hour], donor="SOLUSDT")
    res = quality.price_continuity_rule(df)
    assert res.failed_rows == 1
    assert res.sample.select("ts", "market", "timeframe").row(0) == (hour, "usdm", "1h")


def test_a_run_of_pasted_bars_flags_the_run_and_where_it_ends():
    run = [T0 + dt.timedelta(minutes=5 * i) for i in range(3)]
    df = paste(real_market_bars(), "ETHUSDT", "spot", "5m", run, donor="SOLUSDT")
    res = quality.price_continuity_rule(df)
    flagged = res.sample.select("ts", "market").rows()
    # the three pasted bars (outside their hour, apart from the perpetual), and the first true
    # bar after them, whose open jumps back: the comparison cannot tell which side is foreign
    assert res.failed_rows == 4
    assert flagged == [(t, "spot") for t in [*run, run[-1] + dt.timedelta(minutes=5)]]
    assert res.sample.get_column("reason")[-1].startswith("opens ")
    # the raw checks run the rule: it is one of market_bars' blocking rules
    assert "price_continuity" in quality.rule_names("market_bars")
