"""Backtest: the one cost model and the vectorised after-cost backtest.

Names load lazily so that `from quant_assets.backtest.costs import CostModel` (the
labels' import) does not pull in the engine and its dependencies.
"""

from importlib import import_module

_EXPORTS = {
    "BacktestConfig": "quant_assets.backtest.config",
    "CostModel": "quant_assets.backtest.costs",
    "DEFAULT_COSTS": "quant_assets.backtest.costs",
    "BacktestResult": "quant_assets.backtest.engine",
    "run_backtest": "quant_assets.backtest.engine",
    "run_horizons": "quant_assets.backtest.engine",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'quant_assets.backtest' has no attribute {name!r}")
