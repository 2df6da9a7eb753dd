"""The compiled kernels: window sums exact to their own window, stds as pandas computes them, bitmaps,
results independent of chunking and threads, and the on-disk compile cache. What the features are is
checked against the plain-polars oracle in test_bar_family_oracle.py."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_assets.features import family, kernels


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


def canvas(rows: int, seed: int) -> np.ndarray:
    """Bar columns close, volume, quote_volume on a canvas: a random walk, 5% of bars absent."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.standard_t(4, rows) * 0.002))
    volume = np.exp(rng.normal(3.0, 0.7, rows))
    src = np.stack([close, volume, volume * close])
    src[:, rng.random(rows) < 0.05] = np.nan
    src[:, : family.LOOK] = np.nan  # a segment's pad rows
    return src


def test_family_is_bit_identical_for_any_chunking_and_any_split_over_threads():
    """Each call owns its work arrays: calls on threads, or with other chunk sizes, change no bit."""
    src = canvas(family.LOOK + 20_000, 1)
    n = src.shape[1]
    whole = np.full((len(family.FAMILY_KEYS), n), np.nan)
    kernels.family(src, whole, np.zeros(0), family.PARAMS, family.LOOK, n)
    small = np.full_like(whole, np.nan)
    kernels.family(src, small, np.zeros(0), family.PARAMS._replace(chunk=24), family.LOOK, n)
    split = np.full_like(whole, np.nan)
    cuts = [family.LOOK, 3_000, 3_024, 9_000, 14_496, n]
    with ThreadPoolExecutor(4) as pool:
        for f in [
            pool.submit(kernels.family, src, split, np.zeros(0), family.PARAMS, a, b)
            for a, b in pairwise(cuts)
        ]:
            f.result()
    assert np.isfinite(whole[:, family.LOOK + 300 :]).mean() > 0.8
    for other in (small, split):
        assert np.array_equal(whole, other, equal_nan=True)


def test_params_reject_windows_longer_than_the_history_a_chunk_reads():
    with pytest.raises(ValueError, match="windows must be in"):
        family.params(vol_w=(3, 12, family.LOOK + 1))
    with pytest.raises(ValueError, match="accel pairs"):
        family.params(ret_w=(1, 4, 12, 48, 96, 288))  # ret_accel_3_12 without a ret_3


CACHE_PROBE = """
import datetime as dt, json, polars as pl
from quant_assets.features import family, kernels
from quant_assets.features.snapshots import feature_snapshots
t = [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=5 * i) for i in range(400)]
bars = pl.DataFrame({"symbol": "BTCUSDT", "market": "spot", "timeframe": ["5m"] * 400 + ["1h"] * 34,
                     "ts": t + t[::12], "close": 1.0, "volume": 1.0, "quote_volume": 1.0})
feature_snapshots(bars.with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC"))).lazy()).collect()
print(json.dumps({k: [sum(getattr(k_.stats, s).values()) for s in ("cache_hits", "cache_misses")]
                  for k, k_ in (("family", kernels.family), ("five_minute", kernels.five_minute))}))
"""


def test_the_kernels_load_from_the_disk_cache_in_a_new_process():
    """Params is a named tuple, which numba caches by its field types (a jitclass argument would
    disable the cache and cost every process 5-8 s of compiling); the kernels release the GIL."""
    for k in (kernels.family, kernels.five_minute):
        assert k.targetoptions["nogil"]
    runs = [
        subprocess.run([sys.executable, "-c", CACHE_PROBE], capture_output=True, text=True) for _ in range(2)
    ]
    assert runs[1].returncode == 0, runs[1].stderr
    stats = json.loads(runs[1].stdout.splitlines()[-1])
    # the second process compiled nothing: both kernels came from the cache the first one left
    assert stats == {"family": [1, 0], "five_minute": [1, 0]}, stats
