"""Helpers shared by the training loops (ml.train_student, ml.train_backbone); each loop stays in its own file.

Distributed setup from torchrun's environment, the process-wide torch settings a run changes and puts
back, the seeded global-batch order every rank draws alike, the end-of-run weight check across ranks,
the validation metrics and the manifest fields every run records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

if TYPE_CHECKING:  # train_student imports this module
    from quant_assets.ml.train_student import StudentInputs
from quant_assets.ml.windows import SeriesGrid, Split, Standardizer, Windows, place_on_grid, window_ends

Report = Callable[[str, dict], None]


def load_dataclass_config(path: str | Path, cls: type, what: str):
    """`cls` from a JSON file of its fields; an unknown key fails naming the file and the known keys."""
    d = json.loads(Path(path).read_text())
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{path}: unknown {what} config keys {unknown}; known: {sorted(known)}")
    return cls(**d)


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device
    backend: str | None


def setup_distributed(device: str = "auto") -> Dist:
    """From torchrun's environment; WORLD_SIZE unset or 1 is the single-process case."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    dev = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:  # deterministic cuBLAS needs this before its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    backend = None
    if world > 1:
        backend = "nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group(backend)
    return Dist(rank, world, dev, backend)


def autocast_dtype(device: torch.device, bf16: bool) -> torch.dtype | None:
    """bfloat16 autocast on CUDA when asked (the GPU setting); None (full float32) on CPU, whatever bf16 says.

    CPU stays float32 so a CPU run, its tests and the 1-vs-2-process comparison keep float32 numbers.
    """
    return torch.bfloat16 if device.type == "cuda" and bf16 else None


@contextlib.contextmanager
def restored_torch_settings(d: Dist) -> Iterator[None]:
    """Puts back the process-wide torch settings a run changes (for an in-process caller: tests, notebooks)
    and ends the process group on the way out."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        if d.world > 1:
            dist.destroy_process_group()


def deterministic_start(seed: int, threads: int, global_batch: int, d: Dist) -> None:
    """Seed, thread count and deterministic algorithms; the global batch must split evenly over the ranks."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # deterministic mode also NaN-fills every new tensor, ~10 full-activation writes a step on CPU; every
    # kernel here writes all of its output, so the fill changes no result (benchmarks/student.py)
    torch.utils.deterministic.fill_uninitialized_memory = False
    if global_batch % d.world:
        raise ValueError(f"global_batch {global_batch} is not divisible by the {d.world} processes")


def global_batches(n: int, global_batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices into n training windows, one global batch per next(): a seeded shuffle, reshuffled when the
    next batch would run past its end. Lazy, so draws from `gen` between batches keep their order."""
    order, cursor = torch.randperm(n, generator=gen), 0
    while True:
        if cursor + global_batch > len(order):  # next epoch
            order, cursor = torch.randperm(n, generator=gen), 0
        yield order[cursor : cursor + global_batch]
        cursor += global_batch


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        dist.all_reduce(t)
    return t


def final_weights(model: torch.nn.Module, d: Dist) -> tuple[torch.Tensor, float]:
    """This rank's weights, flat on CPU, and the largest difference to any rank's (every rank must end equal)."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()
    rank_diff = 0.0
    if d.world > 1:
        gathered = [torch.empty_like(flat) for _ in range(d.world)]
        dist.all_gather(gathered, flat)
        rank_diff = max(float((g - flat).abs().max()) for g in gathered)
    return flat, rank_diff


def run_fields(d: Dist, split: Split, steps: int, global_batch: int, loop_seconds: float, losses: list,
               evals: list, flat: torch.Tensor, rank_diff: float) -> dict:  # fmt: skip
    """The manifest fields every training run records: where it ran, its folds, speed, losses and weights."""
    return {
        "world_size": d.world,
        "backend": d.backend,
        "device": str(d.device),
        "torch": torch.__version__,
        "train_windows": len(split.train_ends),
        "val_windows": len(split.val_ends),
        "train_rows": int(split.train_rows.sum()),
        "windows_per_second": round(steps * global_batch / loop_seconds, 1),
        "loss": losses,
        "eval": evals,
        "rank_weight_max_abs_diff": rank_diff,
        "weights_sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest(),
    }


def scaled_state(model: torch.nn.Module, mean: np.ndarray, std: np.ndarray, y_scale: np.ndarray) -> dict:
    """The tensors a run saves (torch.load(weights_only=True) reads them): weights, input scaling, target scale."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "x_mean": torch.from_numpy(mean),
        "x_std": torch.from_numpy(std),
        "y_scale": torch.from_numpy(y_scale),
    }


def target_metrics(preds: torch.Tensor, y: torch.Tensor, names: Sequence[str]) -> dict:
    """MSE (scaled units) and IC (Pearson correlation of prediction and label) per target, over finite labels."""
    out = {}
    for j, name in enumerate(names):
        p, t = preds[:, j], y[:, j]
        ok = torch.isfinite(t)
        p, t = p[ok].double(), t[ok].double()
        out[f"mse_{name}"] = float(((p - t) ** 2).mean()) if len(t) else float("nan")
        out[f"ic_{name}"] = float(torch.corrcoef(torch.stack([p, t]))[0, 1]) if len(t) > 2 else float("nan")
    return out


def prediction_windows(inputs: StudentInputs, manifest: dict, state: dict, input_len: int,
                       n_coins: int) -> tuple[SeriesGrid, Windows, torch.Tensor, torch.Tensor]:  # fmt: skip
    """A trained model's inputs for rows: the grid, the windows scaled as in training, each grid row's coin id
    and the ends of the full windows (each window ends at its row: no later row is read)."""
    grid = place_on_grid(inputs.symbol, inputs.ts_ms, inputs.x, np.zeros_like(inputs.y))
    unknown = sorted(set(grid.symbols) - set(manifest["symbols"]))
    if unknown and n_coins:
        raise ValueError(f"predict: no coin embedding for {unknown}; trained on {manifest['symbols']}")
    coin_of = {s: i for i, s in enumerate(manifest["symbols"])}
    coin = torch.tensor([coin_of.get(grid.symbols[k], 0) for k in grid.coin], dtype=torch.long)
    scaler = Standardizer(state["x_mean"].numpy(), state["x_std"].numpy())
    windows = Windows(torch.from_numpy(scaler.apply(grid.x)), input_len)
    ends = torch.from_numpy(window_ends(grid, input_len))
    return grid, windows, coin, ends


def print_report(done_keys: Sequence[str]) -> Report:
    """A `report` for the command line: each eval as a JSON line, and the named fields of the manifest at the end."""

    def report(kind: str, data: dict) -> None:
        if kind == "eval":
            print(json.dumps({"kind": kind, **data}), flush=True)
        elif kind == "done":
            print(json.dumps({"kind": kind, **{k: data[k] for k in done_keys}}), flush=True)

    return report
