"""Benchmark: one shared student with a coin embedding vs one student per coin, same budget, OOS IC.

The README's choice for `liquid_student` rests on this. Data: the simulator (signal_strength 1, the
planted signal) through the real feature layer (`build_matrix`, as the assets chain it) for 10 coins;
the training frame of a cut-off (`ml.training_frame`, production window of --days, the purge), and the
--oos-days after the cut-off as the out-of-sample period. Both arms use `ml.train_student.train` on
`LIQUID_FEATURE_KEYS` with the student's defaults (TSMixer input 96, the same model size), label MSE
only (teacher_weight 0: no teacher is fitted here, so the comparison is about sharing, not distilling):
  - shared: one model over all coins' windows, coin embedding, --steps steps of --batch windows;
  - per coin: 10 models, each on its coin's rows, no embedding, --steps / 10 steps each (the same total
    windows seen and about the same compute);
  - per coin x10 (--full-per-coin): the same 10 models with --steps steps each (10 times the budget), so
    that a gap between the first two is not only each per-coin model's smaller share of the steps.
OOS: predictions for every row after the cut-off (a window may reach back over the cut-off: features
only), pooled over coins; the IC is Pearson, with a day block-bootstrap interval
(`validation.day_bootstrap_ic`, 5-day blocks: every coin of a day resampled together).

Run: .venv/bin/python benchmarks/student_per_coin.py [--days 120] [--oos-days 30] [--steps 1000] [--seeds 1]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' build_matrix

from quant_assets.features.keys import LIQUID_FEATURE_KEYS  # noqa: E402
from quant_assets.features.keys import LOOKBACK as FEATURE_LOOKBACK  # noqa: E402
from quant_assets.ml.train_student import StudentConfig, StudentInputs, predict, save_npz, train  # noqa: E402
from quant_assets.ml.training_frame import ProductionWindow, training_frame  # noqa: E402
from quant_assets.schemas import RAW_TABLES  # noqa: E402
from quant_assets.sources.synthetic import MarketSimulator  # noqa: E402
from quant_assets.universe import SYMBOLS  # noqa: E402
from quant_assets.validation import day_bootstrap_ic  # noqa: E402
from quant_assets_tests.features.features_rawdata import build_matrix  # noqa: E402

CUTOFF = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
HORIZONS = ("1h", "4h")
LABELS = [f"label_{h}" for h in HORIZONS]


def inputs_of(frame: pl.DataFrame) -> StudentInputs:
    return StudentInputs(
        symbol=frame["symbol"].to_numpy().astype(str),
        ts_ms=frame["ts"].dt.epoch("ms").to_numpy().astype(np.int64),
        x=frame.select(LIQUID_FEATURE_KEYS).to_numpy().astype(np.float32),
        feature_names=tuple(LIQUID_FEATURE_KEYS),
        y=frame.select(LABELS).to_numpy().astype(np.float32),
        label_names=tuple(LABELS),
        teacher=None,
    )


def fit_predict(train_rows: pl.DataFrame, oos_rows: pl.DataFrame, steps: int, args, seed: int, tmp: Path,
                name: str, coin_embedding: bool) -> np.ndarray:  # fmt: skip
    """Train one student on train_rows and return its predictions [rows, 2] for oos_rows."""
    d = tmp / name
    d.mkdir()
    save_npz(inputs_of(train_rows), d / "in.npz")
    cfg = StudentConfig(inputs=str(d / "in.npz"), out_dir=str(d), teacher_columns=None, teacher_weight=0.0,
                        coin_embedding=coin_embedding, steps=steps, global_batch=args.batch, seed=seed,
                        eval_every=10**9, threads=args.threads)  # fmt: skip
    train(cfg)
    return predict(d, inputs_of(oos_rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=120, help="training window (days before the cut-off)")
    ap.add_argument("--oos-days", type=int, default=30)
    ap.add_argument(
        "--steps", type=int, default=1000, help="the shared model's steps; per coin: steps / coins"
    )
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--coins", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=1, help="training seeds per arm (the data is fixed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--full-per-coin", action="store_true", help="also per-coin models with --steps steps each"
    )
    args = ap.parse_args()
    coins = SYMBOLS[: args.coins]
    start = (CUTOFF - dt.timedelta(days=args.days)).date()
    oos_end = CUTOFF + dt.timedelta(days=args.oos_days)

    t0 = time.perf_counter()
    sim = MarketSimulator(seed=7, signal_strength=1.0)
    raw = sim.fetch([n for n in RAW_TABLES if n != "entities"], start - FEATURE_LOOKBACK,
                    (oos_end + dt.timedelta(days=1)).date(), FAR)  # fmt: skip
    raw = {n: df.filter(pl.col("symbol").is_in(coins)) if n not in ("events", "event_links") else df
           for n, df in raw.items()}  # fmt: skip
    matrix = build_matrix(raw)
    del raw
    frame = training_frame(matrix, CUTOFF, ProductionWindow(args.days), LIQUID_FEATURE_KEYS, HORIZONS).frame
    # OOS rows: from 95 steps before the cut-off (window history: features, known at prediction time) on
    history = CUTOFF - dt.timedelta(minutes=5 * 95)
    oos_all = matrix.filter((pl.col("ts") >= history) & (pl.col("ts") < oos_end)).sort("symbol", "ts")
    del matrix
    oos_mask = (oos_all["ts"] >= CUTOFF).to_numpy()
    print(f"data: {args.coins} coins, {frame.height:,} training rows ({args.days} days before {CUTOFF.date()}), "
          f"{int(oos_mask.sum()):,} OOS rows ({args.oos_days} days), built in {time.perf_counter() - t0:.1f} s")  # fmt: skip

    per_steps = max(1, args.steps // args.coins)
    results: dict[str, dict] = {}
    arms = {
        "shared": None,
        "per_coin": per_steps,
        **({"per_coin_x10": args.steps} if args.full_per_coin else {}),
    }
    preds: dict[str, list[np.ndarray]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for arm, steps in arms.items():
                t = time.perf_counter()
                if steps is None:
                    preds[arm].append(
                        fit_predict(frame, oos_all, args.steps, args, seed, Path(tmp), f"{arm}{seed}", True)
                    )
                    print(f"seed {seed}: {arm}: {args.steps} steps in {time.perf_counter() - t:.0f} s")
                    continue
                p = np.full((oos_all.height, 2), np.nan, dtype=np.float32)
                for c in coins:
                    rows = (oos_all["symbol"] == c).to_numpy()
                    p[rows] = fit_predict(frame.filter(pl.col("symbol") == c), oos_all.filter(pl.col("symbol") == c),
                                          steps, args, seed, Path(tmp), f"{arm}{c}{seed}", False)  # fmt: skip
                preds[arm].append(p)
                print(f"seed {seed}: {arm}: {args.coins} x {steps} steps in {time.perf_counter() - t:.0f} s")

    days = oos_all["ts"].dt.date().to_numpy()[oos_mask]
    for arm, ps in preds.items():
        results[arm] = {}
        for j, h in enumerate(HORIZONS):
            y = oos_all[LABELS[j]].to_numpy()[oos_mask]
            ics = [day_bootstrap_ic(p[oos_mask, j], y, days, method="pearson", block=5, seed=0) for p in ps]
            ens = day_bootstrap_ic(
                np.mean(ps, axis=0)[oos_mask, j], y, days, method="pearson", block=5, seed=0
            )
            results[arm][h] = {
                "ic_per_seed": [round(i.ic, 4) for i in ics],
                "ic": round(float(np.mean([i.ic for i in ics])), 4),
                "low": round(ics[0].low, 4),
                "high": round(ics[0].high, 4),
                "seed_mean_ic": round(ens.ic, 4),
                "n": ics[0].n,
            }
            r = results[arm][h]
            print(f"{arm:>12} {h}: OOS IC {r['ic']:+.4f} (seeds {r['ic_per_seed']}; seed 0 day-bootstrap 95% "
                  f"[{r['low']:+.4f}, {r['high']:+.4f}], n {r['n']:,})")  # fmt: skip
    print(json.dumps({"benchmark": "student_per_coin", "coins": args.coins, "days": args.days,
                      "oos_days": args.oos_days, "steps": args.steps, "per_coin_steps": per_steps,
                      "batch": args.batch, "seeds": args.seeds, "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
