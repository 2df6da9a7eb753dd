"""Window ridge: a closed-form ridge regression on the flattened window, the backbones' linear baseline.

A window [L, F] ending at row p is flattened into the features of the steps p, p - s, p - 2s, ...
(`lag_stride` s; L / s steps, the newest always kept) times F columns: at L = 96 and s = 8 that is 12
steps x F columns, one weight per (lag, feature). Every step (s = 1) would be L x F weights, over
7,000 at F = 77: a normal-equations matrix of 400 MB and, on a few months of 5m rows, far more
weights than the data can pin down; the stride keeps the model a ridge on the window's shape, not
on its noise.

Fit, per target (a purged 4h label is NaN, so each target has its own rows): the normal equations
accumulated in float64 over chunks of windows (one gather each from the strided view, no per-sample
copy), centred, then solved: (Z'Z + alpha * n * I) w = Z'(y - mean y), intercept = mean y - mean z . w.
`alpha` is per row (the penalty grows with the row count), so it means the same on a week or a year.
Inputs are the fold's standardised features (train_backbone.fold_data: scaler on training rows only).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from quant_assets.ml.train_backbone import Fold, fold_data
from quant_assets.ml.train_student import StudentInputs
from quant_assets.ml.windows import Windows, place_on_grid, window_ends


@dataclass(frozen=True)
class WindowRidgeConfig:
    input_len: int = 96
    lag_stride: int = 8  # keep every s-th step back from the window's end
    alpha: float = 1e-3  # L2 penalty per row, on standardised inputs
    chunk: int = 8192  # windows per accumulation step

    def __post_init__(self):
        if not 0 < self.lag_stride <= self.input_len or self.alpha < 0:
            raise ValueError(f"window ridge: lag_stride {self.lag_stride} must be in 1..{self.input_len}, "
                             f"alpha {self.alpha} >= 0")  # fmt: skip

    @property
    def steps(self) -> np.ndarray:
        """Positions kept inside the window (0 = oldest, input_len - 1 = newest), oldest first."""
        return np.arange(self.input_len - 1, -1, -self.lag_stride)[::-1].copy()


@dataclass
class WindowRidge:
    config: WindowRidgeConfig
    weights: np.ndarray  # [steps * F, H] float64
    intercept: np.ndarray  # [H]
    rows: list[int]  # training windows per target

    def features(self, windows: Windows, ends: torch.Tensor) -> np.ndarray:
        """[len(ends), steps * F] float64 flattened, strided windows."""
        steps = torch.from_numpy(self.config.steps)
        return windows(ends)[:, steps].flatten(1).double().numpy()

    @classmethod
    def fit(cls, config: WindowRidgeConfig, windows: Windows, ends: np.ndarray, y: np.ndarray) -> WindowRidge:
        """Fit on windows ending at `ends` with labels y [T, H] (grid rows; NaN: no label, skipped)."""
        n_targets = y.shape[1]
        probe = cls(config, np.zeros((0, n_targets)), np.zeros(n_targets), [])
        k = len(config.steps) * windows.view.shape[1]
        zz = np.zeros((n_targets, k, k))
        zy, zs = np.zeros((n_targets, k)), np.zeros((n_targets, k))
        ys, n = np.zeros(n_targets), np.zeros(n_targets)
        e_all = torch.from_numpy(np.asarray(ends, dtype=np.int64))
        for i in range(0, len(e_all), config.chunk):
            e = e_all[i : i + config.chunk]
            z = probe.features(windows, e)
            yc = y[e.numpy()].astype(np.float64)
            # Z'Z once for the chunk (the costly product), then each target takes off its rows without
            # a label (the purged 4h tail: a few rows), so two targets cost one product, not two
            zz_chunk = z.T @ z
            for h in range(n_targets):
                ok = np.isfinite(yc[:, h])
                miss = z[~ok]
                zz[h] += zz_chunk - miss.T @ miss if len(miss) else zz_chunk
                zh, yh = z[ok], yc[ok, h]
                zy[h] += zh.T @ yh
                zs[h] += zh.sum(axis=0)
                ys[h] += yh.sum()
                n[h] += ok.sum()
        weights, intercept = np.zeros((k, n_targets)), np.zeros(n_targets)
        for h in range(n_targets):
            if n[h] < 2:
                raise ValueError(
                    f"window ridge: target {h} has {int(n[h])} labelled training windows, needs 2"
                )
            mz, my = zs[h] / n[h], ys[h] / n[h]
            a = zz[h] - n[h] * np.outer(mz, mz) + config.alpha * n[h] * np.eye(k)
            weights[:, h] = np.linalg.solve(a, zy[h] - n[h] * mz * my)
            intercept[h] = my - mz @ weights[:, h]
        return cls(config, weights, intercept, [int(v) for v in n])

    def predict(self, windows: Windows, ends: np.ndarray) -> np.ndarray:
        """[len(ends), H] in the units of the y it was fitted on."""
        e_all = torch.from_numpy(np.asarray(ends, dtype=np.int64))
        out = [self.features(windows, e_all[i : i + self.config.chunk]) @ self.weights + self.intercept
               for i in range(0, len(e_all), self.config.chunk)]  # fmt: skip
        return np.concatenate(out) if out else np.zeros((0, self.weights.shape[1]))

    def save(self, out_dir: str | Path, fold: Fold, extra: dict | None = None) -> None:
        """Safe formats: JSON manifest (config, scaler, intercept) and the weights as .npy."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "weights.npy", self.weights)
        manifest = {"config": asdict(self.config), "intercept": self.intercept.tolist(), "rows": self.rows,
                    "x_mean": fold.scaler.mean.tolist(), "x_std": fold.scaler.std.tolist(),
                    "y_scale": fold.y_scale.tolist(), **(extra or {})}  # fmt: skip
        (out / "window_ridge.json").write_text(json.dumps(manifest, indent=1))


