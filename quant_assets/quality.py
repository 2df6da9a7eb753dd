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
# Tables whose rows sit on the 5m bar grid (ts a multiple of 5 minutes).
GRID_5M_TABLES = ("market_bars", "prices", "orderbook_l2", "derivatives_metrics")
GRID_1H_TABLES = ("onchain_signals",)
# Tables that exist only for perpetual futures: no rows before the perpetual listed.
PERP_TABLES = ("funding_rates", "derivatives_metrics")


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
        with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_dataframe_shape=True, tbl_width_chars=200):
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
    if table in GRID_5M_TABLES:
        cond = cond | (pl.col("ts").dt.epoch("ms") % (5 * 60_000) != 0)
    if table in GRID_1H_TABLES:
        cond = cond | (pl.col("ts").dt.epoch("ms") % 3_600_000 != 0)
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
            "_listed": [c.perp_listed if table in PERP_TABLES else c.spot_listed for c in COINS],
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
        names.append("ohlc_sanity")
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
        out.append(ohlc_rule(df))
    if "available_at" in df.columns:
        out.append(available_at_rule(df))
    return out
