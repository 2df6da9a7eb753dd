"""What the tables predict: nothing at signal_strength 0; the stated effects above it, within max_ic.

Signals are read from the tables the way a feature pipeline would (as of the decision
time T on the 5m grid, rows with available_at <= T only) and scored against the forward
1h log return from T, taken from `prices`.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from quant_assets.sources import sim_effects as fx
from quant_assets.sources import sim_params as sp
from quant_assets.sources.sim_daily import daily_state
from quant_assets.sources.sim_events import NEGATIVE_WORDS, POSITIVE_WORDS, TIER_WEIGHT, day_events
from quant_assets.sources.synthetic import MarketSimulator

FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
TABLES = [
    "prices",
    "orderbook_l2",
    "funding_rates",
    "onchain_signals",
    "derivatives_metrics",
    "events",
    "event_links",
]
# Signals as read from the tables, and the sign of their effect on returns when signal_strength > 0:
# the stated effects; netflow and net_inflow share exchange_netflow's component; past returns carry
# the unfinished drifts of recent signals (momentum); 0 for what no effect touches.
SIGNALS = {
    "book_imbalance": 1, "funding_rate": -1, "funding_fresh": -1, "exchange_netflow": -1, "netflow": -1,
    "net_inflow": -1, "open_interest": 0, "long_short_ratio_global": 0, "long_short_ratio_top_accounts": 0,
    "taker_buy_sell_ratio": 0, "basis": 0, "news_sentiment": 1, "social_sentiment": 1, "past_return_1h": 1,
}  # fmt: skip
NULL_WINDOWS = [(dt.date(2021, 3, 1), dt.date(2021, 4, 1)), (dt.date(2022, 8, 1), dt.date(2022, 9, 1)),
                (dt.date(2023, 11, 1), dt.date(2023, 12, 1)), (dt.date(2025, 5, 1), dt.date(2025, 6, 1))]  # fmt: skip
EFFECT_WINDOW = (dt.date(2024, 3, 1), dt.date(2024, 5, 1))


def _asof(df: pl.DataFrame, table: pl.DataFrame, cols: list[str], keep_ts: str | None = None) -> pl.DataFrame:
    right = table.select(
        "symbol", pl.col("available_at").alias("_seen"), *cols, *([keep_ts] if keep_ts else [])
    )
    # both sides are sorted by (symbol, time); polars cannot verify that with `by`, so it is told
    joined = df.join_asof(
        right.sort("symbol", "_seen"), left_on="ts", right_on="_seen", by="symbol", check_sortedness=False
    )
    return joined.drop("_seen")


def _lexicon(text: pl.Expr, words: tuple[str, ...]) -> pl.Expr:
    return text.str.count_matches(rf"\b({'|'.join(words)})\b").cast(pl.Int32)


def _sentiment(out: dict[str, pl.DataFrame], social: bool, window_bars: int) -> pl.DataFrame:
    """Lexicon score of the coin's events first visible in the last `window_bars` 5m steps."""
    text = pl.col("payload").struct.field("text").str.to_lowercase()
    ev = (
        out["events"]
        .filter(pl.col("event_type").is_in(["social_post", "social_comment"]) == social)
        .join(out["event_links"].drop_nulls("symbol").select("event_id", "symbol"), on="event_id")
        .select(
            "symbol",
            score=_lexicon(text, POSITIVE_WORDS) - _lexicon(text, NEGATIVE_WORDS),
            # the first grid time at which the event is visible
            ts=pl.col("available_at").dt.truncate("5m")
            + pl.when(pl.col("available_at") > pl.col("available_at").dt.truncate("5m"))
            .then(pl.duration(minutes=5))
            .otherwise(pl.duration(minutes=0)),
        )
        .group_by("symbol", "ts")
        .agg(pl.col("score").sum())
    )
    grid = out["prices"].select("symbol", "ts").join(ev, on=["symbol", "ts"], how="left").sort("symbol", "ts")
    return grid.with_columns(pl.col("score").fill_null(0).rolling_sum(window_bars).over("symbol"))


