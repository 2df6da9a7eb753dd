"""Feature layer: four monthly-partitioned Delta tables built by the pure functions in features/.

Each asset works month by month through its run window. A month [m0, m1) is computed from
inputs over [m0 - LOOKBACK, m1) (and, for labels, to m1 + LOOKAHEAD) and then cut back to
[m0, m1), so a month computed alone equals the same month inside a long backfill. The months
go to the lake through one `WindowWriter` per asset: one Delta commit, memory of one month.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg
import polars as pl

from quant_assets import lake
from quant_assets.defs.common import Progress, day_window, months, utc_now
from quant_assets.defs.features.columns import TABLE_SCHEMAS, column_schema
from quant_assets.features.keys import LABEL_KEYS, LIQUID_FULL_FEATURE_KEYS, LOOKAHEAD, LOOKBACK
from quant_assets.features.market_latent import market_latent as market_latent_fn
from quant_assets.features.matrix import feature_matrix
from quant_assets.features.snapshots import feature_snapshots
from quant_assets.features.social import social_text_latent as social_text_latent_fn
from quant_assets.partitions import monthly

FEATURE_GROUP = "features"
OWNERS = ["team:quant-data"]
# Said in every description: the UI's partition picker takes the key, not the month (2026-10 errors).
PARTITION_NOTE = (
    " Monthly partitions, keyed by the month's first day: type `2026-10-01` in the partition picker "
    "(a range: `2026-01-01...2026-03-01`)."
)
POLICY = dg.BackfillPolicy.single_run()
# A month reads the tail of the previous month (look-back); labels read the head of the next.
LOOK_BACK = dg.TimeWindowPartitionMapping(start_offset=-1)
LOOK_BACK_AND_AHEAD = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=1)
# Eager, but only on checked data: eager() alone ignores check results, so after a daily raw run
# that failed a blocking check the next sensor tick would rebuild the month from the bad rows.
# The check condition waits until every upstream blocking check has passed (a later, fixed run).
AUTOMATION = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager_after_upstream_checks_pass")


def _utc(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(), dt.UTC)


def _scan(table: str, start: dt.date, end: dt.date) -> pl.LazyFrame | None:
    """A raw or feature table over [start, end) of days; None when the table was never built."""
    return lake.scan(table, start, end) if lake.exists(table) else None


def _clock_end(m1: dt.date, now: dt.datetime) -> dt.datetime | None:
    """Where a month's 5m clock stops: its end, or (running month) the last bar seen so far."""
    return _utc(m1) if _utc(m1) <= now else None


def _within(lf: pl.LazyFrame, m0: dt.date, m1: dt.date) -> pl.LazyFrame:
    return lf.filter((pl.col("ts") >= _utc(m0)) & (pl.col("ts") < _utc(m1)))


def feature_asset(*, deps: list, description: str, kinds: frozenset = frozenset({"delta", "polars"})):
    """The decorator every feature table shares: monthly, one-run backfills, eager automation, the
    table's described column schema (the function's name is the table's), owners and tags."""

    def decorate(fn):
        return dg.asset(
            group_name=FEATURE_GROUP,
            partitions_def=monthly,
            backfill_policy=POLICY,
            automation_condition=AUTOMATION,
            kinds=set(kinds),
            deps=deps,
            description=description + PARTITION_NOTE,
            metadata={"dagster/column_schema": column_schema(TABLE_SCHEMAS[fn.__name__])},
            owners=OWNERS,
            tags={"layer": "features", "grain": "5m"},
        )(fn)

    return decorate


BARS_WITH_LOOK_BACK = [
    dg.AssetDep("market_bars", partition_mapping=LOOK_BACK),
    dg.AssetDep("prices", partition_mapping=LOOK_BACK),
]


def _from_bars(fn) -> Callable[[dt.date, dt.date], pl.LazyFrame]:
    """A month's build for a bar-clock feature function `fn(bars, prices, end=...)`."""
    now = utc_now()

    def build(m0: dt.date, m1: dt.date) -> pl.LazyFrame:
        lo = m0 - LOOKBACK
        return _within(
            fn(_scan("market_bars", lo, m1), _scan("prices", lo, m1), end=_clock_end(m1, now)), m0, m1
        )

    return build


