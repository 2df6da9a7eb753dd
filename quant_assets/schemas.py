"""Schemas of the raw lake tables: the contract between sources, checks and features.

Every source (simulator, Binance archive, Binance REST, a user's JSONL feed) must
produce exactly these columns and dtypes; `conform` casts and orders a frame and
raises an error naming the table and column when it cannot.

Time conventions (all UTC, millisecond precision):
- `ts` of a bar is its OPEN time; the bar is known at `ts + timeframe`.
- `available_at` is when a row could first be seen by a trader. Features at time t
  use only rows with `available_at <= t` (bars: `ts <= t`, i.e. the bar opened at t
  and closed by the decision time t + 5m).
- `date` is the UTC day of `ts`; the lake partitions and overwrites by it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from quant_assets.universe import FUNDING_INTERVAL, TIMEFRAMES

TS = pl.Datetime("ms", "UTC")
FIVE_MIN, ONE_HOUR = TIMEFRAMES["5m"], TIMEFRAMES["1h"]
DEPTH_BANDS = (1, 2, 3, 4, 5)  # +-1% .. +-5% of mid, the bands of the archive's bookDepth
EVENT_TYPES = ("funding", "product", "mna", "regulatory", "market", "social_post", "social_comment")
SOCIAL_EVENT_TYPES = ("social_post", "social_comment")
# The ratio and basis columns of `derivatives_metrics` (features use them as they are).
DERIVATIVES_METRIC_COLUMNS = (
    "long_short_ratio_global",
    "long_short_ratio_top_accounts",
    "long_short_ratio_top_positions",
    "taker_buy_sell_ratio",
    "basis",
    "annualized_basis",
)
PAYLOAD = pl.Struct(
    {
        "text": pl.String,
        "engagement": pl.Float64,
        "author": pl.String,
        "platform": pl.String,
        "url": pl.String,
    }
)


@dataclass(frozen=True)
class TableSchema:
    """A raw table's columns and key, and the facts about its time axis that checks and audits use.

    - `grid`: every `ts` is a multiple of it (None: no grid, e.g. funding settlements, events).
    - `cadence`: one row per symbol per this step is expected (None: sparse, not audited for
      coverage; the tables with a cadence are the ones training requires).
    - `perp_only`: rows exist only for perpetual futures, so they start at the perpetual's listing.
    - `publication_lag`: a row at `ts` can be published at `ts + publication_lag` at the earliest
      (a bar closes, a metric is aggregated); coverage does not expect it before then.
    """

    name: str
    columns: dict[str, pl.DataType]
    key: tuple[str, ...]
    nullable: frozenset[str] = frozenset()
    description: str = ""
    grid: dt.timedelta | None = None
    cadence: dt.timedelta | None = None
    perp_only: bool = False
    publication_lag: dt.timedelta = dt.timedelta(0)

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema(self.columns)

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)

    def conform(self, df: pl.DataFrame) -> pl.DataFrame:
        """Select and cast to this schema; error names the table and the offending column."""
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise ValueError(f"{self.name}: missing columns {missing}; got {df.columns}")
        out = []
        for col, dtype in self.columns.items():
            try:
                out.append(df.get_column(col).cast(dtype, strict=True))
            except Exception as exc:  # polars raises several types here
                raise ValueError(
                    f"{self.name}.{col}: cannot cast {df.schema[col]} to {dtype}: {exc}"
                ) from exc
        return pl.DataFrame(out)


def _f(*names: str) -> dict[str, pl.DataType]:
    return {n: pl.Float64 for n in names}


_depth_cols = {
    f"{side}_{kind}_{b}pct": pl.Float64
    for side in ("bid", "ask")
    for kind in ("depth", "notional")
    for b in DEPTH_BANDS
}

RAW_TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in (
        TableSchema(
            "market_bars",
            {
                "date": pl.Date,
                "ts": TS,
                "symbol": pl.String,
                "market": pl.String,  # "spot" or "usdm" (USD-M perpetual)
                "timeframe": pl.String,  # "5m" or "1h"; 1h is the exact aggregate of 5m
                **_f("open", "high", "low", "close", "volume", "quote_volume"),
                "trades": pl.Int64,
                **_f("taker_buy_volume", "taker_buy_quote_volume"),
            },
            key=("symbol", "market", "timeframe", "ts"),
            description="OHLCV klines; ts is the bar's open time.",
            # the grid of the finest timeframe (1h bars sit on their own, coarser grid too); the
            # cadence is the spot 5m clock, and a bar is published when it closes
            grid=FIVE_MIN,
            cadence=FIVE_MIN,
            publication_lag=FIVE_MIN,
        ),
        TableSchema(
            "prices",
            {"date": pl.Date, "ts": TS, "symbol": pl.String, "price": pl.Float64, "source": pl.String},
            key=("symbol", "ts"),
            description="Last-trade price snapshots at ts (5m grid); the fallback close when a bar is missing.",
            grid=FIVE_MIN,
            cadence=FIVE_MIN,
        ),
        TableSchema(
            "orderbook_l2",
            {"date": pl.Date, "ts": TS, "symbol": pl.String, **_f("best_bid", "best_ask"), **_depth_cols},
            key=("symbol", "ts"),
            nullable=frozenset({"best_bid", "best_ask"}),  # the archive's bookDepth has no top of book
            description="One book snapshot per coin per 5 minutes: top of book and cumulative depth (base units) "
            "and notional (quote) within +-1..5% of mid.",
            grid=FIVE_MIN,
            cadence=FIVE_MIN,
        ),
        TableSchema(
            "funding_rates",
            {
                "date": pl.Date,
                "ts": TS,
                "symbol": pl.String,
                "funding_rate": pl.Float64,
                "mark_price": pl.Float64,
                "available_at": TS,
            },
            key=("symbol", "ts"),
            nullable=frozenset({"mark_price"}),
            description="Perpetual funding settlements (8-hourly); ts is the funding time.",
            cadence=FUNDING_INTERVAL,  # no grid: settlement times are the exchange's, rounded to the minute
            perp_only=True,
        ),
        TableSchema(
            "onchain_signals",
            {
                "date": pl.Date,
                "ts": TS,
                "symbol": pl.String,
                **_f("netflow", "exchange_netflow", "net_inflow"),
                "available_at": TS,
            },
            key=("symbol", "ts"),
            description="Hourly on-chain flows in USD; published with a delay (available_at > ts).",
            grid=ONE_HOUR,
            cadence=ONE_HOUR,
            publication_lag=ONE_HOUR,  # flows for an hour are known up to an hour after it
        ),
        TableSchema(
            "derivatives_metrics",
            {
                "date": pl.Date,
                "ts": TS,
                "symbol": pl.String,
                **_f("open_interest", "open_interest_value", *DERIVATIVES_METRIC_COLUMNS),
                "available_at": TS,
            },
            key=("symbol", "ts"),
            nullable=frozenset(
                {
                    "long_short_ratio_global",
                    "long_short_ratio_top_accounts",
                    "long_short_ratio_top_positions",
                    "taker_buy_sell_ratio",
                    "basis",
                    "annualized_basis",
                    "open_interest_value",
                }
            ),
            description="5-minute futures metrics; available 5 minutes after ts (the archive's create_time).",
            grid=FIVE_MIN,
            cadence=FIVE_MIN,
            perp_only=True,
            publication_lag=FIVE_MIN,
        ),
        TableSchema(
            "events",
            {
                "date": pl.Date,
                "event_id": pl.String,
                "ts": TS,
                "available_at": TS,
                "source": pl.String,
                "source_tier": pl.Int8,
                "event_type": pl.String,
                "confidence_score": pl.Float64,
                "sentiment_score": pl.Float64,
                "payload": PAYLOAD,
            },
            key=("event_id",),
            nullable=frozenset({"sentiment_score"}),
            description="News and social items. source_tier 1 (most reliable) .. 5; available_at >= ts; "
            "sentiment_score -1 .. 1 as the feed scores the text (null: unscored, features read the text).",
        ),
        TableSchema(
            "event_links",
            {
                "date": pl.Date,
                "event_id": pl.String,
                "entity_id": pl.String,
                "symbol": pl.String,
                "relevance": pl.Float64,
            },
            key=("event_id", "entity_id"),
            nullable=frozenset({"symbol"}),
            description="Which entities (and through them which coins) an event is about; date = the event's date.",
        ),
        TableSchema(
            "entities",
            {
                "date": pl.Date,
                "entity_id": pl.String,
                "entity_type": pl.String,
                "name": pl.String,
                "symbol": pl.String,
                "first_seen": pl.Date,
            },
            key=("date", "entity_id"),
            nullable=frozenset({"symbol"}),
            description="The entity catalogue (coins, exchanges, projects, regulators), restated in every month "
            "it is known: date = the later of first_seen and the month's first day, so each monthly partition "
            "lists every entity its events can link to. Take unique entity_id for the catalogue as of a date.",
        ),
    )
}
RAW_TABLE_NAMES: tuple[str, ...] = tuple(RAW_TABLES)
