"""Data-quality rules for the raw tables, as pure polars (no Dagster).

Each rule returns a `RuleOutcome`: how many rows fail and a few of them, so a failing
check in the UI says what is wrong and where. The Dagster checks in defs/raw/checks.py
only read the window from the lake and report these outcomes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from quant_assets.schemas import RAW_TABLES, TableSchema
from quant_assets.universe import COINS, TIMEFRAMES

SAMPLE_ROWS = 5

# Price continuity (`price_continuity_rule`): a bar carrying another coin's price, pasted into a
# coin's file, passes every per-row rule; it shows only against the bars around it. The bounds
# below sit orders of magnitude above what the real sample files do (adjacent gaps ~1e-5, 5m
# bars exactly inside their hour) and below the distance between most pairs of coins.
MAX_ADJACENT_LOG_GAP = 0.10
"""Largest |log(open / close of the bar before)| between adjacent bars of one series. Binance
trades around the clock, so a bar opens at the first trade after the previous bar's last one,
milliseconds later and a few ticks away; a 10% jump between two consecutive trades of a top coin
means one of the two bars is not this coin's (or not this time's). Bars with a gap in time
between them (an outage) are not compared."""
HOUR_RANGE_SLACK = 0.01
"""How far (as a fraction) a 5m bar's open or close may sit outside the [low, high] of the 1h
bar containing it. The 1h bar is the exact aggregate of its twelve 5m bars, so any excess is
a bar from elsewhere; the slack only keeps a rounding difference from failing a blocking check."""
MAX_SPOT_PERP_LOG_GAP = 0.25
"""Largest |log(perpetual close / spot close)| of the same coin, timeframe and bar. The basis is
usually a few tenths of a percent and has stayed within a few percent in the most violent
hours on record; a quarter apart (in log terms) is another coin's price in one of the two files.
Kept wider than the gaps above because a newly listed perpetual can trade far from spot."""


@dataclass
class RuleOutcome:
    name: str
    description: str
    failed_rows: int
    sample: pl.DataFrame | None = None
    detail: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.failed_rows == 0

    def sample_markdown(self) -> str:
        if self.sample is None or self.sample.height == 0:
            return ""
        # wide enough for whole values: a failing row's `reason` is the point of the sample
        with pl.Config(
            tbl_formatting="MARKDOWN",
            tbl_hide_dataframe_shape=True,
            tbl_width_chars=1000,
            fmt_str_lengths=400,
        ):
            return str(self.sample.head(SAMPLE_ROWS))


def _outcome(name: str, description: str, bad: pl.DataFrame, **detail) -> RuleOutcome:
    return RuleOutcome(name, description, bad.height, bad.head(SAMPLE_ROWS), detail)


def schema_rule(spec: TableSchema, df: pl.DataFrame) -> RuleOutcome:
    """Columns and dtypes exactly as the schema says; no nulls in non-nullable columns."""
    problems = []
    for col, dtype in spec.columns.items():
        if col not in df.columns:
            problems.append({"column": col, "problem": "missing", "rows": df.height})
        elif df.schema[col] != dtype:
            problems.append(
                {"column": col, "problem": f"dtype {df.schema[col]} != {dtype}", "rows": df.height}
            )
        elif col not in spec.nullable and (n := df.get_column(col).null_count()):
            problems.append({"column": col, "problem": "nulls", "rows": n})
    extra = [c for c in df.columns if c not in spec.columns]
    problems += [{"column": c, "problem": "unexpected column", "rows": df.height} for c in extra]
    bad = pl.DataFrame(problems, schema={"column": pl.String, "problem": pl.String, "rows": pl.Int64})
    failed = int(bad.get_column("rows").max() or 0) if bad.height else 0
    return RuleOutcome("schema", "columns, dtypes and non-null columns match the table schema", failed, bad)


def unique_key_rule(spec: TableSchema, df: pl.DataFrame) -> RuleOutcome:
    key = list(spec.key)
    dup = df.group_by(key).len().filter(pl.col("len") > 1)
    n = int(dup.get_column("len").sum() or 0) if dup.height else 0
    return RuleOutcome("unique_key", f"one row per {', '.join(key)}", n, dup.sort(key).head(SAMPLE_ROWS))


def window_rule(df: pl.DataFrame, start: dt.date, end: dt.date, table: str) -> RuleOutcome:
    """`date` inside the partition window, `date` == UTC day of `ts`, ts on the table's grid."""
    cond = (pl.col("date") < start) | (pl.col("date") >= end) | (pl.col("ts").dt.date() != pl.col("date"))
    grid = RAW_TABLES[table].grid
    if grid is not None:
        cond = cond | (pl.col("ts").dt.epoch("ms") % (grid // dt.timedelta(milliseconds=1)) != 0)
    if table == "market_bars":
        step = pl.col("timeframe").replace_strict(
            {k: int(v.total_seconds() * 1000) for k, v in TIMEFRAMES.items()}, default=None
        )
        cond = cond | step.is_null() | (pl.col("ts").dt.epoch("ms") % step != 0)
    bad = df.filter(cond).select("date", "ts", *[c for c in ("symbol", "timeframe") if c in df.columns])
    return _outcome(
        "in_window_on_grid", f"date in [{start}, {end}), date = day of ts, ts on the bar grid", bad
    )


def ohlc_rule(df: pl.DataFrame) -> RuleOutcome:
    cond = (
        (pl.col("low") > pl.min_horizontal("open", "close"))
        | (pl.col("high") < pl.max_horizontal("open", "close"))
        | (pl.col("low") <= 0)
        | (pl.col("volume") < 0)
        | (pl.col("quote_volume") < 0)
        | (pl.col("trades") < 0)
        | (pl.col("taker_buy_volume") > pl.col("volume") * (1 + 1e-9) + 1e-12)
    )
    bad = df.filter(cond).select(
        "ts", "symbol", "market", "timeframe", "open", "high", "low", "close", "volume"
    )
    return _outcome("ohlc_sanity", "low <= open, close <= high; prices > 0; volumes and trades >= 0", bad)


def price_continuity_rule(df: pl.DataFrame) -> RuleOutcome:
    """market_bars: each bar's price agrees with its neighbours and with the other market's bars.

    Three comparisons (thresholds above); each failing row is the bar the comparison points at:
    - adjacent bars of one series: |log(open / previous close)| <= MAX_ADJACENT_LOG_GAP. A bar
      whose gaps in and out both exceed it is the odd one out (a pasted bar); a single gap (a
      run of pasted bars begins or ends, or a real jump) flags the bar after it;
    - a 5m bar's open and close lie within its 1h bar's [low, high], +- HOUR_RANGE_SLACK
      (unless that 1h bar is itself the odd one out of its series);
    - perpetual and spot closes of one bar: |log(usdm / spot)| <= MAX_SPOT_PERP_LOG_GAP; the row
      is the spot bar when the other comparisons flag it, else the perpetual's.
    One row per flagged bar, the reasons of a bar failing several comparisons joined. A foreign
    price is caught unless it lies within these bounds of the true one.
    """
    series = ["symbol", "market", "timeframe"]
    step_ms = pl.col("timeframe").replace_strict(
        {k: int(v.total_seconds() * 1000) for k, v in TIMEFRAMES.items()}, default=None
    )
    # Sorted by series then time, the row before is the bar before when it is of the same series
    # and one step earlier (shifts on the sorted frame, several times faster than `over`).
    same_series = pl.all_horizontal(pl.col(c) == pl.col(c).shift(1) for c in series)
    adjacent = same_series & ((pl.col("ts") - pl.col("ts").shift(1)).dt.total_milliseconds() == step_ms)
    gap_in = pl.when(adjacent).then((pl.col("open") / pl.col("close").shift(1)).log())
    bars = (
        df.select(*series, "ts", "open", "high", "low", "close")
        # bars failing ohlc_sanity (non-positive prices, high below low...) and unknown
        # timeframes are other rules' failures; a duplicated bar is unique_key's, and here just
        # a neighbour at the same price
        .filter(
            (pl.col("low") > 0)
            & (pl.col("low") <= pl.min_horizontal("open", "close"))
            & (pl.col("high") >= pl.max_horizontal("open", "close"))
            & step_ms.is_not_null()
        )
        .sort([*series, "ts"])
        .with_columns(pl.col("close").shift(1).alias("_prev_close"), gap_in.alias("_gap_in"))
        .with_columns(pl.col("_gap_in").shift(-1).alias("_gap_out"))  # null across series
        .with_columns(
            (pl.col("_gap_in").abs() > MAX_ADJACENT_LOG_GAP).fill_null(False).alias("_big"),
            (pl.col("_gap_out").abs() > MAX_ADJACENT_LOG_GAP).fill_null(False).alias("_big_out"),
        )
        .with_columns((pl.col("_big") & pl.col("_big_out")).alias("_spike"))
    )
    after_spike = pl.col("_spike").shift(1).fill_null(False)  # the bar back at the true level
    spikes = bars.filter(pl.col("_spike")).with_columns(
        _say("opens ", _pct("_gap_in"), " from the previous close and the next bar opens ",
             _pct("_gap_out"), " from its close").alias("reason")
    )  # fmt: skip
    steps = bars.filter(pl.col("_big") & ~pl.col("_spike") & ~after_spike).with_columns(
        _say("opens ", _pct("_gap_in"), " from the previous close ", _text("_prev_close")).alias("reason")
    )

    hours = bars.filter((pl.col("timeframe") == "1h") & ~pl.col("_spike")).select(
        "symbol", "market", pl.col("ts").alias("_hour"), pl.col("low").alias("_h_low"), pl.col("high").alias("_h_high")
    )  # fmt: skip
    outside = (
        bars.filter(pl.col("timeframe") == "5m")
        .with_columns(pl.col("ts").dt.truncate("1h").alias("_hour"))
        .join(hours, on=["symbol", "market", "_hour"], how="inner")
        .filter(
            (pl.max_horizontal("open", "close") > pl.col("_h_high") * (1 + HOUR_RANGE_SLACK))
            | (pl.min_horizontal("open", "close") < pl.col("_h_low") * (1 - HOUR_RANGE_SLACK))
        )
        .with_columns(
            _say("outside its 1h bar's [low, high] [", _text("_h_low"), ", ", _text("_h_high"), "]").alias(
                "reason"
            )
        )
    )

    key = ["symbol", "timeframe", "ts"]
    spot_odd = (
        pl.concat([f.select(*series, "ts") for f in (spikes, steps, outside)])
        .filter(pl.col("market") == "spot")
        .select(key)
        .unique()
        .with_columns(_spot_odd=pl.lit(True))
    )
    pairs = (
        bars.filter(pl.col("market") == "spot")
        .join(bars.filter(pl.col("market") == "usdm"), on=key, how="inner", suffix="_perp")
        .join(spot_odd, on=key, how="left")
        .with_columns((pl.col("close_perp") / pl.col("close")).log().alias("_basis"))
        .filter(pl.col("_basis").abs() > MAX_SPOT_PERP_LOG_GAP)
    )
    is_spot = pl.col("_spot_odd").fill_null(False)
    apart = pairs.select(
        *key,
        pl.when(is_spot).then(pl.lit("spot")).otherwise(pl.lit("usdm")).alias("market"),
        pl.when(is_spot).then("open").otherwise("open_perp").alias("open"),
        pl.when(is_spot).then("close").otherwise("close_perp").alias("close"),
        _say("perpetual close ", _pct("_basis"), " from the spot close (",
             _text("close_perp"), " vs ", _text("close"), ")").alias("reason"),
    )  # fmt: skip

    out = ["ts", *series, "open", "close", "reason"]
    bad = (
        pl.concat([f.select(out) for f in (spikes, steps, outside, apart)])
        .group_by(out[:-1], maintain_order=True)
        .agg(pl.col("reason").str.join("; "))
        .sort("ts", *series)
    )
    return _outcome(
        "price_continuity",
        "each bar's price agrees with the bars before and after it, its 1h bar and the other market's bar",
        bad,
    )


def _text(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String)


def _pct(log_ratio: str) -> pl.Expr:
    """A log-ratio column as a signed percentage string, e.g. '-96.9%'."""
    return ((pl.col(log_ratio).exp() - 1) * 100).round(1).cast(pl.String) + pl.lit("%")


def _say(*parts: str | pl.Expr) -> pl.Expr:
    """Text from literal pieces and string expressions. (Not pl.format: in polars 2.1 it panics
    on some filtered frames when given a number cast to text; concat_str does not.)"""
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts])


