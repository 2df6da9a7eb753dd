"""What every raw column means, for the UI's column schema (`dagster/column_schema` of each raw asset).

The schemas themselves (names, dtypes, keys, nullability) are quant_assets.schemas; the time
conventions are its docstring's: `ts` is a bar's OPEN time, `available_at` when a trader could first
see the row, `date` the UTC day of `ts` (the Delta partition column).
"""

from __future__ import annotations

import re

import dagster as dg

from quant_assets.schemas import DEPTH_BANDS, EVENT_TYPES, RAW_TABLES

_COMMON = {
    "date": "UTC day of ts; the Delta partition column (a monthly run replaces its days).",
    "ts": "Event time (UTC, ms); for bars the OPEN time, the bar being known at ts + timeframe.",
    "symbol": "Coin symbol (BTC, ETH, ...).",
    "available_at": "When a trader could first see the row (UTC); >= ts. Features read a row only from then.",
    "source": "Where the row came from (feed or exchange endpoint).",
}
_BY_TABLE: dict[str, dict[str, str]] = {
    "market_bars": {
        "market": "`spot` or `usdm` (USD-M perpetual).",
        "timeframe": "`5m` or `1h`; the 1h bar is the exact aggregate of its twelve 5m bars.",
        "open": "First trade price of the bar.",
        "high": "Highest trade price of the bar.",
        "low": "Lowest trade price of the bar.",
        "close": "Last trade price of the bar.",
        "volume": "Traded base volume.",
        "quote_volume": "Traded quote (USDT) volume.",
        "trades": "Number of trades.",
        "taker_buy_volume": "Base volume bought by takers (aggressive buyers).",
        "taker_buy_quote_volume": "Quote volume bought by takers.",
    },
    "prices": {
        "price": "Last-trade price at ts; the fallback close when a bar is missing.",
        "source": "Where the snapshot came from.",
    },
    "orderbook_l2": {
        "best_bid": "Best bid price (null: the archive's bookDepth has no top of book).",
        "best_ask": "Best ask price (null: the archive's bookDepth has no top of book).",
    },
    "funding_rates": {
        "ts": "Funding settlement time (UTC), rounded to the minute.",
        "funding_rate": "Funding rate paid at ts by longs to shorts (per 8 hours; negative: shorts pay).",
        "mark_price": "Mark price at the settlement (null when the feed does not give it).",
    },
    "onchain_signals": {
        "netflow": "Net on-chain flow of the coin over the hour, USD.",
        "exchange_netflow": "Net flow into exchange wallets over the hour, USD (positive: coins moved to exchanges).",
        "net_inflow": "Net inflow over the hour as the feed reports it, USD.",
    },
    "derivatives_metrics": {
        "open_interest": "Open interest of the perpetual, base units.",
        "open_interest_value": "Open interest, quote (USDT) value.",
        "long_short_ratio_global": "Long/short account ratio, all accounts.",
        "long_short_ratio_top_accounts": "Long/short ratio of top traders' accounts.",
        "long_short_ratio_top_positions": "Long/short ratio of top traders' positions.",
        "taker_buy_sell_ratio": "Taker buy volume / taker sell volume.",
        "basis": "Perpetual price minus index price.",
        "annualized_basis": "Basis annualised.",
    },
    "events": {
        "event_id": "Unique id of the news or social item.",
        "ts": "When the item happened (UTC).",
        "source": "Publisher or platform of the item.",
        "source_tier": "Source reliability, 1 (most reliable) .. 5.",
        "event_type": "One of " + ", ".join(EVENT_TYPES) + ".",
        "confidence_score": "The feed's confidence that the item is accurate, 0 .. 1.",
        "sentiment_score": "Sentiment -1 .. 1 as the feed scores the text (null: unscored; features read the text).",
        "payload": "Struct: text, engagement, author, platform, url.",
    },
    "event_links": {
        "event_id": "The event (events.event_id).",
        "entity_id": "An entity the event is about (entities.entity_id).",
        "symbol": "The coin the entity stands for (null: not a coin).",
        "relevance": "How much the event is about the entity, 0 .. 1.",
        "date": "The event's UTC day.",
    },
    "entities": {
        "date": "The later of first_seen and the month's first day: each month restates its entities.",
        "entity_id": "Unique id of the entity.",
        "entity_type": "coin, exchange, project or regulator.",
        "name": "Display name.",
        "symbol": "The coin symbol when the entity is a coin (else null).",
        "first_seen": "First UTC day the entity appears in the feed.",
    },
}
_DEPTH = re.compile(r"(bid|ask)_(depth|notional)_(\d)pct")


def describe(table: str, column: str) -> str | None:
    """The description of `table.column`; None when it has none."""
    if column in _BY_TABLE.get(table, {}):
        return _BY_TABLE[table][column]
    m = _DEPTH.fullmatch(column)
    if m and int(m.group(3)) in DEPTH_BANDS:
        side, kind, band = m.groups()
        unit = "base units" if kind == "depth" else "quote (USDT)"
        return f"Cumulative {side} {kind} within {band}% of mid, {unit}."
    return _COMMON.get(column)


def column_schema(table: str) -> dg.TableSchema:
    """`dagster/column_schema` of a raw table: dtypes, descriptions, and whether a column may be null."""
    spec = RAW_TABLES[table]
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c,
                str(t),
                description=describe(table, c),
                constraints=dg.TableColumnConstraints(nullable=c in spec.nullable),
            )
            for c, t in spec.columns.items()
        ]
    )
