"""Label intervals and purging: the primitive every splitter is built on.

Each row i carries a label interval [t0_i, t1_i]: t0 is when the prediction is made,
t1 when the label's forward return is fully known (t0 + horizon). De Prado
(*Advances in Financial Machine Learning*, 2018, ch. 7) purges a training row when
its interval overlaps any test row's interval, and embargoes the rows that follow a
test block, because features with serial correlation leak test information into
the first training rows after it.

Everything here works on a **time grid**: the sorted unique values of t0. For one
series with a row per bar the grid is the rows themselves; for a long panel (many
symbols per timestamp) a grid step holds every symbol at that time, so a fold never
splits one timestamp between train and test. Counts (`purged_size`,
`embargo_size`) are grid steps, as in skfolio's `CombinatorialPurgedCV`:

- `purged_size = p`: drop p grid steps before and p after each contiguous test block;
- `embargo_size = e`: after each test block, skip the steps already purged and drop
  the next e steps (de Prado's embargo, which starts where the purge ends);
- `embargo_td = h` (a duration, in t0/t1 units): each test interval is extended to
  [t0_j, t1_j + h] before the overlap purge, as de Prado's `getEmbargoTimes`.

Intervals are closed: a training label that ends exactly when a test label starts
shares that instant's price and is purged (de Prado's code keeps it; stricter is
safer). On one series with unique times, an embargo of e rows corresponds to de
Prado's `pct_embargo` with e = int(pct_embargo * n_rows).

When no intervals are given, t0 = t1 = row number, so the purge removes nothing
beyond the counts above and the splitters reproduce skfolio exactly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl


def _as_time_array(values, name: str) -> tuple[np.ndarray, bool]:
    """(times, is_datetime): datetimes -> int64 nanoseconds, integers -> int64, floats -> float64."""
    if isinstance(values, pl.Series):
        values = values.to_numpy()
    if isinstance(values, pd.Series | pd.Index) and isinstance(values.dtype, pd.DatetimeTZDtype):
        values = pd.DatetimeIndex(values).tz_convert("UTC").tz_localize(None)
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        values = values.to_numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of times, got shape {arr.shape}")
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise ValueError(f"{name}: missing time at row {int(np.flatnonzero(np.isnat(arr))[0])}")
        return arr.astype("datetime64[ns]").astype(np.int64), True
    if arr.dtype.kind == "O" and len(arr) and isinstance(arr[0], dt.datetime):
        as_utc = pd.to_datetime(arr, utc=True).tz_localize(None)
        return _as_time_array(as_utc.to_numpy(), name)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64), False
    if arr.dtype.kind == "f":
        out = arr.astype(np.float64)
        bad = ~np.isfinite(out)
        if bad.any():
            raise ValueError(f"{name}: missing or infinite time at row {int(np.flatnonzero(bad)[0])}")
        return out, False
    raise TypeError(f"{name}: times must be datetimes or numbers, got dtype {arr.dtype}")


def _as_duration(value, datetimes: bool):
    """An embargo duration in the units of the times: nanoseconds for datetimes, else the numbers' own."""
    if value is None:
        return 0
    if datetimes:
        if isinstance(value, pd.Timedelta):
            return int(value.value)
        if isinstance(value, dt.timedelta):
            return ((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds) * 1_000
        if isinstance(value, np.timedelta64):
            return int(value.astype("timedelta64[ns]").astype(np.int64))
        raise TypeError(f"embargo_td must be a timedelta when times are datetimes, got {value!r}")
    if isinstance(value, dt.timedelta | np.timedelta64):
        raise TypeError(f"embargo_td must be a number when times are numbers, got {value!r}")
    return value


@dataclass(frozen=True)
class LabelIntervals:
    """Per-row label intervals on a common numeric axis, plus each row's grid position."""

    t0: np.ndarray
    t1: np.ndarray
    grid: np.ndarray  # sorted unique t0
    pos: np.ndarray  # grid position of each row's t0
    datetimes: bool = False  # True: t0/t1 are int64 nanoseconds since the epoch

    @property
    def n_rows(self) -> int:
        return len(self.t0)

    @property
    def n_steps(self) -> int:
        return len(self.grid)

    @classmethod
    def from_rows(cls, n_rows: int) -> LabelIntervals:
        """No intervals given: each row is its own instant, the grid is the row order."""
        idx = np.arange(n_rows, dtype=np.int64)
        return cls(idx, idx, idx, idx)

    @classmethod
    def build(cls, t0=None, t1=None, n_rows: int | None = None) -> LabelIntervals:
        """From t0/t1 arrays (datetimes or numbers), or a t1 Series indexed by t0 (de Prado's convention)."""
        if t1 is None and t0 is None:
            if n_rows is None:
                raise ValueError("label intervals: need t0/t1 or the number of rows")
            return cls.from_rows(n_rows)
        if t0 is None and isinstance(t1, pd.Series):
            t0 = t1.index
        if t0 is None:
            raise ValueError(
                "label intervals: t1 given without t0 (pass t0, or t1 as a Series indexed by t0)"
            )
        a, a_dt = _as_time_array(t0, "t0")
        b, b_dt = (a.copy(), a_dt) if t1 is None else _as_time_array(t1, "t1")
        if len(a) != len(b):
            raise ValueError(f"label intervals: t0 has {len(a)} rows but t1 has {len(b)}")
        if a_dt != b_dt:
            raise TypeError("label intervals: t0 and t1 must both be datetimes or both numbers")
        if a.dtype != b.dtype:  # an int and a float axis: compare as floats
            a, b = a.astype(np.float64), b.astype(np.float64)
        if n_rows is not None and len(a) != n_rows:
            raise ValueError(f"label intervals: {len(a)} intervals for {n_rows} rows of X")
        bad = b < a
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"label intervals: row {i} ends before it starts (t1={b[i]} < t0={a[i]})")
        grid, pos = np.unique(a, return_inverse=True)
        return cls(a, b, grid, pos.reshape(-1), a_dt)

    def duration(self, value):
        h = _as_duration(value, self.datetimes)
        if not h >= 0:
            raise ValueError(f"embargo_td must be a non-negative duration, got {value!r}")
        return h


