"""Operations: `paper_trading` and `monitoring`, one UTC day per partition.

`paper_trading` (day D): every champion (MLflow alias `champion`, one per coin and horizon) scores
D's rows of `feature_matrix_main`; its scores become orders, fills, positions and PnL by the
backtest's position and cost rules (`quant_assets.paper.trading`), with the entry threshold and
minimum confidence calibrated for the candidate and stored with the model version.

Time rule: day D reads feature rows with ts in [D 00:00, D+1 00:00) UTC - a student also its
look-back window, rows before D - and funding settlements published before D's end; nothing after D's
end. A champion of partition M trades from the end of month M on: its training saw labels up to M's
start, and its thresholds were calibrated on its OOS predictions of month M (`reference`).

State: the books start from day D-1's `paper_positions` rows in the lake, never from memory, so a
run after a crash continues from what the last committed day wrote. Re-materialising D replaces D's
rows in every paper table (one window commit each, `paper_positions` last). When the latest state
before D is older than D-1:
- some book held a position then: D fails, naming the missing days (skipping them would drop their
  PnL and mis-price the carried position); materialise them first (a range runs in order);
- every book was flat: D starts flat, cum_pnl carried, and the metadata says which days were skipped.
Re-materialising D after D+1 was traded leaves D+1 computed from D's old state: the metadata lists
the later days to re-run.

Champions that may not trade on D - before the end of their month M, older than their freshness limit
(`freshness_days` after the end of M), without calibrated thresholds, of a kind that cannot be
scored - take no new position; a position they hold runs out by the holding rule,
as any position does. No champion at all: nothing is traded and the metadata says so.
"""

import datetime as dt
import math
import tempfile

import dagster as dg
import numpy as np
import polars as pl

from quant_assets import lake
from quant_assets.backtest.config import BacktestConfig
from quant_assets.backtest.inputs import DEPTH_COLUMN, FUNDING_TABLE, MATRIX_TABLE
from quant_assets.defs.common import each_partition, markdown_table
from quant_assets.defs.conditions import AFTER_THE_DAY
from quant_assets.defs.models.tracking import MlflowTracking
from quant_assets.defs.operations import champions as reg
from quant_assets.defs.operations.reference import oos_reference
from quant_assets.defs.operations.tables import (
    PAPER_FILLS,
    PAPER_MARKS,
    PAPER_ORDERS,
    PAPER_PNL,
    PAPER_POSITIONS,
    SCHEMAS,
    conform,
)
from quant_assets.gates.calibration import confidence
from quant_assets.paper.trading import FLAT, BookState, stop_signals, trade_book_day
from quant_assets.partitions import daily

OPERATIONS_GROUP = "operations"
TRADING = "trading"
MATRIX_DEP = dg.AssetDep(MATRIX_TABLE)  # day D -> the month holding it


class PaperTradingConfig(dg.Config):
    freshness_days: int = 45  # a champion trades until this many days after its cut-off month ends


def _utc(d: dt.date) -> dt.datetime:
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)


