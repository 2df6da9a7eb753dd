"""Dagster resources: thin configurable wrappers that build the domain objects."""

from __future__ import annotations

import os

import dagster as dg

from quant_assets.sources.base import MarketSource

SOURCE_KINDS = ("synthetic", "binance")
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"


class MarketDataSource(dg.ConfigurableResource):
    """Where the raw tables come from.

    `kind` is `synthetic` (the embedded market simulator, default) or `binance` (the public
    archive for the past, REST for the days it has not published). Every field left unset
    falls back to its environment variable, so any command (`make demo` included) can switch
    source, seed or signal without editing config: QUANT_ASSETS_SOURCE, QUANT_ASSETS_SIM_SEED,
    QUANT_ASSETS_SIM_SIGNAL, QUANT_ASSETS_ARCHIVE_ROOT, QUANT_ASSETS_CACHE, QUANT_ASSETS_USE_REST.

    binance only: `use_rest` false (or QUANT_ASSETS_USE_REST=0) reads the archive alone, so an
    offline mirror never calls REST and the days it lacks stay reported gaps; `strict` false
    quarantines implausible bars (dropped, counted and listed in the run's `source_report`)
    instead of failing the run on the first one.
    """

    kind: str | None = None
    seed: int | None = None
    signal_strength: float | None = None
    archive_root: str | None = None
    cache_dir: str | None = None
    use_rest: bool | None = None
    events_jsonl: str | None = None
    strict: bool = True

    def resolved_kind(self) -> str:
        kind = self.kind or os.environ.get("QUANT_ASSETS_SOURCE", "synthetic")
        if kind not in SOURCE_KINDS:
            raise ValueError(f"QUANT_ASSETS_SOURCE / source kind {kind!r} is not one of {SOURCE_KINDS}")
        return kind

    def build(self) -> MarketSource:
        if self.resolved_kind() == "synthetic":
            from quant_assets.sources.synthetic import MarketSimulator

            return MarketSimulator(seed=self.seed, signal_strength=self.signal_strength)
        from quant_assets.sources.binance import BinanceSource

        return BinanceSource(
            archive_root=self.archive_root,
            cache_dir=self.cache_dir,
            use_rest=self.use_rest,
            events_jsonl=self.events_jsonl,
            strict=self.strict,
        )


def default_resources() -> dict:
    from quant_assets.defs.models.tracking import MlflowTracking

    # mlflow: the tracking store and registry; pipes: launches the student's torchrun. A tracking URI
    # may carry a password: it stays an EnvVar, resolved at run time, never a literal in the config.
    mlflow = (
        MlflowTracking(tracking_uri=dg.EnvVar(MLFLOW_URI_ENV))
        if os.environ.get(MLFLOW_URI_ENV)
        else MlflowTracking()
    )
    return {"source": MarketDataSource(), "mlflow": mlflow, "pipes": dg.PipesSubprocessClient()}
