"""The code location loads without torch: the code server (what the UI waits for) and every run's worker
import `quant_assets.definitions`, and torch alone cost them ~3-4 s of a ~6-12 s import. torch is imported
in the asset bodies that train (backbones, students, vc_model), so the launchpad's config defaults are
written out in defs/ and must stay the domain dataclasses' own.
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys

import pytest

from quant_assets.defs.backbones.config import (
    ITransformerSettings,
    PatchTSTSettings,
    RidgeSettings,
    TFTSettings,
)
from quant_assets.defs.research.config import VCRunConfig


def test_loading_the_definitions_imports_no_torch():
    # A fresh interpreter: this test process may already hold torch from other tests.
    code = (
        "import sys, quant_assets.definitions as d; "
        "assert d.defs.resolve_assets_def('vc_model').partitions_def; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"torch imported by the definitions: {out.stdout[:500]}"


def _defaults(cls, skip=()) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in skip}


@pytest.mark.parametrize(
    "settings, domain",
    [
        (ITransformerSettings, ("quant_assets.ml.itransformer", "ITransformerConfig")),
        (PatchTSTSettings, ("quant_assets.ml.patchtst", "PatchTSTConfig")),
        (TFTSettings, ("quant_assets.ml.tft", "TFTConfig")),
        (RidgeSettings, ("quant_assets.ml.window_ridge", "WindowRidgeConfig")),
        (VCRunConfig, ("quant_assets.ml.tiny_vc", "VCConfig")),
    ],
)
def test_the_launchpad_defaults_are_the_domain_configs(settings, domain):
    cls = getattr(importlib.import_module(domain[0]), domain[1])
    ours = {name: f.default for name, f in settings.model_fields.items()}
    theirs = _defaults(cls)
    shared = set(ours) - {
        "kind",
        "max_events",
        "n_bins",
    }  # VCRunConfig's own: the window and calibration bins
    assert shared <= set(theirs), sorted(shared - set(theirs))
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    if settings is VCRunConfig:  # build() hands the fields over: the defaults build the domain's default
        assert VCRunConfig().build() == cls()
