"""Trailing-window sums and standard deviations on numpy arrays, exact to the window's own values.

A window sum over n rows is built by doubling (sum of 2 rows, of 4, of 8, ...) and one last add of
two power-of-two sums, each a single vectorised add of an array and its shifted self. Unlike a
difference of cumulative sums, every value is summed from the rows of its own window only, always
in the same order: a row's result does not depend on how much history precedes it or what follows
it (bit for bit), and its rounding error is that of summing the window, not of the whole series.
That is what the no-look-ahead and month-alone guarantees need, and what a short window of nearly
equal returns needs (a cumulative-sum difference loses all digits of its variance there).

Arrays here are one chunk of a longer series: rows before the chunk's first row are absent, so the
first `n - 1` results of a window n are partial; callers read only rows with a full look-back.
"""

from __future__ import annotations

import numpy as np


class Scratch:
    """Named work buffers reused from chunk to chunk (one per thread): allocating fresh ones for
    every chunk would page-fault them in again each time, which costs more than the arithmetic."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._bufs: dict[tuple[str, np.dtype], np.ndarray] = {}

    def __call__(self, name: str, n: int, dtype: type = np.float64) -> np.ndarray:
        key = (name, np.dtype(dtype))
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = np.empty(self.size, dtype=dtype)
        return buf[:n]


def _shift_add(a: np.ndarray, b: np.ndarray, k: int, out: np.ndarray) -> np.ndarray:
    """a[t] + b[t - k] into out (rows t < k keep a[t]: partial, never read)."""
    out[:k] = a[:k]
    np.add(a[k:], b[:-k], out=out[k:])
    return out


def window_sums(x: np.ndarray, windows: tuple[int, ...], scratch: Scratch, tag: str) -> dict[int, np.ndarray]:
    """Trailing sums of x over each window (rows t - n + 1 .. t), by doubling. The sums live in
    `scratch` buffers named after `tag` until the next call with the same tag."""
    powers = {1: x}
    p = 1
    while 2 * p <= max(windows):
        powers[2 * p] = _shift_add(powers[p], powers[p], p, scratch(f"pow{2 * p}", x.size, x.dtype))
        p *= 2
    out = {}
    for n in windows:
        bits = [q for q in sorted(powers, reverse=True) if n & q]
        acc, span = powers[bits[0]], bits[0]
        for i, q in enumerate(bits[1:]):  # the newest `span` rows, then the older q rows behind them
            acc = _shift_add(acc, powers[q], span, scratch(f"{tag}{n}.{i}", x.size, x.dtype))
            span += q
        out[n] = acc if len(bits) > 1 else acc.copy()
    return out


def rolling_std(
    s1: np.ndarray, s2: np.ndarray, count: np.ndarray, min_count: int, out: np.ndarray
) -> np.ndarray:
    """Sample std (ddof 1) from window sums of x, x^2 and of the present-value count; NaN where
    fewer than `min_count` values are present. Written into `out`, which is returned."""
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(s1, count, out=out)
        np.multiply(out, s1, out=out)
        np.subtract(s2, out, out=out)
        np.divide(out, count - 1, out=out)
        # a constant window can round to a tiny negative variance
        np.maximum(out, 0.0, out=out)
        np.sqrt(out, out=out)
    out[count < min_count] = np.nan
    return out


def log1p(x: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """log(1 + x) to within 2 ulp, ~2x faster than np.log1p (which has no vectorised kernel):
    log(u) * x / (u - 1) with u = 1 + x cancels the rounding of u (Goldberg 1991, theorem 4)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        np.add(x, 1.0, out=tmp)
        np.log(tmp, out=out)
        exact = tmp == 1.0  # x below half an ulp of 1: log1p(x) = x
        np.subtract(tmp, 1.0, out=tmp)
        np.divide(x, tmp, out=tmp)
        np.multiply(out, tmp, out=out)
        np.copyto(out, x, where=exact)
    return out
