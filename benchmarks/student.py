"""Benchmark: student (TSMixer) training throughput on CPU, beside neuralforecast's TSMixerx in the same run.

Work (as ../shared/peers/neuralforecast_tsmixer.py, same seed and generator calls, so the same
series): 10 coins x 100,000 5-minute steps of a seeded random walk with 4 exogenous columns (ret_1,
ret_12, volume, hl_range); windows of input 96 over the 10 coins (target + 4 exogenous = 5 variables
per coin), horizon 12, 256 windows a step, 200 steps, the same torch thread count for both (2 unless
--threads). A window holds all 10 coins of one time span, as TSMixerx's multivariate window does, so
windows/s counts the same thing on both sides (series-windows/s = x10).

Ours: `TSMixer(n_vars=5, n_series=10, n_targets=12)` (46,576 parameters; TSMixerx 48,702), trained by
`train_student.train_step` - the student's own step: masked MSE to the label + 0.5 x MSE to a
teacher column, fused AdamW (`make_optimizer`), foreach gradient clipping, deterministic algorithms on.
The coins sit side by side in one [T, 10 x 5] tensor and a batch is one time-major row gather
(`ml.windows.Windows`: index_select of the B x 96 rows); labels come from a strided view of the
target column. No per-sample loader.

What made it faster (issue 9; per-CPU-second rates at 1 thread, interleaved, machine under load ~8):
the time-major layout inside TSMixer (a time mixing is one [P, P] @ [P, B x C] product instead of a
transposed copy and a 40,960 x 12 product per block; the time projection reads the gathered
windows as [L, B x F] without a copy) 5.7k -> 8.3k windows/s; the row gather instead of indexing
the unfold view 4-10 ms -> 1.7-3 ms a batch; fused AdamW and foreach clipping 8.3k -> 8.8k. Same
parameters and outputs (max abs difference 0.0 against the batch-major version, same state_dict).
Round-to-round drift: per 50-step slices, every slow slice had CPU/wall well under 2 (1.2-1.3 at
2 threads), i.e. another process held a core; denormal flushing changed nothing.

The peer runs in its own venv ($PEER_VENV, default ~/.cache/peer-venv; create it with
`bash ../shared/peers/setup.sh`); without it the benchmark prints a SKIP line and times ours alone.
Another process may load the machine, so ours and the peer alternate (ours, peer, ours, peer ...) and
each round's ratio uses adjacent runs; the load average is printed before and after.

Target (issue 9): ours >= 3x TSMixerx's windows/s.
Run: .venv/bin/python benchmarks/student.py [--rounds 2] [--threads 2] [--no-peer]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from quant_assets.ml.train_student import make_optimizer, train_step
from quant_assets.ml.tsmixer import TSMixer, TSMixerConfig
from quant_assets.ml.windows import Windows

ROOT = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("QA_PEERS_DIR", ROOT.parent / "shared" / "peers"))
PEER_SCRIPT = PEERS / "neuralforecast_tsmixer.py"
SEED = 20240501  # the peer script's default
INPUT, HORIZON, N_VARS = 96, 12, 5
TEACHER_WEIGHT = 0.5  # StudentConfig's default


def make_series(n_series: int, n_steps: int, seed: int) -> np.ndarray:
    """[T, N, 5] float32: log close, ret_1, ret_12, volume, hl_range - the peer's `make_frame` draws, in order."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_steps, n_series, N_VARS), dtype=np.float32)
    for i in range(n_series):
        log_close = np.cumsum(rng.normal(0.0, 0.001, n_steps))
        ret_1 = np.diff(log_close, prepend=0.0)
        ret_12 = log_close - np.concatenate([np.zeros(12), log_close[:-12]])
        out[:, i, 0], out[:, i, 1], out[:, i, 2] = log_close, ret_1, ret_12
        out[:, i, 3] = rng.lognormal(0.0, 0.5, n_steps)
        out[:, i, 4] = np.abs(rng.normal(0.0, 0.001, n_steps))
    return out


class Bench:
    """Model, optimiser and the on-device tensors; `run(steps)` times that many training steps."""

    def __init__(self, series: np.ndarray, windows: int, seed: int):
        torch.manual_seed(seed)
        T, N, V = series.shape
        self.N, self.windows = N, windows
        # standardise each column on the whole series (a benchmark: no split), as the student's scaler does
        z = (series - series.mean(axis=0)) / series.std(axis=0)
        self.x = torch.from_numpy(np.ascontiguousarray(z.reshape(T, N * V)))  # one tensor, coins side by side
        self.win = Windows(self.x, INPUT)  # strided view: a batch is one gather
        target = torch.from_numpy(np.ascontiguousarray(z[:, :, 0].T))  # [N, T]
        self.label = target.unfold(1, HORIZON, 1)  # [N, T - H + 1, H]: steps t .. t + H - 1, a view
        # a stand-in teacher column for the distillation term: the label plus seeded noise
        gen = torch.Generator().manual_seed(seed)
        self.teacher = target + 0.5 * torch.randn(target.shape, generator=gen)
        self.teacher_view = self.teacher.unfold(1, HORIZON, 1)
        # a window ending at row p is scored on rows p + 1 .. p + H
        self.ends = torch.arange(INPUT - 1, T - HORIZON)
        self.model = TSMixer(TSMixerConfig(n_vars=V, n_series=N, n_targets=HORIZON))
        self.opt = make_optimizer(self.model, 1e-3, 1e-4)  # the student's optimiser (fused AdamW)
        self.gen = torch.Generator().manual_seed(seed)
        self.autocast = nullcontext()  # train_student's autocast is off on CPU

    def step(self) -> float:
        e = self.ends[torch.randint(len(self.ends), (self.windows,), generator=self.gen)]
        xb = self.win(e).unflatten(2, (self.N, N_VARS))  # [B, L, N, V], still the gathered copy's view
        yb = self.label[:, e + 1].transpose(0, 1)  # [B, N, H]
        tb = self.teacher_view[:, e + 1].transpose(0, 1)
        n_label = torch.isfinite(yb).sum().clamp(min=1)
        n_teacher = torch.isfinite(tb).sum().clamp(min=1)
        loss = train_step(self.model, self.opt, xb, None, yb, tb, n_label, n_teacher, TEACHER_WEIGHT, 1, 1.0,
                          self.autocast)  # fmt: skip
        return float(loss.detach())

    def run(self, steps: int, warmup: int) -> dict:
        """As the peer: the rate from the start of step `warmup` to the end of the last step."""
        t0 = time.perf_counter()
        for _ in range(warmup):
            self.step()
        t1 = time.perf_counter()
        for _ in range(steps - warmup):
            last = self.step()
        t2 = time.perf_counter()
        rate = self.windows * (steps - warmup) / (t2 - t1)
        return {"windows_per_second": round(rate, 1), "seconds": round(t2 - t0, 2), "loss": round(last, 5)}


