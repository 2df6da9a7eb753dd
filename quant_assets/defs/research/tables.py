"""`ablation_results`: one row per candidate, horizon, fold scheme and ablation of a model partition.

Columns: cutoff, model (`multimodal_<mode>`), version (the eval's MLflow run), horizon, scheme
(walk_forward | purged_kfold), ablation (full | no_text | no_macro | event_window), n, mse, mae, ic,
rank_ic, hit_rate, the after-cost backtest of the OOS predictions (pnl = total return, sharpe,
max_drawdown, turnover_per_day, n_trades) and the deltas against `full` on the same folds (delta_mse,
delta_mae, delta_ic and the whole-day bootstrap interval delta_ic_low .. delta_ic_high; null on `full`).

Keyed like the model tables (`defs.models.tables`): the lake partition `month` is the cut-off's month and
a re-run of a partition replaces that month's rows of the models it evaluated, in one commit.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake

from quant_assets import lake

ABLATION_RESULTS = "ablation_results"
UTC_MS = pl.Datetime("ms", "UTC")
_F = pl.Float64
ABLATION_SCHEMA = {
    "cutoff": UTC_MS, "model": pl.String, "version": pl.String, "horizon": pl.String, "scheme": pl.String,
    "ablation": pl.String, "n": pl.Int64, "mse": _F, "mae": _F, "ic": _F, "rank_ic": _F, "hit_rate": _F,
    "pnl": _F, "sharpe": _F, "max_drawdown": _F, "turnover_per_day": _F, "n_trades": pl.Int64,
    "delta_mse": _F, "delta_mae": _F, "delta_ic": _F, "delta_ic_low": _F, "delta_ic_high": _F,
}  # fmt: skip


def _month(cutoff: dt.datetime) -> str:
    return cutoff.strftime("%Y-%m")


def replace_ablations(cutoff: dt.datetime, models: list[str], df: pl.DataFrame) -> int:
    """Replace the rows of `models` in the partition of `cutoff` by `df` (one commit); the new version."""
    missing = [c for c in ABLATION_SCHEMA if c not in df.columns]
    if missing:
        raise ValueError(f"lake table {ABLATION_RESULTS!r}: frame lacks columns {missing}")
    stray = df.filter(pl.col("model").is_in(models).not_())
    if stray.height:
        raise ValueError(f"lake table {ABLATION_RESULTS!r}: rows of models {stray['model'].unique().to_list()}, "
                         f"not of the ones replaced {models}")  # fmt: skip
    month = _month(cutoff)
    data = df.select(pl.col(c).cast(t) for c, t in ABLATION_SCHEMA.items()).with_columns(
        pl.lit(month).alias(lake.PARTITION_COLUMN)
    )
    uri, opts = lake.uri(ABLATION_RESULTS), lake.storage_options()
    if not lake.exists(ABLATION_RESULTS):
        try:
            write_deltalake(uri, data.to_arrow(), mode="error", partition_by=[lake.PARTITION_COLUMN],
                            storage_options=opts)  # fmt: skip
            return DeltaTable(uri, storage_options=opts).version()
        except Exception:  # created meanwhile by a parallel writer: replace in it as below
            if not lake.exists(ABLATION_RESULTS):
                raise
    models_sql = ", ".join("'" + m.replace("'", "''") + "'" for m in models)
    write_deltalake(uri, data.to_arrow(), mode="overwrite",
                    predicate=f"{lake.PARTITION_COLUMN} = '{month}' AND model IN ({models_sql})",
                    storage_options=opts, commit_properties=CommitProperties(max_commit_retries=8))  # fmt: skip
    return DeltaTable(uri, storage_options=opts).version()


def read_ablations(cutoff: dt.datetime, version: int | None = None) -> pl.DataFrame:
    """The rows of one partition, as written (without `month`)."""
    lf = pl.scan_delta(lake.uri(ABLATION_RESULTS), version=version, storage_options=lake.storage_options())
    return (
        lf.filter(pl.col(lake.PARTITION_COLUMN) == _month(cutoff))
        .drop(lake.PARTITION_COLUMN)
        .with_columns(pl.col("cutoff").dt.cast_time_unit("ms"))
        .collect()
    )
