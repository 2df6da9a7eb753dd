"""Monitoring measures on known distributions: PSI, the confidence map, reliability and ECE."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from quant_assets.paper.monitor import ConfidenceMap, ece, performance, pnl_by_bucket, psi, reliability


def test_psi_of_identical_samples_is_zero_and_of_a_shifted_one_is_large():
    x = np.random.default_rng(0).normal(size=20_000)
    assert psi(x, x) == 0.0
    same_law = np.random.default_rng(1).normal(size=20_000)
    assert psi(x, same_law) < 0.01
    assert psi(x, same_law + 1.0) > 0.25  # a one-sigma shift: far beyond the usual 0.25 alarm
    assert math.isnan(psi(x, []))


def test_psi_matches_the_formula_on_hand_counted_bins():
    ref = np.array([1, 2, 3, 4] * 25, dtype=float)  # quartile edges 1.75, 2.5, 3.25 -> 4 bins of 25%
    cur = np.array([1] * 50 + [4] * 50, dtype=float)  # 50% / 0 / 0 / 50%
    e, a = np.array([0.25] * 4), np.maximum(np.array([0.5, 0, 0, 0.5]), 1e-4)
    assert psi(ref, cur, bins=4) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))


def test_confidence_map_is_the_hit_rate_per_abs_prediction_bucket():
    pred = np.array([0.1, -0.1, 0.2, -0.2, 1.0, -1.0, 2.0, -2.0])
    real = np.array([1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0])  # small |pred|: 2 of 4 right, large: 4 of 4
    cmap = ConfidenceMap.fit(pred, real, buckets=2)
    assert cmap.edges == (0.6,) and cmap.hit_rates == (0.5, 1.0) and cmap.counts == (4, 4)
    assert cmap.confidence([0.05, -3.0, np.nan])[:2].tolist() == [0.5, 1.0]
    assert np.isnan(cmap.confidence([np.nan])[0])


def test_ece_is_zero_when_calibrated_and_the_gap_when_not():
    pred = np.array([0.1, -0.1, 0.2, -0.2, 1.0, -1.0, 2.0, -2.0])
    real = np.array([1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0])
    cmap = ConfidenceMap.fit(pred, real, buckets=2)
    assert ece(reliability(cmap, pred, real)) == 0.0
    # every sign wrong: hit 0 where the map says 0.5 and 1.0 -> ECE = (4 * 0.5 + 4 * 1.0) / 8 = 0.75
    curve = reliability(cmap, pred, np.where(np.sign(pred) > 0, -1.0, 1.0))
    assert curve["hit_rate"].to_list() == [0.0, 0.0]
    assert ece(curve) == pytest.approx(0.75)


def test_performance_and_pnl_by_bucket():
    perf = performance([1.0, 2.0, 3.0, -1.0], [0.1, 0.2, 0.3, -0.1])
    assert perf["n"] == 4 and perf["ic"] == pytest.approx(1.0) and perf["hit_rate"] == 1.0
    cmap = ConfidenceMap((0.6,), (0.5, 0.9), (4, 4))
    marks = pl.DataFrame({"entry_score": [0.1, 0.1, 1.0, float("nan")], "pnl": [1.0, 2.0, -5.0, 7.0]})
    out = pnl_by_bucket(cmap, marks)
    assert out["bars"].to_list() == [2, 1] and out["pnl"].to_list() == [3.0, -5.0]
