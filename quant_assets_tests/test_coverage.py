import datetime as dt

import polars as pl

from quant_assets import coverage
from quant_assets.universe import BARS_PER_DAY, COIN_BY_SYMBOL, COINS, FUNDING_INTERVAL

UTC = dt.UTC
SOL = COIN_BY_SYMBOL["SOLUSDT"]


def grid(symbol, start, n, step_min=5, drop=()):
    ts = [start + dt.timedelta(minutes=step_min * i) for i in range(n) if i not in drop]
    return pl.DataFrame(
        {"ts": ts, "symbol": symbol, "market": "spot", "timeframe": "5m"},
        schema_overrides={"ts": pl.Datetime("ms", "UTC")},
    )


def test_expected_buckets_start_at_listing_and_end_at_last_published_bar():
    listed = SOL.spot_listed
    start = dt.datetime.combine(listed.replace(day=1), dt.time(), UTC)
    as_of = dt.datetime.combine(listed + dt.timedelta(days=1), dt.time(0, 7), UTC)
    # One full day from the listing + the next 00:00 bar (closed 00:05); the 00:05 bar closes 00:10.
    assert coverage.expected_buckets("market_bars", listed, start, as_of) == BARS_PER_DAY + 1
    # Funding is published at its timestamp: the day's stamps and the next day's 00:00.
    assert (
        coverage.expected_buckets("funding_rates", listed, start, as_of)
        == dt.timedelta(days=1) // (FUNDING_INTERVAL) + 1
    )
    assert coverage.expected_buckets("market_bars", as_of.date() + dt.timedelta(days=1), start, as_of) == 0


def test_coverage_counts_present_buckets_and_caps_at_one():
    start = dt.datetime(2021, 3, 1, tzinfo=UTC)
    as_of = start + dt.timedelta(days=1, minutes=5)
    rows = pl.concat([grid("BTCUSDT", start, 288, drop={3, 4}), grid("BTCUSDT", start, 10)])
    cov = coverage.table_coverage("market_bars", rows.lazy(), start, as_of)
    btc = cov.filter(pl.col("symbol") == "BTCUSDT").row(0, named=True)
    assert (btc["expected"], btc["present"]) == (288, 288)
    eth = cov.filter(pl.col("symbol") == "ETHUSDT").row(0, named=True)
    assert eth["present"] == 0 and eth["coverage"] == 0.0


def test_readiness_ignores_coins_not_yet_listed_but_not_listed_coins_without_rows():
    # A one-day window that ends when SOL lists: SOL (and anything listed later) expects nothing.
    as_of = dt.datetime.combine(SOL.spot_listed, dt.time(), UTC)
    start = as_of - dt.timedelta(days=1)
    listed = [c.symbol for c in COINS if c.spot_listed <= start.date()]
    unlisted = {c.symbol for c in COINS if c.spot_listed >= as_of.date()}
    assert SOL.symbol in unlisted and len(listed) >= 2
    *with_rows, without_rows = listed
    bars = pl.concat([grid(s, start, BARS_PER_DAY) for s in with_rows])
    scans = {t: None for t in coverage.REQUIRED_TABLES}
    scans["market_bars"] = bars.lazy()

    table = coverage.readiness(scans, as_of, window_days=1)
    market = table.filter(pl.col("table") == "market_bars")
    by_symbol = {r["symbol"]: r for r in market.iter_rows(named=True)}
    for symbol in with_rows:
        assert by_symbol[symbol]["coverage"] == 1.0 and by_symbol[symbol]["ready"], symbol
    # Listed, no rows: a hole that blocks readiness.
    assert by_symbol[without_rows]["present"] == 0 and not by_symbol[without_rows]["ready"]
    # Not listed in the window: nothing expected, coverage undefined, never a reason to block.
    for symbol in unlisted:
        row = by_symbol[symbol]
        assert (row["expected"], row["present"], row["coverage"], row["ready"]) == (0, 0, None, True), symbol
    # The same holds in every required table, none of which has rows here.
    assert table.filter(pl.col("symbol").is_in(list(unlisted))).get_column("ready").all()
    assert (
        not table.filter(pl.col("table") == "prices", pl.col("symbol").is_in(listed))
        .get_column("ready")
        .any()
    )
