"""Student training: a TSMixer over windows of the student's features, distilled from the teacher.

    torchrun --nproc_per_node=N -m quant_assets.ml.train_student --config cfg.json
    python -m quant_assets.ml.train_student --config cfg.json        (the same, one process)

The config (StudentConfig, JSON) names an input file of rows (parquet or npz, see `load_inputs`):
symbol, ts, the feature columns, the label columns and the teacher's out-of-fold prediction per label.
Those rows are a training frame (ml.training_frame): every label is known before the cut-off, so
everything in the file may be learned from. The last `val_fraction` of each coin's windows (after an
embargo) is held out to report a validation loss and IC; standardisation and the target scale are
fitted on the training rows only.

Loss, per window and target with a label (and a teacher prediction for the second term):
    MSE(prediction, label) + teacher_weight * MSE(prediction, teacher's out-of-fold prediction)
The teacher column must be out of fold: distilling the teacher's in-sample fit would teach the
student the teacher's overfit. Text-modality dropout: with probability text_dropout a window's
text-derived columns (by prefix, features.keys.TEXT_FEATURE_PREFIXES) are set to their raw value 0,
what the `no_text` ablation feeds, so the model also learns to predict without text.

Distributed: WORLD_SIZE > 1 (set by torchrun) turns on DistributedDataParallel (nccl on GPU, gloo on
CPU); nothing else changes. Every rank draws the same global batch from one seeded generator and
takes its contiguous 1/world slice; each rank's loss is scaled so the averaged gradient is the
gradient of the global batch's loss. A 2-process run therefore matches a 1-process run on the same
global batch up to float summation order (while model dropout is 0: nn.Dropout masks are per rank).
Only rank 0 reports (the `report` callback) and writes: `student.pt` (tensors only: load with
torch.load(weights_only=True)) and `student.json` (the manifest).

Fine-tuning: `init_from` names a trained student's directory (student.pt + student.json, e.g. a champion
downloaded from the registry). Training then starts from its weights and keeps its input scaling and
target scale (the weights were learned on those units; the champion fitted them on its own, earlier,
training rows, so nothing of the new rows' future leaks in). The new rows must have the same features,
labels, coins (the coin embedding's rows) and model shape, else it fails naming what differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.nn.parallel import DistributedDataParallel

from quant_assets.features.keys import TEXT_FEATURE_PREFIXES
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
from quant_assets.ml.tsmixer import TSMixer, TSMixerConfig
from quant_assets.ml.windows import Standardizer, Windows, place_on_grid, time_split, window_ends
from quant_assets.universe import HORIZON_BARS


@dataclass
class StudentConfig:
    inputs: str  # parquet or npz of rows
    out_dir: str
    feature_columns: list[str] | None = None  # None: every column but symbol, ts, labels and teachers
    label_columns: list[str] = field(default_factory=lambda: ["label_1h", "label_4h"])
    teacher_columns: list[str] | None = field(default_factory=lambda: ["teacher_1h", "teacher_4h"])
    teacher_weight: float = 0.5  # lambda
    text_dropout: float = 0.0
    text_prefixes: list[str] = field(default_factory=lambda: list(TEXT_FEATURE_PREFIXES))
    input_len: int = 96
    coin_embedding: bool = True  # one shared model with a learned coin vector
    model: dict = field(default_factory=dict)  # other TSMixerConfig fields (d_series, mix_len, ...)
    steps: int = 200
    global_batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    # a validation window ends this many bars after the last training window: the 4h label spans 48
    # bars past its row, so 49 keeps every validation label interval clear of the training ones
    embargo_bars: int = max(HORIZON_BARS.values()) + 1
    eval_every: int = 50
    seed: int = 0
    threads: int = 1  # torch threads per process
    device: str = "auto"  # auto: cuda:LOCAL_RANK when CUDA is there, else cpu
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    init_from: str | None = None  # a trained student's directory to fine-tune (see the module docstring)


def load_config(path: str | Path) -> StudentConfig:
    return load_dataclass_config(path, StudentConfig, "student")


@dataclass(frozen=True)
class StudentInputs:
    symbol: np.ndarray  # [rows] str
    ts_ms: np.ndarray  # [rows] int64
    x: np.ndarray  # [rows, F]
    feature_names: tuple[str, ...]
    y: np.ndarray  # [rows, H]
    label_names: tuple[str, ...]
    teacher: np.ndarray | None  # [rows, H]


def load_inputs(path: str | Path, cfg: StudentConfig) -> StudentInputs:
    """Rows from parquet (columns by name) or npz (arrays symbol, ts_ms, x, feature_names, y, label_names, teacher)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return StudentInputs(
                z["symbol"], z["ts_ms"], z["x"], tuple(z["feature_names"].tolist()), z["y"],
                tuple(z["label_names"].tolist()), z.get("teacher"),
            )  # fmt: skip
    if path.suffix != ".parquet":
        raise ValueError(f"{path}: student inputs must be .parquet or .npz")
    df = pl.read_parquet(path)
    teachers = list(cfg.teacher_columns or [])
    meta = {"symbol", "ts", *cfg.label_columns, *teachers}
    features = cfg.feature_columns or [c for c in df.columns if c not in meta]
    missing = [c for c in ("symbol", "ts", *features, *cfg.label_columns, *teachers) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    ts = df["ts"]
    ts_ms = (ts.dt.epoch("ms") if ts.dtype.is_temporal() else ts.cast(pl.Int64)).to_numpy()
    return StudentInputs(
        symbol=df["symbol"].to_numpy().astype(str),
        ts_ms=ts_ms.astype(np.int64),
        x=df.select(features).to_numpy().astype(np.float32),
        feature_names=tuple(features),
        y=df.select(cfg.label_columns).to_numpy().astype(np.float32),
        label_names=tuple(cfg.label_columns),
        teacher=df.select(teachers).to_numpy().astype(np.float32) if teachers else None,
    )


def save_npz(inputs: StudentInputs, path: str | Path) -> None:
    arrays = dict(symbol=inputs.symbol.astype(str), ts_ms=inputs.ts_ms, x=inputs.x,
                  feature_names=np.array(inputs.feature_names), y=inputs.y,
                  label_names=np.array(inputs.label_names))  # fmt: skip
    if inputs.teacher is not None:
        arrays["teacher"] = inputs.teacher
    np.savez(path, **arrays)


def train(cfg: StudentConfig, report: Report | None = None) -> dict:
    """Train, save (rank 0) and return the manifest. `report(kind, data)` is called on rank 0 only."""
    t_start = time.perf_counter()
    d = setup_distributed(cfg.device)
    with restored_torch_settings(d):
        manifest = _train(cfg, d, report if d.rank == 0 else None)
        manifest["seconds"] = round(time.perf_counter() - t_start, 3)
        if d.rank == 0:
            out = Path(cfg.out_dir)
            (out / "student.json").write_text(json.dumps(manifest, indent=1))
            if report:
                report("done", manifest)
        return manifest


def _train(cfg: StudentConfig, d: Dist, report: Report | None) -> dict:
    deterministic_start(cfg.seed, cfg.threads, cfg.global_batch, d)

    # --- data: rows -> per-coin grids -> window ends, split in time, scaled on training rows only
    inputs = load_inputs(cfg.inputs, cfg)
    grid = place_on_grid(inputs.symbol, inputs.ts_ms, inputs.x, inputs.y, inputs.teacher)
    ends = window_ends(grid, cfg.input_len)
    split = time_split(grid, ends, cfg.val_fraction, cfg.embargo_bars)
    if len(split.train_ends) < cfg.global_batch:
        raise ValueError(f"{cfg.inputs}: {len(split.train_ends)} training windows of {cfg.input_len} rows, "
                         f"fewer than one global batch ({cfg.global_batch})")  # fmt: skip
    init = load_init(cfg.init_from, inputs, grid.symbols) if cfg.init_from else None
    if init is None:
        scaler = Standardizer.fit(grid.x, split.train_rows)
        y_train = grid.y[split.train_rows]
        y_scale = np.sqrt(np.nanmean(y_train.astype(np.float64) ** 2, axis=0)).astype(np.float32)
        y_scale = np.where(np.isfinite(y_scale) & (y_scale > 0), y_scale, 1.0).astype(np.float32)
    else:  # fine-tuning: the units the initial weights were learned in
        scaler = Standardizer(init["x_mean"].numpy(), init["x_std"].numpy())
        y_scale = init["y_scale"].numpy()
    text = [i for i, n in enumerate(inputs.feature_names) if n.startswith(tuple(cfg.text_prefixes))]

    dev = d.device
    x_all = torch.from_numpy(scaler.apply(grid.x)).to(dev)
    y_all = torch.from_numpy(grid.y / y_scale).to(dev)
    teach = grid.teacher if grid.teacher is not None else np.full_like(grid.y, np.nan)
    t_all = torch.from_numpy(teach / y_scale).to(dev)
    coin_all = torch.from_numpy(grid.coin).to(dev)
    windows = Windows(x_all, cfg.input_len)
    text_idx = torch.tensor(text, dtype=torch.long, device=dev)
    text_zero = torch.from_numpy(-scaler.mean[text] / scaler.std[text]).to(dev)  # raw 0, standardised
    train_ends = torch.from_numpy(split.train_ends).to(dev)

    # --- model and optimiser: identical on every rank (same seed); DDP also broadcasts rank 0's weights
    mcfg = TSMixerConfig(
        n_vars=grid.x.shape[1],
        input_len=cfg.input_len,
        n_targets=grid.y.shape[1],
        n_coins=len(grid.symbols) if cfg.coin_embedding else 0,
        **cfg.model,
    )
    raw = TSMixer(mcfg)
    if init is not None:
        init_cfg = {k: v for k, v in init["model_config"].items() if k != "dropout"}
        if init_cfg != {k: v for k, v in dataclasses.asdict(mcfg).items() if k != "dropout"}:
            raise ValueError(f"init_from {cfg.init_from}: model {init_cfg} differs from this run's {mcfg}")
        raw.load_state_dict(init["model"])
    raw = raw.to(dev)
    torch.manual_seed(cfg.seed + 7919 * d.rank)  # after the init: ranks draw different nn.Dropout masks
    model = DistributedDataParallel(raw) if d.world > 1 else raw
    opt = make_optimizer(raw, cfg.lr, cfg.weight_decay)
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
        drop_text = (torch.rand(cfg.global_batch, generator=gen) < cfg.text_dropout).to(dev)
        # every rank knows the whole global batch, so the global counts need no communication
        n_label = torch.isfinite(y_all[batch]).sum().clamp(min=1)
        n_teacher = torch.isfinite(t_all[batch]).sum().clamp(min=1)

        ends_r = batch[mine]
        xb = windows(ends_r)  # [b, L, F], a gathered copy
        if len(text):
            hide = drop_text[mine][:, None, None]
            xb[:, :, text_idx] = torch.where(hide, text_zero, xb[:, :, text_idx])
        loss = train_step(
            model, opt, xb.unsqueeze(2), coin_all[ends_r][:, None], y_all[ends_r][:, None], t_all[ends_r][:, None],
            n_label, n_teacher, cfg.teacher_weight, d.world, cfg.grad_clip, autocast,
        )  # fmt: skip

        global_loss = all_reduce_sum(loss.detach() / d.world, d).item()
        losses.append([step, round(global_loss, 8)])
        if report:
            report("step", {"step": step, "loss": global_loss})
        if d.rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps) and len(split.val_ends):
            ev = {"step": step, **evaluate(raw, windows, coin_all, y_all, split.val_ends, inputs.label_names)}
            evals.append(ev)
            if report:
                report("eval", ev)
    loop_seconds = time.perf_counter() - t_loop

    # --- every rank must end with the same weights; rank 0 records the largest difference it sees
    flat, rank_diff = final_weights(raw, d)

    manifest = {
        "config": dataclasses.asdict(cfg),
        "model_config": dataclasses.asdict(mcfg),
        "n_params": raw.n_params(),
        "feature_names": list(inputs.feature_names),
        "label_names": list(inputs.label_names),
        "text_features": [inputs.feature_names[i] for i in text],
        "symbols": list(grid.symbols),
        **run_fields(d, split, cfg.steps, cfg.global_batch, loop_seconds, losses, evals, flat, rank_diff),
        "init_from": cfg.init_from,
        "init_weights_sha256": init["weights_sha256"] if init is not None else None,
    }
    if d.rank == 0:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(scaled_state(raw, scaler.mean, scaler.std, y_scale), out / "student.pt")
    return manifest


