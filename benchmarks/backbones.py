"""Benchmark: the backbone suite on one cut-off's shape, and PatchTST / iTransformer beside neuralforecast's.

Part 1, the suite (ours only). One cut-off of the production shape: 10 coins x 420 days of 5-minute
rows (120,960 a coin) x the student's 77 feature columns (LIQUID_FEATURE_KEYS: market + exogenous),
two labels, lookback 96, seeded random data. Per backbone, with the asset's default sizes and batch
(256 windows a step): the fold (grid, split, scaler on training rows: ml.train_backbone.fold_data,
shared), training (`train_backbone.train_step`, the asset's own step, timed over `--suite-steps` steps
and scaled to the asset's default 200 steps: stated as such), and prediction of one month (8,640
windows a coin, timed on `--predict-days` days and scaled to 30). The window ridge fits in closed form;
its time is measured on `--ridge-days` days of training windows a coin and scaled by the row count
(accumulating the normal equations is linear in rows; the solve, a constant, is included once).

Part 2, throughput against neuralforecast 3.3.0 (peer venv, $PEER_VENV, default ~/.cache/peer-venv;
without it: SKIP lines and ours alone). neuralforecast's PatchTST and iTransformer take no exogenous
history here, so both sides run the endogenous-only configuration on the same shapes: 10 series of
the cut-off's length (seeded random walks), input 96, 12 outputs per series, 256 windows a step,
MSE, AdamW on ours / Adam on theirs, dropout 0, the same sizes on both sides (hidden 32, 4 heads,
2 layers, feed-forward 64; PatchTST patches 16 every 8) and the same thread count (2 unless
--threads). A PatchTST window is one series' 96 steps (both are channel-independent); an
iTransformer window holds all 10 series (both embed each series as a token), ours reading them
through its target token into 10 x 12 outputs. The peer's rate is timed by a Lightning callback
from the start of step --warmup to the end of the last step, ours the same way.

The machine is shared: ours and the peer alternate per round (ours, peer, ours, peer), each round's
ratio uses adjacent runs, and the load average is printed with every figure.
Target (issue 10): each of ours at least as fast per window as its neuralforecast counterpart.
Run: .venv/bin/python benchmarks/backbones.py [--rounds 2] [--threads 2] [--no-peer] [--no-suite]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from quant_assets.features.keys import LIQUID_FEATURE_KEYS
from quant_assets.ml.itransformer import ITransformer, ITransformerConfig
from quant_assets.ml.patchtst import PatchTST, PatchTSTConfig
from quant_assets.ml.train_backbone import build_model, fold_data, predict_windows, train_step
from quant_assets.ml.train_student import StudentInputs
from quant_assets.ml.window_ridge import WindowRidge, WindowRidgeConfig
from quant_assets.ml.windows import Windows

SEED = 20240501
INPUT, HORIZON, COINS, DAYS = 96, 12, 10, 420
BARS_PER_DAY = 288
ASSET_STEPS = 200  # BackboneSuiteConfig.steps
SIZES = {"d_model": 32, "n_heads": 4, "n_layers": 2, "ff_dim": 64}
PEER_SCRIPT = r"""
import argparse, json, logging, time, warnings
import numpy as np, pandas as pd, pytorch_lightning as pl, torch, neuralforecast
from neuralforecast import NeuralForecast
from neuralforecast.losses.pytorch import MSE
from neuralforecast.models import PatchTST, iTransformer

class StepClock(pl.Callback):
    def __init__(self):
        self.starts, self.end = [], None
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()

ap = argparse.ArgumentParser()
for a in ("--model", "--series", "--steps", "--max-steps", "--windows", "--warmup", "--threads", "--seed"):
    ap.add_argument(a, type=str if a == "--model" else int)
args = ap.parse_args()
torch.set_num_threads(args.threads)
warnings.filterwarnings("ignore")
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
rng = np.random.default_rng(args.seed)
ds = pd.date_range("2021-01-01", periods=args.steps, freq="5min")
df = pd.concat([pd.DataFrame({"unique_id": f"s{i}", "ds": ds, "y": np.cumsum(rng.normal(0.0, 0.001, args.steps))})
                for i in range(args.series)], ignore_index=True)
common = dict(h=12, input_size=96, max_steps=args.max_steps, windows_batch_size=args.windows, random_seed=args.seed,
              loss=MSE(), accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=[StepClock()])
