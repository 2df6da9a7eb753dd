"""Probability of backtest overfitting (PBO) by combinatorially symmetric cross-validation.

Bailey, Borwein, López de Prado and Zhu, "The Probability of Backtest
Overfitting", Journal of Computational Finance 20(4), 2017. Given the returns of N
strategy configurations over T periods (a T x N matrix, e.g. the out-of-sample
returns along a combinatorial purged CV path):

1. split the T rows into S contiguous, equal-as-possible blocks (S even);
2. for each of the C(S, S/2) ways to pick half the blocks as in-sample (IS), the
   rest being out-of-sample (OOS), measure every strategy's performance on both;
3. take the IS-best strategy n*, its OOS relative rank w = rank / (N + 1) (rank 1 =
   worst, ties averaged) and the logit lambda = ln(w / (1 - w));
4. PBO = share of combinations with lambda <= 0: how often the strategy chosen in
   sample does no better than the median out of sample.

Pure noise gives PBO near 1/2, a real and dominant edge near 0, and in-sample
selection that reverses out of sample near 1. `pbo_from_performance` takes IS/OOS
performance pairs directly (e.g. train vs test Sharpe per CPCV split).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import rankdata

_MAX_COMBINATIONS = 200_000


@dataclass(frozen=True)
class PBOResult:
    pbo: float
    logits: np.ndarray  # lambda per combination
    best_is: np.ndarray  # index of the IS-best strategy per combination
    perf_is: np.ndarray  # IS performance of the IS-best strategy
    perf_oos: np.ndarray  # its OOS performance
    n_strategies: int

    @property
    def n_combinations(self) -> int:
        return len(self.logits)

    @property
    def prob_oos_loss(self) -> float:
        """Share of combinations where the IS-best strategy loses out of sample."""
        return float(np.mean(self.perf_oos < 0))

    @property
    def degradation_slope(self) -> float:
        """Slope of OOS on IS performance of the chosen strategy (negative: selection does not carry over)."""
        if np.ptp(self.perf_is) == 0:
            return float("nan")
        return float(np.polyfit(self.perf_is, self.perf_oos, 1)[0])


def pbo_from_performance(perf_is, perf_oos) -> PBOResult:
    """PBO from (n_trials, N) in-sample and out-of-sample performance matrices, higher = better."""
    perf_is = np.asarray(perf_is, dtype=np.float64)
    perf_oos = np.asarray(perf_oos, dtype=np.float64)
    if perf_is.shape != perf_oos.shape or perf_is.ndim != 2:
        raise ValueError(
            f"pbo: IS and OOS performance must be equal 2-D shapes, got {perf_is.shape}, {perf_oos.shape}"
        )
    n_trials, n = perf_is.shape
    if n < 2:
        raise ValueError(f"pbo: need at least 2 strategies to rank, got {n}")
    if not (np.isfinite(perf_is).all() and np.isfinite(perf_oos).all()):
        bad = np.argwhere(~(np.isfinite(perf_is) & np.isfinite(perf_oos)))[0]
        raise ValueError(f"pbo: non-finite performance at trial {bad[0]}, strategy {bad[1]}")
    best = np.argmax(perf_is, axis=1)
    rows = np.arange(n_trials)
    rank = rankdata(perf_oos, axis=1)[rows, best]
    w = rank / (n + 1)
    logits = np.log(w / (1 - w))
    return PBOResult(
        pbo=float(np.mean(logits <= 0)),
        logits=logits,
        best_is=best,
        perf_is=perf_is[rows, best],
        perf_oos=perf_oos[rows, best],
        n_strategies=n,
    )


def probability_of_backtest_overfitting(
    returns, n_partitions: int = 16, *, metric: Literal["sharpe", "mean"] = "sharpe"
) -> PBOResult:
    """CSCV PBO of a (T, N) matrix of per-period strategy returns; see the module docstring."""
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"pbo: returns must be a 2-D (periods x strategies) matrix, got shape {m.shape}")
    if n_partitions < 2 or n_partitions % 2:
        raise ValueError(f"pbo: n_partitions must be even and >= 2, got {n_partitions}")
    t, n = m.shape
    if t < 2 * n_partitions:
        raise ValueError(f"pbo: {t} periods are too few for {n_partitions} partitions of at least 2 rows")
    if not np.isfinite(m).all():
        r, c = np.argwhere(~np.isfinite(m))[0]
        raise ValueError(f"pbo: non-finite return at period {r}, strategy {c}")
    if metric not in ("sharpe", "mean"):
        raise ValueError(f"pbo: metric must be 'sharpe' or 'mean', got {metric!r}")
    n_comb = math.comb(n_partitions, n_partitions // 2)
    if n_comb > _MAX_COMBINATIONS:
        raise ValueError(f"pbo: C({n_partitions}, {n_partitions // 2}) = {n_comb:,} combinations is too many")

    # Sufficient statistics per block make each combination a sum, not a pass over T rows.
    blocks = np.array_split(np.arange(t), n_partitions)
    count = np.array([len(b) for b in blocks], dtype=np.float64)
    s1 = np.stack([m[b].sum(axis=0) for b in blocks])
    s2 = np.stack([(m[b] ** 2).sum(axis=0) for b in blocks])
    combos = np.array(list(itertools.combinations(range(n_partitions), n_partitions // 2)))
    chosen = np.zeros((len(combos), n_partitions), dtype=np.float64)
    chosen[np.arange(len(combos))[:, None], combos] = 1.0

    def perf(weights: np.ndarray) -> np.ndarray:
        k = (weights @ count)[:, None]
        mean = (weights @ s1) / k
        if metric == "mean":
            return mean
        var = ((weights @ s2) - k * mean**2) / (k - 1)
        sd = np.sqrt(np.maximum(var, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sd > 0, mean / sd, 0.0)

    return pbo_from_performance(perf(chosen), perf(1.0 - chosen))
