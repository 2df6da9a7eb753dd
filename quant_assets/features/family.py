"""The bar family on chunks of a canvas (grid.py): the numba kernels of kernels.py with the windows
of keys.py and per-thread scratch. See snapshots.py for what each feature is.

A chunk computes rows [s, e) and reads the LOOK rows before s, which covers every window (ret_288
reads close_{t-288}, vol_288 the returns from t-287). NaN stands for null.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from quant_assets.features import kernels
from quant_assets.features.grid import PAD_ROWS
from quant_assets.features.keys import (
    ACCEL_PAIRS,
    MIN_WINDOW_FRACTION,
    RET_WINDOWS,
    TERM_PAIRS,
    VOL_WINDOWS,
    VOLZ_WINDOW,
    bar_family_keys,
)

LOOK = PAD_ROWS
# Rows per chunk: a chunk's work arrays (~25 rows of CHUNK + LOOK floats) stay in a core's cache;
# a multiple of 24 keeps chunks on 12-row groups and on whole bytes of validity bitmaps.
CHUNK = 24 * 96
FAMILY_KEYS = bar_family_keys()
NO_ARRAY = np.zeros(0)


def min_samples(window: int) -> int:
    return max(2, math.ceil(MIN_WINDOW_FRACTION * window))


# the windows as kernel arguments
WINDOWS = (
    np.array(RET_WINDOWS, dtype=np.int64),
    np.array(VOL_WINDOWS, dtype=np.int64),
    np.array([min_samples(n) for n in VOL_WINDOWS], dtype=np.int64),
    np.array(ACCEL_PAIRS, dtype=np.int64).reshape(-1, 2),
    np.array(TERM_PAIRS, dtype=np.int64).reshape(-1, 2),
    np.array([VOLZ_WINDOW], dtype=np.int64),
    min_samples(VOLZ_WINDOW),
)


class Scratch:
    """One thread's work arrays, reused from range to range."""

    def __init__(self, flag_rows: int) -> None:
        m = CHUNK + LOOK
        self.arrays = (
            np.empty((6, m)),  # moments of returns and of log volumes
            np.empty((max(*VOL_WINDOWS, VOLZ_WINDOW).bit_length(), m)),  # power-of-two sums
            np.empty((3, len(VOL_WINDOWS), m)),  # window sums per moment
            np.empty((3, m)),  # returns, log volumes, std
        )
        self.flags = np.empty((flag_rows, CHUNK), dtype=np.uint8)


_local = threading.local()


def scratch(flag_rows: int = 0) -> Scratch:
    """This thread's work arrays (with at least `flag_rows` rows of validity flags)."""
    sc = getattr(_local, "scratch", None)
    if sc is None or sc.flags.shape[0] < flag_rows:
        sc = _local.scratch = Scratch(flag_rows)
    return sc


def family_rows(src: np.ndarray, dst: np.ndarray, lo: int, hi: int, lr_out: np.ndarray = NO_ARRAY) -> None:
    """The bar family (FAMILY_KEYS, in order, as the rows of `dst`) of canvas rows [lo, hi) from
    `src` rows close, volume, quote_volume (lo >= LOOK); the 1-bar log return into `lr_out` if given."""
    kernels.family(src, dst, lr_out, lo, hi, CHUNK, LOOK, *WINDOWS, *scratch().arrays)


def in_ranges(pool: ThreadPoolExecutor, fn: Callable[[int, int], None], lo: int, hi: int) -> None:
    """fn(s, e) over [lo, hi) in pieces of whole chunks on the pool's threads (a few pieces per
    thread, so a thread slowed by other work does not hold the others up)."""
    piece = max(1, (hi - lo) // (8 * threads() * CHUNK)) * CHUNK
    for f in [pool.submit(fn, s, min(s + piece, hi)) for s in range(lo, hi, piece)]:
        f.result()


def threads() -> int:
    """Threads for the kernels (they release the GIL): as many as polars uses."""
    return max(1, pl.thread_pool_size())


def worker_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads())
