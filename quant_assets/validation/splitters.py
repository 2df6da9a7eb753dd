"""Cross-validation splitters that respect label intervals (scikit-learn compatible).

- `WalkForward`: train on the past, test on the next window; sliding or expanding,
  with a `step` between windows and a `gap` of grid steps between train and test.
- `PurgedKFold`: k contiguous folds; training rows whose label interval overlaps a
  test interval are purged and the rows after each test block embargoed
  (de Prado, *Advances in Financial Machine Learning*, 2018, ch. 7.4).
- `CombinatorialPurgedCV`: N contiguous groups, every choice of k of them as the
  test set: C(N, k) splits that recombine into C(N-1, k-1) full backtest paths
  (de Prado, AFML ch. 12). Group sizes, purge and embargo counts and the path
  numbering follow skfolio's `CombinatorialPurgedCV`, whose docstring examples are
  golden tests here.

Each splitter takes the label intervals at construction (`t0`, `t1`) or in
`split(X, y, groups, t0=..., t1=...)`; `t1` may also be a pandas Series indexed by
t0 (de Prado's convention). Without intervals every row is its own instant.
`split` yields `(train_idx, test_idx)` integer arrays; `groups` is accepted and
ignored, as scikit-learn's time-series splitters do. Purge and embargo semantics
are in `quant_assets.validation.intervals`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils.validation import _num_samples

from quant_assets.validation.intervals import LabelIntervals, purged_train_indices

_MAX_COMBINATIONS = 100_000


class _IntervalSplitter(BaseCrossValidator):
    """Shared plumbing: resolve intervals from the constructor or from `split`."""

    t0 = None
    t1 = None

    def _intervals(self, X=None, t0=None, t1=None) -> LabelIntervals:
        n_rows = None if X is None else _num_samples(X)
        if t0 is None and t1 is None:
            t0, t1 = self.t0, self.t1
        if t0 is None and t1 is None and n_rows is None:
            raise ValueError(f"{type(self).__name__}: pass X or label intervals to know the number of rows")
        return LabelIntervals.build(t0, t1, n_rows)

    def _iter_test_masks(self, X=None, y=None, groups=None):  # pragma: no cover - split is overridden
        raise NotImplementedError


def _check_sizes(purged_size: int, embargo_size: int) -> None:
    for name, v in (("purged_size", purged_size), ("embargo_size", embargo_size)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")


class WalkForward(_IntervalSplitter):
    """Train on `train_size` grid steps, skip `gap`, test on the next `test_size`; move by `step`.

    `expanding=True` keeps the training start at the first step (train grows, its
    first window has `train_size` steps). Only full test windows are produced.
    Training rows whose label ends inside the test window (or within `embargo_td`
    of a test label, irrelevant unless training data follows the test) are purged.
    """

    def __init__(
        self,
        test_size: int,
        train_size: int,
        *,
        step: int | None = None,
        gap: int = 0,
        expanding: bool = False,
        t0=None,
        t1=None,
        embargo_td=None,
    ):
        if test_size < 1 or train_size < 1:
            raise ValueError(
                f"WalkForward: test_size and train_size must be >= 1, got {test_size}, {train_size}"
            )
        if gap < 0 or (step is not None and step < 1):
            raise ValueError(f"WalkForward: gap must be >= 0 and step >= 1, got gap={gap}, step={step}")
        self.test_size = test_size
        self.train_size = train_size
        self.step = step
        self.gap = gap
        self.expanding = expanding
        self.t0 = t0
        self.t1 = t1
        self.embargo_td = embargo_td

    def _starts(self, n_steps: int) -> np.ndarray:
        step = self.step or self.test_size
        first = self.train_size + self.gap
        if first + self.test_size > n_steps:
            return np.empty(0, dtype=np.int64)
        return np.arange(first, n_steps - self.test_size + 1, step)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return len(self._starts(self._intervals(X).n_steps))

    def split(self, X, y=None, groups=None, *, t0=None, t1=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        iv = self._intervals(X, t0, t1)
        m = iv.n_steps
        starts = self._starts(m)
        if not len(starts):
            raise ValueError(
                f"WalkForward: {m} time steps cannot hold train_size={self.train_size} + gap={self.gap} "
                f"+ test_size={self.test_size}"
            )
        steps = np.arange(m)
        for s in starts:
            test_steps = (steps >= s) & (steps < s + self.test_size)
            lo = 0 if self.expanding else s - self.gap - self.train_size
            train_steps = (steps >= lo) & (steps < s - self.gap)
            train = purged_train_indices(iv, test_steps, train_steps, embargo_td=self.embargo_td)
            yield train, np.flatnonzero(test_steps[iv.pos])


class PurgedKFold(_IntervalSplitter):
    """K contiguous folds (sizes as scikit-learn's KFold), purged and embargoed around each test fold."""

    def __init__(
        self,
        n_splits: int = 5,
        *,
        t0=None,
        t1=None,
        purged_size: int = 0,
        embargo_size: int = 0,
        embargo_td=None,
    ):
        if int(n_splits) != n_splits or n_splits < 2:
            raise ValueError(f"PurgedKFold: n_splits must be an integer >= 2, got {n_splits!r}")
        _check_sizes(purged_size, embargo_size)
        self.n_splits = int(n_splits)
        self.t0 = t0
        self.t1 = t1
        self.purged_size = purged_size
        self.embargo_size = embargo_size
        self.embargo_td = embargo_td

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits

    def split(self, X, y=None, groups=None, *, t0=None, t1=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        iv = self._intervals(X, t0, t1)
        m = iv.n_steps
        if m < self.n_splits:
            raise ValueError(f"PurgedKFold: n_splits={self.n_splits} is more than the {m} distinct times")
        sizes = np.full(self.n_splits, m // self.n_splits)
        sizes[: m % self.n_splits] += 1
        fold = np.repeat(np.arange(self.n_splits), sizes)
        for k in range(self.n_splits):
            test_steps = fold == k
            train = purged_train_indices(
                iv,
                test_steps,
                purged_size=self.purged_size,
                embargo_size=self.embargo_size,
                embargo_td=self.embargo_td,
            )
            yield train, np.flatnonzero(test_steps[iv.pos])


class CombinatorialPurgedCV(_IntervalSplitter):
    """N groups, each set of k test groups a split: C(N, k) splits, C(N-1, k-1) backtest paths.

    Groups have `n_steps // n_folds` grid steps, the last one takes the remainder
    (skfolio's layout). `recombined_paths[f, p]` is the split whose test set supplies
    group f to path p: the p-th split, in order, that tests group f (de Prado, AFML
    fig. 12.1). `split` yields the concatenated test indices (scikit-learn form);
    `split_test_groups` yields one array per test group, as skfolio does.
    """

    def __init__(
        self,
        n_folds: int = 10,
        n_test_folds: int = 2,
        *,
        t0=None,
        t1=None,
        purged_size: int = 0,
        embargo_size: int = 0,
        embargo_td=None,
    ):
        if int(n_folds) != n_folds or n_folds < 3:
            raise ValueError(f"CombinatorialPurgedCV: n_folds must be an integer >= 3, got {n_folds!r}")
        if int(n_test_folds) != n_test_folds or not 1 <= n_test_folds < n_folds:
            raise ValueError(
                f"CombinatorialPurgedCV: n_test_folds must be in [1, n_folds), got {n_test_folds!r} "
                f"with n_folds={n_folds}"
            )
        _check_sizes(purged_size, embargo_size)
        if math.comb(n_folds, n_test_folds) > _MAX_COMBINATIONS:
            raise ValueError(
                f"CombinatorialPurgedCV: C({n_folds}, {n_test_folds}) = {math.comb(n_folds, n_test_folds):,} "
                f"splits is more than {_MAX_COMBINATIONS:,}; each split is a model fit"
            )
        self.n_folds = int(n_folds)
        self.n_test_folds = int(n_test_folds)
        self.t0 = t0
        self.t1 = t1
        self.purged_size = purged_size
        self.embargo_size = embargo_size
        self.embargo_td = embargo_td

    @property
    def n_splits(self) -> int:
        return math.comb(self.n_folds, self.n_test_folds)

    @property
    def n_test_paths(self) -> int:
        return math.comb(self.n_folds - 1, self.n_test_folds - 1)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits

    @property
    def test_set_index(self) -> np.ndarray:
        """(n_splits, n_test_folds): the test groups of each split, in lexicographic order."""
        combos = itertools.combinations(range(self.n_folds), self.n_test_folds)
        return np.array(list(combos), dtype=np.int64).reshape(-1, self.n_test_folds)

    @property
    def recombined_paths(self) -> np.ndarray:
        """(n_folds, n_test_paths): split index supplying group f to path p."""
        tested = np.zeros((self.n_folds, self.n_splits), dtype=bool)
        tested[self.test_set_index, np.arange(self.n_splits)[:, None]] = True
        # each group is tested by exactly n_test_paths splits; listed in split order
        return np.nonzero(tested)[1].reshape(self.n_folds, self.n_test_paths)

    def get_path_ids(self) -> np.ndarray:
        """(n_splits, n_test_folds): the path each test group of each split belongs to."""
        paths = self.recombined_paths
        out = np.empty((self.n_splits, self.n_test_folds), dtype=np.int64)
        for i, groups in enumerate(self.test_set_index):
            for j, g in enumerate(groups):
                out[i, j] = int(np.flatnonzero(paths[g] == i)[0])
        return out

    def _group_of_step(self, n_steps: int) -> np.ndarray:
        size = n_steps // self.n_folds
        if size < 1:
            raise ValueError(
                f"CombinatorialPurgedCV: {n_steps} distinct times cannot fill {self.n_folds} groups"
            )
        reach = self.purged_size + self.embargo_size
        if reach and reach >= size - 1:
            raise ValueError(
                f"CombinatorialPurgedCV: purged_size + embargo_size = {reach} "
                f"must be smaller than a group of {size} steps minus one"
            )
        return np.minimum(np.arange(n_steps) // size, self.n_folds - 1)

    def split_test_groups(
        self, X, y=None, groups=None, *, t0=None, t1=None
    ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """Like `split`, but the test side is a list with one index array per test group."""
        iv = self._intervals(X, t0, t1)
        group = self._group_of_step(iv.n_steps)
        row_group = group[iv.pos]
        for combo in self.test_set_index:
            test_steps = np.isin(group, combo)
            train = purged_train_indices(
                iv,
                test_steps,
                purged_size=self.purged_size,
                embargo_size=self.embargo_size,
                embargo_td=self.embargo_td,
            )
            yield train, [np.flatnonzero(row_group == g) for g in combo]

    def split(self, X, y=None, groups=None, *, t0=None, t1=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for train, tests in self.split_test_groups(X, y, groups, t0=t0, t1=t1):
            yield train, np.sort(np.concatenate(tests))

    def path_splits(self, X=None, *, t0=None, t1=None) -> np.ndarray:
        """(n_test_paths, n_rows): the split whose out-of-sample prediction fills row r of path p."""
        iv = self._intervals(X, t0, t1)
        row_group = self._group_of_step(iv.n_steps)[iv.pos]
        return self.recombined_paths[row_group].T

    def recombine(self, test_values: list[np.ndarray], X=None, *, t0=None, t1=None) -> np.ndarray:
        """Stitch per-split out-of-sample values into (n_test_paths, n_rows) backtest paths.

        `test_values[i]` holds split i's values aligned with the test indices `split`
        yielded for it (sorted row order).
        """
        if len(test_values) != self.n_splits:
            raise ValueError(f"recombine: expected {self.n_splits} per-split arrays, got {len(test_values)}")
        iv = self._intervals(X, t0, t1)
        row_group = self._group_of_step(iv.n_steps)[iv.pos]
        first = np.asarray(test_values[0])
        out = np.full((self.n_test_paths, iv.n_rows), np.nan, dtype=np.result_type(first.dtype, np.float64))
        paths = self.recombined_paths
        for i, combo in enumerate(self.test_set_index):
            rows = np.flatnonzero(np.isin(row_group, combo))
            vals = np.asarray(test_values[i])
            if len(vals) != len(rows):
                raise ValueError(f"recombine: split {i} has {len(rows)} test rows but {len(vals)} values")
            for g in combo:
                p = int(np.flatnonzero(paths[g] == i)[0])
                sel = row_group[rows] == g
                out[p, rows[sel]] = vals[sel]
        return out