def listing_and_clock_rule(df: pl.DataFrame, table: str, built_at: dt.datetime) -> RuleOutcome:
    """No row before its coin listed (perp tables: before the perpetual), none after `built_at`."""
    happened = pl.col("ts") > built_at
    if table == "market_bars":  # a bar is known only once it has closed
        step_ms = pl.col("timeframe").replace_strict(
            {k: int(v.total_seconds() * 1000) for k, v in TIMEFRAMES.items()}, default=0
        )
        happened = (pl.col("ts").dt.epoch("ms") + step_ms) > int(built_at.timestamp() * 1000)
    if "available_at" in df.columns:
        happened = happened | (pl.col("available_at") > built_at)
    description = (
        f"known symbol, no rows before listing, none after the build time {built_at:%Y-%m-%d %H:%M} UTC"
    )
    if "symbol" not in df.columns:  # events: only the clock applies
        return _outcome("listing_and_clock", description, df.filter(happened).select("date", "ts"))
    listed = pl.DataFrame(
        {
            "symbol": [c.symbol for c in COINS],
            "_listed": [c.perp_listed if RAW_TABLES[table].perp_only else c.spot_listed for c in COINS],
            "_perp": [c.perp_listed for c in COINS],
        }
    )
    first_ok = pl.col("_listed")
    if table == "market_bars":  # perpetual bars start when the perpetual did
        first_ok = pl.when(pl.col("market") == "usdm").then(pl.col("_perp")).otherwise(pl.col("_listed"))
    joined = df.join(listed, on="symbol", how="left")
    bad = joined.filter(pl.col("_listed").is_null() | (pl.col("date") < first_ok) | happened).select(
        "date", "ts", "symbol"
    )
    return _outcome("listing_and_clock", description, bad)