def _write(
    context: dg.AssetExecutionContext, table: str, build: Callable[[dt.date, dt.date], pl.LazyFrame]
) -> dict:
    """Compute the run window month by month, then replace it in `table` in one commit; return metadata."""
    start, end = day_window(context)
    slices = list(months(start, end))
    progress = Progress(context.log, len(slices), f"{table} month")
    writer = lake.WindowWriter(table, start, end, build_id=context.run.run_id)
    for m0, m1 in slices:
        df = build(m0, m1).collect()
        if "date" not in df.columns:
            df = df.with_columns(pl.col("ts").dt.date().alias("date"))
        writer.add(df)
        progress.step(f"{m0:%Y-%m}: {df.height:,} rows")
    commit = writer.commit()
    written = lake.scan(table, start, end, version=commit.version).collect_schema()
    return {
        "rows": dg.MetadataValue.int(commit.rows),
        # What this commit holds (the definition's schema is the contract; this is the table as written).
        "dagster/column_schema": column_schema(written),
        "window": f"[{start}, {end})",
        # The version this run committed (not the table's latest, which may already be another's).
        "delta_version": dg.MetadataValue.int(commit.version),
        "build_id": context.run.run_id,
        "lake_uri": lake.uri(table),
    }


@feature_asset(
    deps=BARS_WITH_LOOK_BACK,
    description="Per-coin 5m-clock bar features (returns, volatilities, their ratios, volume) and the same "
    "family on 1h bars as of the last closed hour; closes fall back to `prices` where a bar is missing.",
)
def feature_snapshots_main(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata=_write(context, "feature_snapshots_main", _from_bars(feature_snapshots))
    )


@feature_asset(
    kinds=frozenset({"delta", "polars", "sklearn"}),
    deps=[
        dg.AssetDep("events", partition_mapping=LOOK_BACK),
        dg.AssetDep("event_links", partition_mapping=LOOK_BACK),
    ],
    description="5-minute buckets per coin of social posts and comments: hashed text vectors pooled by "
    "engagement, counts, sentiment, authors. An item lands in the first bucket that may see it.",
)
def social_text_latent(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    def build(m0: dt.date, m1: dt.date) -> pl.LazyFrame:
        lo = m0 - LOOKBACK
        return _within(social_text_latent_fn(_scan("events", lo, m1), _scan("event_links", lo, m1)), m0, m1)

    return dg.MaterializeResult(metadata=_write(context, "social_text_latent", build))


@feature_asset(
    deps=BARS_WITH_LOOK_BACK,
    description="A fixed (never fitted) low-dimensional projection of each coin's last 4 hours of "
    "normalised returns and volumes.",
)
def market_latent(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=_write(context, "market_latent", _from_bars(market_latent_fn)))


EXOGENOUS = (
    "orderbook_l2",
    "funding_rates",
    "onchain_signals",
    "derivatives_metrics",
    "events",
    "event_links",
)


@feature_asset(
    deps=[
        dg.AssetDep(feature_snapshots_main, partition_mapping=dg.TimeWindowPartitionMapping(end_offset=1)),
        dg.AssetDep(market_latent),
        dg.AssetDep(social_text_latent, partition_mapping=LOOK_BACK),
        *(dg.AssetDep(t, partition_mapping=LOOK_BACK_AND_AHEAD) for t in EXOGENOUS),
    ],
    description="Every feature on the 5m clock (LIQUID_FULL_FEATURE_KEYS) with labels: forward 1h and 4h "
    "returns net of the estimated trading cost. Labels read the first hours of the next month.",
)
def feature_matrix_main(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    def build(m0: dt.date, m1: dt.date) -> pl.LazyFrame:
        lo = m0 - LOOKBACK
        hi = (_utc(m1) + LOOKAHEAD).date() + dt.timedelta(days=1)  # whole days covering the label horizon
        raw = {t: _scan(t, lo, hi) for t in EXOGENOUS}
        out = feature_matrix(
            _scan("feature_snapshots_main", m0, hi),
            social=_scan("social_text_latent", lo, hi),
            market_lat=_scan("market_latent", m0, hi),
            orderbook=raw["orderbook_l2"],
            funding=raw["funding_rates"],
            onchain=raw["onchain_signals"],
            derivatives=raw["derivatives_metrics"],
            events=raw["events"],
            event_links=raw["event_links"],
        )
        return _within(out, m0, m1)

    metadata = _write(context, "feature_matrix_main", build)
    start, end = day_window(context)
    cov = (
        lake.scan("feature_matrix_main", start, end, version=metadata["delta_version"].value)
        .select(
            pl.len().alias("rows"),
            *(
                pl.col(k).is_not_null().mean().alias(k)
                for k in (*LABEL_KEYS, "ret_12", "vol_288", "funding_rate")
            ),
        )
        .collect()
        .row(0, named=True)
    )
    for key, value in cov.items():
        if key != "rows" and value is not None:
            metadata[f"coverage_{key}"] = dg.MetadataValue.float(round(float(value), 4))
    metadata["features"] = dg.MetadataValue.int(len(LIQUID_FULL_FEATURE_KEYS))
    return dg.MaterializeResult(metadata=metadata)


feature_assets = [feature_snapshots_main, social_text_latent, market_latent, feature_matrix_main]
