"""Polars frames of the raw tables from simulated arrays; rows past `until` never leave here.

Arrays arrive as (coin, day, slot); coins are reordered alphabetically before
flattening, so every frame comes out already sorted by its key (symbol, ts) without a
string sort: `market_bars` interleaves per-symbol slices of its four (market, timeframe)
blocks, and only the small event tables are sorted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_assets.schemas import DEPTH_BANDS, TS
from quant_assets.sources import sim_params as p
from quant_assets.sources.base import restate_catalogue
from quant_assets.sources.sim_bars import hourly, round_price, size_factor, tick_size, typical_bar_sigma
from quant_assets.sources.sim_daily import DailyState, ar1
from quant_assets.sources.sim_events import ENTITIES, DayEvents
from quant_assets.sources.sim_paths import Draws, Paths
from quant_assets.sources.sim_signals import FUNDING_POINTS, Signals
from quant_assets.universe import BARS_PER_DAY, SYMBOLS

ORDER = np.argsort(SYMBOLS)
SORTED_SYMBOLS = [SYMBOLS[i] for i in ORDER]
_SYMBOL_SERIES = pl.Series("symbol", SORTED_SYMBOLS, dtype=pl.String)
SOURCE = "synthetic"
FIVE_MIN_MS, HOUR_MS = p.BAR_MS, p.BAR_MS * p.BARS_PER_HOUR


@dataclass(frozen=True)
class Sim:
    """Everything simulated for the target days, ready to be tabulated."""

    cal_days: np.ndarray  # (nD,)
    day_ms: np.ndarray  # (nD,) epoch ms of each day's 00:00 UTC
    daily: DailyState
    draws: Draws
    paths: Paths
    signals: Signals
    bars: dict[str, dict[str, np.ndarray]]  # market -> 5m columns
    spot: np.ndarray  # (C, nD) listed masks
    perp: np.ndarray
    events: list[DayEvents]
    until_ms: int
    until: dt.datetime  # aware UTC


def _ts(sim: Sim, step_ms: int, n: int) -> np.ndarray:
    return sim.day_ms[None, :, None] + step_ms * np.arange(n)[None, None, :]


def _frame(cols: dict[str, np.ndarray], ts: np.ndarray, keep: np.ndarray, **extra) -> pl.DataFrame:
    """Flatten (C, nD, k) arrays in symbol order, keeping `keep`; ts is broadcast like them."""
    shape = keep.shape
    keep = keep[ORDER]
    ts_ms = np.broadcast_to(ts, shape)[ORDER][keep]
    sym = np.broadcast_to(np.arange(len(ORDER))[:, None, None], shape)[keep]
    out = {
        "date": pl.Series(ts_ms // p.DAY_MS, dtype=pl.Int32).cast(pl.Date),
        "ts": pl.Series(ts_ms).cast(TS),
        "symbol": _SYMBOL_SERIES.gather(sym),
    }
    for k, v in extra.items():
        out[k] = pl.Series(np.broadcast_to(v, shape)[ORDER][keep]).cast(TS) if k == "available_at" else v
    for k, v in cols.items():
        out[k] = np.broadcast_to(v, shape)[ORDER][keep]
    return pl.DataFrame(out)


def market_bars(sim: Sim) -> pl.DataFrame:
    # Key order is (symbol, market, timeframe, ts): interleave per-symbol slices of the four
    # blocks, each already sorted by (symbol, ts), rather than sorting strings.
    blocks = []
    for market, listed in (("spot", sim.spot), ("usdm", sim.perp)):
        five = sim.bars[market]
        for tf, cols, step, n in (
            ("1h", hourly(five), HOUR_MS, p.HOURS),
            ("5m", five, FIVE_MIN_MS, BARS_PER_DAY),
        ):
            ts = _ts(sim, step, n)
            present = ~np.repeat(sim.signals.outage, n // p.HOURS, axis=-1)
            keep = listed[:, :, None] & present & (ts + step <= sim.until_ms)
            df = _frame(cols, ts, keep).with_columns(market=pl.lit(market), timeframe=pl.lit(tf))
            counts = keep[ORDER].sum(axis=(1, 2))
            blocks.append((df, np.concatenate([[0], np.cumsum(counts)])))
    pieces = [df.slice(int(o[c]), int(o[c + 1] - o[c])) for c in range(len(ORDER)) for df, o in blocks]
    return pl.concat(pieces, rechunk=True)


def prices(sim: Sim) -> pl.DataFrame:
    ts = _ts(sim, FIVE_MIN_MS, BARS_PER_DAY)
    keep = sim.spot[:, :, None] & (ts < sim.until_ms)
    df = _frame({"price": sim.bars["spot"]["open"]}, ts, keep)
    return df.with_columns(source=pl.lit(SOURCE))


def orderbook(sim: Sim) -> pl.DataFrame:
    n = sim.draws.normals
    mid = sim.bars["spot"]["open"]
    vol_ratio = sim.paths.bar_sigma / typical_bar_sigma()
    noise = np.exp(0.2 * n[:, :, p.N_OB_DEPTH])
    half = (
        mid
        * np.array([c.half_spread_bps for c in p.COIN_PARAMS])[:, None, None]
        * 1e-4
        * np.sqrt(vol_ratio)
        * noise
    )
    bid, ask = round_price(mid - half, how="floor"), round_price(mid + half, how="ceil")
    ask = np.maximum(ask, bid + tick_size(bid))
    base = np.array([c.dollar_volume for c in p.COIN_PARAMS])[:, None, None] * 0.012
    level = size_factor(sim.daily, sim.cal_days)
    activity = np.sqrt(sim.daily.activity[:, sim.cal_days])[:, :, None]
    depth1 = base * level * activity * np.sqrt(p.BAR_VOLUME_SEASON) / noise / vol_ratio**0.3
    imbalance = np.tanh(0.35 * sim.signals.book_z)
    cols = {"best_bid": bid, "best_ask": ask}
    for b in DEPTH_BANDS:
        total = depth1 * b**0.85
        tilt = imbalance * 0.8 ** (b - 1)
        bid_n, ask_n = np.round(total / 2 * (1 + tilt), 2), np.round(total / 2 * (1 - tilt), 2)
        cols[f"bid_depth_{b}pct"] = bid_n / (mid * (1 - b / 200))
        cols[f"ask_depth_{b}pct"] = ask_n / (mid * (1 + b / 200))
        cols[f"bid_notional_{b}pct"], cols[f"ask_notional_{b}pct"] = bid_n, ask_n
    ts = _ts(sim, FIVE_MIN_MS, BARS_PER_DAY)
    return _frame(cols, ts, sim.spot[:, :, None] & (ts < sim.until_ms))


def funding(sim: Sim) -> pl.DataFrame:
    ts = sim.day_ms[None, :, None] + FUNDING_POINTS[None, None, :] * FIVE_MIN_MS
    perp_price = sim.bars["usdm"]["open"][:, :, FUNDING_POINTS]
    keep = sim.perp[:, :, None] & (ts < sim.until_ms)
    return _frame({"funding_rate": sim.signals.funding, "mark_price": perp_price}, ts, keep, available_at=ts)


def onchain(sim: Sim) -> pl.DataFrame:
    n = sim.draws.normals[:, :, p.N_ONCHAIN]
    z1 = sim.signals.netflow_z
    z2, z3 = ar1(n[..., p.HOURS : 2 * p.HOURS], 0.6), ar1(n[..., 2 * p.HOURS : 3 * p.HOURS], 0.6)
    base = np.array([c.dollar_volume for c in p.COIN_PARAMS])[:, None, None] * 0.01 / p.HOURS
    scale = base * size_factor(sim.daily, sim.cal_days)
    cols = {
        "netflow": np.round(3.0 * scale * (0.3 * z1 + 0.95 * z3), 2),
        "exchange_netflow": np.round(scale * z1, 2),
        "net_inflow": np.round(scale * (0.8 * z1 + 0.6 * z2), 2),
    }
    ts = _ts(sim, HOUR_MS, p.HOURS)
    avail = ts + sim.signals.onchain_delay_ms
    keep = sim.spot[:, :, None] & (ts < sim.until_ms) & (avail <= sim.until_ms)
    return _frame(cols, ts, keep, available_at=avail)


def derivatives(sim: Sim) -> pl.DataFrame:
    """Each row describes the 5m interval [ts, ts + 5m) and is published at its end."""
    n, d = sim.draws.normals, sim.daily
    spot_close, perp = sim.bars["spot"]["close"], sim.bars["usdm"]
    frac = np.arange(1, BARS_PER_DAY + 1) / BARS_PER_DAY
    prev, last = d.oi[:, sim.cal_days - 1][:, :, None], d.oi[:, sim.cal_days][:, :, None]
    log_oi = prev + (last - prev) * frac + 0.03 * ar1(n[:, :, p.N_OI], 0.99)
    base = (
        np.array([c.dollar_volume for c in p.COIN_PARAMS])[:, None, None] * 3.0
    )  # OI ~ 3 days of spot volume
    oi_usd = base * size_factor(d, sim.cal_days) * np.exp(log_oi)
    oi = np.round(oi_usd / spot_close, 3)
    basis = perp["close"] / spot_close - 1.0
    sell = perp["volume"] - perp["taker_buy_volume"]
    cols = {
        "open_interest": oi,
        "open_interest_value": np.round(oi * perp["close"], 2),
        "long_short_ratio_global": np.round(np.exp(0.15 + 0.25 * ar1(n[:, :, p.N_LS_GLOBAL], 0.99)), 4),
        "long_short_ratio_top_accounts": np.round(
            np.exp(0.05 + 0.3 * ar1(n[:, :, p.N_LS_ACCOUNTS], 0.99)), 4
        ),
        "long_short_ratio_top_positions": np.round(np.exp(0.2 * ar1(n[:, :, p.N_LS_POSITIONS], 0.99)), 4),
        "taker_buy_sell_ratio": np.round(perp["taker_buy_volume"] / np.maximum(sell, 1e-12), 4),
        "basis": basis,
        "annualized_basis": basis * p.ANNUALIZE_BASIS,
    }
    ts = _ts(sim, FIVE_MIN_MS, BARS_PER_DAY)
    avail = ts + FIVE_MIN_MS
    keep = sim.perp[:, :, None] & (avail <= sim.until_ms)
    return _frame(cols, ts, keep, available_at=avail)


def _event_cols(sim: Sim) -> dict[str, list]:
    cols: dict[str, list] = {}
    for ev in sim.events:
        for k, v in ev.events.items():
            cols.setdefault(k, []).extend(v)
    return cols


def events(sim: Sim) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(events, event_links) published by `until`."""
    cols = _event_cols(sim)
    if not cols or not cols["event_id"]:
        return pl.DataFrame(), pl.DataFrame()
    df = pl.DataFrame(
        {
            "event_id": cols["event_id"],
            "ts": pl.Series(cols["ts"], dtype=pl.Int64).cast(TS),
            "available_at": pl.Series(cols["available_at"], dtype=pl.Int64).cast(TS),
            "source": cols["source"],
            "source_tier": pl.Series(cols["source_tier"], dtype=pl.Int8),
            "event_type": cols["event_type"],
            "confidence_score": cols["confidence_score"],
            "sentiment_score": pl.Series(cols["sentiment_score"], dtype=pl.Float64),
            "payload": pl.DataFrame(
                {k: cols[k] for k in ("text", "engagement", "author", "platform", "url")}
            ).to_struct(),
        }
    )
    df = df.with_columns(date=pl.col("ts").dt.date()).filter(
        (pl.col("ts") < sim.until) & (pl.col("available_at") <= sim.until)
    )
    lk: dict[str, list] = {}
    for ev in sim.events:
        for k, v in ev.links.items():
            lk.setdefault(k, []).extend(v)
    links = pl.DataFrame(lk, schema={"event_id": pl.String, "entity_id": pl.String, "symbol": pl.String,
                                     "relevance": pl.Float64})  # fmt: skip
    links = links.join(df.select("event_id", "date"), on="event_id", how="inner")
    return df.sort("event_id"), links.sort("event_id", "entity_id")


def entities(start: dt.date, end: dt.date, until_ms: int) -> pl.DataFrame:
    """The entity catalogue restated per month (see `base.restate_catalogue`), as visible by `until`."""
    seen = [e for e in ENTITIES if _ms(e.first_seen) < until_ms]
    catalogue = pl.DataFrame(
        {
            "entity_id": [e.entity_id for e in seen],
            "entity_type": [e.entity_type for e in seen],
            "name": [e.name for e in seen],
            "symbol": [e.symbol for e in seen],
            "first_seen": [e.first_seen for e in seen],
        },
        schema={
            "entity_id": pl.String,
            "entity_type": pl.String,
            "name": pl.String,
            "symbol": pl.String,
            "first_seen": pl.Date,
        },  # fmt: skip
    )
    return restate_catalogue(catalogue, start, end).sort("date", "entity_id")


def _ms(day) -> int:
    return (day.toordinal() - 719_163) * p.DAY_MS
