"""The gates on hand-made OOS frames: noise fails, a planted signal passes, calibration never looks ahead.

Frames: 2 coins of 5m bars over 40 days, cut into 4 walk-forward windows of 10 days; log returns
N(0, 0.4%) a bar, the target the gross 1h forward return close[t+12] / close[t] - 1, book depth
5M USD (a round trip costs ~13 bp). A planted prediction is target + 3 sd noise (IC ~0.32); noise is
independent of everything.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from quant_assets.gates import (
    GATES,
    GateConfig,
    calibrate_entry,
    evaluate_candidate,
    walk_forward_calibrations,
)
from quant_assets.gates.calibration import confidence

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DAYS, WINDOWS, BARS_PER_DAY = 40, 4, 288
COINS = ("BTCUSDT", "ETHUSDT")
READY = (True, "training window audited: ready")


def frame(seed: int, signal: float, baseline_signal: float | None = None) -> pl.DataFrame:
    """OOS frame with prediction = signal * target + noise (scaled to the target's sd)."""
    rng = np.random.default_rng(seed)
    n = DAYS * BARS_PER_DAY
    parts = []
    for k, sym in enumerate(COINS):
        close = 100.0 * (k + 1) * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
        target = np.full(n, np.nan)
        target[:-12] = close[12:] / close[:-12] - 1
        sd = np.nanstd(target)
        noise = rng.normal(0, 3 * sd, n)
        pred = signal * np.nan_to_num(target) + noise
        ts = pl.datetime_range(T0, T0 + dt.timedelta(minutes=5 * (n - 1)), "5m", time_zone="UTC", eager=True)
        part = pl.DataFrame({"symbol": sym, "ts": ts.dt.cast_time_unit("ms"), "window": np.arange(n) * WINDOWS // n,
                             "prediction": pred, "target": target, "close": close,
                             "cost_depth_notional": 5e6})  # fmt: skip
        if baseline_signal is not None:
            part = part.with_columns(
                baseline=baseline_signal * np.nan_to_num(target) + rng.normal(0, 3 * sd, n)
            )
        parts.append(part)
    return pl.concat(parts)


def evaluate(f: pl.DataFrame, cfg=GateConfig(), **kw):
    base = f.with_columns(prediction="baseline") if "baseline" in f.columns else None
    return evaluate_candidate(
        f.drop("baseline", strict=False), "1h", cfg, baseline=base, readiness=READY, **kw
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pure_noise_fails_the_ic_and_after_cost_gates(seed):
    ev = evaluate(frame(seed, 0.0, baseline_signal=0.0))
    assert [g.name for g in ev.gates] == list(GATES)
    assert not ev.passed
    assert ev.n_oos == 2 * (DAYS * BARS_PER_DAY - 12) and ev.n_windows == WINDOWS
    ic = ev.gate("oos_ic")
    assert not ic.passed and ev.oos_ic_lo <= 0 < ev.oos_ic_hi and abs(ev.oos_ic) < 0.03, ic
    # traded with thresholds from earlier windows, noise pays the costs and earns nothing
    pnl = ev.gate("pnl_after_cost")
    assert not pnl.passed and ev.pnl_after_cost < 0, pnl
    assert sorted(ev.per_window_pnl) == [1, 2, 3]
    assert 0.45 < ev.hit_rate < 0.55


def test_a_planted_signal_passes_every_gate_with_its_numbers():
    f = frame(4, 1.0, baseline_signal=0.3)
    ev = evaluate(f)
    assert ev.passed, ev.gates
    assert 0.28 < ev.oos_ic < 0.36 and ev.oos_ic_lo > 0.25, (ev.oos_ic, ev.oos_ic_lo)
    assert ev.hit_rate > 0.58
    assert ev.pnl_after_cost > 0.5  # > 50% on capital over 30 days: the planted IC is large
    assert ev.improved_wf_windows == 3  # every scored window beats the weaker ridge
    assert all(v > 0 for v in ev.per_window_pnl.values())
    # the stored calibration: trade only the larger predictions; threshold is that |prediction| quantile
    assert ev.confidence_min in GateConfig().entry_quantiles and ev.confidence_min > 0
    assert ev.entry_threshold == pytest.approx(
        np.quantile(np.abs(f["prediction"].to_numpy()), ev.confidence_min)
    )
    # the baseline's walk-forward from its own evaluation gives the same comparison (not traded twice)
    ridge = evaluate_candidate(
        f.with_columns(prediction="baseline").drop("baseline"),
        "1h",
        GateConfig(),
        is_baseline=True,
        readiness=READY,
    )
    again = evaluate_candidate(
        f.drop("baseline"), "1h", GateConfig(), baseline_walk_forward=ridge.walk_forward, readiness=READY
    )
    assert again.gate("beats_baseline") == ev.gate("beats_baseline")
    gates = json.loads(ev.gates_json())
    assert {g["name"]: g["passed"] for g in gates} == dict.fromkeys(GATES, True)


def test_the_baseline_gate_counts_windows_and_the_baseline_itself_never_passes():
    f = frame(4, 1.0, baseline_signal=1.0)  # as good as the candidate: beats it in some windows only
    ev = evaluate(f, GateConfig(min_improved_wf_windows=3))
    g = ev.gate("beats_baseline")
    assert g.threshold == 3 and g.value == ev.improved_wf_windows < 3 and not g.passed, g
    assert "of 3 scored windows beat the ridge" in g.reason
    own = evaluate_candidate(f.drop("baseline"), "1h", GateConfig(), is_baseline=True, readiness=READY)
    assert (
        not own.gate("beats_baseline").passed and "ridge baseline itself" in own.gate("beats_baseline").reason
    )
    assert own.gate("oos_ic").passed  # it is judged on everything else all the same


def test_a_gate_that_cannot_be_computed_fails_and_says_why():
    f = frame(5, 1.0, baseline_signal=0.3).filter(pl.col("ts") < T0 + dt.timedelta(hours=3))
    ev = evaluate(f)
    assert not ev.passed
    for name in ("oos_ic", "hit_rate", "pnl_after_cost"):
        g = ev.gate(name)
        assert not g.passed and "72 OOS rows" in g.reason and "needs 1000 (min_oos_rows)" in g.reason, g
    # one window only: the after-cost gate has nothing to score
    one = evaluate(frame(5, 1.0).filter(pl.col("window") == 0))
    assert "1 walk-forward window(s)" in one.gate("pnl_after_cost").reason
    assert one.gate("oos_ic").passed  # 10 days of one window are enough for the IC
    # fewer than 10 days: the interval is not computable
    short = evaluate(
        frame(5, 1.0).filter(pl.col("ts") < T0 + dt.timedelta(days=5)), GateConfig(min_oos_rows=100)
    )
    assert "need at least 10 distinct days" in short.gate("oos_ic").reason
    # readiness never audited, required backbones missing
    ev = evaluate_candidate(frame(5, 1.0), "1h", GateConfig(required_backbones=("liquid_student",)),
                            trained=["liquid_teacher"])  # fmt: skip
    assert not ev.gate("readiness").passed and "no readiness audit" in ev.gate("readiness").reason
    assert not ev.gate("backbones").passed and "['liquid_student']" in ev.gate("backbones").reason
    relaxed = evaluate_candidate(
        frame(5, 1.0), "1h", GateConfig(require_readiness=False), readiness=(False, "x")
    )
    assert relaxed.gate("readiness").passed


def test_window_k_is_calibrated_on_earlier_windows_only():
    f = frame(6, 1.0)
    cal = walk_forward_calibrations(f, "1h", GateConfig().entry_quantiles)
    assert sorted(cal) == [1, 2, 3]
    for k, c in cal.items():
        earlier = f.filter(pl.col("window") < k)
        assert c.n_rows == earlier.height
        q = np.quantile(np.abs(earlier["prediction"].to_numpy()), c.quantile) if c.quantile else 0.0
        assert c.threshold == pytest.approx(q)
    # rewriting window 2 and later (predictions, prices) leaves the calibrations of windows 1 and 2 alone
    rng = np.random.default_rng(0)
    later = pl.col("window") >= 2
    changed = f.with_columns(
        prediction=pl.when(later).then(pl.Series(rng.normal(0, 1, f.height))).otherwise("prediction"),
        close=pl.when(later).then(pl.col("close") * 1.5).otherwise("close"),
    )
    again = walk_forward_calibrations(changed, "1h", GateConfig().entry_quantiles)
    assert again[1] == cal[1] and again[2] == cal[2]
    assert again[3] != cal[3]  # window 3 is calibrated on window 2, which changed: the test can fail
    # and the after-cost gate scores window k with cal[k]'s threshold
    ev = evaluate_candidate(f, "1h", GateConfig(), readiness=READY)
    assert "thresholds from earlier windows" in ev.gate("pnl_after_cost").reason
    assert str(round(cal[3].threshold, 6)) in ev.gate("pnl_after_cost").reason


def test_confidence_is_the_empirical_cdf_matching_the_entry_threshold():
    f = frame(7, 1.0)
    c = calibrate_entry(f, "1h", GateConfig().entry_quantiles)
    conf = confidence(f["prediction"].to_numpy(), f["prediction"].to_numpy())
    chosen = np.abs(f["prediction"].to_numpy()) >= c.threshold
    assert (
        np.array_equal(chosen, conf >= c.quantile)
        or abs(int(chosen.sum()) - int((conf >= c.quantile).sum())) <= 1
    )
    best = max(p for _, _, p in c.by_quantile)
    assert c.pnl == best and len(c.by_quantile) == len(GateConfig().entry_quantiles)


def test_gate_config_refuses_nonsense():
    with pytest.raises(ValueError, match="min_oos_rows=5"):
        GateConfig(min_oos_rows=5)
    with pytest.raises(ValueError, match="entry_quantiles"):
        GateConfig(entry_quantiles=(0.9, 0.5))