def _open(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.filter((pl.col("units") != 0) | (pl.col("level") != 0))


def previous_state(day: dt.date) -> tuple[dict[tuple[str, str], dict], str, list[str]]:
    """(book -> its paper_positions row of the last day before `day`, a note, later days already traded)."""
    if not lake.exists(PAPER_POSITIONS):
        return {}, "first paper day: every book starts flat", []
    later = sorted({str(d) for d in lake.read(PAPER_POSITIONS, day + dt.timedelta(days=1))["date"].to_list()})
    before = lake.read(PAPER_POSITIONS, None, day)
    if before.height == 0:
        return {}, "first paper day: every book starts flat", later
    last = before["date"].max()
    rows = before.filter(pl.col("date") == last)
    note = f"books continue from paper_positions of {last}"
    if last != day - dt.timedelta(days=1):
        held = _open(rows)
        gap = f"{last + dt.timedelta(days=1)} .. {day - dt.timedelta(days=1)}"
        if held.height:
            books = ", ".join(
                f"{r['symbol']} {r['horizon']} ({r['units']:+.6g} units)" for r in held.iter_rows(named=True)
            )
            raise dg.Failure(
                f"paper_trading {day}: no paper_positions for {gap}, and on {last} these books held positions: "
                f"{books}. Materialise paper_trading for {gap} first (a range runs its days in order)."
            )
        note = (
            f"no paper state for {gap}: every book was flat on {last}, so {day} starts flat (cum_pnl carried)"
        )
    return {(r["symbol"], r["horizon"]): r for r in rows.iter_rows(named=True)}, note, later


def _state(row: dict | None) -> BookState:
    if row is None:
        return FLAT
    return BookState(level=row["level"], age=int(row["age"]), units=row["units"], last_close=row["last_close"],
                     last_ts=row["last_ts"], cum_pnl=row["cum_pnl"],
                     entry_score=math.nan if row["entry_score"] is None else row["entry_score"])  # fmt: skip


def champion_status(c: reg.Champion, day: dt.date, freshness_days: int) -> str:
    """`trading`, or why this champion may not trade on `day`."""
    if c.kind not in reg.TRADABLE_KINDS:
        return f"kind {c.kind!r} cannot be scored"
    if not c.partition:
        return "no partition tag on the model version"
    if c.cutoff.date() > day:
        return f"cut-off {c.partition} after the day (trained on later labels)"
    if day < c.month_end:
        return (f"not before {c.month_end}: its thresholds were calibrated on its OOS predictions up to the end "
                f"of month {c.partition[:7]}")  # fmt: skip
    limit = c.month_end + dt.timedelta(days=freshness_days)
    if day >= limit:
        return f"stale: cut-off {c.partition}, fresh until {limit - dt.timedelta(days=1)} ({freshness_days} days after its month)"
    if not c.calibrated:
        return "no calibrated entry_threshold / confidence_min (version tags or candidate_models)"
    if not c.gates_passed:  # paper trading runs only models whose gates passed (a re-evaluation may fail one)
        return "gates not passed: the version's gates_passed tag (candidate_models) is not true"
    return TRADING


def _bars(symbols: list[str], start: dt.datetime, end: dt.datetime, version: int | None) -> pl.DataFrame:
    return (
        lake.scan(MATRIX_TABLE, start.date(), end.date(), version=version)
        .filter(pl.col("symbol").is_in(symbols) & (pl.col("ts") >= start) & (pl.col("ts") < end))
        .select("symbol", "ts", "close", DEPTH_COLUMN)
        .sort("symbol", "ts")
        .collect()
    )


def _scores(c: reg.Champion, mlflow, start, end, version) -> tuple[pl.DataFrame, str]:
    """ts, score, confidence of the champion on [start, end), and a note on its confidence map."""
    with tempfile.TemporaryDirectory(prefix="champion_") as tmp:
        model_dir = reg.download(mlflow, c, tmp)
        lead = reg.student_lead(model_dir) if c.kind == "student" else dt.timedelta(0)
        cols = reg.feature_columns(c, model_dir)
        rows = (
            lake.scan(MATRIX_TABLE, (start - lead).date(), end.date(), version=version)
            .filter((pl.col("symbol") == c.symbol) & (pl.col("ts") >= start - lead) & (pl.col("ts") < end))
            .select("symbol", "ts", *cols)
            .sort("ts")
            .collect()
        )
        scored = reg.score(c, model_dir, rows, start)
    ref = oos_reference(c, version)
    if ref.height:
        conf = confidence(scored["prediction"].fill_null(np.nan).to_numpy(), ref["prediction"].to_numpy())
        note = f"confidence: empirical CDF of |prediction| over {ref.height} OOS rows of the candidate"
    else:
        conf = np.full(scored.height, np.nan)  # unknown: never >= a positive confidence_min
        note = "no OOS record of the candidate (teacher_oof / model_predictions): confidence unknown"
    return scored.select("ts", pl.col("prediction").alias("score")).with_columns(
        confidence=pl.Series(conf)
    ), note


def _funding(symbol: str, day: dt.date, end: dt.datetime) -> pl.DataFrame | None:
    if not lake.exists(FUNDING_TABLE):
        return None
    return (
        lake.scan(FUNDING_TABLE, day - dt.timedelta(days=1), day + dt.timedelta(days=1))
        .filter((pl.col("symbol") == symbol) & (pl.col("ts") < end) & (pl.col("available_at") < end))
        .select("ts", "funding_rate")
        .collect()
    )


def trade_day(day: dt.date, config: PaperTradingConfig, mlflow: MlflowTracking, log=None) -> dict:
    """Paper-trade one day into the lake (see the module docstring); returns the materialisation metadata."""
    start, end = _utc(day), _utc(day + dt.timedelta(days=1))
    states, state_note, later = previous_state(day)
    found = reg.find_champions(mlflow)
    by_book = {(c.symbol, c.horizon): c for c in found}
    books = sorted(set(by_book) | {k for k, r in states.items()})
    version = lake.version(MATRIX_TABLE)
    bars = (
        _bars(sorted({s for s, _ in books}), start, end, version) if books and version is not None else None
    )

    tables: dict[str, list[pl.DataFrame]] = {
        t: [] for t in (PAPER_ORDERS, PAPER_FILLS, PAPER_MARKS, PAPER_PNL, PAPER_POSITIONS)
    }
    summary, notes = [], []
    for symbol, horizon in books:
        c, row = by_book.get((symbol, horizon)), states.get((symbol, horizon))
        state = _state(row)
        status = champion_status(c, day, config.freshness_days) if c else "no champion"
        ident = (
            {"model": c.model, "registered_name": c.registered_name, "version": c.version}
            if c else {k: row[k] for k in ("model", "registered_name", "version")}
        )  # fmt: skip
        book = {"date": day, **ident, "symbol": symbol, "horizon": horizon}
        if c is None and state.flat:  # nothing held, nobody to trade it: carry the book's record only
            tables[PAPER_POSITIONS].append(pl.DataFrame([{**book, "status": status, **_state_cols(state)}]))
            continue
        own = bars.filter(pl.col("symbol") == symbol).drop("symbol") if bars is not None else pl.DataFrame()
        if status == TRADING and own.height:
            scores, note = _scores(c, mlflow, start, end, version)
            notes.append(f"{c.registered_name} v{c.version}: {note}")
            own = own.join(scores, on="ts", how="left")
            cfg = BacktestConfig.for_horizon(
                horizon, threshold=c.entry_threshold, min_confidence=c.confidence_min
            )
        else:
            own = stop_signals(own) if own.height else own
            cfg = BacktestConfig.for_horizon(horizon)
        result = trade_book_day(own, cfg, state, funding=_funding(symbol, day, end)) if own.height else None
        if result is None:  # no bars of the day yet: the state carries unchanged
            notes.append(f"{symbol} {horizon}: no feature_matrix_main rows on {day}")
            tables[PAPER_POSITIONS].append(pl.DataFrame([{**book, "status": status, **_state_cols(state)}]))
            continue
        lit = [pl.lit(v).alias(k) for k, v in book.items()]
        tables[PAPER_ORDERS].append(result.orders.with_columns(lit))
        tables[PAPER_FILLS].append(result.fills.with_columns(lit))
        tables[PAPER_MARKS].append(result.marks.with_columns(lit))
        s = result.summary()
        thresholds = {
            "entry_threshold": c.entry_threshold if c else None,
            "confidence_min": c.confidence_min if c else None,
        }
        tables[PAPER_PNL].append(pl.DataFrame([{**book, "status": status, **{k: s[k] for k in (
            "pnl", "gross_pnl", "cost", "funding", "cum_pnl", "position_end", "level_end", "n_orders", "n_bars")},
            **thresholds}]))  # fmt: skip
        tables[PAPER_POSITIONS].append(
            pl.DataFrame([{**book, "status": status, **_state_cols(result.state)}])
        )
        summary.append({**book, "status": status, "pnl": round(s["pnl"], 4), "cost": round(s["cost"], 4),
                        "cum_pnl": round(s["cum_pnl"], 4), "position_end": s["position_end"], "n_orders": s["n_orders"]})  # fmt: skip

    written = {}
    for table, parts in tables.items():  # paper_positions last: the day counts as traded once it lands
        df = pl.concat([conform(table, p) for p in parts]) if parts else pl.DataFrame(schema=SCHEMAS[table])
        written[table] = lake.write_window(table, df, day, day + dt.timedelta(days=1))
    pnl = pl.concat(tables[PAPER_PNL]) if tables[PAPER_PNL] else None
    meta = {
        "day": str(day),
        "champions": dg.MetadataValue.int(len(found)),
        "trading": dg.MetadataValue.int(
            sum(1 for c in found if champion_status(c, day, config.freshness_days) == TRADING)
        ),
        "state": state_note,
        "rows_written": dg.MetadataValue.json(written),
        "feature_matrix_version": dg.MetadataValue.int(-1 if version is None else version),
        "pnl": dg.MetadataValue.float(float(pnl["pnl"].sum()) if pnl is not None else 0.0),
        "cum_pnl": dg.MetadataValue.float(float(pnl["cum_pnl"].sum()) if pnl is not None else 0.0),
        "books": markdown_table(pl.DataFrame(summary).drop("date")) if summary else "nothing traded",
        "champion_status": dg.MetadataValue.json(
            {
                f"{c.symbol} {c.horizon}": f"{c.registered_name} v{c.version}: {champion_status(c, day, config.freshness_days)}"
                for c in found
            }
        ),
    }
    if not found:
        meta["no_champion"] = (
            "no model version holds the alias `champion`: nothing traded (promote a candidate first)"
        )
    if notes:
        meta["notes"] = dg.MetadataValue.json(notes)
    if later:
        meta["later_days_to_rerun"] = dg.MetadataValue.json(later)
        if log:
            log.warning(
                f"paper_trading {day}: days {later} were traded from this day's previous state; re-run them"
            )
    return meta


def _state_cols(s: BookState) -> dict:
    return {"level": s.level, "age": s.age, "units": s.units, "last_close": s.last_close, "last_ts": s.last_ts,
            "cum_pnl": s.cum_pnl, "entry_score": None if math.isnan(s.entry_score) else s.entry_score}  # fmt: skip


@dg.asset(
    group_name=OPERATIONS_GROUP,
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),  # a range is one run, its days in order (state carries)
    deps=[MATRIX_DEP],
    automation_condition=AFTER_THE_DAY,  # the last complete day, once its inputs land (defs/conditions.py)
    kinds={"mlflow", "delta"},
    description="The champions' paper trading of the day: orders, fills, marks, PnL and positions in the lake "
    "(paper_orders, paper_fills, paper_marks, paper_pnl, paper_positions), carried from the day before's "
    "positions in the lake, by the backtest's position and cost model.",
)
def paper_trading(
    context: dg.AssetExecutionContext, config: PaperTradingConfig, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    meta = each_partition(
        context, lambda key: trade_day(dt.date.fromisoformat(key), config, mlflow, context.log)
    )
    return dg.MaterializeResult(metadata=meta)