def overlaps_any(t0: np.ndarray, t1: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of rows whose closed interval [t0, t1] meets any of the closed intervals [a_j, b_j].

    Sorting the test intervals by start and taking the running max of their ends turns
    "any j with a_j <= t1 and b_j >= t0" into one binary search per row: O((n + m) log m).
    """
    if len(a) == 0:
        return np.zeros(len(t0), dtype=bool)
    order = np.argsort(a, kind="stable")
    a_sorted = a[order]
    end_max = np.maximum.accumulate(b[order])
    k = np.searchsorted(a_sorted, t1, side="right")
    hit = np.zeros(len(t0), dtype=bool)
    has = k > 0
    hit[has] = end_max[k[has] - 1] >= t0[has]
    return hit


def _blocks(step_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (inclusive) grid steps of each contiguous run of True."""
    padded = np.concatenate(([False], step_mask, [False])).astype(np.int8)
    d = np.diff(padded)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1


def purged_train_indices(
    iv: LabelIntervals,
    test_steps: np.ndarray,
    train_steps: np.ndarray | None = None,
    *,
    purged_size: int = 0,
    embargo_size: int = 0,
    embargo_td=None,
) -> np.ndarray:
    """Training row indices given the test grid steps, after purge and embargo.

    `test_steps` / `train_steps` are boolean masks over the grid; train defaults to
    every step not tested. Rows are dropped when (1) their interval meets a test
    interval extended by `embargo_td`, (2) they sit within `purged_size` steps of a
    test block, or (3) they fall in the `embargo_size` steps that follow the purged
    zone after a test block.
    """
    m = iv.n_steps
    if train_steps is None:
        train_steps = ~test_steps
    keep_steps = train_steps & ~test_steps
    starts, ends = _blocks(test_steps)
    if purged_size > 0 and len(starts):
        cover = np.zeros(m + 1, dtype=np.int64)
        np.add.at(cover, np.maximum(starts - purged_size, 0), 1)
        np.add.at(cover, starts, -1)
        np.add.at(cover, np.minimum(ends + 1, m), 1)
        np.add.at(cover, np.minimum(ends + 1 + purged_size, m), -1)
        keep_steps &= np.cumsum(cover[:m]) == 0

    keep_rows = keep_steps[iv.pos]
    test_rows = test_steps[iv.pos]
    h = iv.duration(embargo_td)
    candidates = np.flatnonzero(keep_rows)
    hit = overlaps_any(iv.t0[candidates], iv.t1[candidates], iv.t0[test_rows], iv.t1[test_rows] + h)
    keep_rows[candidates[hit]] = False

    if embargo_size > 0 and len(ends):
        alive = np.zeros(m, dtype=bool)
        alive[iv.pos[keep_rows]] = True
        # next alive step at or after each step (m when none): where the embargo starts
        nxt = np.where(alive, np.arange(m), m)
        nxt = np.minimum.accumulate(nxt[::-1])[::-1]
        nxt = np.append(nxt, m)
        first = nxt[np.minimum(ends + 1, m)]
        first = first[first < m]
        if len(first):
            cover = np.zeros(m + 1, dtype=np.int64)
            np.add.at(cover, first, 1)
            np.add.at(cover, np.minimum(first + embargo_size, m), -1)
            embargoed = np.cumsum(cover[:m]) > 0
            keep_rows &= ~embargoed[iv.pos]
    return np.flatnonzero(keep_rows)
