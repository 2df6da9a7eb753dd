"""Block-bootstrap confidence intervals for the IC, and the gate question "is IC > 0?".

Overlapping labels (a 1h forward return on 5m bars shares 11 of its 12 bars with
the next row's) and volatility clustering make rows dependent, so an i.i.d.
bootstrap understates the IC's uncertainty. The circular block bootstrap
(Künsch, 1989; Politis & Romano, 1992) resamples blocks of `block` consecutive
(prediction, target) pairs, wrapping around the end, keeps the dependence inside
a block, and recomputes the IC on each resample.

- two-sided interval: the alpha/2 and 1 - alpha/2 percentiles of the bootstrap ICs;
- one-sided test of IC > 0 at level alpha: the alpha percentile is above zero;
- `p_value`: the share of bootstrap ICs at or below zero.
The default block is round(n^(1/3)); when labels overlap pass at least the label
horizon in bars as `block`. Same inputs and seed, same interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import rankdata

_CHUNK_CELLS = 4_000_000  # resamples are drawn in chunks of about this many values to bound memory


@dataclass(frozen=True)
class ICInterval:
    ic: float
    low: float  # two-sided lower bound at 1 - alpha
    high: float
    lower_one_sided: float  # alpha percentile: IC > 0 at level alpha when this is > 0
    p_value: float  # share of bootstrap ICs <= 0
    alpha: float
    n: int
    block: int
    n_boot: int
    method: str

    @property
    def above_zero(self) -> bool:
        return bool(self.lower_one_sided > 0)


def circular_block_indices(n: int, block: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) row indices: ceil(n / block) blocks of consecutive rows per resample, wrapping at n."""
    n_blocks = math.ceil(n / block)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)) % n
    return idx.reshape(n_boot, n_blocks * block)[:, :n]


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", xc, yc)
    den = np.sqrt(np.einsum("ij,ij->i", xc, xc) * np.einsum("ij,ij->i", yc, yc))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _ic(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    if method == "spearman":
        x = rankdata(x, axis=1)
        y = rankdata(y, axis=1)
    return _row_pearson(x, y)


def block_bootstrap_ic(
    x,
    y,
    *,
    method: Literal["pearson", "spearman"] = "spearman",
    block: int | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> ICInterval:
    """IC of (x, y) with a circular block-bootstrap interval; rows with a missing value are dropped first."""
    if method not in ("pearson", "spearman"):
        raise ValueError(f"block_bootstrap_ic: method must be 'pearson' or 'spearman', got {method!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"block_bootstrap_ic: alpha must be in (0, 0.5), got {alpha}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"block_bootstrap_ic: x and y must be 1-D of equal length, got {x.shape} and {y.shape}"
        )
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 10:
        raise ValueError(f"block_bootstrap_ic: need at least 10 complete rows, got {n}")
    block = int(block) if block else max(1, round(n ** (1 / 3)))
    if not 1 <= block <= n:
        raise ValueError(f"block_bootstrap_ic: block must be in [1, {n}], got {block}")

    ic = float(_ic(x[None], y[None], method)[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    boots = []
    for done in range(0, n_boot, chunk):
        idx = circular_block_indices(n, block, min(chunk, n_boot - done), rng)
        boots.append(_ic(x[idx], y[idx], method))
    stats = np.concatenate(boots)
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        raise ValueError("block_bootstrap_ic: every resample had a constant side; the IC is undefined")
    low, high, one = np.quantile(stats, [alpha / 2, 1 - alpha / 2, alpha])
    return ICInterval(
        ic=ic,
        low=float(low),
        high=float(high),
        lower_one_sided=float(one),
        p_value=float(np.mean(stats <= 0)),
        alpha=alpha,
        n=n,
        block=block,
        n_boot=len(stats),
        method=method,
    )


def ic_above_zero(x, y, *, alpha: float = 0.05, **kwargs) -> bool:
    """One-sided block-bootstrap test: is the IC of (x, y) above zero at level alpha?"""
    return block_bootstrap_ic(x, y, alpha=alpha, **kwargs).above_zero
