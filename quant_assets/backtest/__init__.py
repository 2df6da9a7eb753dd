"""Backtest: the one cost model, the vectorised after-cost backtest and its inputs.

Names load lazily so that `from quant_assets.backtest.costs import CostModel` (the
labels' import) does not pull in the engine and its dependencies.
"""

from importlib import import_module

_EXPORTS = {
    "BacktestConfig": "quant_assets.backtest.config",
    "CostModel": "quant_assets.backtest.costs",
    "DEFAULT_COSTS": "quant_assets.backtest.costs",
    "BacktestResult": "quant_assets.backtest.engine",
    "BacktestInputs": "quant_assets.backtest.inputs",
    "backtest_inputs": "quant_assets.backtest.inputs",
    "backtest_inputs_from_lake": "quant_assets.backtest.inputs",
    "settlement_events": "quant_assets.backtest.funding",
    "run_backtest": "quant_assets.backtest.engine",
    "run_horizons": "quant_assets.backtest.engine",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'quant_assets.backtest' has no attribute {name!r}")
