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

from quant_assets.defs.models.tables import read_partition, replace_partition

ABLATION_RESULTS = "ablation_results"
UTC_MS = pl.Datetime("ms", "UTC")
_F = pl.Float64
ABLATION_SCHEMA = {
    "cutoff": UTC_MS, "model": pl.String, "version": pl.String, "horizon": pl.String, "scheme": pl.String,
    "ablation": pl.String, "n": pl.Int64, "mse": _F, "mae": _F, "ic": _F, "rank_ic": _F, "hit_rate": _F,
    "pnl": _F, "sharpe": _F, "max_drawdown": _F, "turnover_per_day": _F, "n_trades": pl.Int64,
    "delta_mse": _F, "delta_mae": _F, "delta_ic": _F, "delta_ic_low": _F, "delta_ic_high": _F,
}  # fmt: skip


def replace_ablations(cutoff: dt.datetime, models: list[str], df: pl.DataFrame) -> int:
    """Replace the rows of `models` in the partition of `cutoff` by `df` (one commit); the new version."""
    # The eval's frame carries helper columns (`mode`) the table does not keep.
    return replace_partition(
        ABLATION_RESULTS,
        cutoff,
        models,
        df.select(c for c in df.columns if c in ABLATION_SCHEMA),
        schema=ABLATION_SCHEMA,
    )


def read_ablations(cutoff: dt.datetime, version: int | None = None) -> pl.DataFrame:
    """The rows of one partition, as written (without `month`)."""
    return read_partition(ABLATION_RESULTS, cutoff, version=version, schema=ABLATION_SCHEMA)