def load_init(init_from: str, inputs: StudentInputs, symbols) -> dict:
    """The tensors (weights_only) and manifest of the student to fine-tune, checked against this run's rows."""
    src = Path(init_from)
    manifest = json.loads((src / "student.json").read_text())
    state = torch.load(src / "student.pt", weights_only=True, map_location="cpu")
    for what, mine, theirs in (
        ("feature columns", list(inputs.feature_names), manifest["feature_names"]),
        ("label columns", list(inputs.label_names), manifest["label_names"]),
        ("coins", list(symbols), manifest["symbols"]),
    ):
        if mine != theirs:
            raise ValueError(
                f"init_from {init_from}: {what} {mine} differ from the trained student's {theirs}"
            )
    return {**state, "model_config": manifest["model_config"], "weights_sha256": manifest["weights_sha256"]}


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with the fused kernel (CPU and CUDA): one pass over all parameters instead of ~10 small ops per
    tensor; the same update rule, deterministic (benchmarks/student.py)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    xb: torch.Tensor,
    coin: torch.Tensor | None,
    yb: torch.Tensor,
    tb: torch.Tensor,
    n_label: torch.Tensor,
    n_teacher: torch.Tensor,
    teacher_weight: float,
    world: int,
    grad_clip: float,
    autocast: torch.autocast,
) -> torch.Tensor:
    """One optimiser step on this rank's windows xb [b, L, N, V]; labels yb and teacher tb [b, N, H] (NaN: none).

    n_label and n_teacher count the finite labels and teacher values of the whole global batch, so
    the loss is the global batch's mean whatever the rank's share. Returns the (scaled) loss.
    benchmarks/student.py times this same function.
    """
    with autocast:
        pred = model(xb, coin).float()
    label_sq = torch.where(torch.isfinite(yb), (pred - yb.nan_to_num()) ** 2, 0.0).sum()
    teacher_sq = torch.where(torch.isfinite(tb), (pred - tb.nan_to_num()) ** 2, 0.0).sum()
    # DDP averages gradients over ranks: scale by world so the average is the global batch's gradient
    loss = world * (label_sq / n_label + teacher_weight * teacher_sq / n_teacher)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        # foreach: one norm kernel and one scale over all gradients, not a pair of ops per tensor
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    opt.step()
    return loss


