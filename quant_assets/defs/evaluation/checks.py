"""The gates as blocking asset checks on `candidate_models`, one check per gate.

Each check reads the candidate rows of the run's partitions (the verdicts `candidate_models` wrote
with the thresholds of its run config) and lists the candidates that failed the gate, with value,
threshold and reason. The ridge baseline is the yardstick, not a candidate to trade: it is left out.

Severity: a check fails (WARN) when some candidates fail its gate, and fails with ERROR, which blocks
everything downstream (paper trading, promotion automation), when NO registered candidate of the
partition passes it: then nothing of that partition may trade.
"""

import json

import dagster as dg
import polars as pl

from quant_assets.defs.common import markdown_table
from quant_assets.defs.evaluation.assets import candidate_models
from quant_assets.defs.evaluation.tables import read_candidate_partition
from quant_assets.defs.models.assets import RIDGE
from quant_assets.gates import GATE_MEANING, GATES
from quant_assets.partitions import model_cutoffs

GATE_CHECK_DESCRIPTIONS = {
    g: f"Gate `{g}` (quant_assets.gates). Failing means {m}." for g, m in GATE_MEANING.items()
}


def _rows(context: dg.AssetCheckExecutionContext) -> pl.DataFrame:
    parts = []
    for key in context.partition_keys:
        window = model_cutoffs.time_window_for_partition_key(key)
        parts.append(read_candidate_partition(window.start))
    df = pl.concat(parts) if parts else pl.DataFrame()
    return df.filter(pl.col("model") != RIDGE) if df.height else df


def gate_outcomes(rows: pl.DataFrame, gate: str) -> pl.DataFrame:
    """model, symbol, horizon, version, passed, value, threshold, reason of one gate for every row."""
    out = []
    for r in rows.iter_rows(named=True):
        g = next((x for x in json.loads(r["gates"]) if x["name"] == gate), None)
        out.append({"model": r["model"], "symbol": r["symbol"], "horizon": r["horizon"],
                    "version": r["registered_version"], "passed": bool(g and g["passed"]),
                    "value": None if g is None else g["value"], "threshold": None if g is None else g["threshold"],
                    "reason": "gate not evaluated" if g is None else g["reason"]})  # fmt: skip
    schema = {"model": pl.String, "symbol": pl.String, "horizon": pl.String, "version": pl.String,
              "passed": pl.Boolean, "value": pl.Float64, "threshold": pl.Float64, "reason": pl.String}  # fmt: skip
    return pl.DataFrame(out, schema=schema)


@dg.multi_asset_check(
    name="candidate_gates",
    specs=[
        dg.AssetCheckSpec(g, asset=candidate_models, blocking=True, description=GATE_CHECK_DESCRIPTIONS[g])
        for g in GATES
    ],  # fmt: skip
    can_subset=True,
)
def candidate_gates(context: dg.AssetCheckExecutionContext):
    rows = _rows(context)
    selected = {k.name for k in context.selected_asset_check_keys}
    for gate in GATES:
        if gate not in selected:
            continue
        o = gate_outcomes(rows, gate) if rows.height else gate_outcomes(pl.DataFrame(), gate)
        failed = o.filter(~pl.col("passed"))
        registered = o.filter(pl.col("version") != "")
        none_pass = registered.filter(pl.col("passed")).height == 0
        meta = {
            "candidates": dg.MetadataValue.int(o.height),
            "failed": dg.MetadataValue.int(failed.height),
            "partitions": ", ".join(context.partition_keys),
        }
        if failed.height:
            meta["failed_candidates"] = markdown_table(failed.drop("passed").with_columns(pl.col("reason").str.slice(0, 160)), max_rows=100)  # fmt: skip
        if o.height == 0:
            desc = "no candidate rows for the partition: nothing may trade"
        elif failed.height == 0:
            desc = None
        else:
            names = ", ".join(
                f"{r['model']} {r['symbol']} {r['horizon']}" for r in failed.head(8).iter_rows(named=True)
            )
            more = f" and {failed.height - 8} more" if failed.height > 8 else ""
            desc = (f"{failed.height} of {o.height} candidates fail `{gate}`: {names}{more}. "
                    f"{'No registered candidate passes it: downstream is blocked. ' if none_pass else ''}"
                    f"Failing means {GATE_MEANING[gate]}.")  # fmt: skip
        yield dg.AssetCheckResult(
            asset_key=candidate_models.key,
            check_name=gate,
            passed=o.height > 0 and failed.height == 0,
            severity=dg.AssetCheckSeverity.ERROR if none_pass else dg.AssetCheckSeverity.WARN,
            metadata=meta,
            description=desc,
        )


evaluation_checks = [candidate_gates]
