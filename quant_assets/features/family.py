"""The bar family on one chunk of a canvas (grid.py), in numpy: see snapshots.py for each feature.

A chunk computes rows [s, e) and reads the LOOK rows before s, which covers every window (ret_288
reads close_{t-288}, vol_288 the returns from t-287). NaN stands for null throughout. Work buffers
come from a per-thread `Scratch`, so chunks on two threads run without allocating.
"""

from __future__ import annotations

import math
import threading

import numpy as np

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
from quant_assets.features.rolling import Scratch, log1p, rolling_std, window_sums

LOOK = PAD_ROWS
# Rows per chunk: the ~40 work buffers of a chunk stay in cache; a multiple of 24 keeps chunks on
# 12-row groups and on whole bytes of validity bitmaps.
CHUNK = 24 * 1536
FAMILY_KEYS = bar_family_keys()

_local = threading.local()


def min_samples(window: int) -> int:
    return max(2, math.ceil(MIN_WINDOW_FRACTION * window))


def scratch() -> Scratch:
    """This thread's work buffers."""
    if not hasattr(_local, "scratch"):
        _local.scratch = Scratch(CHUNK + LOOK)
    return _local.scratch


def family_chunk(src: dict[str, np.ndarray], dst: dict[str, np.ndarray], s: int, e: int, prefix: str) -> None:
    """The bar family for canvas rows [s, e) (LOOK <= s, e - s <= CHUNK) from `src` close, volume
    and quote_volume into `dst[prefix + key][s:e]`; also `_lr`, the 1-bar log return, if in `dst`."""
    a = s - LOOK
    m = e - a
    buf = scratch()
    close, volume, quote = (src[c][a:e] for c in ("close", "volume", "quote_volume"))
    out = {k: dst[prefix + k][s:e] for k in FAMILY_KEYS}
    tmp = buf("tmp", m)
    with np.errstate(all="ignore"):
        lr = buf("lr", m)
        lr[0] = np.nan
        np.divide(close[1:], close[:-1], out=lr[1:])
        np.log(lr, out=lr)
        if "_lr" in dst:
            dst["_lr"][s:e] = lr[LOOK:]
        _stds(lr, VOL_WINDOWS, buf, {n: out[f"vol_{n}"] for n in VOL_WINDOWS})
        for n in RET_WINDOWS:
            np.divide(close[LOOK:], close[LOOK - n : m - n], out=out[f"ret_{n}"])
            out[f"ret_{n}"] -= 1.0
        for p, q in ACCEL_PAIRS:
            d = out[f"ret_accel_{p}_{q}"]
            np.divide(out[f"ret_{p}"], p, out=d)
            d -= np.divide(out[f"ret_{q}"], q, out=tmp[LOOK:])
        for p, q in TERM_PAIRS:
            d, vq = out[f"vol_term_{p}_{q}"], out[f"vol_{q}"]
            np.divide(out[f"vol_{p}"], vq, out=d)
            d[vq == 0.0] = np.nan
        lv = log1p(volume, buf("lv", m), tmp)
        out["log_volume"][:] = lv[LOOK:]
        std = buf("std", m - LOOK)
        mean = _stds(lv, (VOLZ_WINDOW,), buf, {VOLZ_WINDOW: std})
        std[std == 0.0] = np.nan
        np.subtract(lv[LOOK:], mean, out=out["vol_z"])
        out["vol_z"] /= std
        impact = out["volume_impact"]
        denom = log1p(quote[LOOK:], buf("denom", m - LOOK), tmp[LOOK:])
        denom[~(quote[LOOK:] > 0.0)] = np.nan
        np.abs(lr[LOOK:], out=impact)
        impact /= denom


def _stds(x: np.ndarray, windows: tuple[int, ...], buf: Scratch, out: dict[int, np.ndarray]) -> np.ndarray:
    """Rolling std of x (NaN = absent) over each window into out[n] (rows LOOK.. of x); returns
    the rolling mean over the last window (rows LOOK..) in a work buffer."""
    absent = np.isnan(x, out=buf("absent", x.size, np.bool_))
    count = buf("count", x.size, np.int16)
    np.subtract(1, absent, out=count, dtype=np.int16)
    c = window_sums(count, windows, buf, "c")
    v = buf("x", x.size)
    np.copyto(v, x)
    v[absent] = 0.0
    s1 = window_sums(v, windows, buf, "s1")
    np.multiply(v, v, out=v)
    s2 = window_sums(v, windows, buf, "s2")
    for n in windows:
        rolling_std(s1[n][LOOK:], s2[n][LOOK:], c[n][LOOK:], min_samples(n), out[n])
    n = windows[-1]
    return np.divide(s1[n][LOOK:], c[n][LOOK:], out=buf("mean", x.size - LOOK))
