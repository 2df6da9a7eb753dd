"""Backbone training: iTransformer, PatchTST or TFT on windows of features, learning the labels.

    torchrun --nproc_per_node=N -m quant_assets.ml.train_backbone --config cfg.json
    python -m quant_assets.ml.train_backbone --config cfg.json        (the same, one process)

The student's path with another model and no teacher: the config (BackboneConfig, JSON) names a file
of rows (parquet or npz, read by `train_student.load_inputs`) of a training frame
(ml.training_frame: every label is known before the cut-off). `fold_data` puts the rows on per-coin
grids and splits each coin's windows in time: the training fold, then an embargo, then the last
`val_fraction` (validation). Standardisation and the target scale are fitted on the training fold's
rows only (ml.windows.time_split's `train_rows`); the validation rows never move them. Every backbone
(and the window ridge, ml.window_ridge) uses this same function, so all see the same folds.

Each model maps x [B, L, F] (+ coin ids [B]) to [B, H], one output per label column (label_1h,
label_4h). Loss: MSE to the label, over the labels a window has (a purged 4h label is NaN, skipped).

Distributed exactly as the student (train_student's docstring): WORLD_SIZE > 1 (set by torchrun)
turns on DistributedDataParallel; every rank draws the same global batch from one seeded generator
and takes its slice, and the loss is scaled so the averaged gradient is the global batch's. Only rank
0 reports and writes `backbone.pt` (tensors only) and `backbone.json` (the manifest). A rank that
fails writes `error_rank<r>.json` (its exception and traceback) before raising, so a launcher can
report why a backbone did not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from quant_assets.ml.itransformer import ITransformer, ITransformerConfig
from quant_assets.ml.patchtst import PatchTST, PatchTSTConfig
from quant_assets.ml.tft import TFT, TFTConfig
from quant_assets.ml.train_student import StudentInputs, load_inputs
from quant_assets.ml.training import (
    Dist,
    Report,
    all_reduce_sum,
    autocast_dtype,
    deterministic_start,
    final_weights,
    global_batches,
    load_dataclass_config,
    prediction_windows,
    print_report,
    restored_torch_settings,
    run_fields,
    scaled_state,
    setup_distributed,
    target_metrics,
)
from quant_assets.ml.windows import (
    SeriesGrid,
    Split,
    Standardizer,
    Windows,
    place_on_grid,
    time_split,
    window_ends,
)
from quant_assets.universe import HORIZON_BARS

# name -> (model, its config); every model: forward(x [B, L, F], coin [B] | None) -> [B, H]
BACKBONES: dict[str, tuple[type[torch.nn.Module], type]] = {
    "itransformer": (ITransformer, ITransformerConfig),
    "patchtst": (PatchTST, PatchTSTConfig),
    "tft": (TFT, TFTConfig),
}


@dataclass
class BackboneConfig:
    inputs: str  # parquet or npz of rows
    out_dir: str
    backbone: str = "patchtst"  # a key of BACKBONES
    feature_columns: list[str] | None = None  # None: every column but symbol, ts and labels
    label_columns: list[str] = field(default_factory=lambda: ["label_1h", "label_4h"])
    teacher_columns: list[str] | None = (
        None  # backbones learn labels only; train_student.load_inputs reads it
    )
    input_len: int = 96
    coin_embedding: bool = True
    model: dict = field(
        default_factory=dict
    )  # other fields of the backbone's config (d_model, n_layers, ...)
    steps: int = 300
    global_batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    embargo_bars: int = max(HORIZON_BARS.values()) + 1  # as the student: no label interval overlaps
    eval_every: int = 100
    seed: int = 0
    threads: int = 1
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA only (train_student.autocast_dtype)


def load_config(path: str | Path) -> BackboneConfig:
    cfg = load_dataclass_config(path, BackboneConfig, "backbone")
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"{path}: backbone {cfg.backbone!r} is not one of {sorted(BACKBONES)}")
    return cfg


@dataclass(frozen=True)
class Fold:
    """One training fold of a training frame: the grid, the split, and what was fitted on training rows."""

    grid: SeriesGrid
    split: Split
    scaler: Standardizer  # fitted on split.train_rows only
    y_scale: np.ndarray  # [H] RMS of each label over the training rows (targets are learned in these units)


def fold_data(inputs: StudentInputs, input_len: int, val_fraction: float, embargo_bars: int) -> Fold:
    """Rows -> per-coin grids -> window ends split in time; scaler and target scale from training rows only."""
    grid = place_on_grid(inputs.symbol, inputs.ts_ms, inputs.x, inputs.y)
    ends = window_ends(grid, input_len)
    split = time_split(grid, ends, val_fraction, embargo_bars)
    scaler = Standardizer.fit(grid.x, split.train_rows)
    y_train = grid.y[split.train_rows].astype(np.float64)
    with np.errstate(invalid="ignore"):
        y_scale = np.sqrt(np.nanmean(y_train**2, axis=0)) if len(y_train) else np.ones(grid.y.shape[1])
    y_scale = np.where(np.isfinite(y_scale) & (y_scale > 0), y_scale, 1.0).astype(np.float32)
    return Fold(grid, split, scaler, y_scale)


def build_model(name: str, n_vars: int, input_len: int, n_targets: int, n_coins: int, options: dict):
    model_cls, cfg_cls = BACKBONES[name]
    mcfg = cfg_cls(n_vars=n_vars, input_len=input_len, n_targets=n_targets, n_coins=n_coins, **options)
    return model_cls(mcfg), mcfg


def train(cfg: BackboneConfig, report: Report | None = None) -> dict:
    """Train, save (rank 0) and return the manifest. `report(kind, data)` is called on rank 0 only."""
    t_start = time.perf_counter()
    d = setup_distributed(cfg.device)
    with restored_torch_settings(d):
        try:
            manifest = _train(cfg, d, report if d.rank == 0 else None)
            manifest["seconds"] = round(time.perf_counter() - t_start, 3)
            if d.rank == 0:
                (Path(cfg.out_dir) / "backbone.json").write_text(json.dumps(manifest, indent=1))
                if report:
                    report("done", manifest)
            return manifest
        except BaseException as exc:
            out = Path(cfg.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"error_rank{d.rank}.json").write_text(json.dumps(
                {"backbone": cfg.backbone, "rank": d.rank, "error": f"{type(exc).__name__}: {exc}",
                 "traceback": traceback.format_exc()[-4000:]}))  # fmt: skip
            raise


def _train(cfg: BackboneConfig, d: Dist, report: Report | None) -> dict:
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"backbone {cfg.backbone!r} is not one of {sorted(BACKBONES)}")
    deterministic_start(cfg.seed, cfg.threads, cfg.global_batch, d)

    # --- data: the fold (scaler and target scale from its training rows only), on the device once
    inputs = load_inputs(cfg.inputs, cfg)
    fold = fold_data(inputs, cfg.input_len, cfg.val_fraction, cfg.embargo_bars)
    grid, split = fold.grid, fold.split
    if len(split.train_ends) < cfg.global_batch:
        raise ValueError(f"{cfg.inputs}: {len(split.train_ends)} training windows of {cfg.input_len} rows, "
                         f"fewer than one global batch ({cfg.global_batch})")  # fmt: skip
    dev = d.device
    windows = Windows(torch.from_numpy(fold.scaler.apply(grid.x)).to(dev), cfg.input_len)
    y_all = torch.from_numpy(grid.y / fold.y_scale).to(dev)
    coin_all = torch.from_numpy(grid.coin).to(dev)
    train_ends = torch.from_numpy(split.train_ends).to(dev)

    # --- model: identical on every rank (same seed); DDP broadcasts rank 0's weights anyway
    n_coins = len(grid.symbols) if cfg.coin_embedding else 0
    raw, mcfg = build_model(cfg.backbone, grid.x.shape[1], cfg.input_len, grid.y.shape[1], n_coins, cfg.model)
    raw = raw.to(dev)
    torch.manual_seed(cfg.seed + 7919 * d.rank)  # after the init: ranks draw different dropout masks
    model = DistributedDataParallel(raw) if d.world > 1 else raw
    opt = torch.optim.AdamW(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = autocast_dtype(dev, cfg.bf16)
    autocast = torch.autocast(dev.type, dtype=amp, enabled=amp is not None)

    # --- the loop: one global batch per step, this rank's slice of it
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = global_batches(len(train_ends), cfg.global_batch, gen)
    per_rank = cfg.global_batch // d.world
    mine = slice(d.rank * per_rank, (d.rank + 1) * per_rank)
    losses, evals = [], []
    t_loop = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        batch = train_ends[next(batches).to(dev)]
        n_label = torch.isfinite(y_all[batch]).sum().clamp(min=1)  # the global batch's, no communication
        ends_r = batch[mine]
        loss = train_step(model, opt, windows(ends_r), coin_all[ends_r] if n_coins else None, y_all[ends_r],
                          n_label, d.world, cfg.grad_clip, autocast)  # fmt: skip
        global_loss = all_reduce_sum(loss.detach() / d.world, d).item()
        losses.append([step, round(global_loss, 8)])
        if report:
            report("step", {"step": step, "loss": global_loss})
        if d.rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps) and len(split.val_ends):
            ev = {"step": step, **evaluate(raw, windows, coin_all if n_coins else None, y_all, split.val_ends,
                                           inputs.label_names)}  # fmt: skip
            evals.append(ev)
            if report:
                report("eval", ev)
    loop_seconds = time.perf_counter() - t_loop

    flat, rank_diff = final_weights(raw, d)

    manifest = {
        "backbone": cfg.backbone,
        "config": dataclasses.asdict(cfg),
        "model_config": dataclasses.asdict(mcfg),
        "n_params": sum(p.numel() for p in raw.parameters()),
        "feature_names": list(inputs.feature_names),
        "label_names": list(inputs.label_names),
        "symbols": list(grid.symbols),
        **run_fields(d, split, cfg.steps, cfg.global_batch, loop_seconds, losses, evals, flat, rank_diff),
    }
    if d.rank == 0:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(scaled_state(raw, fold.scaler.mean, fold.scaler.std, fold.y_scale), out / "backbone.pt")
    return manifest


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    xb: torch.Tensor,
    coin: torch.Tensor | None,
    yb: torch.Tensor,
    n_label: torch.Tensor,
    world: int,
    grad_clip: float,
    autocast: torch.autocast,
) -> torch.Tensor:
    """One optimiser step on this rank's windows xb [b, L, F] and labels yb [b, H] (NaN: none).

    n_label counts the finite labels of the whole global batch, so the loss is the global batch's mean
    whatever the rank's share. benchmarks/backbones.py times this same function.
    """
    with autocast:
        pred = model(xb, coin).float()
    sq = torch.where(torch.isfinite(yb), (pred - yb.nan_to_num()) ** 2, 0.0).sum()
    loss = world * sq / n_label  # DDP averages over ranks: scale so the average is the global gradient
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss


@torch.no_grad()
def predict_windows(model: torch.nn.Module, windows: Windows, coin: torch.Tensor | None, ends: torch.Tensor,
                    batch: int = 512) -> torch.Tensor:  # fmt: skip
    """[len(ends), H] predictions (scaled units) for windows ending at `ends`."""
    was = model.training
    model.eval()
    out = [model(windows(ends[i : i + batch]), None if coin is None else coin[ends[i : i + batch]]).float()
           for i in range(0, len(ends), batch)]  # fmt: skip
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, 0)


def evaluate(model, windows: Windows, coin, y: torch.Tensor, ends: np.ndarray, names) -> dict:
    """Validation MSE (scaled units) and IC (Pearson) per target."""
    e = torch.from_numpy(ends).to(y.device)
    return target_metrics(predict_windows(model, windows, coin, e), y[e], names)


def load_backbone(out_dir: str | Path) -> tuple[torch.nn.Module, dict, dict]:
    """The trained model, its tensors (scaling) and manifest, from safe formats only."""
    out = Path(out_dir)
    manifest = json.loads((out / "backbone.json").read_text())
    state = torch.load(out / "backbone.pt", weights_only=True, map_location="cpu")
    model_cls, cfg_cls = BACKBONES[manifest["backbone"]]
    model = model_cls(cfg_cls(**manifest["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), state, manifest


@torch.no_grad()
def predict(out_dir: str | Path, inputs: StudentInputs) -> np.ndarray:
    """[rows, H] predictions in label units; NaN where a row has no full window of its coin before it."""
    model, state, manifest = load_backbone(out_dir)
    if list(inputs.feature_names) != manifest["feature_names"]:
        raise ValueError("predict: feature columns differ from the ones the backbone was trained on")
    n_coins = model.config.n_coins
    grid, windows, coin, ends = prediction_windows(inputs, manifest, state, model.config.input_len, n_coins)
    out = np.full(inputs.y.shape, np.nan, dtype=np.float32)
    if len(ends):
        p = predict_windows(model, windows, coin if n_coins else None, ends) * state["y_scale"]
        out[grid.row[ends.numpy()]] = p.numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="quant_assets.ml.train_backbone", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON file of BackboneConfig fields")
    args = ap.parse_args(argv)
    keys = ("backbone", "n_params", "world_size", "backend", "train_windows", "val_windows",
            "windows_per_second", "seconds", "weights_sha256", "rank_weight_max_abs_diff")  # fmt: skip
    train(load_config(args.config), report=print_report(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