def run_peer(args: argparse.Namespace) -> tuple[dict | None, str]:
    venv = Path(os.environ.get("PEER_VENV", Path.home() / ".cache" / "peer-venv"))
    python = venv / "bin" / "python"
    if not PEER_SCRIPT.exists():
        return None, f"SKIP TSMixerx: no peer script at {PEER_SCRIPT} (set QA_PEERS_DIR to ../shared/peers)"
    if not python.exists():
        return None, f"SKIP TSMixerx: no peer venv at {venv} (create it: bash {PEERS / 'setup.sh'})"
    # the peer's README: its venv's BLAS must not see this machine's OpenBLAS overrides
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    cmd = [str(python), str(PEER_SCRIPT), "--series", str(args.coins), "--steps", str(args.series_len),
           "--max-steps", str(args.steps), "--windows", str(args.windows), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--seed", str(SEED)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=PEERS, timeout=1800)
    if r.returncode != 0:
        return None, f"SKIP TSMixerx: peer script failed: {r.stderr.strip()[-500:]}"
    return json.loads(r.stdout.strip().splitlines()[-1]), ""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coins", type=int, default=10)
    ap.add_argument("--series-len", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--windows", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="torch threads, ours and the peer's")
    ap.add_argument("--rounds", type=int, default=2, help="ours then the peer, this many times")
    ap.add_argument("--no-peer", action="store_true", help="do not run TSMixerx")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # both as train_student
    torch.utils.deterministic.fill_uninitialized_memory = False
    load_before = load()
    print(
        f"torch {torch.__version__}, {args.threads} threads (ours and the peer's); load average {load_before}"
    )
    t0 = time.perf_counter()
    bench = Bench(make_series(args.coins, args.series_len, SEED), args.windows, SEED)
    print(f"inputs: {args.coins} coins x {args.series_len:,} steps x {N_VARS} variables, built in "
          f"{time.perf_counter() - t0:.1f} s; TSMixer {bench.model.n_params():,} parameters; "
          f"window {INPUT} -> {HORIZON}, {args.windows} windows a step, {args.steps} steps "
          f"({args.warmup} untimed)")  # fmt: skip

    ours, peers, skip = [], [], "SKIP TSMixerx: --no-peer" if args.no_peer else ""
    for k in range(args.rounds):
        o = bench.run(args.steps, args.warmup)
        ours.append(o)
        print(f"round {k + 1}: ours {o['windows_per_second']:,.0f} windows/s "
              f"({o['windows_per_second'] * args.coins:,.0f} series-windows/s), loss {o['loss']}, "
              f"load {load()}")  # fmt: skip
        if not skip:
            p, skip = run_peer(args)
            if p:
                peers.append(p)
                print(f"round {k + 1}: TSMixerx {p['windows_per_second']:,.0f} windows/s "
                      f"({p['params']:,} parameters, fit {p['seconds']:.1f} s), load {load()} -> "
                      f"{o['windows_per_second'] / p['windows_per_second']:.2f}x")  # fmt: skip
    if skip:
        print(skip)

    rate = statistics.median(o["windows_per_second"] for o in ours)
    ratios = [o["windows_per_second"] / p["windows_per_second"] for o, p in zip(ours, peers, strict=False)]
    ratio = statistics.median(ratios) if ratios else None
    peer_rate = statistics.median(p["windows_per_second"] for p in peers) if peers else None
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ours: median {rate:,.0f} windows/s over {args.rounds} rounds; peak RSS {peak_rss_mb:,.0f} MB")
    if ratio is not None:
        print(f"speed: ours {rate:,.0f} vs TSMixerx {peer_rate:,.0f} windows/s -> {ratio:.2f}x "
              f"(median of per-round ratios {', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    print(">= 3x TSMixerx: " + ("skipped" if ratio is None else ("yes" if ratio >= 3 else "NO")))
    print(f"load average after: {load()}")
    print(json.dumps({
        "benchmark": "student",
        "threads": args.threads,
        "params": bench.model.n_params(),
        "windows_per_step": args.windows,
        "windows_per_second": rate,
        "series_windows_per_second": round(rate * args.coins, 1),
        "rounds": [o["windows_per_second"] for o in ours],
        "tsmixerx_windows_per_second": peer_rate,
        "tsmixerx_rounds": [p["windows_per_second"] for p in peers],
        "tsmixerx_params": peers[0]["params"] if peers else None,
        "speedup_vs_tsmixerx": None if ratio is None else round(ratio, 2),
        "load_average_before": load_before,
        "load_average_after": load(),
        "peak_rss_mb": round(peak_rss_mb, 1),
    }))  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