@torch.no_grad()
def evaluate(model: TSMixer, windows: Windows, coin: torch.Tensor, y: torch.Tensor, ends: np.ndarray,
             names: tuple[str, ...], batch: int = 4096) -> dict:  # fmt: skip
    """Validation MSE (scaled units) and IC (Pearson correlation of prediction and label) per target."""
    model.eval()
    e = torch.from_numpy(ends).to(y.device)
    preds = torch.cat([
        model(windows(e[i : i + batch]).unsqueeze(2), coin[e[i : i + batch]][:, None]).squeeze(1).float()
        for i in range(0, len(e), batch)
    ])  # fmt: skip
    model.train()
    return target_metrics(preds, y[e], names)


def load_student(out_dir: str | Path) -> tuple[TSMixer, dict, dict]:
    """The trained model, its tensors (scaling) and manifest, from safe formats only."""
    out = Path(out_dir)
    manifest = json.loads((out / "student.json").read_text())
    state = torch.load(out / "student.pt", weights_only=True, map_location="cpu")
    model = TSMixer(TSMixerConfig(**manifest["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), state, manifest


@torch.no_grad()
def predict(out_dir: str | Path, inputs: StudentInputs) -> np.ndarray:
    """[rows, H] predictions in label units for `inputs`; NaN where a row has no full window of its coin."""
    model, state, manifest = load_student(out_dir)
    if list(inputs.feature_names) != manifest["feature_names"]:
        raise ValueError("predict: feature columns differ from the ones the student was trained on")
    grid, windows, coin, ends = prediction_windows(
        inputs, manifest, state, model.config.input_len, model.config.n_coins
    )
    out = np.full(inputs.y.shape, np.nan, dtype=np.float32)
    for i in range(0, len(ends), 4096):
        e = ends[i : i + 4096]
        p = model(windows(e).unsqueeze(2), coin[e][:, None]).squeeze(1) * state["y_scale"]
        out[grid.row[e.numpy()]] = p.numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="quant_assets.ml.train_student", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON file of StudentConfig fields")
    args = ap.parse_args(argv)
    keys = ("n_params", "world_size", "backend", "train_windows", "val_windows", "windows_per_second",
            "seconds", "weights_sha256", "rank_weight_max_abs_diff")  # fmt: skip
    train(load_config(args.config), report=print_report(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
