"""The bar family on chunks of a canvas (grid.py): the numba kernels of kernels.py with the windows
of keys.py. See snapshots.py for what each feature is.

A chunk computes rows [s, e) and reads the LOOK rows before s, which covers every window (ret_288
reads close_{t-288}, vol_288 the returns from t-287). NaN stands for null.
"""

from __future__ import annotations

import math
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


def _ints(values) -> np.ndarray:
    a = np.array(values, dtype=np.int64)
    a.flags.writeable = False  # shared by every thread: nothing may write to it
    return a


def params(
    ret_w: tuple[int, ...] = RET_WINDOWS,
    vol_w: tuple[int, ...] = VOL_WINDOWS,
    accel: tuple[tuple[int, int], ...] = ACCEL_PAIRS,
    term: tuple[tuple[int, int], ...] = TERM_PAIRS,
    volz_w: int = VOLZ_WINDOW,
    vol_min: tuple[int, ...] | None = None,
) -> kernels.Params:
    """The kernels' parameters: keys.py's windows unless given (tests alter them to show that the
    oracle comparison catches a window one bar off); vol_min defaults to min_samples of each."""
    windows = (*ret_w, *vol_w, volz_w)
    if max(windows) > LOOK or min(windows) < 1:
        raise ValueError(f"bar family windows must be in [1, {LOOK}] (LOOK rows of history); got {windows}")
    for name, pairs, among in (("accel", accel, ret_w), ("term", term, vol_w)):
        if any(a not in among or b not in among for a, b in pairs):
            raise ValueError(f"bar family {name} pairs {pairs} need windows in {among}")
    return kernels.Params(
        ret_w=_ints(ret_w),
        vol_w=_ints(vol_w),
        vol_min=_ints([min_samples(n) for n in vol_w] if vol_min is None else vol_min),
        accel=_ints(accel).reshape(-1, 2),
        term=_ints(term).reshape(-1, 2),
        volz_w=_ints([volz_w]),
        volz_min=min_samples(volz_w),
        chunk=CHUNK,
        look=LOOK,
    )


PARAMS = params()


def family_rows(
    src: np.ndarray,
    dst: np.ndarray,
    lo: int,
    hi: int,
    lr_out: np.ndarray = NO_ARRAY,
    p: kernels.Params = PARAMS,
) -> None:
    """The bar family (FAMILY_KEYS, in order, as the rows of `dst`) of canvas rows [lo, hi) from
    `src` rows close, volume, quote_volume (lo >= LOOK); the 1-bar log return into `lr_out` if given."""
    kernels.family(src, dst, lr_out, p, lo, hi)


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
