"""Gates: may a trained model trade? Pure domain code (no Dagster, no lake).

`evaluate.evaluate_candidate` turns a candidate's OOS walk-forward (predictions, gross forward returns,
bars) into gate verdicts with values, thresholds and reasons; `calibration` chooses its paper-trading
entry threshold and minimum confidence; `config.GateConfig` holds every threshold.
"""

from quant_assets.gates.calibration import Calibration, calibrate_entry, confidence, walk_forward_calibrations
from quant_assets.gates.config import GateConfig
from quant_assets.gates.evaluate import (
    GATE_MEANING,
    GATES,
    OOS_COLUMNS,
    Evaluation,
    GateResult,
    WalkForwardPnL,
    evaluate_candidate,
    walk_forward_pnl,
)

__all__ = ["GATES", "GATE_MEANING", "OOS_COLUMNS", "Calibration", "Evaluation", "GateConfig", "GateResult",
           "WalkForwardPnL", "calibrate_entry", "confidence", "evaluate_candidate", "walk_forward_calibrations",
           "walk_forward_pnl"]  # fmt: skip
