"""PBO (Bailey, Borwein, López de Prado, Zhu) on cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quant_assets.validation.pbo import pbo_from_performance, probability_of_backtest_overfitting


def test_logit_of_the_oos_rank_of_the_is_best_worked_by_hand():
    perf_is = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    perf_oos = np.array([[3.0, 2.0, 1.0], [3.0, 1.0, 2.0]])
    r = pbo_from_performance(perf_is, perf_oos)
    # trial 0: IS-best is strategy 2, OOS rank 1 of 3 -> w = 1/4; trial 1: strategy 0, rank 3 -> w = 3/4
    assert r.best_is.tolist() == [2, 0]
    assert r.logits == pytest.approx([math.log(1 / 3), math.log(3)])
    assert r.pbo == 0.5
    assert r.prob_oos_loss == 0.0


def test_pure_noise_strategies_overfit_half_the_time():
    # one sample's PBO varies a lot (sd ~0.23 here), so average 40 independent noise panels
    pbos = [
        probability_of_backtest_overfitting(
            np.random.default_rng(s).normal(size=(400, 10)), n_partitions=8
        ).pbo
        for s in range(40)
    ]
    assert np.mean(pbos) == pytest.approx(0.5, abs=0.1)
    assert probability_of_backtest_overfitting(np.zeros((400, 10)) + 1, n_partitions=8).n_combinations == 70


def test_one_strategy_with_a_real_edge_is_not_overfit():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(2000, 20))
    m[:, 7] += 0.25  # Sharpe 0.25 per period against pure noise
    r = probability_of_backtest_overfitting(m, n_partitions=10)
    assert r.pbo < 0.02
    assert (r.best_is == 7).mean() > 0.95


def test_selection_that_reverses_out_of_sample_is_always_overfit():
    # every strategy sums to zero over the whole sample, so a high in-sample mean forces a low OOS mean
    rng = np.random.default_rng(2)
    m = rng.normal(size=(1600, 8))
    m -= m.mean(axis=0)
    r = probability_of_backtest_overfitting(m, n_partitions=8, metric="mean")
    assert r.pbo == 1.0
    assert r.degradation_slope < 0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(np.zeros((100, 3)), n_partitions=5)
    m = np.ones((100, 3))
    m[4, 1] = np.nan
    with pytest.raises(ValueError, match="period 4, strategy 1"):
        probability_of_backtest_overfitting(m, n_partitions=4)
