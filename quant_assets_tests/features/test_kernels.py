"""The compiled kernels: window sums exact to their own window, stds as pandas computes them, bitmaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_assets.features import kernels


def sums(x: np.ndarray, n: int) -> np.ndarray:
    lev, out = np.empty((max(1, n.bit_length()), x.size)), np.empty((1, x.size))
    kernels._window_sums(x, np.array([n]), lev, out, x.size)
    return out[0]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), m=st.integers(1, 700), seed=st.integers(0, 10_000))
def test_window_sums_equal_the_sum_of_each_window(n, m, seed):
    x = np.random.default_rng(seed).standard_normal(m)
    full = np.convolve(x, np.ones(n))[n - 1 : m]  # direct sums of each complete window
    np.testing.assert_allclose(sums(x, n)[n - 1 :], full, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.sampled_from([3, 12, 48, 96, 288, 300]), before=st.integers(1, 500), seed=st.integers(0, 10_000))
def test_window_sum_depends_on_its_own_rows_only_bit_for_bit(n, before, seed):
    """Any history before a window leaves its sum unchanged to the last bit (month alone == in a backfill)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(700) * 1e-3
    longer = np.concatenate([rng.standard_normal(before) * 1e3, x])
    assert np.array_equal(sums(x, n)[n - 1 :], sums(longer, n)[before + n - 1 :])


def test_rolling_std_with_absent_values_matches_pandas_min_periods():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(400) * 0.002
    x[rng.random(400) < 0.15] = np.nan
    n, need = 12, 10
    present = ~np.isnan(x)
    moments = [np.where(present, x, 0.0), np.where(present, x * x, 0.0), present.astype(float)]
    s1, s2, c = (sums(v, n) for v in moments)
    out = np.empty(400)
    kernels._rolling_std(s1, s2, c, need, out)
    expected = pd.Series(x).rolling(n, min_periods=need).std().to_numpy()
    assert np.array_equal(np.isnan(out[n:]), np.isnan(expected[n:]))
    np.testing.assert_allclose(out[n:], expected[n:], rtol=1e-9, atol=1e-15)


def test_a_constant_window_has_zero_std_not_a_rounding_residue():
    x = np.full(50, 0.001)
    s1, s2, c = sums(x, 12), sums(x * x, 12), sums(np.ones(50), 12)
    out = np.empty(50)
    kernels._rolling_std(s1, s2, c, 10, out)
    assert (out[11:] >= 0).all() and out[11:].max() < 1e-12


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 1001])
def test_validity_bitmaps_are_arrow_lsb_first(n):
    flags = (np.random.default_rng(n).random((2, 1008)) < 0.5).astype(np.uint8)
    bits = np.zeros((2, 130), dtype=np.uint8)
    kernels._pack_bits(flags, n, bits, 1)
    for k in range(2):
        expected = np.packbits(flags[k, :n], bitorder="little")
        assert np.array_equal(bits[k, 1 : 1 + expected.size], expected)
