"""`promote_model` and `rollback_model`: promotion and rollback as Dagster jobs, launchable from the UI.

Launchpad config (one op each):

    ops:
      promote:
        config: {symbol: BTC, horizon: 1h, why: "gates passed on the 2026-12 cut-off"}
        # optional: kind (teacher, student, ...), cutoff (2026-12-01), version ("3")
    ops:
      rollback:
        config: {symbol: BTCUSDT, horizon: 4h, why: "paper PnL fell after promotion"}

The symbol (BTC or BTCUSDT) and horizon are checked before MLflow or the lake is touched. Who
promoted is the run's `user` tag (`dagster/user` where the deployment sets it), else $USER. A refusal
(failed gates, no previous champion, bad symbol) fails the run with a `dg.Failure` saying why; the
rules are in `promotion.py`.
"""

# no `from __future__ import annotations`: Dagster reads the op signatures' config types at import

import getpass
import os

import dagster as dg

from quant_assets.defs.evaluation import promotion
from quant_assets.defs.models.tracking import MlflowTracking


class PromoteConfig(dg.Config):
    symbol: str  # BTC or BTCUSDT
    horizon: str  # 1h or 4h
    why: str
    kind: str | None = None  # teacher, student, ...; default: the best passed candidate of any kind
    cutoff: str | None = None  # model partition (2026-12-01); default: the latest with candidates
    version: str | None = None  # registered version; default: the selected candidate's


class RollbackConfig(dg.Config):
    symbol: str
    horizon: str
    why: str


def who(context: dg.OpExecutionContext) -> str:
    tags = context.run.tags
    return tags.get("user") or tags.get("dagster/user") or os.environ.get("USER") or getpass.getuser()


def _validated(symbol: str, horizon: str, why: str) -> tuple[str, str]:
    try:
        symbol, horizon = promotion.resolve_symbol(symbol), promotion.resolve_horizon(horizon)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc
    if not why.strip():
        raise dg.Failure(description="`why` is empty: say why this model changes (it is recorded)")
    return symbol, horizon


def _metadata(change: promotion.Change) -> dict:
    return {
        "symbol": change.symbol,
        "horizon": change.horizon,
        "champion": change.champion.qualified(),
        "replaced": change.replaced.qualified() if change.replaced else "",
        "previous": change.previous.qualified() if change.previous else "",
        "who": change.row["who"],
        "why": change.row["why"],
    }


@dg.op(description="Promote a candidate whose gates all passed to `champion` (old champion -> `previous`).")
def promote(context: dg.OpExecutionContext, config: PromoteConfig, mlflow: MlflowTracking) -> dict:
    symbol, horizon = _validated(config.symbol, config.horizon, config.why)
    try:
        change = promotion.promote(
            mlflow.client(), symbol, horizon, who=who(context), why=config.why, kind=config.kind,
            cutoff=config.cutoff, version=config.version, run_id=context.run_id,
        )  # fmt: skip
    except promotion.PromotionRefused as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(f"{symbol} {horizon}: {change.champion.qualified()} is champion"
                     + (f", {change.replaced.qualified()} is previous" if change.replaced else ""))  # fmt: skip
    context.add_output_metadata(_metadata(change))
    return change.row


@dg.op(description="Restore `previous` as `champion` (refused when there is no previous).")
def rollback(context: dg.OpExecutionContext, config: RollbackConfig, mlflow: MlflowTracking) -> dict:
    symbol, horizon = _validated(config.symbol, config.horizon, config.why)
    try:
        change = promotion.rollback(
            mlflow.client(), symbol, horizon, who=who(context), why=config.why, run_id=context.run_id
        )
    except promotion.PromotionRefused as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(f"{symbol} {horizon}: rolled back to {change.champion.qualified()}")
    context.add_output_metadata(_metadata(change))
    return change.row


@dg.job(
    description="Promote a gated candidate to champion for one coin and horizon (recorded in `promotions`)."
)
def promote_model():
    promote()


@dg.job(description="Roll one coin and horizon back to its previous champion (recorded in `promotions`).")
def rollback_model():
    rollback()


PROMOTION_JOBS = [promote_model, rollback_model]
