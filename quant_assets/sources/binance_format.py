"""Binance rows (archive CSV lines or REST JSON arrays) -> raw lake frames, with strict checks.

The same converters serve the archive and REST, so both paths share one set of rules:
- a field that should be a number and is not, a wrong number of columns, a time off the
  bar grid, or two different rows for one key raise `ArchiveFormatError` naming the file,
  the row (1-based line number in the file, header included) and the field;
- a kline with a price <= 0, high < low, open/close outside [low, high] or a negative volume
  cannot be a real trade record, so by default (`strict=True`) it is an error too; with
  `strict=False` the row is quarantined: dropped, counted and listed (file, row, field, reason)
  in `ParseNotes`, never silently;
- exact duplicate rows are dropped and counted; rows are returned sorted by time;
- a row of an archive file stamped outside the file's day (or month) raises
  `ArchiveFormatError` too: kept, it would fill another day's gap or clash with that day's
  own file. Snapshot files (metrics, bookDepth) may carry the first instant after their
  period, where the archive puts an end-of-period label (`SNAPSHOT_PERIOD_GRACE`).
Time fields are epoch integers in milliseconds or, in spot files from 2025-01-01 on,
microseconds; the unit is detected per value by magnitude (ms stays below 1e14 until the
year 5138, us is above 1e15 since 2001).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from quant_assets.schemas import DEPTH_BANDS, RAW_TABLES, TS
from quant_assets.universe import TIMEFRAMES

US_THRESHOLD = 10**14  # epoch values above this are microseconds
KLINE_COLUMNS = 12
FIVE_MIN = dt.timedelta(minutes=5)
# Until 2026-06-25 a daily USD-M metrics file ran 00:05 .. 00:00 of the next day (each row
# labelled with the END of its 5 minutes); from then on 00:00 .. 23:55. A snapshot file may
# therefore hold rows up to (not including) one snapshot interval after its period.
SNAPSHOT_PERIOD_GRACE = FIVE_MIN
# Archive metrics header -> derivatives_metrics column. The archive's names are misleading:
# "count_toptrader..." is the top traders' ACCOUNT ratio, "sum_toptrader..." their POSITION ratio.
METRICS_COLUMNS = {
    "sum_open_interest": "open_interest",
    "sum_open_interest_value": "open_interest_value",
    "count_toptrader_long_short_ratio": "long_short_ratio_top_accounts",
    "sum_toptrader_long_short_ratio": "long_short_ratio_top_positions",
    "count_long_short_ratio": "long_short_ratio_global",
    "sum_taker_long_short_vol_ratio": "taker_buy_sell_ratio",
}
METRICS_HEADER = ("create_time", "symbol", *METRICS_COLUMNS)
METRICS_NULLABLE = frozenset(RAW_TABLES["derivatives_metrics"].nullable)


class ArchiveFormatError(ValueError):
    """A malformed or implausible file or response; the message names the file, row and field."""


@dataclass
class ParseNotes:
    """What a parse dropped or resolved, for the source's coverage report."""

    duplicates: int = 0  # exact duplicate rows dropped
    conflicts_resolved: int = 0  # same key, different values, last one kept (metrics/bookDepth only)
    ignored: int = 0  # rows outside the schema's scope (e.g. bookDepth bands other than +-1..5%)
    quarantine: list[dict] = field(default_factory=list)  # rows dropped under strict=False

    def merge(self, other: ParseNotes) -> None:
        self.duplicates += other.duplicates
        self.conflicts_resolved += other.conflicts_resolved
        self.ignored += other.ignored
        self.quarantine.extend(other.quarantine)


