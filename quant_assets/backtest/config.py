"""Backtest configuration: how predictions become positions, and what trading costs.

Rules (all per symbol, on its own bar sequence):
- a bar **signals** when its score is finite, non-zero, `|score| >= threshold` and
  its confidence (when the frame has one) is `>= min_confidence`;
- a signal sets the target weight `sign(score) * max_position` (`sizing="sign"`) or
  `clip(score * score_scale, -max_position, max_position)` (`sizing="score"`) and
  holds it for `holding_bars` bars (the label horizon), unless a newer signal
  replaces it; `holding_bars=None` holds until the next signal (vectorbt's
  `from_signals` with entries and short entries);
- a weight is USD notional `weight * capital` fixed in coin units at entry
  (`units="notional"`), or a number of coin units (`units="coin"`).

What the run charges besides fees is named here, never guessed from column names:
- `depth_column`: the frame's column of USD depth the impact term trades against
  (`cost_depth_notional` in `feature_matrix_main`); `None` = no book, every trade's impact
  uses `costs.fallback_depth_notional`.
- `instrument`: `"perp"` positions pay or receive funding at each settlement in the
  `funding` events given to `run_backtest`; `"spot"` positions pay none (and the model
  charges shorts no borrow fee).

`for_horizon` reads the holding period from `quant_assets.universe.HORIZON_BARS`, so
a 1h model holds for 12 bars and a 4h model for 48.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from quant_assets.backtest.costs import DEFAULT_COSTS, CostModel
from quant_assets.universe import HORIZON_BARS


@dataclass(frozen=True)
class BacktestConfig:
    threshold: float = 0.0
    min_confidence: float = 0.0
    holding_bars: int | None = 1
    max_position: float = 1.0
    sizing: Literal["sign", "score"] = "sign"
    score_scale: float = 1.0
    units: Literal["notional", "coin"] = "notional"
    capital: float = 10_000.0  # USD per symbol: the base of returns and the size impact is measured on
    horizon: str | None = None
    costs: CostModel = field(default=DEFAULT_COSTS)
    depth_column: str | None = "cost_depth_notional"
    instrument: Literal["perp", "spot"] = "perp"

    def __post_init__(self):
        if self.holding_bars is not None and (
            int(self.holding_bars) != self.holding_bars or self.holding_bars < 1
        ):
            raise ValueError(
                f"BacktestConfig.holding_bars must be an integer >= 1 or None, got {self.holding_bars!r}"
            )
        if self.max_position <= 0 or self.capital <= 0:
            raise ValueError(
                f"BacktestConfig: max_position and capital must be > 0, got {self.max_position}, {self.capital}"
            )
        if self.threshold < 0 or self.min_confidence < 0:
            raise ValueError("BacktestConfig: threshold and min_confidence must be >= 0")
        if self.sizing not in ("sign", "score"):
            raise ValueError(f"BacktestConfig.sizing must be 'sign' or 'score', got {self.sizing!r}")
        if self.units not in ("notional", "coin"):
            raise ValueError(f"BacktestConfig.units must be 'notional' or 'coin', got {self.units!r}")
        if self.instrument not in ("perp", "spot"):
            raise ValueError(f"BacktestConfig.instrument must be 'perp' or 'spot', got {self.instrument!r}")
        if self.depth_column is not None and (
            not isinstance(self.depth_column, str)
            or not self.depth_column
            or self.depth_column in ("ts", "symbol", "close", "score", "confidence")
        ):
            raise ValueError(
                f"BacktestConfig.depth_column must name the frame's depth column or be None, got {self.depth_column!r}"
            )

    @classmethod
    def for_horizon(cls, horizon: str, **kwargs) -> BacktestConfig:
        """Hold each entry for the horizon's number of 5m bars."""
        if horizon not in HORIZON_BARS:
            raise KeyError(f"unknown horizon {horizon!r}; horizons are {', '.join(HORIZON_BARS)}")
        return cls(horizon=horizon, holding_bars=HORIZON_BARS[horizon], **kwargs)

    def with_(self, **kwargs) -> BacktestConfig:
        return replace(self, **kwargs)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["costs"] = self.costs.as_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)
