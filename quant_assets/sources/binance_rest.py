"""Binance public REST endpoints (httpx) for the days the archive has not published yet.

Every response is mapped onto the same raw lake schemas as the archive, through the same
converters (`binance_format.klines_frame`, ...), so a day from REST and a day from the archive
are indistinguishable downstream.

Traps handled here:
- pagination by time with each endpoint's own row limit (spot klines 1000, USD-M klines and
  premium-index klines 1500, fundingRate 1000, /futures/data/* 500);
- HTTP 429 (rate limited) and 418 (IP banned) are retried after `Retry-After` (binance_http);
- `X-MBX-USED-WEIGHT-1m` says how much of the minute's weight budget is spent: near the limit
  we pause until the next minute instead of earning a 429;
- timeouts and 5xx are retried a bounded number of times with exponential back-off;
- /futures/data/* (open interest and the long/short ratios) keep only the last 30 days: an older
  start is clamped and said so in `notes`, because Binance answers it with an error or nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import httpx
import polars as pl

from quant_assets.schemas import DEPTH_BANDS, RAW_TABLES, TS
from quant_assets.sources.binance_format import (
    KLINE_COLUMNS,
    ParseNotes,
    StringRows,
    funding_frame,
    klines_frame,
    premium_frame,
)
from quant_assets.sources.binance_http import HttpStats, RestError, pause, send_with_retries
from quant_assets.universe import TIMEFRAMES

SPOT_WEIGHT_LIMIT = 6000  # per minute per IP, /api/v3
FUTURES_WEIGHT_LIMIT = 2400  # per minute per IP, /fapi and /futures/data
WEIGHT_SAFETY = 0.9  # pause for the next minute once this share of the budget is used
KLINE_LIMIT = {"spot": 1000, "usdm": 1500}
FUNDING_LIMIT = 1000
FUTURES_DATA_LIMIT = 500
FUTURES_DATA_RETENTION = dt.timedelta(days=30)
FUTURES_DATA_NOTE = "futures/data endpoints keep only 30 days"
DEPTH_LIMIT = 1000

# /futures/data/* endpoint -> (response field, derivatives_metrics column)
FUTURES_DATA: dict[str, tuple[tuple[str, str], ...]] = {
    "openInterestHist": (
        ("sumOpenInterest", "open_interest"),
        ("sumOpenInterestValue", "open_interest_value"),
    ),
    "globalLongShortAccountRatio": (("longShortRatio", "long_short_ratio_global"),),
    "topLongShortAccountRatio": (("longShortRatio", "long_short_ratio_top_accounts"),),
    "topLongShortPositionRatio": (("longShortRatio", "long_short_ratio_top_positions"),),
    "takerlongshortRatio": (("buySellRatio", "taker_buy_sell_ratio"),),
}


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


class BinanceRest:
    """The public endpoints the raw tables need, each returning a frame in the lake schema."""

    def __init__(
        self,
        base_spot: str = "https://api.binance.com",
        base_futures: str = "https://fapi.binance.com",
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
        max_wait_s: float = 300.0,
    ):
        self.base_spot = base_spot.rstrip("/")
        self.base_futures = base_futures.rstrip("/")
        self.max_retries = max_retries
        self.sleep = sleep
        self.clock = clock
        self.max_wait_s = max_wait_s
        self.client = client or httpx.Client(timeout=timeout, headers={"User-Agent": "quant_assets"})
        self.stats = HttpStats()
        self.notes: list[str] = []

    def close(self) -> None:
        self.client.close()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    # -- transport ---------------------------------------------------------------------------------

    def get_json(self, base: str, path: str, params: dict, limit: int) -> object:
        url = base + path
        resp = send_with_retries(
            self.client,
            url,
            params,
            max_retries=self.max_retries,
            sleep=self.sleep,
            stats=self.stats,
            max_wait_s=self.max_wait_s,
        )
        self._respect_weight(resp, base, limit)
        try:
            return resp.json()
        except ValueError as exc:
            raise RestError(f"GET {url} {params}: response is not JSON: {resp.text[:200]!r}") from exc

    def _respect_weight(self, resp: httpx.Response, base: str, limit: int) -> None:
        raw = resp.headers.get("X-MBX-USED-WEIGHT-1m")
        if raw is None or not raw.isdigit():
            return
        used = int(raw)
        self.stats.used_weight_1m[urlsplit(base).netloc] = used
        if used >= WEIGHT_SAFETY * limit:
            # The budget resets on the minute boundary; waiting there is cheaper than a 429 (and a ban).
            wait = 60.0 - (self.clock() % 60.0) + 0.5
            self.stats.throttle_sleeps += 1
            pause(self.sleep, self.stats, wait)

    # -- endpoints ---------------------------------------------------------------------------------

    def klines(
        self,
        market: str,
        symbol: str,
        timeframe: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        strict: bool = True,
    ) -> tuple[pl.DataFrame, ParseNotes]:
        """Bars with start <= ts < end (open time) from /api/v3/klines or /fapi/v1/klines."""
        base, path, wl = (
            (self.base_spot, "/api/v3/klines", SPOT_WEIGHT_LIMIT)
            if market == "spot"
            else (self.base_futures, "/fapi/v1/klines", FUTURES_WEIGHT_LIMIT)
        )
        rows = self._paged_klines(base, path, symbol, timeframe, start, end, KLINE_LIMIT[market], wl)
        notes = ParseNotes()
        source = f"GET {path} {symbol} {timeframe}"
        df = klines_frame(
            StringRows.from_json(rows, source, ncols=KLINE_COLUMNS),
            symbol,
            market,
            timeframe,
            notes,
            strict=strict,
        )
        return df, notes

    def premium_index_klines(
        self, symbol: str, start: dt.datetime, end: dt.datetime, timeframe: str = "5m"
    ) -> pl.DataFrame:
        """(symbol, ts, premium) from /fapi/v1/premiumIndexKlines: the close of each premium-index bar."""
        path = "/fapi/v1/premiumIndexKlines"
        rows = self._paged_klines(
            self.base_futures, path, symbol, timeframe, start, end, KLINE_LIMIT["usdm"], FUTURES_WEIGHT_LIMIT
        )
        return premium_frame(
            StringRows.from_json(rows, f"GET {path} {symbol}", ncols=KLINE_COLUMNS), symbol, timeframe
        )

    def _paged_klines(
        self,
        base: str,
        path: str,
        symbol: str,
        timeframe: str,
        start: dt.datetime,
        end: dt.datetime,
        limit: int,
        weight_limit: int,
    ) -> list[list]:
        step = int(TIMEFRAMES[timeframe].total_seconds() * 1000)
        cursor, stop = _ms(start), _ms(end) - 1
        out: list[list] = []
        while cursor <= stop:
            page = self.get_json(
                base,
                path,
                {
                    "symbol": symbol,
                    "interval": timeframe,
                    "startTime": cursor,
                    "endTime": stop,
                    "limit": limit,
                },
                weight_limit,
            )
            if not isinstance(page, list):
                raise RestError(f"GET {base}{path} {symbol}: expected a JSON list, got {str(page)[:200]}")
            if not page:
                break
            out.extend(page)
            last_open = int(page[-1][0])
            if len(page) < limit:
                break
            cursor = last_open + step
        return out

    def funding_rates(self, symbol: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Funding settlements with start <= fundingTime < end, from /fapi/v1/fundingRate."""
        path = "/fapi/v1/fundingRate"
        cursor, stop = _ms(start), _ms(end) - 1
        rows: list[list] = []
        while cursor <= stop:
            page = self.get_json(
                self.base_futures,
                path,
                {"symbol": symbol, "startTime": cursor, "endTime": stop, "limit": FUNDING_LIMIT},
                FUTURES_WEIGHT_LIMIT,
            )
            if not isinstance(page, list):
                raise RestError(f"GET {path} {symbol}: expected a JSON list, got {str(page)[:200]}")
            for i, r in enumerate(page):
                _need(r, ("fundingTime", "fundingRate"), f"GET {path} {symbol}", len(rows) + i + 1)
                rows.append([r["fundingTime"], r["fundingRate"], r.get("markPrice") or ""])
            if len(page) < FUNDING_LIMIT:
                break
            cursor = int(page[-1]["fundingTime"]) + 1
        src = StringRows.from_json(rows, f"GET {path} {symbol}", ncols=3)
        return funding_frame(src, symbol, time_col=0, rate_col=1, mark_col=2)

    def futures_data(self, symbol: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """derivatives_metrics rows (no basis yet) from the five /futures/data/* endpoints, 5m period.

        Only the last 30 days exist upstream: an older `start` is clamped (and noted) and a window
        entirely older than that returns an empty frame.
        """
        oldest = self.now() - FUTURES_DATA_RETENTION + dt.timedelta(minutes=5)
        if start < oldest:
            self.notes.append(
                f"{FUTURES_DATA_NOTE}: {symbol} derivatives metrics before {oldest:%Y-%m-%d %H:%M} UTC "
                f"(asked from {start:%Y-%m-%d}) are not available from REST"
            )
            start = oldest
        schema = RAW_TABLES["derivatives_metrics"]
        if start >= end:
            return schema.empty()
        merged: pl.DataFrame | None = None
        for endpoint, fields in FUTURES_DATA.items():
            part = self._futures_data_endpoint(endpoint, fields, symbol, start, end)
            merged = part if merged is None else merged.join(part, on="ts", how="full", coalesce=True)
        assert merged is not None
        # open interest is the row's reason to exist; a ratio without it is not a metrics row
        merged = merged.filter(pl.col("open_interest").is_not_null()).sort("ts")
        return schema.conform(
            merged.with_columns(
                date=pl.col("ts").dt.date(),
                symbol=pl.lit(symbol),
                basis=pl.lit(None, pl.Float64),
                annualized_basis=pl.lit(None, pl.Float64),
                available_at=pl.col("ts") + dt.timedelta(minutes=5),
            )
        )

    def _futures_data_endpoint(
        self,
        endpoint: str,
        fields: tuple[tuple[str, str], ...],
        symbol: str,
        start: dt.datetime,
        end: dt.datetime,
    ) -> pl.DataFrame:
        path = f"/futures/data/{endpoint}"
        cursor, stop = _ms(start), _ms(end) - 1
        rows: list[list] = []
        while cursor <= stop:
            page = self.get_json(
                self.base_futures,
                path,
                {
                    "symbol": symbol,
                    "period": "5m",
                    "startTime": cursor,
                    "endTime": stop,
                    "limit": FUTURES_DATA_LIMIT,
                },
                FUTURES_WEIGHT_LIMIT,
            )
            if not isinstance(page, list):
                raise RestError(f"GET {path} {symbol}: expected a JSON list, got {str(page)[:200]}")
            for i, r in enumerate(page):
                _need(r, ("timestamp", *(f for f, _ in fields)), f"GET {path} {symbol}", len(rows) + i + 1)
                rows.append([r["timestamp"], *(r[f] for f, _ in fields)])
            if len(page) < FUTURES_DATA_LIMIT:
                break
            cursor = int(page[-1]["timestamp"]) + 1
        src = StringRows.from_json(rows, f"GET {path} {symbol}", ncols=1 + len(fields))
        cols = {"ts": src.epoch(0, "timestamp")}
        for i, (f, col) in enumerate(fields, start=1):
            cols[col] = src.number(i, f)
        df = pl.DataFrame(cols).unique(subset="ts", keep="last", maintain_order=True)
        return df

    def depth_snapshot(self, symbol: str, limit: int = DEPTH_LIMIT) -> tuple[pl.DataFrame, list[str]]:
        """One orderbook_l2 row from /fapi/v1/depth: ts = the snapshot's time floored to 5 minutes."""
        path = "/fapi/v1/depth"
        body = self.get_json(
            self.base_futures, path, {"symbol": symbol, "limit": limit}, FUTURES_WEIGHT_LIMIT
        )
        return depth_row(body, symbol, source=f"GET {path} {symbol}")


def _need(row: object, keys: Sequence[str], source: str, index: int) -> None:
    if not isinstance(row, dict):
        raise RestError(f"{source} row {index}: expected an object, got {str(row)[:100]}")
    for k in keys:
        if k not in row:
            raise RestError(f"{source} row {index}: field {k!r} missing (got {sorted(row)})")


def depth_row(body: object, symbol: str, source: str = "depth") -> tuple[pl.DataFrame, list[str]]:
    """A /fapi/v1/depth body -> one orderbook_l2 row, and notes on bands the levels do not reach.

    Bands are measured from the mid ((best bid + best ask) / 2): `bid_depth_1pct` is the
    base quantity of all bids priced >= mid * (1 - 1%), `bid_notional_1pct` their price * qty;
    asks alike with prices <= mid * (1 + 1%). This is how the archive's bookDepth defines its
    +-1..5% bands, so REST rows and archive rows are comparable. A snapshot holds a limited
    number of levels: when the deepest level is inside a band's edge, that band is a lower bound,
    which the returned notes say.
    """
    if not isinstance(body, dict):
        raise RestError(f"{source}: expected a JSON object, got {str(body)[:200]}")
    for k in ("bids", "asks"):
        if k not in body:
            raise RestError(f"{source}: field {k!r} missing (got {sorted(body)})")
    t = body.get("E") or body.get("T")
    if t is None:
        raise RestError(f"{source}: neither 'E' nor 'T' (snapshot time) in the response")
    sides = {}
    for side in ("bids", "asks"):
        src = StringRows.from_json(body[side], f"{source} {side}", ncols=2)
        sides[side] = pl.DataFrame({"price": src.number(0, "price"), "qty": src.number(1, "qty")})
        if sides[side].height == 0:
            raise RestError(
                f"{source}: the {side} side is empty, so there is no mid price to measure bands from"
            )
    bids, asks = sides["bids"], sides["asks"]
    best_bid, best_ask = float(bids["price"].max()), float(asks["price"].min())
    if best_bid >= best_ask:
        raise RestError(f"{source}: crossed book (best bid {best_bid} >= best ask {best_ask})")
    mid = (best_bid + best_ask) / 2
    ts = dt.datetime.fromtimestamp(int(t) / 1000, dt.UTC)
    ts = ts.replace(minute=ts.minute - ts.minute % 5, second=0, microsecond=0)
    row: dict[str, object] = {
        "date": ts.date(),
        "ts": ts,
        "symbol": symbol,
        "best_bid": best_bid,
        "best_ask": best_ask,
    }
    notes: list[str] = []
    reach_bid = (1 - float(bids["price"].min()) / mid) * 100
    reach_ask = (float(asks["price"].max()) / mid - 1) * 100
    for b in DEPTH_BANDS:
        inb = bids.filter(pl.col("price") >= mid * (1 - b / 100))
        ina = asks.filter(pl.col("price") <= mid * (1 + b / 100))
        row[f"bid_depth_{b}pct"] = float(inb["qty"].sum())
        row[f"bid_notional_{b}pct"] = float((inb["price"] * inb["qty"]).sum())
        row[f"ask_depth_{b}pct"] = float(ina["qty"].sum())
        row[f"ask_notional_{b}pct"] = float((ina["price"] * ina["qty"]).sum())
    if reach_bid < max(DEPTH_BANDS) or reach_ask < max(DEPTH_BANDS):
        notes.append(
            f"{source}: {bids.height}+{asks.height} levels reach -{reach_bid:.2f}% / +{reach_ask:.2f}% of mid; "
            "wider bands are lower bounds"
        )
    schema = RAW_TABLES["orderbook_l2"]
    df = pl.DataFrame([row]).with_columns(pl.col("ts").cast(TS))
    return schema.conform(df), notes
