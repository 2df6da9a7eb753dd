"""Typed run config of `candidate_models`: the gates' thresholds (quant_assets.gates.GateConfig)."""

from __future__ import annotations

import dagster as dg

from quant_assets.gates import GateConfig

_G = GateConfig  # defaults come from the domain dataclass: one place for them


class GateSettings(dg.Config):
    """Every gate threshold (README, "Gates"); `required_backbones` are model names (liquid_student, ...)."""

    min_oos_rows: int = _G.min_oos_rows
    ic_alpha: float = _G.ic_alpha
    ic_block_days: int = _G.ic_block_days
    ic_low_min: float = _G.ic_low_min
    n_boot: int = _G.n_boot
    seed: int = _G.seed
    hit_rate_min: float = _G.hit_rate_min
    pnl_min: float = _G.pnl_min
    min_improved_wf_windows: int = _G.min_improved_wf_windows
    entry_quantiles: list[float] = list(_G.entry_quantiles)
    require_readiness: bool = _G.require_readiness
    required_backbones: list[str] = list(_G.required_backbones)

    def build(self) -> GateConfig:
        d = self.model_dump()
        return GateConfig(**{**d, "entry_quantiles": tuple(d["entry_quantiles"]),
                             "required_backbones": tuple(d["required_backbones"])})  # fmt: skip


class CandidateRunConfig(dg.Config):
    """`gates`: the thresholds. `student_months`: how many model partitions (up to this one) the
    student's walk-forward pools, each partition's OOS month one window (the student keeps no
    out-of-fold record of its own)."""

    gates: GateSettings = GateSettings()
    student_months: int = 12