def available_at_rule(df: pl.DataFrame) -> RuleOutcome:
    bad = df.filter(pl.col("available_at") < pl.col("ts")).select("ts", "available_at")
    return _outcome("available_after_ts", "available_at >= ts (nothing is published before it happens)", bad)


def rule_names(table: str) -> tuple[str, ...]:
    """The rules that apply to `table` (static, so Dagster can declare one check per rule)."""
    cols = RAW_TABLES[table].columns
    names = ["schema", "unique_key", "in_window_on_grid"]
    if "ts" in cols:
        names.append("listing_and_clock")
    if table == "market_bars":
        names += ["ohlc_sanity", "price_continuity"]
    if "available_at" in cols:
        names.append("available_after_ts")
    return tuple(names)


def raw_table_rules(
    table: str, df: pl.DataFrame, start: dt.date, end: dt.date, built_at: dt.datetime
) -> list[RuleOutcome]:
    """Every rule that applies to `table`, evaluated on the window's rows."""
    spec = RAW_TABLES[table]
    out = [schema_rule(spec, df)]
    if out[0].failed_rows and any(p == "missing" for p in out[0].sample.get_column("problem")):
        skipped = [
            RuleOutcome(n, "not evaluated: required columns are missing", df.height)
            for n in rule_names(table)
        ]
        return out + skipped[1:]  # the other rules need the columns
    out.append(unique_key_rule(spec, df))
    if "ts" in df.columns:
        out.append(window_rule(df, start, end, table))
        out.append(listing_and_clock_rule(df, table, built_at))
    else:
        bad = df.filter((pl.col("date") < start) | (pl.col("date") >= end))
        out.append(_outcome("in_window_on_grid", f"date in [{start}, {end})", bad))
    if table == "market_bars":
        out += [ohlc_rule(df), price_continuity_rule(df)]
    if "available_at" in df.columns:
        out.append(available_at_rule(df))
    return out
