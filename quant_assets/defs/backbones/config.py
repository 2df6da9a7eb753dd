"""Typed run config of `backbone_suite` (what the launchpad shows): which backbones, their sizes, steps, lookback, window."""

from __future__ import annotations

from typing import Literal

import dagster as dg

from quant_assets.defs.models.config import WindowConfig

# The defaults are the domain dataclasses' (ml.itransformer.ITransformerConfig, ml.patchtst.PatchTSTConfig,
# ml.tft.TFTConfig, ml.window_ridge.WindowRidgeConfig), written out: those modules import torch (~3-4 s),
# which the code server and every run worker would otherwise pay on loading the definitions.
# quant_assets_tests/ui/test_code_location.py checks they stay equal.

BACKBONE_NAMES = ("ridge", "itransformer", "patchtst", "tft")


class ITransformerSettings(dg.Config):
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 64
    dropout: float = 0.0


class PatchTSTSettings(dg.Config):
    patch_len: int = 16
    stride: int = 8
    d_model: int = 16
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 32
    dropout: float = 0.0


class TFTSettings(dg.Config):
    d_model: int = 16
    n_heads: int = 4
    dropout: float = 0.0


class RidgeSettings(dg.Config):
    lag_stride: int = 8  # keep every s-th step of the window (ml.window_ridge)
    alpha: float = 1e-3  # L2 per row, on standardised inputs


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