def fit_inputs(inputs: StudentInputs, config: WindowRidgeConfig, val_fraction: float, embargo_bars: int):
    """The backbones' fold (train_backbone.fold_data) on these rows, the ridge fitted on its training windows
    (labels in the fold's target units), and its validation IC per label: (ridge, fold, metrics)."""
    fold = fold_data(inputs, config.input_len, val_fraction, embargo_bars)
    if len(fold.split.train_ends) < 2:
        raise ValueError(
            f"window ridge: {len(fold.split.train_ends)} training windows of {config.input_len} rows"
        )
    windows = Windows(torch.from_numpy(fold.scaler.apply(fold.grid.x)), config.input_len)
    y = fold.grid.y / fold.y_scale
    ridge = WindowRidge.fit(config, windows, fold.split.train_ends, y)
    metrics = {"train_windows": len(fold.split.train_ends), "val_windows": len(fold.split.val_ends)}
    if len(fold.split.val_ends):
        p, t = ridge.predict(windows, fold.split.val_ends), y[fold.split.val_ends]
        for j, name in enumerate(inputs.label_names):
            ok = np.isfinite(t[:, j])
            metrics[f"mse_{name}"] = float(np.mean((p[ok, j] - t[ok, j]) ** 2)) if ok.any() else float("nan")
            metrics[f"ic_{name}"] = (
                float(np.corrcoef(p[ok, j], t[ok, j])[0, 1]) if ok.sum() > 2 else float("nan")
            )
    return ridge, fold, metrics


def predict_inputs(ridge: WindowRidge, fold: Fold, inputs: StudentInputs) -> np.ndarray:
    """[rows, H] in label units, scaled by the fold's training-row scaler; NaN without a full window."""
    grid = place_on_grid(inputs.symbol, inputs.ts_ms, inputs.x, np.zeros_like(inputs.y))
    out = np.full(inputs.y.shape, np.nan, dtype=np.float64)
    ends = window_ends(grid, ridge.config.input_len)
    if len(ends):
        windows = Windows(torch.from_numpy(fold.scaler.apply(grid.x)), ridge.config.input_len)
        out[grid.row[ends]] = ridge.predict(windows, ends) * fold.y_scale
    return out
