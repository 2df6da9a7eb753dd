"""Gate verdicts of one candidate (one model of one coin and horizon) from its OOS walk-forward.

Input `oos`: one row per OOS prediction, columns symbol, ts (Datetime UTC), window (int, the
walk-forward window the row was predicted in, increasing with time), prediction, target (the GROSS
forward return over the horizon: `fwd_ret_1h` / `fwd_ret_4h`, not the label, which nets an estimated
cost that the published book depth makes partly predictable, an IC of about +0.017 at no signal),
close and optionally cost_depth_notional (the backtest's price and book depth). A window is one
walk-forward fold of the teacher's out-of-fold record or the partition's own month: pooling them
gives the IC an interval that reflects more than one month (per-seed IC spread is wider than one
month's day-bootstrap interval).

Gates (`GATES`; each a `GateResult` with value, threshold, verdict and a reason a user reads):
- `oos_ic`: pooled Pearson IC of prediction and target with a whole-day block-bootstrap interval
  (`validation.day_bootstrap_ic`: every coin of a day resampled together); passes when the interval's
  lower end is above `ic_low_min`. Pearson, not rank: under a martingale simple returns are skewed
  and the rank IC of a volatility-like forecast is negative by construction (teacher's docstring).
- `hit_rate`: share of non-zero predictions whose sign matches the target's; above `hit_rate_min`.
- `pnl_after_cost`: after-cost total return over the scored walk-forward windows (every window but
  the first). Window k is traded with the entry threshold calibrated on windows < k only
  (`calibration.walk_forward_calibrations`), so no threshold is chosen with the rows it is scored on.
  An always-in-market 1h strategy loses to costs; the threshold is what makes a real signal pay.
- `beats_baseline`: scored windows where the candidate's after-cost PnL is above the ridge
  baseline's (the baseline traded the same way, with its own calibrated thresholds); passes with at
  least `min_improved_wf_windows`. The baseline itself never passes it.
- `readiness`: the readiness audit of the training window passed (for the candidate's coin).
- `backbones`: every model kind in `required_backbones` was trained in the partition.

A gate that cannot be computed (fewer OOS rows than `min_oos_rows`, fewer than 10 days, one window
only, no baseline, no audit) fails, and its reason says what it had and what it needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from quant_assets.gates.calibration import WINDOW, backtest, calibrate_entry, walk_forward_calibrations
from quant_assets.gates.config import GateConfig
from quant_assets.validation.bootstrap import day_bootstrap_ic
from quant_assets.validation.metrics import hit_rate, rank_information_coefficient

OOS_COLUMNS = ("symbol", "ts", WINDOW, "prediction", "target", "close")
GATES = ("oos_ic", "hit_rate", "pnl_after_cost", "beats_baseline", "readiness", "backbones")
# What a failure means, for the asset checks and the README.
GATE_MEANING = {
    "oos_ic": "the OOS IC's whole-day bootstrap interval reaches down to zero: the model's predictions "
    "are not told from noise over its walk-forward (or there are too few OOS rows to tell)",
    "hit_rate": "the model's signs agree with the gross forward return no more often than a coin flip",
    "pnl_after_cost": "traded with entry thresholds calibrated on earlier windows only, the model loses "
    "money after fees, slippage, impact and funding over the walk-forward",
    "beats_baseline": "the model does not beat the ridge baseline after cost in enough walk-forward "
    "windows: its complexity buys nothing",
    "readiness": "the raw data of the training window was not complete (readiness audit), or never audited",
    "backbones": "a model kind the configuration requires was not trained for this partition",
}


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    threshold: float | None
    passed: bool
    reason: str

    def as_dict(self) -> dict:
        d = asdict(self)
        if d["value"] is not None and not math.isfinite(d["value"]):
            d["value"] = None  # JSON has no NaN
        return d


@dataclass(frozen=True)
class WalkForwardPnL:
    """After-cost result of trading the scored windows, each with its earlier-windows threshold."""

    pnl: float  # total return on capital over the scored windows
    per_window: dict[int, float]  # window -> its return on capital
    thresholds: dict[int, float]  # window -> the entry threshold it was traded with
    max_drawdown: float
    turnover_per_day: float
    n_trades: int


@dataclass(frozen=True)
class Evaluation:
    n_oos: int
    n_windows: int
    oos_ic: float
    oos_ic_lo: float
    oos_ic_hi: float
    oos_rank_ic: float
    hit_rate: float
    pnl_after_cost: float
    max_drawdown: float
    turnover_per_day: float
    improved_wf_windows: int
    entry_threshold: float
    confidence_min: float
    gates: tuple[GateResult, ...]
    per_window_pnl: dict[int, float] = field(default_factory=dict)
    walk_forward: WalkForwardPnL | None = None  # None when the after-cost gate was not computable

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def gate(self, name: str) -> GateResult:
        return next(g for g in self.gates if g.name == name)

    def gates_json(self) -> str:
        return json.dumps([g.as_dict() for g in self.gates], sort_keys=True)

    def metrics(self) -> dict:
        """The candidate row's metric columns."""
        keys = ("n_oos", "oos_ic", "oos_ic_lo", "oos_ic_hi", "oos_rank_ic", "hit_rate", "pnl_after_cost",
                "max_drawdown", "turnover_per_day", "improved_wf_windows", "entry_threshold", "confidence_min")  # fmt: skip
        return {k: getattr(self, k) for k in keys}


