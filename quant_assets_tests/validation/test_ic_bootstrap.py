"""Block-bootstrap IC intervals: deterministic, honest about dependence, and a usable gate."""

from __future__ import annotations

import numpy as np
import pytest

from quant_assets.validation.bootstrap import block_bootstrap_ic, circular_block_indices, ic_above_zero


def _correlated(n, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)


def test_same_seed_gives_the_same_interval_and_another_seed_another():
    x, y = _correlated(400, 0.2, 0)
    a = block_bootstrap_ic(x, y, seed=7, n_boot=300)
    b = block_bootstrap_ic(x, y, seed=7, n_boot=300)
    c = block_bootstrap_ic(x, y, seed=8, n_boot=300)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def test_circular_blocks_are_runs_of_consecutive_rows_wrapping_at_the_end():
    idx = circular_block_indices(10, 4, 3, np.random.default_rng(0))
    assert idx.shape == (3, 10)
    for row in idx:
        for start in range(0, 10, 4):
            run = row[start : start + 4]
            assert ((np.diff(run) % 10) == 1).all()


def test_interval_brackets_the_point_estimate_and_the_true_correlation():
    x, y = _correlated(2000, 0.3, 1)
    ci = block_bootstrap_ic(x, y, method="pearson", n_boot=400, seed=0)
    assert ci.low < ci.ic < ci.high
    assert ci.low < 0.3 < ci.high
    assert ci.ic == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_a_real_signal_passes_the_gate_and_noise_does_not():
    x, y = _correlated(1500, 0.15, 2)
    assert ic_above_zero(x, y, alpha=0.05, n_boot=400, seed=0)
    rng = np.random.default_rng(3)
    assert not ic_above_zero(rng.normal(size=1500), rng.normal(size=1500), alpha=0.05, n_boot=400, seed=0)


def test_blocks_widen_the_interval_when_rows_are_serially_dependent():
    # overlapping 24-bar forward sums, as overlapping labels are: neighbours share information
    rng = np.random.default_rng(4)
    e, u = rng.normal(size=3024), rng.normal(size=3024)
    x = np.convolve(e, np.ones(24), "valid")
    y = np.convolve(0.1 * e + u, np.ones(24), "valid")
    iid = block_bootstrap_ic(x, y, block=1, n_boot=300, seed=0)
    blocked = block_bootstrap_ic(x, y, block=48, n_boot=300, seed=0)
    assert (blocked.high - blocked.low) > 2 * (iid.high - iid.low)


def test_too_few_rows_is_an_error():
    with pytest.raises(ValueError, match="at least 10 complete rows"):
        block_bootstrap_ic(np.arange(9.0), np.arange(9.0))
