"""Small deterministic raw tables for feature tests (every RAW_TABLES table the features read).

`make_raw(seed, start, n_bars, symbols)` draws prices, gaps, book snapshots, funding, on-chain,
derivatives, news and social events with numpy from `seed`; same arguments, same tables.
`splice(a, b, t)` keeps a's rows visible by t and b's rows after t: "change, add or delete every row
after t" in one step, used by the look-ahead property test.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from quant_assets.features.grid import empty_table
from quant_assets.features.keys import LOOKAHEAD, LOOKBACK
from quant_assets.features.market_latent import market_latent
from quant_assets.features.matrix import feature_matrix
from quant_assets.features.snapshots import feature_snapshots
from quant_assets.features.social import social_text_latent
from quant_assets.schemas import DEPTH_BANDS, EVENT_TYPES, RAW_TABLES

STEP = dt.timedelta(minutes=5)
WORDS = ("btc", "eth", "moon", "dump", "bullish", "bearish", "hack", "launch", "rally", "fud", "price", "chart",
         "whale", "exchange", "up", "down", "partnership", "lawsuit", "news", "today")  # fmt: skip
SOURCES = ("reuters", "coindesk", "twitter", "reddit", "theblock", "bloomberg")
# published-late tables: how to tell whether a row is visible by t
VISIBLE_BY = {"funding_rates": "available_at", "onchain_signals": "available_at",
              "derivatives_metrics": "available_at", "events": "available_at"}  # fmt: skip


def _ms(start: dt.datetime, steps: np.ndarray, step: dt.timedelta = STEP) -> pl.Series:
    base = int(start.timestamp() * 1000)
    return pl.Series(base + steps.astype(np.int64) * int(step.total_seconds() * 1000)).cast(
        pl.Datetime("ms", "UTC")
    )


def _conform(name: str, df: pl.DataFrame) -> pl.DataFrame:
    if "date" not in df.columns:
        df = df.with_columns(pl.col("ts").dt.date().alias("date"))
    return RAW_TABLES[name].conform(df)


def make_raw(
    seed: int,
    start: dt.datetime,
    n_bars: int,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    gap_fraction: float = 0.03,
    events_per_day: float = 40.0,
) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    steps = np.arange(n_bars)
    bars, prices, books, funding, onchain, deriv = [], [], [], [], [], []
    for k, sym in enumerate(symbols):
        # a coin may start later than the others (listing inside the data)
        first = int(rng.integers(0, n_bars // 10)) if k else 0
        r = rng.standard_t(4, n_bars) * 0.002
        close = 100.0 * (k + 1) * np.exp(np.cumsum(r))
        vol = np.exp(rng.normal(3.0, 0.7, n_bars))
        keep = (rng.random(n_bars) > gap_fraction) & (steps >= first)
        ts = _ms(start, steps)
        b = pl.DataFrame({"ts": ts, "close": close, "volume": vol})
        b = b.with_columns(
            symbol=pl.lit(sym), market=pl.lit("spot"), open=pl.col("close"), high=pl.col("close") * 1.001,
            low=pl.col("close") * 0.999, quote_volume=pl.col("volume") * pl.col("close"),
            trades=pl.lit(10, pl.Int64), taker_buy_volume=pl.col("volume") / 2,
            taker_buy_quote_volume=pl.col("volume") * pl.col("close") / 2,
        )  # fmt: skip
        b5 = b.filter(pl.Series(keep)).with_columns(timeframe=pl.lit("5m"))
        b1 = (
            b.filter(pl.Series(steps >= first))
            .group_by_dynamic("ts", every="1h")
            .agg(pl.col("close").last(), pl.col("volume").sum(), pl.col("quote_volume").sum(),
                 pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("trades").sum(),
                 pl.col("taker_buy_volume").sum(), pl.col("taker_buy_quote_volume").sum())
            .with_columns(symbol=pl.lit(sym), market=pl.lit("spot"), timeframe=pl.lit("1h"))
        )  # fmt: skip
        b1 = b1.filter(pl.Series(rng.random(b1.height) > gap_fraction))
        bars += [b5, b1.select(b5.columns)]
        pkeep = (rng.random(n_bars) > 0.3) & (steps >= first)
        prev = np.concatenate([[close[0]], close[:-1]])
        prices.append(
            pl.DataFrame({"ts": ts, "price": prev, "symbol": sym, "source": "last_trade"}).filter(
                pl.Series(pkeep)
            )
        )
        okeep = (rng.random(n_bars) > 0.2) & (steps >= first)
        spread = close * rng.uniform(1e-5, 5e-4, n_bars)
        book = {
            "ts": ts,
            "symbol": [sym] * n_bars,
            "best_bid": close - spread / 2,
            "best_ask": close + spread / 2,
        }
        for side in ("bid", "ask"):
            base = np.exp(rng.normal(13.0, 0.5, n_bars))
            for band in DEPTH_BANDS:
                book[f"{side}_notional_{band}pct"] = base * band
                book[f"{side}_depth_{band}pct"] = base * band / close
        books.append(pl.DataFrame(book).filter(pl.Series(okeep)))
        f_steps = steps[(steps % 96 == 0) & (steps >= first)]  # every 8h
        funding.append(
            pl.DataFrame(
                {
                    "ts": _ms(start, f_steps),
                    "symbol": sym,
                    "funding_rate": rng.normal(1e-4, 2e-4, f_steps.size),
                    "mark_price": close[f_steps],
                }
            ).with_columns(available_at=pl.col("ts"))
        )
        h_steps = steps[(steps % 12 == 0) & (steps >= first)]
        onchain.append(
            pl.DataFrame(
                {
                    "ts": _ms(start, h_steps),
                    "symbol": sym,
                    "netflow": rng.normal(0, 2e6, h_steps.size),
                    "exchange_netflow": rng.normal(0, 1e6, h_steps.size),
                    "net_inflow": rng.normal(0, 1e6, h_steps.size),
                    "delay_min": rng.integers(5, 90, h_steps.size),
                }
            ).with_columns(available_at=pl.col("ts") + pl.duration(minutes=pl.col("delay_min")))
        )
        d_steps = steps[(rng.random(n_bars) > 0.1) & (steps >= first)]
        dd = {"ts": _ms(start, d_steps), "symbol": [sym] * d_steps.size}
        for c in (
            "open_interest",
            "open_interest_value",
            "long_short_ratio_global",
            "long_short_ratio_top_accounts",
            "long_short_ratio_top_positions",
            "taker_buy_sell_ratio",
        ):
            dd[c] = rng.uniform(0.5, 2.0, d_steps.size)
        dd["basis"] = rng.normal(0, 5e-4, d_steps.size)
        dd["annualized_basis"] = dd["basis"] * 365
        deriv.append(pl.DataFrame(dd).with_columns(available_at=pl.col("ts") + pl.duration(minutes=5)))
    n_ev = int(events_per_day * n_bars / 288) + 1
    ev_steps = rng.uniform(0, n_bars, n_ev)
    ev_ts = _ms(start, np.zeros(n_ev)) + pl.Series((ev_steps * 300_000).astype(np.int64)).cast(
        pl.Duration("ms")
    )
    delay = pl.Series(rng.integers(0, 1800_000, n_ev)).cast(pl.Duration("ms"))
    texts = [" ".join(rng.choice(WORDS, int(rng.integers(1, 9)))) for _ in range(n_ev)]
    events = pl.DataFrame({
        "event_id": [f"e{seed}_{i}" for i in range(n_ev)], "ts": ev_ts, "available_at": ev_ts + delay,
        "source": rng.choice(SOURCES, n_ev), "source_tier": rng.integers(1, 6, n_ev),
        "event_type": rng.choice(EVENT_TYPES, n_ev, p=[0.05, 0.05, 0.05, 0.05, 0.1, 0.4, 0.3]),
        "confidence_score": rng.uniform(0, 1, n_ev),
        # a scored feed for some items, unscored (text lexicon) for the rest
        "sentiment_score": np.where(rng.random(n_ev) < 0.7, rng.uniform(-1, 1, n_ev).round(3), np.nan),
        "payload": [{"text": t, "engagement": float(e), "author": f"u{a}", "platform": "x", "url": None}
                    for t, e, a in zip(texts, rng.exponential(50, n_ev), rng.integers(0, 15, n_ev), strict=True)],
    }).with_columns(pl.col("sentiment_score").fill_nan(None))  # fmt: skip
    link_sym = rng.integers(0, len(symbols) + 1, n_ev)  # len(symbols): an entity that is no coin
    links = pl.DataFrame({
        "event_id": events["event_id"], "entity_id": [f"ent{s}" for s in link_sym],
        "symbol": [symbols[s] if s < len(symbols) else None for s in link_sym],
        "relevance": rng.uniform(0.3, 1.0, n_ev).round(3),
    }).with_columns(date=events["ts"].dt.date())  # fmt: skip
    # some events are about two coins, one through two entities (must count once)
    extra = links.sample(fraction=0.2, seed=seed).with_columns(entity_id=pl.col("entity_id") + "_alias")
    links = pl.concat([links, extra])
    return {
        "market_bars": _conform("market_bars", pl.concat(bars)),
        "prices": _conform("prices", pl.concat(prices)),
        "orderbook_l2": _conform("orderbook_l2", pl.concat(books)),
        "funding_rates": _conform("funding_rates", pl.concat(funding)),
        "onchain_signals": _conform("onchain_signals", pl.concat(onchain)),
        "derivatives_metrics": _conform("derivatives_metrics", pl.concat(deriv)),
        "events": _conform("events", events),
        "event_links": _conform("event_links", links),
    }


def visible_by(name: str, df: pl.DataFrame, t: dt.datetime) -> pl.Expr:
    """Rows of table `name` that exist by the decision at row t (the complement may change freely)."""
    if name in VISIBLE_BY:
        return pl.col(VISIBLE_BY[name]) <= t
    if name == "market_bars":
        # a 1h bar is visible only once closed by the decision time t + 5m
        hour = pl.col("timeframe") == "1h"
        return (
            pl.when(hour).then(pl.col("ts") + dt.timedelta(hours=1) <= t + STEP).otherwise(pl.col("ts") <= t)
        )
    return pl.col("ts") <= t


def splice(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame], t: dt.datetime) -> dict[str, pl.DataFrame]:
    """a's rows visible by t, plus b's rows not visible by t; links follow their events."""
    out = {}
    for name in a:
        if name == "event_links":
            continue
        out[name] = pl.concat(
            [a[name].filter(visible_by(name, a[name], t)), b[name].filter(~visible_by(name, b[name], t))]
        )
    links = pl.concat([a["event_links"], b["event_links"]]).unique(maintain_order=True)
    out["event_links"] = links.filter(pl.col("event_id").is_in(out["events"]["event_id"].implode()))
    return out


def window(tables: dict[str, pl.DataFrame], start: dt.datetime, end: dt.datetime) -> dict[str, pl.DataFrame]:
    """What a partition [start, end) reads: rows with ts in [start - LOOKBACK, end + LOOKAHEAD)."""
    lo, hi = start - LOOKBACK, end + LOOKAHEAD
    out = {
        n: df.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi))
        for n, df in tables.items()
        if n != "event_links"
    }
    out["event_links"] = tables["event_links"].filter(
        pl.col("event_id").is_in(out["events"]["event_id"].implode())
    )
    return out


def build_matrix(tables: dict[str, pl.DataFrame], end: dt.datetime | None = None) -> pl.DataFrame:
    """The whole feature layer on raw tables, as the assets chain it."""
    lz = {n: df.lazy() for n, df in tables.items()}
    for name in RAW_TABLES:
        lz.setdefault(name, empty_table(name))
    snaps = feature_snapshots(lz["market_bars"], lz["prices"], end=end)
    social = social_text_latent(lz["events"], lz["event_links"])
    latent = market_latent(lz["market_bars"], lz["prices"], end=end)
    return feature_matrix(
        snaps,
        social,
        latent,
        lz["orderbook_l2"],
        lz["funding_rates"],
        lz["onchain_signals"],
        lz["derivatives_metrics"],
        lz["events"],
        lz["event_links"],
    ).collect()
