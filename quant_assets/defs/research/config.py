"""Typed run config of the research assets (what the launchpad shows), turned into the ml/ objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import dagster as dg

from quant_assets.defs.models.config import WindowConfig
from quant_assets.ml.multimodal import MODES, EvalConfig, MultimodalConfig

if TYPE_CHECKING:
    from quant_assets.ml.tiny_vc import VCConfig

_M, _E = MultimodalConfig, EvalConfig  # defaults come from the domain dataclasses


class VCRunConfig(dg.Config):
    """`production`: every news event available before the cut-off; `fast`: the `max_events` most recent.

    The defaults are ml.tiny_vc.VCConfig's, written out: that module imports torch, which loading the
    definitions should not (quant_assets_tests/ui/test_code_location.py checks they stay equal)."""

    kind: Literal["production", "fast"] = "production"
    max_events: int = 5_000
    hidden: int = 16
    n_layers: int = 2
    steps: int = 600
    batch: int = 1024
    lr: float = 3e-2
    weight_decay: float = 1e-4
    distill_weight: float = 0.3
    seed: int = 0
    n_bins: int = 10  # calibration bins

    def build(self) -> VCConfig:
        from quant_assets.ml.tiny_vc import VCConfig  # torch: imported when the asset runs

        return VCConfig(hidden=self.hidden, n_layers=self.n_layers, steps=self.steps, batch=self.batch, lr=self.lr,
                        weight_decay=self.weight_decay, distill_weight=self.distill_weight, seed=self.seed)  # fmt: skip

    def cap(self) -> int | None:
        return self.max_events if self.kind == "fast" else None


class MultimodalRunConfig(dg.Config):
    """The candidates (`modes`), their ridge, dropout and gate settings, and the training window."""

    window: WindowConfig = WindowConfig()
    modes: list[str] = list(MODES)
    ridge_alpha: float = _M.ridge_alpha
    text_alpha: float = _M.text_alpha
    text_dropout: float = _M.text_dropout
    gate_val_fraction: float = _M.gate_val_fraction
    gate_max_rows: int = _M.gate_max_rows
    seed: int = _M.seed
    threads: int = _M.threads

    def build(self) -> list[MultimodalConfig]:
        unknown = sorted(set(self.modes) - set(MODES))
        if unknown or not self.modes:
            raise ValueError(f"multimodal_candidate: modes must be some of {MODES}, got {self.modes}")
        return [MultimodalConfig(mode=m, ridge_alpha=self.ridge_alpha, text_alpha=self.text_alpha,
                                 text_dropout=self.text_dropout, gate_val_fraction=self.gate_val_fraction,
                                 gate_max_rows=self.gate_max_rows, seed=self.seed, threads=self.threads)
                for m in self.modes]  # fmt: skip


class MultimodalEvalRunConfig(dg.Config):
    """Folds and bootstrap of the ablation study; the candidates and window are the candidate asset's."""

    n_wf_folds: int = _E.n_wf_folds
    wf_train_fraction: float = _E.wf_train_fraction
    n_kfold: int = _E.n_kfold
    event_threshold: float = _E.event_threshold
    n_boot: int = _E.n_boot
    block_days: int | None = _E.block_days  # None: a test fold's length in days
    alpha: float = _E.alpha
    seed: int = _E.seed

    def build(self, horizon: str) -> EvalConfig:
        return EvalConfig(horizon=horizon, **self.model_dump())