def _check_frame(oos: pl.DataFrame, what: str) -> pl.DataFrame:
    missing = [c for c in OOS_COLUMNS if c not in oos.columns]
    if missing:
        raise ValueError(f"gates: the {what} OOS frame lacks columns {missing} (has {oos.columns})")
    return oos.filter(pl.col("close").is_not_null() & pl.col("close").is_finite() & (pl.col("close") > 0))


def walk_forward_pnl(frame: pl.DataFrame, horizon: str, cfg: GateConfig, *, funding=None) -> WalkForwardPnL:
    """Trade windows 1..n, window k with the threshold calibrated on windows < k (module docstring)."""
    traded = frame.filter(pl.col("prediction").is_finite())
    cal = walk_forward_calibrations(traded, horizon, cfg.entry_quantiles, funding=funding)
    if not cal:
        raise ValueError("walk_forward_pnl: one walk-forward window only; nothing is left to score")
    thr = pl.DataFrame({WINDOW: list(cal), "thr": [c.threshold for c in cal.values()]},
                       schema={WINDOW: traded.schema[WINDOW], "thr": pl.Float64})  # fmt: skip
    scored = traded.join(thr, on=WINDOW, how="inner").with_columns(
        prediction=pl.when(pl.col("prediction").abs() >= pl.col("thr")).then("prediction").otherwise(0.0)
    )
    res = backtest(scored, horizon, funding=funding)
    capital = res.config.capital * len(res.panel.symbols)
    bars = res.bars().join(scored.select("symbol", "ts", WINDOW), on=["symbol", "ts"], how="left")
    by = bars.group_by(WINDOW).agg(pl.col("pnl").sum()).sort(WINDOW)
    per = {int(w): float(p) / capital for w, p in by.iter_rows()}
    m = res.metrics
    return WalkForwardPnL(float(m["total_return"]), per, {k: c.threshold for k, c in cal.items()},
                          float(m["max_drawdown"]), float(m["turnover_per_day"]), int(m["n_trades"]))  # fmt: skip


def _fail(name: str, reason: str, threshold: float | None = None, value: float | None = None) -> GateResult:
    return GateResult(name, value, threshold, False, reason)


def _readiness_gate(readiness: tuple[bool, str] | None, cfg: GateConfig) -> GateResult:
    if readiness is None:
        if cfg.require_readiness:
            return _fail("readiness", "no readiness audit of the training window: materialise the raw tables "
                         "it reads (and required_data_readiness)", 1.0, 0.0)  # fmt: skip
        return GateResult(
            "readiness", None, None, True, "not audited; not required (require_readiness=False)"
        )
    ok, detail = readiness
    if ok:
        return GateResult("readiness", 1.0, 1.0, True, detail)
    if not cfg.require_readiness:
        return GateResult("readiness", 0.0, None, True, f"not required (require_readiness=False): {detail}")
    return _fail("readiness", detail, 1.0, 0.0)


def _backbones_gate(trained: Iterable[str], cfg: GateConfig) -> GateResult:
    trained = set(trained)
    missing = [b for b in cfg.required_backbones if b not in trained]
    if missing:
        return _fail("backbones", f"required backbones not trained for this partition: {missing} "
                     f"(trained: {sorted(trained)})", 0.0, float(len(missing)))  # fmt: skip
    need = list(cfg.required_backbones)
    return GateResult(
        "backbones", 0.0, 0.0, True, f"required {need}: all trained" if need else "none required"
    )


