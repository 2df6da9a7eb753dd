"""The `binance` market source: the public archive for the past, REST for the days it lacks.

`BinanceSource.fetch(tables, start, end, until)` returns frames in the raw lake schemas:

- market_bars: spot and USD-M klines, 5m and 1h, from the archive; a day whose file is missing
  comes from REST when `use_rest` (5m bars; its 1h bars are the exact aggregate of complete
  hours). A bar is returned only once it has closed by `until` (ts + timeframe <= until).
- funding_rates: the archive's monthly fundingRate files; the running month from REST.
- derivatives_metrics: the archive's daily metrics files; missing days from /futures/data/*,
  which keep only 30 days (older gaps stay gaps, and the report says so). `basis` and
  `annualized_basis` are added here, see `add_basis`.
- orderbook_l2: the archive's bookDepth (from about 2023); for the live day a /fapi/v1/depth
  snapshot when the fetch runs in real time.
- events, event_links, entities: from a user's JSON-lines feed when `events_jsonl` (or
  QUANT_ASSETS_EVENTS_JSONL) is set, see `events_jsonl`; otherwise empty.
- prices, onchain_signals: not provided by Binance; empty frames and a note.

Missing upstream files, and files that hold no rows, are coverage gaps listed in `last_report`
(`missing_files`, `empty_files`, `gap_days`), never errors; corrupt input raises an error naming
the file, row and field (`ArchiveFormatError`, `ArchiveIntegrityError`, `RestError`). REST is
used unless `use_rest=False` or QUANT_ASSETS_USE_REST=0 (archive only, e.g. an offline mirror).
No Dagster here: defs/raw calls this class.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterable, Sequence

import polars as pl

from quant_assets.schemas import RAW_TABLES
from quant_assets.sources.base import clip_to_until
from quant_assets.sources.binance_archive import ArchiveRead, ArchiveStore, BinanceArchive, StoreStats
from quant_assets.sources.binance_format import FIVE_MIN, ParseNotes, aggregate_klines
from quant_assets.sources.binance_http import HttpStats
from quant_assets.sources.binance_rest import FUTURES_DATA_NOTE, FUTURES_DATA_RETENTION, BinanceRest
from quant_assets.sources.events_jsonl import EVENT_TABLES, events_tables
from quant_assets.universe import FUNDING_INTERVAL, SYMBOLS, TIMEFRAMES

MARKETS = {"spot": "spot_klines", "usdm": "usdm_klines"}
# Funding intervals per year: annualized_basis = basis * this, the yearly carry a long perpetual
# would pay if today's premium persisted and were charged every funding interval (8h -> 1095).
FUNDING_PERIODS_PER_YEAR = dt.timedelta(days=365) / FUNDING_INTERVAL
REST_SPOT, REST_FUTURES = "https://api.binance.com", "https://fapi.binance.com"
USE_REST_ENV = "QUANT_ASSETS_USE_REST"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def use_rest_from_env(default: bool = True) -> bool:
    """QUANT_ASSETS_USE_REST as a bool (1/true/yes/on or 0/false/no/off); `default` when unset."""
    raw = os.environ.get(USE_REST_ENV, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise ValueError(f"{USE_REST_ENV}={raw!r}: expected one of {_TRUE + _FALSE}")


class BinanceSource:
    """implements quant_assets.sources.base.MarketSource"""

    name = "binance"

    def __init__(
        self,
        archive_root: str | None = None,
        cache_dir: str | None = None,
        rest_base_spot: str | None = None,
        rest_base_futures: str | None = None,
        use_rest: bool | None = None,
        events_jsonl: str | None = None,
        http_timeout: float = 10.0,
        max_retries: int = 5,
        *,
        symbols: Sequence[str] | None = None,
        strict: bool = True,
        max_workers: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ):
        self.store = ArchiveStore(
            archive_root,
            cache_dir,
            http_timeout=http_timeout,
            max_retries=max_retries,
            sleep=sleep,
            clock=clock,
            max_workers=max_workers,
        )
        self.archive = BinanceArchive(self.store, strict=strict, max_workers=max_workers)
        # None: QUANT_ASSETS_USE_REST decides (default on), so an offline mirror needs no code
        self.use_rest = use_rest_from_env() if use_rest is None else use_rest
        self.strict = strict
        self._rest_args = dict(
            base_spot=rest_base_spot or os.environ.get("QUANT_ASSETS_REST_SPOT") or REST_SPOT,
            base_futures=rest_base_futures or os.environ.get("QUANT_ASSETS_REST_FUTURES") or REST_FUTURES,
            timeout=http_timeout,
            max_retries=max_retries,
            sleep=sleep,
            clock=clock,
        )
        self._rest: BinanceRest | None = None
        self.events_jsonl = events_jsonl or os.environ.get("QUANT_ASSETS_EVENTS_JSONL") or None
        self.symbols = tuple(symbols) if symbols else SYMBOLS
        self.clock = clock
        self.last_report: dict = {}

    @property
    def rest(self) -> BinanceRest:
        if self._rest is None:
            self._rest = BinanceRest(**self._rest_args)
        return self._rest

    def fetch(
        self, tables: Sequence[str], start: dt.date, end: dt.date, until: dt.datetime
    ) -> dict[str, pl.DataFrame]:
        unknown = [t for t in tables if t not in RAW_TABLES]
        if unknown:
            raise KeyError(f"unknown raw tables {unknown}; known: {list(RAW_TABLES)}")
        if until.tzinfo is None:
            until = until.replace(tzinfo=dt.UTC)
        self.store.stats, self.store.http = StoreStats(), HttpStats()
        if self._rest is not None:
            self._rest.stats, self._rest.notes = HttpStats(), []
        run = _Run(self, start, end, until)
        out: dict[str, pl.DataFrame] = {}
        for table in tables:
            rest_before = self._rest.stats.requests if self._rest is not None else 0
            notes_before = len(self._rest.notes) if self._rest is not None else 0
            if table == "market_bars":
                df = run.market_bars()
            elif table == "funding_rates":
                df = run.funding_rates()
            elif table == "derivatives_metrics":
                df = run.derivatives_metrics()
            elif table == "orderbook_l2":
                df = run.orderbook_l2()
            elif table in EVENT_TABLES:
                df = run.events(table)
            else:
                run.note(table, f"{table}: Binance has no such data; the binance source leaves it empty")
                df = RAW_TABLES[table].empty()
            out[table] = run.finish(table, df)
            rest = self._rest
            if rest is not None:
                run.entry(table)["rest_requests"] = rest.stats.requests - rest_before
                for text in rest.notes[notes_before:]:
                    run.note(table, text)
        self.last_report = run.report()
        return out


class _Run:
    """The state of one fetch call: window, coverage bookkeeping, 5m bars shared between tables."""

    def __init__(self, src: BinanceSource, start: dt.date, end: dt.date, until: dt.datetime):
        self.src, self.start, self.end, self.until = src, start, end, until
        self.today = until.date()
        self.days = [
            start + dt.timedelta(days=i)
            for i in range((end - start).days)
            if start + dt.timedelta(days=i) <= self.today
        ]
        self.tables: dict[str, dict] = {}
        self._bars5: dict[tuple[str, str], pl.DataFrame] = {}

    # -- bookkeeping ---------------------------------------------------------------------------

    def entry(self, table: str) -> dict:
        return self.tables.setdefault(
            table,
            {
                "rows": 0,
                "rest_requests": 0,
                "files_read": 0,
                "files_missing": 0,
                "missing_files": [],
                "empty_files": [],
                "rest_days": 0,
                "gap_days": {},
                "before_listing_days": 0,
                "quarantined": 0,
                "quarantine": [],
                "duplicates_removed": 0,
                "conflicts_resolved": 0,
                "ignored_rows": 0,
                "notes": [],
            },
        )

    def note(self, table: str, text: str) -> None:
        notes = self.entry(table)["notes"]
        if text not in notes:
            notes.append(text)

    def account(
        self, table: str, label: str, read: ArchiveRead, filled: Iterable[dt.date], rest_days: int
    ) -> None:
        """Count `read`'s files; its missing days not `filled` by another source are gaps.

        Gaps come from the files, not from which dates the rows carry: a snapshot file's
        boundary row dated the next day must not hide that day's missing file.
        """
        e = self.entry(table)
        e["files_read"] += len(read.covered_files)
        e["files_missing"] += len(read.missing_files)
        e["missing_files"].extend(read.missing_files)
        e["empty_files"].extend(read.empty_files)
        if read.empty_files:
            self.note(table, "archive files holding no rows are gaps (listed in empty_files)")
        e["rest_days"] += rest_days
        e["before_listing_days"] += len(read.before_listing)
        gaps = sorted(read.missing_days - set(filled))
        if gaps:
            e["gap_days"][label] = [d.isoformat() for d in gaps]
        self.account_notes(table, read.notes)

    def account_notes(self, table: str, notes: ParseNotes) -> None:
        e = self.entry(table)
        e["quarantined"] += len(notes.quarantine)
        e["quarantine"].extend(notes.quarantine)
        e["duplicates_removed"] += notes.duplicates
        e["conflicts_resolved"] += notes.conflicts_resolved
        e["ignored_rows"] += notes.ignored

    def report(self) -> dict:
        """Per-table coverage at the top level (`report["market_bars"]`), then run-wide figures."""
        src = self.src
        rest = src._rest
        return {
            **self.tables,
            "source": src.name,
            "archive_root": src.store.root,
            "window": {
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "until": self.until.isoformat(),
            },
            "archive": {**src.store.stats.as_dict(), "http": src.store.http.as_dict()},
            "rest": {
                "enabled": src.use_rest,
                **(rest.stats.as_dict() if rest is not None else {"requests": 0}),
            },
            "notes": list(rest.notes) if rest is not None else [],
        }

    def finish(self, table: str, df: pl.DataFrame) -> pl.DataFrame:
        schema = RAW_TABLES[table]
        df = schema.conform(df) if df.height else schema.empty()
        df = df.filter((pl.col("date") >= self.start) & (pl.col("date") < self.end))
        if "ts" in df.columns:
            df = clip_to_until(df, self.until)
        if table == "market_bars":  # a bar exists once it has closed
            closed = pl.lit(False)
            for tf, length in TIMEFRAMES.items():
                closed = closed | ((pl.col("timeframe") == tf) & (pl.col("ts") + length <= self.until))
            df = df.filter(closed)
        df = df.sort(list(schema.key))
        dup = df.select(pl.struct(list(schema.key)).is_duplicated()).to_series()
        if dup.any():
            raise RuntimeError(
                f"{table}: duplicate keys {schema.key} after merging sources:\n{df.filter(dup).head(4)}"
            )
        self.entry(table)["rows"] = df.height
        return df

    # -- REST helpers --------------------------------------------------------------------------

    def rest_ranges(self, days: Iterable[dt.date]) -> list[tuple[dt.datetime, dt.datetime]]:
        """Consecutive days -> [start, end) datetimes, the last clipped to `until`."""
        out: list[tuple[dt.datetime, dt.datetime]] = []
        for d in sorted(days):
            lo = dt.datetime.combine(d, dt.time(), dt.UTC)
            hi = min(lo + dt.timedelta(days=1), self.until)
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            elif lo < hi:
                out.append((lo, hi))
        return out

    @staticmethod
    def days_of(df: pl.DataFrame) -> set[dt.date]:
        if df.height == 0:
            return set()
        col = df["date"] if "date" in df.columns else df["ts"].dt.date()
        return set(col.unique().to_list())

    # -- market_bars ---------------------------------------------------------------------------

    def bars5(self, symbol: str, market: str) -> pl.DataFrame:
        """5m bars of one symbol and market over the window, archive first, REST for missing days."""
        key = (symbol, market)
        if key not in self._bars5:
            read = self.src.archive.read(MARKETS[market], symbol, self.days, self.today, "5m")
            rest = []
            if self.src.use_rest and read.missing_days:
                for lo, hi in self.rest_ranges(read.missing_days):
                    df, notes = self.src.rest.klines(market, symbol, "5m", lo, hi, strict=self.src.strict)
                    read.notes.merge(notes)
                    rest.append(df)
            filled = self.days_of(pl.concat(rest)) if rest else set()
            frames = ([read.frame] if read.frame.height else []) + rest
            got = pl.concat(frames) if frames else RAW_TABLES["market_bars"].empty()
            self.account("market_bars", f"{symbol} {market} 5m", read, filled, len(filled))
            self._bars5[key] = got
        return self._bars5[key]

    def market_bars(self) -> pl.DataFrame:
        frames = []
        for symbol in self.src.symbols:
            for market in MARKETS:
                five = self.bars5(symbol, market)
                read = self.src.archive.read(MARKETS[market], symbol, self.days, self.today, "1h")
                hour = [read.frame] if read.frame.height else []
                # a day without its 1h file gets the exact aggregate of that day's complete 5m hours
                derived = aggregate_klines(five.filter(pl.col("date").is_in(sorted(read.missing_days))))
                if derived.height:
                    hour.append(derived)
                    self.note(
                        "market_bars",
                        "1h bars of days without a 1h file are aggregated from complete 5m hours",
                    )
                got = pl.concat(hour) if hour else RAW_TABLES["market_bars"].empty()
                self.account("market_bars", f"{symbol} {market} 1h", read, self.days_of(derived), 0)
                frames.extend([five, got])
        return pl.concat(frames) if frames else RAW_TABLES["market_bars"].empty()

    # -- funding -------------------------------------------------------------------------------

    def funding_rates(self) -> pl.DataFrame:
        frames = []
        for symbol in self.src.symbols:
            read = self.src.archive.read("funding", symbol, self.days, self.today)
            got = [read.frame] if read.frame.height else []
            filled: set[dt.date] = set()
            if self.src.use_rest and read.missing_days:
                for lo, hi in self.rest_ranges(read.missing_days):
                    df = self.src.rest.funding_rates(symbol, lo, hi)
                    filled |= self.days_of(df)
                    got.append(df)
            frame = pl.concat(got) if got else RAW_TABLES["funding_rates"].empty()
            self.account("funding_rates", symbol, read, filled, len(filled))
            frames.append(frame)
        return pl.concat(frames)

    # -- derivatives metrics -------------------------------------------------------------------

    def derivatives_metrics(self) -> pl.DataFrame:
        frames = []
        for symbol in self.src.symbols:
            read = self.src.archive.read("metrics", symbol, self.days, self.today)
            got = [read.frame] if read.frame.height else []
            filled: set[dt.date] = set()
            if self.src.use_rest and read.missing_days:
                oldest = (self.src.rest.now() - FUTURES_DATA_RETENTION).date()
                too_old = {d for d in read.missing_days if d <= oldest}
                if too_old:
                    self.note(
                        "derivatives_metrics",
                        f"{FUTURES_DATA_NOTE}: {len(too_old)} missing symbol-days before {oldest} stay gaps",
                    )
                recent = read.missing_days - too_old
                for lo, hi in self.rest_ranges(recent):
                    df = self.src.rest.futures_data(symbol, lo, hi)
                    # the snapshot at a missing day's 00:00 may already be the previous day's
                    # file's last (end-of-period) row: the archive's row is kept
                    df = df.join(read.frame.select("ts"), on="ts", how="anti") if read.frame.height else df
                    filled |= self.days_of(df)
                    got.append(df)
            frame = pl.concat(got) if got else RAW_TABLES["derivatives_metrics"].empty()
            self.account("derivatives_metrics", symbol, read, filled, len(filled))
            if frame.height:
                frames.append(self.add_basis(symbol, frame))
        return pl.concat(frames) if frames else RAW_TABLES["derivatives_metrics"].empty()

    def add_basis(self, symbol: str, metrics: pl.DataFrame) -> pl.DataFrame:
        """basis at ts = the perpetual's premium over the index at ts, as a fraction.

        It is the close of the premium-index bar that CLOSES at ts (opened at ts - 5m), the same
        moment the metrics snapshot describes. Where the archive and REST lack the premium index,
        basis = usdm close / spot close - 1 of the 5m bars closing at ts. annualized_basis = basis *
        FUNDING_PERIODS_PER_YEAR (1095 for 8h funding), the carry the premium implies per year.
        """
        days = sorted(self.days_of(metrics) | {min(self.days_of(metrics)) - dt.timedelta(days=1)})
        read = self.src.archive.read("premium_index", symbol, days, self.today, "5m")
        prem = [read.frame] if read.frame.height else []
        if self.src.use_rest and read.missing_days:
            for lo, hi in self.rest_ranges(read.missing_days):
                prem.append(self.src.rest.premium_index_klines(symbol, lo, hi))
        self.entry("derivatives_metrics")["files_read"] += len(read.covered_files)
        self.account_notes("derivatives_metrics", read.notes)
        at_close = pl.col("ts") + FIVE_MIN
        basis = (
            pl.concat(prem).select(at_close.alias("ts"), pl.col("premium").alias("_premium"))
            if prem
            else pl.DataFrame(schema={"ts": metrics.schema["ts"], "_premium": pl.Float64})
        )
        out = metrics.drop("basis", "annualized_basis").join(basis, on="ts", how="left")
        if out["_premium"].null_count():
            self.note(
                "derivatives_metrics",
                "basis falls back to usdm/spot 5m closes where the premium index is missing",
            )
            closes = []
            for market in MARKETS:
                b = self.bars5(symbol, market)
                closes.append(b.select(at_close.alias("ts"), pl.col("close").alias(f"_{market}")))
            spread = (
                closes[0]
                .join(closes[1], on="ts", how="inner")
                .select("ts", (pl.col("_usdm") / pl.col("_spot") - 1).alias("_spread"))
            )
            out = (
                out.join(spread, on="ts", how="left")
                .with_columns(pl.coalesce("_premium", "_spread").alias("_premium"))
                .drop("_spread")
            )
        return out.with_columns(
            basis=pl.col("_premium"), annualized_basis=pl.col("_premium") * FUNDING_PERIODS_PER_YEAR
        ).drop("_premium")

    # -- order book ----------------------------------------------------------------------------

    def orderbook_l2(self) -> pl.DataFrame:
        frames = []
        live = self.src.use_rest and (self.src.clock() - self.until.timestamp()) < FIVE_MIN.total_seconds()
        for symbol in self.src.symbols:
            read = self.src.archive.read("book_depth", symbol, self.days, self.today, until=self.until)
            got = [read.frame] if read.frame.height else []
            filled: set[dt.date] = set()
            if live and self.today in read.missing_days and self.start <= self.today < self.end:
                row, notes = self.src.rest.depth_snapshot(symbol)
                for n in notes:
                    self.note("orderbook_l2", n)
                got.append(row)
                filled = self.days_of(row)
            frame = pl.concat(got) if got else RAW_TABLES["orderbook_l2"].empty()
            self.account("orderbook_l2", symbol, read, filled, len(filled))
            frames.append(frame)
        if self.entry("orderbook_l2")["gap_days"]:
            self.note(
                "orderbook_l2", "REST has only the current book: past days missing from the archive stay gaps"
            )
        return pl.concat(frames)

    # -- events --------------------------------------------------------------------------------

    def events(self, table: str) -> pl.DataFrame:
        path = self.src.events_jsonl
        if not path:
            self.note(table, f"{table}: no events feed configured (events_jsonl / QUANT_ASSETS_EVENTS_JSONL)")
            return RAW_TABLES[table].empty()
        if not hasattr(self, "_events"):
            self._events = events_tables(path, self.start, self.end, self.until)
        self.note(table, f"{table}: from {path}")
        return self._events[table]
