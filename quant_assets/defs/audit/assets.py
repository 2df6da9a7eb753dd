"""Audit layer: how complete is the raw data, recently (readiness) and over all history.

Both audits read the raw tables at the versions their last materialisations committed
(`defs/lineage.py`), so they describe one build, whatever was written to the lake since.
"""

import base64
import datetime as dt
import io

import dagster as dg
import polars as pl

from quant_assets import coverage, lake
from quant_assets.defs.common import markdown_table, utc_now
from quant_assets.defs.lineage import snapshot_scans
from quant_assets.defs.raw.assets import RAW_KEYS
from quant_assets.universe import HISTORY_START

AUDIT_GROUP = "audit"
OWNERS = ["team:quant-data"]
# Audits follow the raw data: once a day, after every raw table has been rebuilt since midnight UTC
# (the daily_running_month schedule rebuilds them at 00:20 when switched on; a manual raw run of all
# tables does too). The `automation` sensor evaluates it; the daily_audits schedule stays as it was.
# Not eager(): its "no missing upstream" rule would wait for every month since 2018 to be built.
# Like every automated asset, they wait for the raw tables' blocking checks (across runs).
AUTOMATION = (
    dg.AutomationCondition.on_cron("0 0 * * *", "UTC")
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("daily_after_upstream_checks_pass")


def _scans(context: dg.AssetExecutionContext) -> tuple[dict[str, pl.LazyFrame | None], dict[str, str]]:
    """The required raw tables at the versions their last materialisations committed (one build),
    not the lake's latest, which a killed run or a write outside Dagster may have moved on."""
    return snapshot_scans(context.instance, coverage.REQUIRED_TABLES)


class ReadinessConfig(dg.Config):
    window_days: int = coverage.READINESS_WINDOW_DAYS
    as_of: str | None = None  # ISO timestamp; default now. Set it to audit a past moment.


@dg.asset(
    group_name=AUDIT_GROUP,
    deps=RAW_KEYS,
    kinds={"delta", "polars"},
    owners=OWNERS,
    tags={"layer": "audit"},
    automation_condition=AUTOMATION,
    description=f"Coverage per required table and coin over the trailing {coverage.READINESS_WINDOW_DAYS} days; "
    f"`ready` only when every required table has >= {coverage.MIN_REQUIRED_COVERAGE:.0%} of its buckets.",
)
def required_data_readiness(
    context: dg.AssetExecutionContext, config: ReadinessConfig
) -> dg.MaterializeResult:
    as_of = dt.datetime.fromisoformat(config.as_of).astimezone(dt.UTC) if config.as_of else utc_now()
    scans, read_at = _scans(context)
    table = coverage.readiness(scans, as_of, config.window_days)
    lake.write_table("required_data_readiness", table)
    not_ready = table.filter(~pl.col("ready"))
    worst = table.group_by("table").agg(pl.col("coverage").min().alias("min_coverage")).sort("table")
    context.log.info(f"readiness as of {as_of}: {table.height - not_ready.height}/{table.height} ready")
    return dg.MaterializeResult(
        metadata={
            "ready": dg.MetadataValue.bool(not_ready.height == 0),
            "as_of": as_of.isoformat(),
            "window_days": config.window_days,
            "lake_versions": dg.MetadataValue.json(read_at),
            "min_coverage_by_table": markdown_table(worst),
            "not_ready": markdown_table(
                not_ready.select("table", "symbol", "expected", "present", "coverage")
            ),
        }
    )


@dg.asset(
    group_name=AUDIT_GROUP,
    deps=RAW_KEYS,
    kinds={"delta", "polars"},
    owners=OWNERS,
    tags={"layer": "audit"},
    automation_condition=AUTOMATION,
    description="2018->now: expected buckets per coin and table (from each coin's listing), present, ratio; "
    "with a month x coin heatmap per table.",
)
def full_history_audit(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    as_of = utc_now()
    start = dt.datetime.combine(HISTORY_START, dt.time(), dt.UTC)
    parts = []
    scans, read_at = _scans(context)
    for name, scan in scans.items():
        if scan is None:
            continue
        parts.append(coverage.monthly_coverage(name, scan, start, as_of))
        context.log.info(f"audited {name}")
    by_month = pl.concat(parts) if parts else pl.DataFrame()
    lake.write_table("full_history_audit", by_month.with_columns(pl.lit(as_of).alias("as_of")))
    totals = (
        (
            by_month.group_by("table", "symbol")
            .agg(pl.col("expected").sum(), pl.col("present").sum())
            .with_columns((pl.col("present") / pl.col("expected")).alias("coverage"))
            .sort("table", "symbol")
        )
        if by_month.height
        else by_month
    )
    return dg.MaterializeResult(
        metadata={
            "as_of": as_of.isoformat(),
            "lake_versions": dg.MetadataValue.json(read_at),
            "coverage": markdown_table(totals, max_rows=80),
            "heatmap": dg.MetadataValue.md(_heatmap_markdown(by_month)) if by_month.height else "no data",
        }
    )


def _heatmap_markdown(by_month: pl.DataFrame) -> str:
    """A month x coin coverage heatmap per table with its legend (a colour bar of coverage, grey for
    months before a coin's listing), embedded as a base64 PNG in the markdown the UI renders."""
    import matplotlib
    from matplotlib.patches import Patch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = by_month.get_column("table").unique(maintain_order=True).to_list()
    # grey: no buckets expected (the coin was not listed yet)
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="lightgrey")
    fig, axes = plt.subplots(
        len(tables), 1, figsize=(12, 1.6 * len(tables) + 1.0), squeeze=False, layout="constrained"
    )
    image = None
    for ax, name in zip(axes[:, 0], tables, strict=True):
        wide = (
            by_month.filter(pl.col("table") == name)
            .pivot(on="month", index="symbol", values="coverage")
            .sort("symbol")
        )
        grid = wide.drop("symbol").to_numpy().astype(float)
        image = ax.imshow(grid, aspect="auto", vmin=0, vmax=1, cmap=cmap, interpolation="nearest")
        ax.set_yticks(range(wide.height), wide.get_column("symbol").to_list(), fontsize=6)
        months = wide.columns[1:]
        ticks = [i for i, m in enumerate(months) if m.endswith("-01")]
        ax.set_xticks(ticks, [months[i][:4] for i in ticks], fontsize=6)
        ax.set_title(f"{name}: coverage by month (grey = not listed)", fontsize=8)
    bar = fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.01)
    bar.set_label("coverage: present / expected buckets", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    fig.legend(
        handles=[Patch(color="lightgrey", label="not listed yet (no buckets expected)")],
        loc="outside lower right",
        fontsize=7,
        frameon=False,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return f"![coverage heatmap](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"
