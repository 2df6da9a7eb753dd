"""Training windows: every coin's rows on its own 5m grid, back to back in one array, read through strided views.

A window ending at grid row p holds rows p - L + 1 .. p of one coin (features known by p's decision
time, ts + 5m) and is scored on p's labels. Nothing here copies a window per sample: `Windows` keeps
one [T, F] tensor (on the training device) and `unfold` gives a [T - L + 1, F, L] view of it, so a
batch is one gather of window starts. Coins sit back to back; each coin's block is a slice of the
same tensor, and a window never crosses a block edge because only starts inside a block are drawn.

Gaps in a coin's grid (no input row) keep NaN features, which standardisation turns into the training
mean (0), and NaN labels, which are never scored. Standardisation is fitted on training rows only:
rows before each coin's validation split, never the validation rows or anything after the cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STEP_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class SeriesGrid:
    symbols: tuple[str, ...]
    offsets: np.ndarray  # [n_coins + 1]: coin k owns grid rows offsets[k] .. offsets[k + 1] - 1
    coin: np.ndarray  # [T] int64 coin index of each grid row
    ts_ms: np.ndarray  # [T] int64 epoch milliseconds
    row: np.ndarray  # [T] int64 input row placed here, -1 for a gap
    x: np.ndarray  # [T, F] float32, NaN where missing
    y: np.ndarray  # [T, H] float32, NaN where no label
    teacher: np.ndarray | None  # [T, H] float32 out-of-fold teacher predictions, NaN where none

    @property
    def present(self) -> np.ndarray:
        return self.row >= 0


def place_on_grid(
    symbol: np.ndarray,
    ts_ms: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    teacher: np.ndarray | None = None,
    step_ms: int = STEP_MS,
) -> SeriesGrid:
    """Rows (any order) -> one grid per coin from its first to its last row, gaps filled with NaN."""
    symbol, ts_ms = np.asarray(symbol).astype(str), np.asarray(ts_ms, dtype=np.int64)
    symbols = tuple(sorted(set(symbol.tolist())))
    order = np.lexsort((ts_ms, np.searchsorted(np.array(symbols), symbol)))
    blocks, offsets = [], [0]
    for k, s in enumerate(symbols):
        rows = order[symbol[order] == s]
        t = ts_ms[rows]
        rel = t - t[0]
        if np.any(rel % step_ms):
            bad = t[np.flatnonzero(rel % step_ms)[0]]
            raise ValueError(f"{s}: row at ts {bad} ms is off the {step_ms // 60000}m grid started at {t[0]}")
        pos = rel // step_ms
        if np.any(np.diff(pos) == 0):
            dup = t[np.flatnonzero(np.diff(pos) == 0)[0]]
            raise ValueError(f"{s}: two rows at ts {dup} ms")
        n = int(pos[-1]) + 1
        row = np.full(n, -1, dtype=np.int64)
        row[pos] = rows
        blocks.append((k, t[0] + step_ms * np.arange(n, dtype=np.int64), row))
        offsets.append(offsets[-1] + n)
    row = np.concatenate([b[2] for b in blocks]) if blocks else np.zeros(0, np.int64)

    def scatter(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        a = np.asarray(a, dtype=np.float32).reshape(len(symbol), -1)
        out = np.full((len(row), a.shape[1]), np.nan, dtype=np.float32)
        out[row >= 0] = a[row[row >= 0]]
        return out

    return SeriesGrid(
        symbols=symbols,
        offsets=np.asarray(offsets, dtype=np.int64),
        coin=np.concatenate([np.full(len(b[2]), b[0], np.int64) for b in blocks]) if blocks else row,
        ts_ms=np.concatenate([b[1] for b in blocks]) if blocks else row,
        row=row,
        x=scatter(x),
        y=scatter(y),
        teacher=scatter(teacher),
    )


def window_ends(grid: SeriesGrid, input_len: int) -> np.ndarray:
    """Grid rows a window can end on: a present row with some label and input_len - 1 rows of its coin before."""
    start_of_block = grid.offsets[grid.coin]
    idx = np.arange(len(grid.row))
    ok = (idx - start_of_block >= input_len - 1) & grid.present & np.isfinite(grid.y).any(axis=1)
    return idx[ok]


@dataclass(frozen=True)
class Split:
    train_ends: np.ndarray
    val_ends: np.ndarray
    train_rows: np.ndarray  # bool [T]: the rows standardisation may be fitted on


def time_split(grid: SeriesGrid, ends: np.ndarray, val_fraction: float, embargo_bars: int) -> Split:
    """Per coin, the last `val_fraction` of its window ends validate; the rest train.

    Validation windows start `embargo_bars` after the last training window's end, so no validation
    label interval overlaps a training one (embargo >= the longest horizon in bars + 1). Training rows
    are the coin's rows up to its last training window's end.
    """
    train, val = [], []
    train_rows = np.zeros(len(grid.row), dtype=bool)
    for k in range(len(grid.symbols)):
        e = ends[grid.coin[ends] == k]
        n_val = int(round(len(e) * val_fraction))
        tr = e[: len(e) - n_val]
        va = e[len(e) - n_val :]
        if len(tr):
            va = va[va > tr[-1] + embargo_bars]
            train_rows[grid.offsets[k] : tr[-1] + 1] = True
        train.append(tr)
        val.append(va)
    return Split(np.concatenate(train), np.concatenate(val), train_rows & grid.present)


@dataclass(frozen=True)
class Standardizer:
    mean: np.ndarray  # [F] float32
    std: np.ndarray  # [F] float32

    @classmethod
    def fit(cls, x: np.ndarray, rows: np.ndarray) -> Standardizer:
        """Mean and std of each column over `rows` (NaN skipped); constant or empty columns scale by 1."""
        sub = x[rows].astype(np.float64)
        finite = np.isfinite(sub)
        n = finite.sum(axis=0)
        mean = np.where(n > 0, np.where(finite, sub, 0.0).sum(axis=0) / np.maximum(n, 1), 0.0)
        var = np.where(finite, (sub - mean) ** 2, 0.0).sum(axis=0) / np.maximum(n, 1)
        std = np.sqrt(var)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardised float32; a missing value becomes 0 (the training mean)."""
        z = (x.astype(np.float32) - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)


class Windows:
    """Windows of `input_len` rows over one [T, F] tensor: no copy until a batch is gathered.

    `view` is the strided [T - L + 1, F, L] view of every window (x.unfold). A batch is gathered
    time-major: one index_select of the B * L rows into a [L, B, F] tensor, returned as its [B, L, F]
    transpose. The values are the windows' rows in order; the layout lets a model's mixing over time
    read [L, B * F] without a copy (ml.tsmixer), and the row gather is faster than indexing the view.
    """

    def __init__(self, x: torch.Tensor, input_len: int):
        if x.ndim != 2 or x.shape[0] < input_len:
            raise ValueError(f"Windows: need a [T >= {input_len}, F] tensor, got {tuple(x.shape)}")
        self.input_len = input_len
        self.x = x
        self.view = x.unfold(0, input_len, 1)  # [T - L + 1, F, L], shares x's storage
        self.steps = torch.arange(input_len - 1, -1, -1, device=x.device)[:, None]  # rows before the end

    def __call__(self, ends: torch.Tensor) -> torch.Tensor:
        """[B] window end rows -> [B, L, F] (one gather; the storage is time-major [L, B, F])."""
        rows = (ends[None, :] - self.steps).reshape(-1)
        return self.x.index_select(0, rows).view(self.input_len, len(ends), -1).transpose(0, 1)
