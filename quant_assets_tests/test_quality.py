import datetime as dt

import polars as pl

from quant_assets import quality
from quant_assets.schemas import RAW_TABLES

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
