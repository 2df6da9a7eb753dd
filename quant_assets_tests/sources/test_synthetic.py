"""The simulator's contract: schemas, determinism per day, continuity, coverage, `until`."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quant_assets.schemas import EVENT_TYPES, RAW_TABLES
from quant_assets.sources.sim_events import ENTITIES
from quant_assets.sources.synthetic import MarketSimulator
from quant_assets.universe import COINS, HISTORY_START, SYMBOLS

FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
ALL = list(RAW_TABLES)
FUTURES = ("funding_rates", "derivatives_metrics")


def _days(df: pl.DataFrame, start: dt.date, end: dt.date) -> pl.DataFrame:
    return df.filter((pl.col("date") >= start) & (pl.col("date") < end))


@pytest.fixture(scope="module")
def boundary_window() -> dict[str, pl.DataFrame]:
    """Four days across a month boundary, signals on, every table."""
    return MarketSimulator(seed=7, signal_strength=0.5).fetch(
        ALL, dt.date(2024, 2, 28), dt.date(2024, 3, 3), FAR
    )


def test_seed_and_signal_default_to_the_environment(monkeypatch):
    monkeypatch.delenv("QUANT_ASSETS_SIM_SEED", raising=False)
    monkeypatch.delenv("QUANT_ASSETS_SIM_SIGNAL", raising=False)
    sim = MarketSimulator()
    assert (sim.seed, sim.signal_strength) == (7, 0.0)
    monkeypatch.setenv("QUANT_ASSETS_SIM_SEED", "42")
    monkeypatch.setenv("QUANT_ASSETS_SIM_SIGNAL", "0.25")
    sim = MarketSimulator()
    assert (sim.seed, sim.signal_strength, sim.name) == (42, 0.25, "synthetic")
    assert MarketSimulator(seed=3, signal_strength=0.0).seed == 3  # explicit arguments win
    monkeypatch.setenv("QUANT_ASSETS_SIM_SEED", "seven")
    with pytest.raises(ValueError, match="QUANT_ASSETS_SIM_SEED"):
        MarketSimulator()


def test_bad_arguments_raise_errors_naming_the_problem():
    sim = MarketSimulator(seed=1, signal_strength=0.0)
    with pytest.raises(ValueError, match="unknown tables \\['klines'\\]"):
        sim.fetch(["klines"], dt.date(2024, 1, 1), dt.date(2024, 1, 2), FAR)
    with pytest.raises(ValueError, match="outside the simulated calendar"):
        sim.fetch(
            ["prices"], dt.date(2041, 1, 1), dt.date(2041, 1, 2), dt.datetime(2042, 1, 1, tzinfo=dt.UTC)
        )
    with pytest.raises(ValueError, match="signal_strength"):
        MarketSimulator(seed=1, signal_strength=-0.1)
    with pytest.raises(ValueError, match="unknown horizon"):
        sim.max_ic("2h")


def test_every_table_conforms_to_its_schema_with_unique_sorted_keys(boundary_window):
    for name, schema in RAW_TABLES.items():
        df = boundary_window[name]
        assert df.schema == schema.schema, name
        if name != "entities":
            assert df.height > 0, name
        assert df.select(pl.struct(list(schema.key)).is_unique().all()).item(), name
        assert df.equals(df.sort(list(schema.key))), f"{name} is not sorted by {schema.key}"
        must = [c for c in schema.columns if c not in schema.nullable]
        assert df.select(pl.col(must).null_count()).sum_horizontal().item() == 0, name
        if "ts" in df.columns:
            assert df.select((pl.col("ts").dt.date() == pl.col("date")).all()).item(), name


def test_a_month_built_alone_equals_the_same_month_inside_a_three_month_window():
    for strength in (0.0, 0.8):
        late_first = MarketSimulator(seed=11, signal_strength=strength)
        late_first.fetch(ALL, dt.date(2022, 3, 1), dt.date(2022, 4, 1), FAR)  # built out of order on purpose
        alone = late_first.fetch(ALL, dt.date(2022, 2, 1), dt.date(2022, 3, 1), FAR)
        window = MarketSimulator(seed=11, signal_strength=strength).fetch(
            ALL, dt.date(2022, 1, 1), dt.date(2022, 4, 1), FAR
        )
        for name in ALL:
            assert_frame_equal(alone[name], _days(window[name], dt.date(2022, 2, 1), dt.date(2022, 3, 1)))
        assert alone["market_bars"].height > 170_000  # 28 days x 10 coins x 2 markets x (288 + 24)


def test_the_same_call_twice_returns_equal_frames_and_other_seeds_differ(boundary_window):
    again = MarketSimulator(seed=7, signal_strength=0.5).fetch(
        ALL, dt.date(2024, 2, 28), dt.date(2024, 3, 3), FAR
    )
    for name in ALL:
        assert_frame_equal(again[name], boundary_window[name])
    other = MarketSimulator(seed=8, signal_strength=0.5).fetch(
        ["prices"], dt.date(2024, 2, 28), dt.date(2024, 3, 3), FAR
    )
    assert not other["prices"].equals(boundary_window["prices"])


@settings(max_examples=8, deadline=None)
@given(
    day=st.dates(min_value=dt.date(2018, 1, 3), max_value=dt.date(2026, 6, 1)),
    seed=st.integers(0, 2**31 - 1),
    strength=st.sampled_from([0.0, 0.6]),
)
def test_any_day_computed_alone_equals_that_day_inside_a_window(day, seed, strength):
    tables = ["market_bars", "prices", "orderbook_l2", "funding_rates", "events", "event_links"]
    alone = MarketSimulator(seed, strength).fetch(tables, day, day + dt.timedelta(days=1), FAR)
    window = MarketSimulator(seed, strength).fetch(
        tables, day - dt.timedelta(days=2), day + dt.timedelta(days=2), FAR
    )
    for name in tables:
        assert_frame_equal(alone[name], _days(window[name], day, day + dt.timedelta(days=1)))


def test_each_bar_opens_at_the_previous_close_across_days_and_months():
    sim = MarketSimulator(seed=5, signal_strength=0.7)
    jan = sim.fetch(["market_bars"], dt.date(2023, 1, 1), dt.date(2023, 2, 1), FAR)["market_bars"]
    feb = sim.fetch(["market_bars"], dt.date(2023, 2, 1), dt.date(2023, 3, 1), FAR)["market_bars"]
    bars = pl.concat([jan, feb]).filter(timeframe="5m").sort("symbol", "market", "ts")
    chk = bars.with_columns(
        prev_close=pl.col("close").shift().over("symbol", "market"),
        gap=pl.col("ts").diff().over("symbol", "market"),
    ).filter(pl.col("gap") == dt.timedelta(minutes=5))
    assert chk.height > 0.99 * bars.height
    assert chk.filter(pl.col("open") != pl.col("prev_close")).height == 0
    # the month boundary itself, for every symbol and market
    last = jan.filter(timeframe="5m", ts=dt.datetime(2023, 1, 31, 23, 55, tzinfo=dt.UTC))
    first = feb.filter(timeframe="5m", ts=dt.datetime(2023, 2, 1, tzinfo=dt.UTC))
    joined = last.join(first, on=["symbol", "market"], suffix="_feb")
    assert joined.height >= 18
    assert (joined["close"] == joined["open_feb"]).all()


def test_the_1h_bar_is_the_exact_aggregate_of_its_5m_bars(boundary_window):
    bars = boundary_window["market_bars"]
    agg = (
        bars.filter(timeframe="5m")
        .sort("ts")
        .group_by("symbol", "market", pl.col("ts").dt.truncate("1h"), maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume", "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume").sum(),
            pl.len().alias("n"),
        )  # fmt: skip
    )
    hourly = bars.filter(timeframe="1h")
    joined = hourly.join(agg, on=["symbol", "market", "ts"], how="full", suffix="_agg", coalesce=True)
    assert joined.height == hourly.height and (joined["n"] == 12).all()
    for col in ("open", "high", "low", "close", "volume", "quote_volume", "trades", "taker_buy_volume",
                "taker_buy_quote_volume"):  # fmt: skip
        assert (joined[col] == joined[f"{col}_agg"]).all(), col  # exact, not approximate


def test_missing_hours_lose_every_bar_but_keep_prices_and_books():
    out = MarketSimulator(seed=7, signal_strength=0.0).fetch(
        ["market_bars", "prices", "orderbook_l2"], dt.date(2024, 1, 1), dt.date(2024, 4, 1), FAR
    )
    bars, prices = out["market_bars"], out["prices"]
    spot5 = bars.filter(market="spot", timeframe="5m")
    missing = prices.join(spot5, on=["symbol", "ts"], how="anti")
    share = missing.height / prices.height
    assert 0.0002 < share < 0.003, share  # about 0.1% of bars, as in real feeds
    hours = missing.with_columns(pl.col("ts").dt.truncate("1h")).group_by("symbol", "ts").len()
    assert (hours["len"] == 12).all()  # whole hours go missing, so the 1h bar stays an exact aggregate
    for market in ("spot", "usdm"):
        for tf in ("5m", "1h"):
            present = bars.filter(market=market, timeframe=tf).with_columns(pl.col("ts").dt.truncate("1h"))
            assert hours.join(present, on=["symbol", "ts"], how="semi").height == 0, (market, tf)
    assert missing.join(out["orderbook_l2"], on=["symbol", "ts"], how="anti").height == 0
    assert prices.height == 91 * 288 * 10 == out["orderbook_l2"].height


def test_no_rows_before_a_coin_lists_and_no_futures_rows_before_its_perpetual():
    out = MarketSimulator(seed=2, signal_strength=0.5).fetch(
        ALL, dt.date(2020, 8, 1), dt.date(2020, 10, 1), FAR
    )
    for name in ("market_bars", "prices", "orderbook_l2", "onchain_signals", *FUTURES):
        first = (
            out[name]
            .group_by("symbol", *(["market"] if name == "market_bars" else []))
            .agg(pl.col("date").min())
        )
        for row in first.iter_rows(named=True):
            c = next(c for c in COINS if c.symbol == row["symbol"])
            perp = name in FUTURES or row.get("market") == "usdm"
            listed = c.perp_listed if perp else c.spot_listed
            assert row["date"] == max(listed, dt.date(2020, 8, 1)), (name, row)
    linked = out["event_links"].drop_nulls("symbol").join(out["events"], on="event_id")
    late = linked.join(
        pl.DataFrame({"symbol": [c.symbol for c in COINS], "listed": [c.spot_listed for c in COINS]}),
        on="symbol",
    )
    assert late.filter(pl.col("date") < pl.col("listed")).height == 0
    early = MarketSimulator(seed=2).fetch(
        ["prices", "funding_rates"], dt.date(2018, 1, 1), dt.date(2018, 1, 3), FAR
    )
    assert set(early["prices"]["symbol"]) == {"BTCUSDT", "ETHUSDT", "BNBUSDT"}
    assert early["funding_rates"].height == 0


def test_until_keeps_only_closed_bars_and_published_rows():
    sim = MarketSimulator(seed=4, signal_strength=0.5)
    until = dt.datetime(2024, 3, 15, 10, 7, tzinfo=dt.UTC)
    cut = sim.fetch(ALL, dt.date(2024, 3, 1), dt.date(2024, 4, 1), until)
    full = sim.fetch(ALL, dt.date(2024, 3, 1), dt.date(2024, 4, 1), FAR)
    bars = cut["market_bars"]
    assert bars.filter(timeframe="5m")["ts"].max() == dt.datetime(2024, 3, 15, 10, 0, tzinfo=dt.UTC)
    assert bars.filter(timeframe="1h")["ts"].max() == dt.datetime(2024, 3, 15, 9, 0, tzinfo=dt.UTC)
    assert cut["prices"]["ts"].max() == dt.datetime(2024, 3, 15, 10, 5, tzinfo=dt.UTC)
    for name in ALL:
        df = cut[name]
        if "ts" in df.columns:
            assert df.filter(pl.col("ts") >= until).height == 0, name
        if "available_at" in df.columns:
            assert df["available_at"].max() <= until, name
    # the 10:00 on-chain row is published 10-30 minutes late, so after this `until`
    assert cut["onchain_signals"]["ts"].max() == dt.datetime(2024, 3, 15, 9, 0, tzinfo=dt.UTC)
    # nothing visible by `until` is dropped or altered
    for name in ALL:
        if name == "entities":
            continue
        key = list(RAW_TABLES[name].key)
        expect = full[name].join(cut[name].select(key), on=key, how="semi")
        assert_frame_equal(cut[name], expect)
        visible = full[name]
        if name == "market_bars":
            step = (
                pl.when(pl.col("timeframe") == "5m")
                .then(pl.duration(minutes=5))
                .otherwise(pl.duration(hours=1))
            )
            visible = visible.filter(pl.col("ts") + step <= until)
        elif name == "event_links":
            visible = visible.join(cut["events"].select("event_id"), on="event_id", how="semi")
        else:
            visible = visible.filter(pl.col("ts") < until)
            if "available_at" in visible.columns:
                visible = visible.filter(pl.col("available_at") <= until)
        assert cut[name].height == visible.height, name


def test_perpetual_close_is_spot_close_times_one_plus_basis(boundary_window):
    bars = boundary_window["market_bars"].filter(timeframe="5m")
    spot, perp = bars.filter(market="spot"), bars.filter(market="usdm")
    m = (
        boundary_window["derivatives_metrics"]
        .join(spot, on=["symbol", "ts"])
        .join(perp, on=["symbol", "ts"], suffix="_perp")
    )
    assert m.height > 0.99 * perp.height
    err = (m["close_perp"] - m["close"] * (1 + m["basis"])).abs() / m["close_perp"]
    assert err.max() < 1e-12
    assert (m["annualized_basis"] - m["basis"] * 1095).abs().max() < 1e-12
    assert m["basis"].abs().max() < 0.01


def test_rows_sit_on_their_grids_and_books_and_bars_are_sane(boundary_window):
    w = boundary_window
    bars = w["market_bars"]
    assert bars.filter((pl.col("low") > pl.min_horizontal("open", "close")) |
                       (pl.col("high") < pl.max_horizontal("open", "close")) | (pl.col("volume") <= 0) |
                       (pl.col("taker_buy_volume") > pl.col("volume")) | (pl.col("trades") < 1)).height == 0  # fmt: skip
    assert set(bars["market"]) == {"spot", "usdm"} and set(bars["timeframe"]) == {"5m", "1h"}
    f = w["funding_rates"]
    assert set(f["ts"].dt.hour()) == {0, 8, 16} and (f["available_at"] == f["ts"]).all()
    assert f["funding_rate"].abs().max() <= 0.003
    on = w["onchain_signals"]
    delay = (on["available_at"] - on["ts"]).dt.total_minutes()
    assert delay.min() >= 10 and delay.max() <= 30 and (on["ts"].dt.minute() == 0).all()
    d = w["derivatives_metrics"]
    assert ((d["available_at"] - d["ts"]) == dt.timedelta(minutes=5)).all()
    ob = w["orderbook_l2"]
    assert (ob["best_bid"] < ob["best_ask"]).all()
    for side in ("bid", "ask"):
        for kind in ("depth", "notional"):
            cols = [f"{side}_{kind}_{b}pct" for b in range(1, 6)]
            assert (
                ob.select(
                    pl.all_horizontal(pl.col(a) < pl.col(b) for a, b in zip(cols, cols[1:], strict=False))
                )
                .to_series()
                .all()
            )
    px = w["prices"].join(ob, on=["symbol", "ts"])
    assert ((px["best_bid"] <= px["price"]) & (px["price"] <= px["best_ask"])).all()


def test_events_carry_complete_payloads_and_link_to_known_entities(boundary_window):
    ev, links = boundary_window["events"], boundary_window["event_links"]
    assert set(ev["event_type"]) == set(EVENT_TYPES)
    assert (ev["available_at"] >= ev["ts"]).all()
    assert ev["source_tier"].is_between(1, 5).all() and ev["confidence_score"].is_between(0, 1).all()
    assert ev["event_id"].str.contains(r"^sim-\d{4}-\d{2}-\d{2}-\d{4}$").all()
    assert (ev["event_id"].str.slice(4, 10) == ev["date"].cast(pl.String)).all()
    payload = ev["payload"].struct.unnest()
    assert payload.null_count().sum_horizontal().item() == 0
    assert (payload["text"].str.len_chars() > 10).all() and payload["url"].str.starts_with("https://").all()
    assert set(links["event_id"]) == set(ev["event_id"])  # every event is about something
    assert links.drop_nulls("symbol")["event_id"].n_unique() == ev.height  # and always about a coin
    assert set(links["entity_id"]) <= {e.entity_id for e in ENTITIES}
    assert set(links.drop_nulls("symbol")["symbol"]) <= set(SYMBOLS)
    dated = links.join(ev.select("event_id", "date"), on="event_id", suffix="_ev")
    assert (dated["date"] == dated["date_ev"]).all()
    first_seen = pl.DataFrame(
        {"entity_id": [e.entity_id for e in ENTITIES], "seen": [e.first_seen for e in ENTITIES]}
    )
    assert links.join(first_seen, on="entity_id").filter(pl.col("date") < pl.col("seen")).height == 0


def test_each_month_lists_every_entity_known_by_then_dated_no_earlier_than_first_seen():
    sim = MarketSimulator(seed=9)
    months = [dt.date(y, m, 1) for y in range(2018, 2026) for m in range(1, 13)]
    found = pl.concat(
        [sim.fetch(["entities"], a, b, FAR)["entities"] for a, b in zip(months, months[1:], strict=False)]
    )
    assert found.select("date", "entity_id").is_unique().all()
    assert set(found["entity_id"]) == {e.entity_id for e in ENTITIES}
    assert (found["date"] >= found["first_seen"]).all()  # never dated before it was seen
    for c in COINS:
        rows = found.filter(entity_type="coin", symbol=c.symbol).sort("date")
        assert rows["first_seen"].unique().to_list() == [c.first_day()]
        assert rows["date"][0] == max(c.spot_listed, HISTORY_START)
        assert rows.height == sum(1 for m0, m1 in zip(months, months[1:], strict=False) if c.first_day() < m1)
    # one window equals its months fetched one by one (rows do not depend on how history is cut)
    whole = sim.fetch(["entities"], dt.date(2023, 1, 1), dt.date(2023, 7, 1), FAR)["entities"]
    assert whole.equals(
        found.filter(pl.col("date").is_between(dt.date(2023, 1, 1), dt.date(2023, 7, 1), "left"))
    )

    # a month's partition lists every entity its events link to (a demo of recent months is not empty)
    month = sim.fetch(["events", "event_links", "entities"], dt.date(2025, 11, 1), dt.date(2025, 12, 1), FAR)
    assert set(month["event_links"]["entity_id"]) <= set(month["entities"]["entity_id"])
    assert month["entities"]["date"].unique().to_list() == [dt.date(2025, 11, 1)]

    june = sim.fetch(
        ["entities"], dt.date(2023, 6, 1), dt.date(2023, 7, 1), dt.datetime(2023, 6, 14, tzinfo=dt.UTC)
    )
    assert "project:eigenlayer" not in set(
        june["entities"]["entity_id"]
    )  # first seen 2023-06-14, after `until`
    june = sim.fetch(["entities"], dt.date(2023, 6, 1), dt.date(2023, 7, 1), FAR)["entities"]
    assert june.filter(entity_id="project:eigenlayer")["date"].to_list() == [dt.date(2023, 6, 14)]