class StringRows:
    """String fields of one file or response, with each row's line number for error messages."""

    def __init__(self, fields: pl.DataFrame, rows: pl.Series, source: str, header: list[str] | None = None):
        self.fields = fields  # columns f0..f{n-1}, all String
        self.rows = rows  # 1-based line number of each row in the file
        self.source = source
        self.header = header
        # [start, end) of the day or month an archive file covers; None for REST responses
        self.period: tuple[dt.datetime, dt.datetime] | None = None

    @property
    def height(self) -> int:
        return self.fields.height

    @classmethod
    def from_csv(cls, text: bytes, source: str, ncols: int, first_is_data) -> StringRows:
        """Split CSV `text` into `ncols` string fields; a first line failing `first_is_data` is a header."""
        lines = pl.read_csv(
            text.removeprefix(b"\xef\xbb\xbf"),  # a BOM would make the first data row look like a header
            has_header=False,
            separator="\x1f",
            quote_char=None,
            schema={"line": pl.String},
        ).get_column("line")
        rows = pl.int_range(1, lines.len() + 1, eager=True, dtype=pl.Int64)
        # blank lines after the data are harmless; a blank line inside it is a malformed row (0 columns)
        content = lines.is_not_null().arg_true()
        last = int(content[-1]) + 1 if content.len() else 0
        keep = lines.is_not_null() | (rows <= last)
        lines, rows = lines.filter(keep), rows.filter(keep)
        header = None
        if lines.len() and lines[0] is not None and not first_is_data(lines[0].split(",")[0].strip()):
            header = [h.strip() for h in lines[0].split(",")]
            lines, rows = lines.slice(1), rows.slice(1)
        parts = lines.fill_null("").str.split(",")
        counts = parts.list.len()
        bad = (counts != ncols).arg_true()
        if bad.len():
            i = bad[0]
            raise ArchiveFormatError(
                f"{source} row {rows[i]}: {counts[i] if lines[i] else 0} columns, expected {ncols}: {lines[i]!r:.120}"
            )
        fields = pl.DataFrame({f"f{i}": parts.list.get(i).str.strip_chars() for i in range(ncols)})
        return cls(fields, rows, source, header)

    @classmethod
    def from_json(cls, data: object, source: str, ncols: int) -> StringRows:
        """JSON arrays of `ncols` scalars (a REST response) as string fields; row i is array i (1-based)."""
        if not isinstance(data, list):
            raise ArchiveFormatError(f"{source}: expected a JSON list of rows, got {str(data)[:120]}")
        width = ncols
        cols: list[list[str]] = [[] for _ in range(width)]
        for i, row in enumerate(data):
            if not isinstance(row, list | tuple) or len(row) != width:
                raise ArchiveFormatError(
                    f"{source} row {i + 1}: expected {width} fields, got {str(row)[:120]}"
                )
            for j, v in enumerate(row):
                cols[j].append("" if v is None else str(v))
        fields = pl.DataFrame({f"f{j}": pl.Series(cols[j], dtype=pl.String) for j in range(width)})
        return cls(fields, pl.int_range(1, len(data) + 1, eager=True, dtype=pl.Int64), source)

    def raw(self, i: int) -> pl.Series:
        return self.fields.get_column(f"f{i}")

    def fail(self, at: int, name: str, value: object, why: str) -> ArchiveFormatError:
        return ArchiveFormatError(f"{self.source} row {self.rows[at]} field '{name}': {value!r} {why}")

    def number(self, i: int, name: str, *, nullable: bool = False) -> pl.Series:
        raw = self.raw(i)
        out = raw.cast(pl.Float64, strict=False)
        good = out.is_finite().fill_null(False)
        if nullable:
            good = good | raw.eq("").fill_null(False)
        idx = (~good).arg_true()
        if idx.len():
            at = idx[0]
            raise self.fail(at, name, raw[at], "is not a number" if raw[at] else "is empty")
        return out.rename(name)

    def integer(self, i: int, name: str) -> pl.Series:
        raw = self.raw(i)
        out = raw.cast(pl.Int64, strict=False)
        idx = out.is_null().arg_true()
        if idx.len():
            raise self.fail(idx[0], name, raw[idx[0]], "is not an integer")
        return out.rename(name)

    def epoch(self, i: int, name: str) -> pl.Series:
        """Epoch ms or us (detected per value) -> Datetime(ms, UTC)."""
        n = self.integer(i, name)
        ms = pl.select(pl.when(n >= US_THRESHOLD).then(n // 1000).otherwise(n)).to_series()
        bad = (ms <= 0).arg_true()
        if bad.len():
            raise self.fail(bad[0], name, self.raw(i)[bad[0]], "is not a time after 1970")
        return ms.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").rename(name)

    def check_period(self, t: pl.Series, i: int, name: str, grace: dt.timedelta = dt.timedelta(0)) -> None:
        """Every time `t` (parsed from field `i`) lies in this file's period [start, end + grace)."""
        if self.period is None:
            return
        start, end = self.period
        out = ((t < start) | (t >= end + grace)).arg_true()
        if out.len():
            at = out[0]
            span = f"{start:%Y-%m-%d}" if end - start == dt.timedelta(days=1) else f"{start:%Y-%m}"
            raise self.fail(
                at,
                name,
                self.raw(i)[at],
                f"is {t[at]:%Y-%m-%d %H:%M:%S} UTC, outside this file's period {span} "
                "(a row of another day: kept, it would fill or clash with that day's data)",
            )

    def time(self, i: int, name: str) -> pl.Series:
        """A time written as 'YYYY-MM-DD HH:MM:SS' (metrics, bookDepth) or as epoch ms/us."""
        raw = self.raw(i)
        as_int = raw.cast(pl.Int64, strict=False)
        as_ms = pl.select(pl.when(as_int >= US_THRESHOLD).then(as_int // 1000).otherwise(as_int)).to_series()
        as_text = raw.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="ms", time_zone="UTC")
        out = pl.select(
            pl.when(as_ms.is_not_null())
            .then(as_ms.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))
            .otherwise(as_text)
        ).to_series()
        idx = out.is_null().arg_true()
        if idx.len():
            raise self.fail(
                idx[0], name, raw[idx[0]], "is not a time (expected 'YYYY-MM-DD HH:MM:SS' or epoch ms)"
            )
        return out.rename(name)


def is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def is_time_or_number(s: str) -> bool:
    if is_number(s):
        return True
    try:
        dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S")
        return True
    except ValueError:
        return False


# -- klines ---------------------------------------------------------------------------------------


def klines_frame(
    src: StringRows, symbol: str, market: str, timeframe: str, notes: ParseNotes, *, strict: bool = True
) -> pl.DataFrame:
    """12-column klines (archive CSV or REST JSON) -> market_bars rows, checked, de-duplicated, sorted."""
    step = interval(timeframe)
    ts = src.epoch(0, "open_time")
    src.check_period(ts, 0, "open_time")
    df = pl.DataFrame(
        [
            ts.rename("ts"),
            src.number(1, "open"),
            src.number(2, "high"),
            src.number(3, "low"),
            src.number(4, "close"),
            src.number(5, "volume"),
            src.number(7, "quote_volume"),
            src.integer(8, "trades"),
            src.number(9, "taker_buy_volume"),
            src.number(10, "taker_buy_quote_volume"),
            src.rows.rename("_row"),
        ]
    )
    src.epoch(6, "close_time")  # validated only: the open time and timeframe define the bar
    _check_grid(src, df, step, "open_time")
    df = _check_kline_values(src, df, notes, strict)
    df = _dedupe(src, df, ("ts",), notes)
    return RAW_TABLES["market_bars"].conform(
        df.with_columns(
            date=pl.col("ts").dt.date(),
            symbol=pl.lit(symbol),
            market=pl.lit(market),
            timeframe=pl.lit(timeframe),
        )
    )


def _check_grid(src: StringRows, df: pl.DataFrame, step: dt.timedelta, name: str) -> None:
    step_ms = int(step.total_seconds() * 1000)
    off = (df["ts"].dt.epoch("ms") % step_ms != 0).arg_true()
    if off.len():
        raise src.fail(
            off[0],
            name,
            src.raw(0)[off[0]],
            f"is not on the {_fmt(step)} grid (wrong interval or shifted file)",
        )


_UNITS = {"m": dt.timedelta(minutes=1), "h": dt.timedelta(hours=1), "d": dt.timedelta(days=1)}


def _fmt(step: dt.timedelta) -> str:
    for unit, length in (("d", _UNITS["d"]), ("h", _UNITS["h"]), ("m", _UNITS["m"])):
        if step % length == dt.timedelta(0):
            return f"{step // length}{unit}"
    return str(step)


def interval(timeframe: str) -> dt.timedelta:
    """Binance interval name ("1m", "5m", "1h", "1d") -> its length; the lake uses 5m and 1h only."""
    if timeframe in TIMEFRAMES:
        return TIMEFRAMES[timeframe]
    try:
        return int(timeframe[:-1]) * _UNITS[timeframe[-1]]
    except (KeyError, ValueError):
        raise ValueError(f"unknown kline interval {timeframe!r}") from None


_KLINE_RULES: tuple[tuple[str, pl.Expr, str], ...] = (
    ("open", pl.col("open") <= 0, "is not a positive price"),
    ("high", pl.col("high") <= 0, "is not a positive price"),
    ("low", pl.col("low") <= 0, "is not a positive price"),
    ("close", pl.col("close") <= 0, "is not a positive price"),
    ("high", pl.col("high") < pl.col("low"), "is below low"),
    ("open", (pl.col("open") > pl.col("high")) | (pl.col("open") < pl.col("low")), "is outside [low, high]"),
    (
        "close",
        (pl.col("close") > pl.col("high")) | (pl.col("close") < pl.col("low")),
        "is outside [low, high]",
    ),
    ("volume", pl.col("volume") < 0, "is negative"),
    ("quote_volume", pl.col("quote_volume") < 0, "is negative"),
    ("trades", pl.col("trades") < 0, "is negative"),
    # taker buys are a part of the volume; a tolerance for the 8-decimal rounding of both
    (
        "taker_buy_volume",
        pl.col("taker_buy_volume") > pl.col("volume") * (1 + 1e-9) + 1e-12,
        "is above volume",
    ),
)


def _check_kline_values(src: StringRows, df: pl.DataFrame, notes: ParseNotes, strict: bool) -> pl.DataFrame:
    flags = df.select(
        pl.col("_row"), pl.col("low"), *(rule.alias(f"r{k}") for k, (_, rule, _) in enumerate(_KLINE_RULES))
    )
    any_bad = flags.select(pl.any_horizontal(pl.exclude("_row", "low"))).to_series()
    if not any_bad.any():
        return df
    bad_idx = any_bad.arg_true()
    if strict:
        at = bad_idx[0]
        for k, (name, _, why) in enumerate(_KLINE_RULES):
            if flags[f"r{k}"][at]:
                extra = f" {flags['low'][at]}" if why == "is below low" else ""
                raise ArchiveFormatError(
                    f"{src.source} row {src.rows[at]} field '{name}': {df[name][at]} {why}{extra} "
                    "(pass strict=False to quarantine such rows instead)"
                )
    for at in bad_idx:
        k = next(k for k in range(len(_KLINE_RULES)) if flags[f"r{k}"][at])
        name, _, why = _KLINE_RULES[k]
        notes.quarantine.append(
            {
                "file": src.source,
                "row": int(src.rows[at]),
                "field": name,
                "value": df[name][at],
                "reason": why,
            }
        )
    return df.filter(~any_bad)


def _dedupe(
    src: StringRows, df: pl.DataFrame, key: Sequence[str], notes: ParseNotes, *, resolve: bool = False
) -> pl.DataFrame:
    """Drop exact duplicates; two different rows for one key are an error (or, with resolve, keep the last)."""
    values = [c for c in df.columns if c != "_row"]
    before = df.height
    df = df.unique(subset=values, keep="first", maintain_order=True)
    notes.duplicates += before - df.height
    dup = df.select(pl.struct(key).is_duplicated()).to_series()
    if dup.any():
        if resolve:
            n = df.height
            df = df.unique(subset=list(key), keep="last", maintain_order=True)
            notes.conflicts_resolved += n - df.height
        else:
            clash = df.filter(dup).sort([*key, "_row"]).head(2)
            a, b = clash.row(0, named=True), clash.row(1, named=True)
            fld = next(c for c in values if a[c] != b[c])
            raise ArchiveFormatError(
                f"{src.source} row {b['_row']} field '{fld}': {b[fld]!r} contradicts row {a['_row']} "
                f"({a[fld]!r}) for the same {'/'.join(key)} {a[key[0]]}"
            )
    return df.sort([*key, "_row"]).drop("_row")


# -- premium index, funding ---------------------------------------------------------------------


def premium_frame(src: StringRows, symbol: str, timeframe: str = "5m") -> pl.DataFrame:
    """premiumIndexKlines -> (symbol, ts, premium): the premium index's close for the bar opened at ts."""
    ts = src.epoch(0, "open_time")
    src.check_period(ts, 0, "open_time")
    df = pl.DataFrame([ts.rename("ts"), src.number(4, "close").rename("premium"), src.rows.rename("_row")])
    _check_grid(src, df, interval(timeframe), "open_time")
    df = _dedupe(src, df, ("ts",), ParseNotes())
    return df.with_columns(symbol=pl.lit(symbol)).select("symbol", "ts", "premium")


def funding_frame(
    src: StringRows, symbol: str, *, time_col: int = 0, rate_col: int = 2, mark_col: int | None = None
) -> pl.DataFrame:
    """Funding settlements -> funding_rates rows.

    Binance stamps settlements a few milliseconds after the hour (1577923200002); ts is rounded to
    the minute so the 08:00 settlement sits on the 08:00 bar, and available_at = ts because the
    rate is fixed at the settlement.
    """
    t = src.epoch(time_col, "funding_time")
    src.check_period(t, time_col, "funding_time")
    rate = src.number(rate_col, "funding_rate")
    mark = src.number(mark_col, "mark_price", nullable=True) if mark_col is not None else None
    ts = t.dt.round("1m")
    df = pl.DataFrame(
        [
            ts.rename("ts"),
            rate,
            mark if mark is not None else pl.Series("mark_price", [None] * len(ts), pl.Float64),
            src.rows.rename("_row"),
        ]
    )
    df = _dedupe(src, df, ("ts",), ParseNotes())
    return RAW_TABLES["funding_rates"].conform(
        df.with_columns(date=pl.col("ts").dt.date(), symbol=pl.lit(symbol), available_at=pl.col("ts"))
    )


# -- metrics --------------------------------------------------------------------------------------


def metrics_frame(src: StringRows, symbol: str, notes: ParseNotes) -> pl.DataFrame:
    """Archive `metrics` rows -> derivatives_metrics rows without basis (added by the source).

    ts = create_time (floored to the 5-minute grid, where real files already are);
    available_at = create_time + 5 minutes (the archive's aggregation delay).
    Conflicting rows for one create_time occur in real files; the last one is kept and counted.
    """
    pos = _metrics_positions(src)
    sym = src.raw(pos["symbol"])
    other = (sym != symbol).arg_true()
    if other.len():
        raise src.fail(
            other[0], "symbol", sym[other[0]], f"is not {symbol}: the file holds another symbol's data"
        )
    created = src.time(pos["create_time"], "create_time")
    src.check_period(created, pos["create_time"], "create_time", SNAPSHOT_PERIOD_GRACE)
    cols = [created.dt.truncate("5m").rename("ts"), (created + FIVE_MIN).rename("available_at")]
    for name, col in METRICS_COLUMNS.items():
        cols.append(src.number(pos[name], name, nullable=col in METRICS_NULLABLE).rename(col))
    df = pl.DataFrame([*cols, src.rows.rename("_row")])
    neg = (df["open_interest"] < 0).arg_true()
    if neg.len():
        raise src.fail(neg[0], "sum_open_interest", df["open_interest"][neg[0]], "is negative")
    df = _dedupe(src, df, ("ts",), notes, resolve=True)
    return RAW_TABLES["derivatives_metrics"].conform(
        df.with_columns(
            date=pl.col("ts").dt.date(),
            symbol=pl.lit(symbol),
            basis=pl.lit(None, pl.Float64),
            annualized_basis=pl.lit(None, pl.Float64),
        )
    )


def _metrics_positions(src: StringRows) -> dict[str, int]:
    if src.header is None:  # headerless files keep the archive's column order
        return {name: i for i, name in enumerate(METRICS_HEADER)}
    missing = [h for h in METRICS_HEADER if h not in src.header]
    if missing:
        raise ArchiveFormatError(f"{src.source} row 1: header lacks {missing}; got {src.header}")
    return {h: src.header.index(h) for h in METRICS_HEADER}


# -- bookDepth ------------------------------------------------------------------------------------


def book_depth_frame(
    src: StringRows, symbol: str, notes: ParseNotes, until: dt.datetime | None = None
) -> pl.DataFrame:
    """Archive `bookDepth` rows (timestamp, percentage, depth, notional) -> orderbook_l2 rows.

    Negative percentages are the bid side, positive the ask side; depth is cumulative base
    quantity and notional cumulative quote value within that % of mid. Snapshots come every
    ~30-60 s; each 5-minute bucket keeps its LAST complete snapshot (all ten +-1..5% bands)
    and is stamped with the bucket's start, so like a bar it is known at ts + 5m. Bands other
    than whole +-1..5% (some files add +-0.2%) are ignored and counted. best_bid/best_ask
    stay null: the archive has no top of book. Snapshots taken after `until` are left out
    before bucketing, so a bucket still running at `until` holds the last snapshot seen by then.
    """
    snap = src.time(0, "timestamp")
    src.check_period(snap, 0, "timestamp", SNAPSHOT_PERIOD_GRACE)
    df = pl.DataFrame(
        [
            snap.rename("snap"),
            src.number(1, "percentage").rename("pct"),
            src.number(2, "depth"),
            src.number(3, "notional"),
            src.rows.rename("_row"),
        ]
    )
    for name in ("depth", "notional"):
        neg = (df[name] < 0).arg_true()
        if neg.len():
            raise src.fail(neg[0], name, df[name][neg[0]], "is negative")
    if until is not None:
        df = df.filter(pl.col("snap") <= until)
    band = df["pct"].abs().round(0)
    in_scope = ((df["pct"].abs() - band).abs() < 1e-9) & band.is_in([float(b) for b in DEPTH_BANDS])
    notes.ignored += int((~in_scope).sum())
    df = df.filter(in_scope)
    df = _dedupe(src, df, ("snap", "pct"), notes, resolve=True)
    df = df.with_columns(
        col=pl.when(pl.col("pct") < 0).then(pl.lit("bid")).otherwise(pl.lit("ask"))
        + pl.lit("_")
        + pl.col("pct").abs().round(0).cast(pl.Int64).cast(pl.String)
        + pl.lit("pct")
    )
    complete = df.group_by("snap").agg(pl.len().alias("n")).filter(pl.col("n") == 2 * len(DEPTH_BANDS))
    df = df.join(complete.select("snap"), on="snap", how="semi")
    last = (
        df.select("snap")
        .unique()
        .with_columns(ts=pl.col("snap").dt.truncate("5m"))
        .group_by("ts")
        .agg(pl.col("snap").max())
    )
    df = df.join(last, on="snap", how="inner")
    wide = df.pivot(on="col", index="ts", values=["depth", "notional"], aggregate_function="first")
    rename = {}
    for side in ("bid", "ask"):
        for b in DEPTH_BANDS:
            for kind in ("depth", "notional"):
                rename[f"{kind}_{side}_{b}pct"] = f"{side}_{kind}_{b}pct"
    wide = wide.rename({k: v for k, v in rename.items() if k in wide.columns})
    if wide.height == 0:
        return RAW_TABLES["orderbook_l2"].empty()
    return (
        RAW_TABLES["orderbook_l2"]
        .conform(
            wide.with_columns(
                date=pl.col("ts").dt.date(),
                symbol=pl.lit(symbol),
                best_bid=pl.lit(None, pl.Float64),
                best_ask=pl.lit(None, pl.Float64),
            )
        )
        .sort("ts")
    )


# -- 5m -> 1h ----------------------------------------------------------------------------------


def aggregate_klines(bars: pl.DataFrame, timeframe: str = "1h", base: str = "5m") -> pl.DataFrame:
    """Complete `timeframe` bars from `base` bars (market_bars rows); incomplete buckets are left out.

    Volumes are summed as decimals with 8 places (the exchange's precision): a float sum of
    twelve 5m volumes drifts by an ulp, and the 1h bar would then differ from the exchange's own.
    """
    per = int(TIMEFRAMES[timeframe] / TIMEFRAMES[base])
    dec = pl.Decimal(38, 8)
    vols = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
    src = bars.filter(pl.col("timeframe") == base).sort("symbol", "market", "ts")
    out = (
        src.with_columns(bucket=pl.col("ts").dt.truncate(timeframe))
        .group_by("symbol", "market", "bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            *(pl.col(v).cast(dec).sum().cast(pl.Float64).alias(v) for v in vols),
            pl.col("trades").sum(),
            pl.len().alias("_n"),
        )
        .filter(pl.col("_n") == per)
        .rename({"bucket": "ts"})
        .with_columns(date=pl.col("ts").dt.date(), timeframe=pl.lit(timeframe), ts=pl.col("ts").cast(TS))
    )
    return RAW_TABLES["market_bars"].conform(out)
