"""The gates' thresholds: one frozen dataclass, the defaults the README lists."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# |prediction| quantiles the entry threshold is chosen among (0.0 = trade every non-zero prediction).
DEFAULT_ENTRY_QUANTILES: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98)


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of every gate (`quant_assets.gates.evaluate`).

    - `min_oos_rows`: OOS rows (finite prediction and gross forward return) a candidate needs before
      any statistic is computed; fewer and every statistical gate fails, saying how many it had.
    - `ic_alpha`, `ic_block_days`, `n_boot`, `seed`: the whole-day bootstrap of the pooled OOS IC
      (two-sided interval at 1 - ic_alpha, blocks of ic_block_days days); the gate passes when the
      interval's lower end is above `ic_low_min`.
    - `hit_rate_min`: the hit rate (sign agreement on non-zero predictions) must be above it.
    - `pnl_min`: after-cost total return (on capital) over the scored walk-forward windows must be above.
    - `min_improved_wf_windows`: scored walk-forward windows whose after-cost PnL beats the ridge
      baseline's (each with its own calibrated entry threshold).
    - `entry_quantiles`: |prediction| quantiles the entry threshold is chosen among.
    - `require_readiness`: the readiness audit of the training window must pass (off: reported only).
    - `required_backbones`: model kinds that must have been trained in the partition (empty: none).
    """

    min_oos_rows: int = 1000
    ic_alpha: float = 0.05
    ic_block_days: int = 1
    ic_low_min: float = 0.0
    n_boot: int = 1000
    seed: int = 0
    hit_rate_min: float = 0.5
    pnl_min: float = 0.0
    min_improved_wf_windows: int = 2
    entry_quantiles: tuple[float, ...] = DEFAULT_ENTRY_QUANTILES
    require_readiness: bool = True
    required_backbones: tuple[str, ...] = ()

    def __post_init__(self):
        bad = []
        if self.min_oos_rows < 10:
            bad.append(f"min_oos_rows={self.min_oos_rows} (>= 10: the bootstrap needs 10 rows)")
        if not 0 < self.ic_alpha < 0.5:
            bad.append(f"ic_alpha={self.ic_alpha} (in (0, 0.5))")
        if self.ic_block_days < 1 or self.n_boot < 100:
            bad.append(f"ic_block_days={self.ic_block_days}, n_boot={self.n_boot} (>= 1, >= 100)")
        if not 0 <= self.hit_rate_min < 1:
            bad.append(f"hit_rate_min={self.hit_rate_min} (in [0, 1))")
        if self.min_improved_wf_windows < 0:
            bad.append(f"min_improved_wf_windows={self.min_improved_wf_windows} (>= 0)")
        qs = self.entry_quantiles
        if not qs or any(not 0 <= q < 1 for q in qs) or list(qs) != sorted(set(qs)):
            bad.append(f"entry_quantiles={qs} (increasing, distinct, in [0, 1))")
        if bad:
            raise ValueError(f"GateConfig: invalid {', '.join(bad)}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["entry_quantiles"] = list(self.entry_quantiles)
        d["required_backbones"] = list(self.required_backbones)
        return d