def signal_frame(out: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per (symbol, T): each exogenous signal as visible at T, and fwd_1h = log p(T+1h) - log p(T)."""
    lp = pl.col("price").log()
    df = (
        out["prices"]
        .sort("symbol", "ts")
        .with_columns(
            fwd_1h=lp.shift(-12).over("symbol") - lp,
            past_return_1h=lp - lp.shift(12).over("symbol"),
        )
        .select("symbol", "ts", "fwd_1h", "past_return_1h")
    )
    n1 = pl.col("bid_notional_1pct"), pl.col("ask_notional_1pct")
    book = out["orderbook_l2"].select("symbol", "ts", book_imbalance=(n1[0] - n1[1]) / (n1[0] + n1[1]))
    df = df.join(book, on=["symbol", "ts"], how="left")
    df = _asof(df, out["funding_rates"].rename({"ts": "funding_ts"}), ["funding_rate"], keep_ts="funding_ts")
    df = df.with_columns(
        funding_fresh=pl.when(pl.col("ts") - pl.col("funding_ts") < dt.timedelta(hours=4)).then(
            "funding_rate"
        )
    )
    df = _asof(df, out["onchain_signals"], ["exchange_netflow", "netflow", "net_inflow"])
    df = _asof(
        df,
        out["derivatives_metrics"],
        [
            "open_interest",
            "long_short_ratio_global",
            "long_short_ratio_top_accounts",
            "taker_buy_sell_ratio",
            "basis",
        ],
    )
    for name, social, bars in (("news_sentiment", False, 48), ("social_sentiment", True, 12)):
        s = _sentiment(out, social, bars).rename({"score": name})
        df = df.join(s, on=["symbol", "ts"], how="left")
    return df.drop_nulls("fwd_1h")


def rank_ic(df: pl.DataFrame, col: str, *, nonzero: bool = False) -> float:
    """Pooled Spearman IC; signals are scaled per symbol first (coins differ in size)."""
    d = df.drop_nulls(col)
    if nonzero:
        d = d.filter(pl.col(col) != 0)
    d = d.with_columns(x=pl.col(col) / pl.col(col).std().over("symbol"))
    return d.select(pl.corr("x", "fwd_1h", method="spearman")).item()


def _ics(strength: float, windows) -> dict[str, float]:
    sim = MarketSimulator(seed=7, signal_strength=strength)
    df = pl.concat([signal_frame(sim.fetch(TABLES, a, b, FAR)) for a, b in windows])
    ics = {s: rank_ic(df, s) for s in SIGNALS}
    for s in ("news_sentiment", "social_sentiment"):  # sparse: score them where they exist
        ics[f"{s}_when_present"] = rank_ic(df, s, nonzero=True)
    return ics


@pytest.fixture(scope="module")
def effect_ics() -> dict[float, dict[str, float]]:
    """Same seed, same draws: with and without the effects, so their difference is the effect alone."""
    return {s: _ics(s, [EFFECT_WINDOW]) for s in (0.0, 1.0)}


def test_nothing_published_predicts_forward_returns_at_zero_signal_strength():
    ics = _ics(0.0, NULL_WINDOWS)  # four months spread over 2021-2025, 10 coins
    assert len(ics) == len(SIGNALS) + 2
    bad = {k: round(v, 4) for k, v in ics.items() if abs(v) >= 0.03}
    assert not bad, bad


def test_stated_signals_move_returns_their_stated_way_and_nothing_else_moves(effect_ics):
    off, on = effect_ics[0.0], effect_ics[1.0]
    delta = {k: on[k] - off[k] for k in off}
    for name, sign in SIGNALS.items():
        if sign:
            assert sign * delta[name] > 0.005, (name, delta[name])
        else:
            assert abs(delta[name]) < 0.01, (name, delta[name])
    assert delta["book_imbalance"] > 0.02 and delta["exchange_netflow"] < -0.015
    assert delta["funding_fresh"] < -0.01
    assert delta["news_sentiment_when_present"] > 0.1 and delta["social_sentiment_when_present"] > 0.01


def test_no_table_signal_beats_max_ic(effect_ics):
    sim = MarketSimulator(seed=7, signal_strength=1.0)
    best = sim.max_ic("1h")
    assert 0.05 < best < 0.3
    for name, ic in effect_ics[1.0].items():
        if not name.endswith("_when_present"):  # conditional ICs describe a subsample, not the market
            assert abs(ic) < best, (name, ic, best)


def test_max_ic_is_zero_without_signal_and_grows_with_strength():
    assert MarketSimulator(seed=7, signal_strength=0.0).max_ic("1h") == 0.0
    assert MarketSimulator(seed=7, signal_strength=0.0).max_ic("4h") == 0.0
    weak, strong = MarketSimulator(seed=7, signal_strength=0.3), MarketSimulator(seed=7, signal_strength=1.0)
    assert 0 < weak.max_ic("1h") < strong.max_ic("1h")
    assert weak.max_ic("1h") == pytest.approx(0.3 * strong.max_ic("1h"), rel=0.15)


def test_max_ic_matches_the_oracle_on_other_samples():
    sim = MarketSimulator(seed=7, signal_strength=1.0)
    for a, b in ((dt.date(2021, 3, 1), dt.date(2021, 5, 1)), (dt.date(2025, 6, 1), dt.date(2025, 8, 1))):
        assert sim.predictable_ic(a, b, "1h") == pytest.approx(sim.max_ic("1h"), abs=0.01)
        assert sim.predictable_ic(a, b, "1h", realised=True) == pytest.approx(sim.max_ic("1h"), abs=0.03)


def test_a_signal_moves_prices_only_from_the_bar_after_it_is_published():
    # published exactly on a bar boundary, or 1 ms after it: the drift starts one full bar later
    assert fx.start_slot(np.array([0, 1, 300_000, 300_001])).tolist() == [1, 2, 2, 3]
    amp = np.zeros((len(fx.EFFECTS), 1, 1, fx.SLOTS))
    amp[0, 0, 0, 7] = 1e-3  # a book-imbalance signal whose drift starts with bar 7
    impact = fx.source_impacts(amp)[0, 0]
    assert np.all(impact[:8] == 0.0)  # boundaries 0..7 (the open of bar 7) are untouched
    h = fx.EFFECTS[0].horizon_bars
    assert impact[7 + h] == pytest.approx(1e-3 * h)  # full effect after its horizon
    end = 7 + h + fx.REVERT_BARS
    assert np.abs(impact[end:]).max() < 1e-15  # then decays away
    assert np.all(impact[fx.SUPPORT :] == 0.0)  # exactly, so older days add exact zeros


def test_impacts_are_continuous_from_one_day_to_the_next():
    rng = np.random.default_rng(0)
    amp = rng.normal(size=(len(fx.EFFECTS), 2, 6, fx.SLOTS)) * 1e-4
    days = fx.day_impacts(fx.source_impacts(amp))
    assert np.array_equal(days[:, :-1, -1], days[:, 1:, 0])  # bit for bit


def test_every_planted_effect_is_computed_from_published_columns():
    """Each signal's z is what its table publishes: the reachable ceiling needs nothing hidden."""
    day = dt.date(2024, 3, 5)
    de = day_events(7, daily_state(7), sp.cal_index(day))
    out = MarketSimulator(seed=7, signal_strength=1.0).fetch(
        ["events", "event_links"], day, day + dt.timedelta(days=1), FAR
    )
    ev = out["events"].join(
        out["event_links"].drop_nulls("symbol").select("event_id", "relevance"), on="event_id"
    )
    social = pl.col("event_type").is_in(["social_post", "social_comment"])
    tier_weight = pl.col("source_tier").cast(pl.Int64).replace_strict(dict(enumerate(TIER_WEIGHT.tolist())))
    engagement = pl.col("payload").struct.field("engagement")
    z = pl.col("sentiment_score") * pl.when(social).then(
        (engagement.log1p() / 5).clip(upper_bound=2.0)
    ).otherwise(pl.col("confidence_score") * tier_weight * pl.col("relevance"))
    # drift records are the items with a nonzero effect, in publication order
    published = ev.sort("available_at", "event_id").select(z=z, social=social).filter(pl.col("z") != 0)
    order = np.lexsort((np.arange(len(de.z)), de.avail_ms))
    assert published.height == len(de.z) > 50
    np.testing.assert_allclose(published["z"].to_numpy(), de.z[order], rtol=1e-12)
    assert published["social"].to_list() == de.social[order].tolist()
    assert out["events"]["sentiment_score"].is_between(-1, 1).all()


def test_two_ceilings_full_knowledge_and_reachable_from_the_feature_rows():
    sim = MarketSimulator(seed=7, signal_strength=1.0)
    c = sim.ceilings("1h")
    assert c == {"full": sim.max_ic("1h"), "reachable": sim.reachable_ic("1h")}
    # the matrix's row t reads rows published by t, the decision is at t + 5m: a bar of news is missed
    assert 0.9 * c["full"] < c["reachable"] < c["full"]
    assert sim.reachable_ic("4h") < sim.max_ic("4h")
    assert MarketSimulator(seed=7, signal_strength=0.0).ceilings("1h") == {"full": 0.0, "reachable": 0.0}


def test_a_subset_of_effects_can_be_planted(monkeypatch):
    text = ("news_sentiment", "social_sentiment")
    sim = MarketSimulator(seed=7, signal_strength=1.0, effects=list(reversed(text)))
    assert sim.effects == text and "effects=" in repr(sim)
    every = MarketSimulator(seed=7, signal_strength=1.0)
    assert 0.3 * every.max_ic("1h") < sim.max_ic("1h") < every.max_ic("1h")
    # the signals are published the same; prices (and what is quoted on them) move differently
    window = (dt.date(2024, 3, 1), dt.date(2024, 3, 3))
    a, b = sim.fetch(TABLES, *window, FAR), every.fetch(TABLES, *window, FAR)
    for t in ("events", "event_links", "onchain_signals"):
        assert a[t].equals(b[t]), t
    assert a["funding_rates"]["funding_rate"].equals(b["funding_rates"]["funding_rate"])
    assert not a["prices"].equals(b["prices"])
    # book imbalance predicts nothing once its effect is not planted
    assert abs(rank_ic(signal_frame(a), "book_imbalance")) < 0.03 < rank_ic(signal_frame(b), "book_imbalance")
    monkeypatch.setenv("QUANT_ASSETS_SIM_EFFECTS", " news_sentiment, social_sentiment ")
    assert MarketSimulator(seed=7, signal_strength=1.0).effects == text
    monkeypatch.setenv("QUANT_ASSETS_SIM_EFFECTS", "news_sentiment,moon_phase")
    with pytest.raises(ValueError, match=r"QUANT_ASSETS_SIM_EFFECTS.*moon_phase"):
        MarketSimulator(seed=7, signal_strength=1.0)


def test_forecast_ic_scores_any_forecast_on_the_feature_clock():
    sim = MarketSimulator(seed=7, signal_strength=1.0)
    days = pl.date_range(dt.date(2024, 3, 1), dt.date(2024, 3, 8), eager=True, closed="left")
    ts = pl.datetime_range(
        days[0], days[-1] + dt.timedelta(days=1), "5m", eager=True, closed="left", time_zone="UTC"
    )
    grid = (
        pl.DataFrame({"symbol": "BTCUSDT", "ts": ts})
        .join(pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT", "SOLUSDT"]}), how="cross")
        .select(pl.col("symbol_right").alias("symbol"), "ts")
    )
    rng = np.random.default_rng(0)
    noise = grid.with_columns(forecast=pl.Series(rng.normal(size=grid.height)))
    assert abs(sim.forecast_ic(noise)) < 0.02
    # a book-imbalance forecast read from the tables (visible at row t) carries the book effect
    book = sim.fetch(["orderbook_l2"], dt.date(2024, 3, 1), dt.date(2024, 3, 8), FAR)["orderbook_l2"]
    imb = book.select("symbol", "ts", forecast=(pl.col("bid_notional_1pct") - pl.col("ask_notional_1pct"))
                      / (pl.col("bid_notional_1pct") + pl.col("ask_notional_1pct")))  # fmt: skip
    assert 0.02 < sim.forecast_ic(imb) < sim.reachable_ic("1h")
    assert sim.forecast_ic(imb.with_columns(-pl.col("forecast"))) == pytest.approx(-sim.forecast_ic(imb))
    assert MarketSimulator(seed=7, signal_strength=0.0).forecast_ic(imb) == 0.0
    with pytest.raises(ValueError, match=r"lacks columns \['forecast'\]"):
        sim.forecast_ic(imb.drop("forecast"))
