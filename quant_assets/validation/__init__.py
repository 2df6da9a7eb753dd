"""Validation: leak-free splitters, signal and PnL metrics, bootstrap IC intervals, PBO.

Names load lazily, so importing the metrics does not import scikit-learn.
"""

from importlib import import_module

_MODULES = {
    "quant_assets.validation.bootstrap": (
        "ICInterval",
        "block_bootstrap_ic",
        "day_bootstrap_ic",
        "ic_above_zero",
    ),
    "quant_assets.validation.intervals": ("LabelIntervals", "overlaps_any", "purged_train_indices"),
    "quant_assets.validation.metrics": (
        "PERIODS_PER_YEAR_5M",
        "equity_metrics",
        "hit_rate",
        "horizon_signal_metrics",
        "information_coefficient",
        "information_ratio",
        "max_drawdown",
        "pnl_metrics",
        "rank_information_coefficient",
        "sharpe_ratio",
        "signal_metrics",
    ),
    "quant_assets.validation.pbo": (
        "PBOResult",
        "pbo_from_performance",
        "probability_of_backtest_overfitting",
    ),
    "quant_assets.validation.splitters": ("CombinatorialPurgedCV", "PurgedKFold", "WalkForward"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'quant_assets.validation' has no attribute {name!r}")
