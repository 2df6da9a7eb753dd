"""Typed run config of `backbone_suite` (what the launchpad shows): which backbones, their sizes, steps, lookback, window."""

from __future__ import annotations

from typing import Literal

import dagster as dg

from quant_assets.defs.models.config import WindowConfig
from quant_assets.ml.itransformer import ITransformerConfig as _I
from quant_assets.ml.patchtst import PatchTSTConfig as _P
from quant_assets.ml.tft import TFTConfig as _T
from quant_assets.ml.window_ridge import WindowRidgeConfig as _R

BACKBONE_NAMES = ("ridge", "itransformer", "patchtst", "tft")


class ITransformerSettings(dg.Config):
    d_model: int = _I.d_model
    n_heads: int = _I.n_heads
    n_layers: int = _I.n_layers
    ff_dim: int = _I.ff_dim
    dropout: float = _I.dropout


class PatchTSTSettings(dg.Config):
    patch_len: int = _P.patch_len
    stride: int = _P.stride
    d_model: int = _P.d_model
    n_heads: int = _P.n_heads
    n_layers: int = _P.n_layers
    ff_dim: int = _P.ff_dim
    dropout: float = _P.dropout


class TFTSettings(dg.Config):
    d_model: int = _T.d_model
    n_heads: int = _T.n_heads
    dropout: float = _T.dropout


class RidgeSettings(dg.Config):
    lag_stride: int = _R.lag_stride  # keep every s-th step of the window (ml.window_ridge)
    alpha: float = _R.alpha  # L2 per row, on standardised inputs


class BackboneSuiteConfig(dg.Config):
    """`backbones`: which to run (ridge, itransformer, patchtst, tft), in that order. `features`: the
    student's columns (`liquid`: market + exogenous) or with the text and event columns (`liquid_full`).
    Every backbone sees the same windows of `input_len` 5m rows, the same fold (the last `val_fraction`
    of each coin's windows after an embargo validate) and is scored on the partition's month.
    Neural backbones: `steps` of `global_batch` windows, under torchrun with `cpu_procs` processes
    when there is no GPU (one per GPU otherwise)."""

    window: WindowConfig = WindowConfig()
    backbones: list[str] = list(BACKBONE_NAMES)
    features: Literal["liquid", "liquid_full"] = "liquid"
    input_len: int = 96
    steps: int = 200
    global_batch: int = 256
    lr: float = 1e-3
    val_fraction: float = 0.1
    coin_embedding: bool = True
    eval_every: int = 100
    seed: int = 0
    cpu_procs: int = 1
    threads: int = 1
    ridge: RidgeSettings = RidgeSettings()
    itransformer: ITransformerSettings = ITransformerSettings()
    patchtst: PatchTSTSettings = PatchTSTSettings()
    tft: TFTSettings = TFTSettings()

    def model_options(self, name: str) -> dict:
        return getattr(self, name).model_dump()