if args.model == "patchtst":
    model = PatchTST(encoder_layers=2, n_heads=4, hidden_size=32, linear_hidden_size=64, patch_len=16, stride=8,
                     dropout=0.0, fc_dropout=0.0, batch_size=args.series, **common)
else:
    model = iTransformer(n_series=args.series, hidden_size=32, n_heads=4, e_layers=2, d_ff=64, dropout=0.0,
                         batch_size=args.series, **common)
nf = NeuralForecast(models=[model], freq="5min")
t0 = time.perf_counter()
nf.fit(df, val_size=0)
fitted = nf.models[0]
clock = next(cb for cb in fitted.trainer_kwargs["callbacks"] if isinstance(cb, StepClock))
timed = len(clock.starts) - args.warmup
print(json.dumps({"peer": f"neuralforecast-{args.model}", "version": neuralforecast.__version__,
                  "windows_per_second": round(args.windows * timed / (clock.end - clock.starts[args.warmup]), 1),
                  "seconds": round(time.perf_counter() - t0, 2), "steps": len(clock.starts),
                  "params": sum(p.numel() for p in fitted.parameters())}))
"""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- part 1: the suite on one cut-off's shape ---------------------------------------------------------


def suite_inputs(days: int, seed: int) -> StudentInputs:
    """10 coins x days of 5m rows x 77 features (AR(1) columns), two labels, on one 5m clock."""
    rng = np.random.default_rng(seed)
    n, f = days * BARS_PER_DAY, len(LIQUID_FEATURE_KEYS)
    t0 = 1_704_067_200_000
    xs, ys = [], []
    for _ in range(COINS):
        x = rng.standard_normal((n, f), dtype=np.float32)
        x[1:] += 0.5 * x[:-1]  # some persistence, as features have
        xs.append(x)
        y = (0.01 * x[:, :3].sum(1, keepdims=True) + rng.standard_normal((n, 2), dtype=np.float32)) * 1e-3
        ys.append(y.astype(np.float32))
    symbol = np.repeat(np.array([f"C{k}USDT" for k in range(COINS)]), n)
    ts = np.tile(t0 + 300_000 * np.arange(n, dtype=np.int64), COINS)
    return StudentInputs(symbol, ts, np.concatenate(xs), tuple(LIQUID_FEATURE_KEYS), np.concatenate(ys),
                         ("label_1h", "label_4h"), None)  # fmt: skip


def run_suite(args) -> dict:
    t0 = time.perf_counter()
    inputs = suite_inputs(args.days, SEED)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    fold = fold_data(inputs, INPUT, 0.1, 49)
    t_fold = time.perf_counter() - t0
    z = torch.from_numpy(fold.scaler.apply(fold.grid.x))
    windows = Windows(z, INPUT)
    y = torch.from_numpy(fold.grid.y / fold.y_scale)
    coin = torch.from_numpy(fold.grid.coin)
    train_ends = torch.from_numpy(fold.split.train_ends)
    n_pred = COINS * args.predict_days * BARS_PER_DAY
    pred_ends = train_ends[
        torch.randperm(len(train_ends), generator=torch.Generator().manual_seed(1))[:n_pred]
    ]
    print(f"suite inputs: {COINS} coins x {args.days} days = {len(inputs.symbol):,} rows x "
          f"{len(LIQUID_FEATURE_KEYS)} features (made in {t_data:.1f} s); fold {t_fold:.1f} s: "
          f"{len(train_ends):,} training windows of {INPUT}, load {load()}")  # fmt: skip
    out = {"rows": len(inputs.symbol), "features": len(LIQUID_FEATURE_KEYS), "fold_seconds": round(t_fold, 1)}

    # the window ridge: closed form, timed on a subset of the training windows and scaled by rows
    n_sub = min(len(train_ends), COINS * args.ridge_days * BARS_PER_DAY)
    sub = np.sort(fold.split.train_ends[np.random.default_rng(2).permutation(len(train_ends))[:n_sub]])
    t0 = time.perf_counter()
    ridge = WindowRidge.fit(WindowRidgeConfig(input_len=INPUT), windows, sub, fold.grid.y / fold.y_scale)
    t_fit = (time.perf_counter() - t0) * len(train_ends) / n_sub
    t0 = time.perf_counter()
    ridge.predict(windows, pred_ends.numpy())
    t_pred = (time.perf_counter() - t0) * 30 / args.predict_days
    print(f"  ridge: fit {t_fit:.1f} s on {len(train_ends):,} windows (timed on {n_sub:,}), {ridge.weights.shape[0]} inputs, "
          f"a month's prediction {t_pred:.1f} s, load {load()}")  # fmt: skip
    out["ridge"] = {"fit_seconds": round(t_fit, 1), "month_predict_seconds": round(t_pred, 1),
                    "n_params": int(ridge.weights.size)}  # fmt: skip

    gen = torch.Generator().manual_seed(SEED)
    for name in ("itransformer", "patchtst", "tft"):
        torch.manual_seed(SEED)
        model, _ = build_model(name, z.shape[1], INPUT, 2, COINS, {})  # the asset's default sizes
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

        def step(model=model, opt=opt):
            e = train_ends[torch.randint(len(train_ends), (args.windows,), generator=gen)]
            yb = y[e]
            return train_step(
                model, opt, windows(e), coin[e], yb, torch.isfinite(yb).sum(), 1, 1.0, nullcontext()
            )

        for _ in range(args.warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(args.suite_steps):
            step()
        per_step = (time.perf_counter() - t0) / args.suite_steps
        t0 = time.perf_counter()
        predict_windows(model, windows, coin, pred_ends)
        t_pred = (time.perf_counter() - t0) * 30 / args.predict_days
        n_params = sum(p.numel() for p in model.parameters())
        print(f"  {name}: {n_params:,} parameters, {per_step * 1000:.0f} ms a step of {args.windows} windows "
              f"({args.windows / per_step:,.0f} windows/s) -> {ASSET_STEPS} steps {per_step * ASSET_STEPS:.0f} s "
              f"(timed over {args.suite_steps}), a month's prediction {t_pred:.0f} s, load {load()}")  # fmt: skip
        out[name] = {"n_params": n_params, "windows_per_second": round(args.windows / per_step, 1),
                     "train_seconds_200_steps": round(per_step * ASSET_STEPS, 1), "month_predict_seconds": round(t_pred, 1)}  # fmt: skip
    return out


# --- part 2: endogenous-only throughput against neuralforecast ---------------------------------------


class Endogenous:
    """10 random-walk series, standardised, one [T, 10] tensor; batches are gathers of strided views."""

    def __init__(self, name: str, n_steps: int, windows: int, seed: int):
        rng = np.random.default_rng(seed)
        s = np.stack([np.cumsum(rng.normal(0.0, 0.001, n_steps)) for _ in range(COINS)], 1).astype(np.float32)
        s = (s - s.mean(0)) / s.std(0)
        self.x = torch.from_numpy(np.ascontiguousarray(s))  # [T, N]
        self.win = Windows(self.x, INPUT)  # [B, L, N] gathers
        self.series = self.x.T.contiguous().unfold(1, INPUT, 1)  # [N, T - L + 1, L]: one series' windows
        self.future = self.x.T.contiguous().unfold(1, HORIZON, 1)  # [N, T - H + 1, H]
        self.ends = torch.arange(INPUT - 1, n_steps - HORIZON)
        self.name, self.windows = name, windows
        torch.manual_seed(seed)
        if name == "patchtst":
            self.model = PatchTST(PatchTSTConfig(n_vars=1, input_len=INPUT, n_targets=HORIZON, **SIZES))
        else:
            self.model = ITransformer(
                ITransformerConfig(n_vars=COINS, input_len=INPUT, n_targets=HORIZON * COINS, **SIZES)
            )
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(seed)

    def step(self) -> float:
        e = self.ends[torch.randint(len(self.ends), (self.windows,), generator=self.gen)]
        if self.name == "patchtst":  # one series' window each
            k = torch.randint(COINS, (self.windows,), generator=self.gen)
            xb = self.series[k, e - (INPUT - 1)].unsqueeze(-1)  # [B, L, 1]
            yb = self.future[k, e + 1]  # [B, H]
        else:  # all series of one time span
            xb = self.win(e)  # [B, L, N]
            yb = self.future[:, e + 1].permute(1, 0, 2).flatten(1)  # [B, N * H]
        loss = train_step(self.model, self.opt, xb, None, yb, torch.tensor(yb.numel()), 1, 0.0, nullcontext())
        return float(loss.detach())

    def run(self, steps: int, warmup: int) -> dict:
        for _ in range(warmup):
            self.step()
        t1 = time.perf_counter()
        for _ in range(steps - warmup):
            last = self.step()
        rate = self.windows * (steps - warmup) / (time.perf_counter() - t1)
        return {"windows_per_second": round(rate, 1), "loss": round(last, 4)}


def run_peer(name: str, args, script: Path) -> tuple[dict | None, str]:
    venv = Path(os.environ.get("PEER_VENV", Path.home() / ".cache" / "peer-venv"))
    python = venv / "bin" / "python"
    if not python.exists():
        return None, f"SKIP neuralforecast {name}: no peer venv at {venv}"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    cmd = [str(python), str(script), "--model", name, "--series", str(COINS), "--steps", str(args.days * BARS_PER_DAY),
           "--max-steps", str(args.steps), "--windows", str(args.windows), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--seed", str(SEED)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        return None, f"SKIP neuralforecast {name}: peer failed: {r.stderr.strip()[-500:]}"
    return json.loads(r.stdout.strip().splitlines()[-1]), ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=DAYS)
    ap.add_argument("--windows", type=int, default=256)
    ap.add_argument("--steps", type=int, default=60, help="training steps per throughput run (both sides)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument(
        "--suite-steps", type=int, default=3, help="timed steps per suite backbone (scaled to 200)"
    )
    ap.add_argument("--ridge-days", type=int, default=30, help="days a coin of windows the ridge is timed on")
    ap.add_argument(
        "--predict-days", type=int, default=1, help="days of a month's prediction timed (scaled to 30)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-suite", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # as train_backbone
    torch.utils.deterministic.fill_uninitialized_memory = False
    load_before = load()
    print(
        f"torch {torch.__version__}, {args.threads} threads (ours and the peer's); load average {load_before}"
    )
    result: dict = {"benchmark": "backbones", "threads": args.threads, "load_average_before": load_before}
    if not args.no_suite:
        result["suite"] = run_suite(args)

    print(f"throughput, endogenous only: {COINS} series x {args.days * BARS_PER_DAY:,} steps, input {INPUT} -> "
          f"{HORIZON}, {args.windows} windows a step, {args.steps} steps ({args.warmup} untimed)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "peer_backbones.py"
        script.write_text(PEER_SCRIPT)
        for name in ("patchtst", "itransformer"):
            bench = Endogenous(name, args.days * BARS_PER_DAY, args.windows, SEED)
            ours, peers, skip = [], [], "SKIP: --no-peer" if args.no_peer else ""
            for k in range(args.rounds):
                o = bench.run(args.steps, args.warmup)
                ours.append(o["windows_per_second"])
                print(f"  {name} round {k + 1}: ours {o['windows_per_second']:,.0f} windows/s "
                      f"({sum(p.numel() for p in bench.model.parameters()):,} parameters), load {load()}")  # fmt: skip
                if not skip:
                    p, skip = run_peer(name, args, script)
                    if p:
                        peers.append(p)
                        print(f"  {name} round {k + 1}: neuralforecast {p['windows_per_second']:,.0f} windows/s "
                              f"({p['params']:,} parameters, fit {p['seconds']:.1f} s), load {load()} -> "
                              f"{o['windows_per_second'] / p['windows_per_second']:.2f}x")  # fmt: skip
            if skip:
                print(f"  {skip}")
            ratios = [o / p["windows_per_second"] for o, p in zip(ours, peers, strict=False)]
            ratio = statistics.median(ratios) if ratios else None
            print(f"  {name}: ours median {statistics.median(ours):,.0f} windows/s; "
                  + ("no peer" if ratio is None else f"{ratio:.2f}x neuralforecast "
                     f"(>= 1x: {'yes' if ratio >= 1 else 'NO'})"))  # fmt: skip
            result[name] = {"ours_windows_per_second": statistics.median(ours), "ours_rounds": ours,
                            "peer_windows_per_second": statistics.median([p["windows_per_second"] for p in peers]) if peers else None,
                            "peer_rounds": [p["windows_per_second"] for p in peers],
                            "peer_params": peers[0]["params"] if peers else None,
                            "ours_params": sum(p.numel() for p in bench.model.parameters()),
                            "speedup": None if ratio is None else round(ratio, 2)}  # fmt: skip
    result["load_average_after"] = load()
    print(f"load average after: {result['load_average_after']}")
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