def evaluate_candidate(
    oos: pl.DataFrame,
    horizon: str,
    cfg: GateConfig,
    *,
    baseline: pl.DataFrame | None = None,
    is_baseline: bool = False,
    funding: pl.DataFrame | None = None,
    readiness: tuple[bool, str] | None = None,
    trained: Iterable[str] = (),
    baseline_walk_forward: WalkForwardPnL | None = None,
) -> Evaluation:
    """Every gate of one candidate; `baseline` is the ridge's OOS frame on the same coin and windows.

    `baseline_walk_forward`: the baseline's `walk_forward_pnl` when already computed (its own
    evaluation's `walk_forward`), so it is not traded twice; otherwise it is computed from `baseline`.
    """
    frame = _check_frame(oos, "candidate").sort("symbol", "ts")
    scored = frame.filter(pl.col("prediction").is_finite() & pl.col("target").is_finite())
    n = scored.height
    windows = sorted(frame.filter(pl.col("prediction").is_finite())[WINDOW].unique().to_list())
    x, y = scored["prediction"].to_numpy(), scored["target"].to_numpy()
    too_few = (
        f"{n} OOS rows with a prediction and a gross forward return; needs {cfg.min_oos_rows} (min_oos_rows)"
    )
    nan = float("nan")
    gates: list[GateResult] = []

    # --- IC with its whole-day interval, hit rate
    ic = lo = hi = rank_ic = hr = nan
    if n < cfg.min_oos_rows:
        gates += [_fail("oos_ic", too_few, cfg.ic_low_min), _fail("hit_rate", too_few, cfg.hit_rate_min)]
    else:
        rank_ic = rank_information_coefficient(x, y)
        try:
            iv = day_bootstrap_ic(x, y, scored["ts"].dt.date().to_numpy(), method="pearson", block=cfg.ic_block_days,
                                  n_boot=cfg.n_boot, alpha=cfg.ic_alpha, seed=cfg.seed)  # fmt: skip
            ic, lo, hi = iv.ic, iv.low, iv.high
            ok = lo > cfg.ic_low_min
            gates.append(GateResult("oos_ic", lo, cfg.ic_low_min, ok,
                                    f"IC {ic:.4f}, {1 - cfg.ic_alpha:.0%} whole-day interval [{lo:.4f}, {hi:.4f}] "
                                    f"over {n} rows, {iv.n_units} days; lower end {'above' if ok else 'not above'} "
                                    f"{cfg.ic_low_min}"))  # fmt: skip
        except ValueError as exc:  # fewer than 10 days, or a constant prediction
            gates.append(_fail("oos_ic", f"not computable: {exc}", cfg.ic_low_min))
        hr = hit_rate(x, y)
        ok = math.isfinite(hr) and hr > cfg.hit_rate_min
        gates.append(GateResult("hit_rate", hr, cfg.hit_rate_min, ok,
                                f"hit rate {hr:.4f} over {int(np.count_nonzero(x))} non-zero predictions; "
                                f"needs > {cfg.hit_rate_min}"))  # fmt: skip

    # --- after cost, walk-forward, thresholds from earlier windows only
    pnl = dd = turnover = nan
    per_window: dict[int, float] = {}
    mine = None
    if n < cfg.min_oos_rows:
        gates.append(_fail("pnl_after_cost", too_few, cfg.pnl_min))
    elif len(windows) < 2:
        gates.append(_fail("pnl_after_cost", f"{len(windows)} walk-forward window(s) with predictions; needs 2 "
                           "(the first calibrates the entry threshold, later ones are scored)", cfg.pnl_min))  # fmt: skip
    else:
        mine = walk_forward_pnl(frame, horizon, cfg, funding=funding)
        pnl, dd, turnover, per_window = mine.pnl, mine.max_drawdown, mine.turnover_per_day, mine.per_window
        ok = pnl > cfg.pnl_min
        gates.append(GateResult("pnl_after_cost", pnl, cfg.pnl_min, ok,
                                f"after-cost return {pnl:+.4%} over windows {sorted(per_window)} "
                                f"({mine.n_trades} trades; thresholds from earlier windows: "
                                f"{ {k: round(v, 6) for k, v in mine.thresholds.items()} }); needs > {cfg.pnl_min}"))  # fmt: skip

    # --- better than the ridge baseline, window by window
    improved = 0
    need = float(cfg.min_improved_wf_windows)
    if is_baseline:
        gates.append(
            _fail("beats_baseline", "this is the ridge baseline itself: the yardstick, never promoted", need)
        )
    elif mine is None:
        gates.append(
            _fail("beats_baseline", "no after-cost walk-forward result to compare (see pnl_after_cost)", need)
        )
    elif baseline_walk_forward is None and (
        baseline is None or baseline.filter(pl.col("prediction").is_finite()).height == 0
    ):
        gates.append(_fail("beats_baseline", "no ridge baseline predictions for these windows", need))
    else:
        base = baseline_walk_forward or walk_forward_pnl(
            _check_frame(baseline, "baseline").sort("symbol", "ts"), horizon, cfg, funding=funding
        )
        pairs = {k: (v, base.per_window.get(k)) for k, v in per_window.items()}
        improved = sum(1 for v, b in pairs.values() if b is not None and v > b)
        shown = ", ".join(
            f"w{k}: {v:+.4%} vs {'-' if b is None else f'{b:+.4%}'}" for k, (v, b) in sorted(pairs.items())
        )
        gates.append(GateResult("beats_baseline", float(improved), need, improved >= need,
                                f"{improved} of {len(pairs)} scored windows beat the ridge after cost ({shown}); "
                                f"needs {cfg.min_improved_wf_windows} (min_improved_wf_windows)"))  # fmt: skip

    gates.append(_readiness_gate(readiness, cfg))
    gates.append(_backbones_gate(trained, cfg))

    # --- the thresholds paper trading uses: calibrated on every OOS window (all in its past then)
    entry = conf = nan
    if frame.filter(pl.col("prediction").is_finite()).height:
        c = calibrate_entry(frame, horizon, cfg.entry_quantiles, funding=funding)
        entry, conf = c.threshold, c.quantile
    return Evaluation(n, len(windows), ic, lo, hi, rank_ic, hr, pnl, dd, turnover, improved, entry, conf,
                      tuple(gates), per_window, mine)  # fmt: skip
