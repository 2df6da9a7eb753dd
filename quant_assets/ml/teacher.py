"""The liquid teacher: LightGBM per coin and horizon, a ridge baseline beside it, out-of-fold records.

Input: a training frame (`quant_assets.ml.training_frame.training_frame`): symbol, ts, the feature
columns, label_1h / label_4h, rows already purged against the cut-off; optionally `close` and
`cost_depth_notional` (used only for the after-cost backtest of the out-of-fold predictions).

Time rule. Row (symbol, ts) predicts label_h, known at label_end = ts + 5m + h (training_frame's
docstring); its label interval for purging is [ts, ts + 5m + h]. Every split below purges a training
row whose interval meets a held-out row's interval (`quant_assets.validation.intervals`), and embargoes
`embargo_td = 5m + h` after each held-out block (de Prado's `getEmbargoTimes`; only k-fold has training
rows after a held-out block). Rows with a null label for the horizon are not trained on, nor scored.

Target. The models learn clip((label - offset) / scale, +-target_clip) and predict offset + scale x
their output, so every prediction (oof, predict) is in label units. scale = vol_288 x sqrt(h / 5m)
(`TeacherConfig.scale_column`, `horizon_scaled`): vol_288 is the sd of a 5-minute return over 288 bars,
known at the row's close, and an h return spans h / 5m of them (12 at 1h, 48 at 4h), so the clip means
target_clip sds of the horizon's return at every horizon. With vol_288 alone, the clip at 5 cut 17% of
the 1h targets and 49% of the 4h ones (a 4h return is ~7 five-minute sds wide). Fits saved before the
rule (no `scale_multiplier` in fit.json) predict with vol_288 x 1, as they were trained. Measured on the
canary's setup (2 coins, 42 days, cut-off 2024-03, planted signal 2, nine seeds, paired): pooled OOS IC
(walk-forward and month against the gross return) 1h 0.113 -> 0.111, 4h 0.042 -> 0.047; walk-forward
alone 1h 0.081 -> 0.095, 4h 0.023 -> 0.039; the month alone 1h 0.184 -> 0.175, 4h 0.120 -> 0.097 (every
difference within about 1.5 of its standard errors: kept for the clip's meaning, not for a measured gain);
at signal 0 (four seeds) pooled 1h -0.009 -> -0.017, 4h -0.037 -> -0.037. On test_teacher's lake (4 coins,
180 days, strength 1, one seed) the pooled walk-forward IC against the gross return: 1h 0.047 -> 0.041,
4h 0.025 -> 0.037.

`offset` is the mean label, weighted by 1 / scale, of the rows that model is fitted on (a fold's own
training rows for its out-of-fold predictions, never a row it predicts), so the learnt target has mean
0 (`_Coin.offset`): a label nets a cost that does not scale with volatility (label_4h: 2 x est_cost, ~0.75 vol_288 on the
simulator); divided by vol_288 with the rest and multiplied back, that constant became -0.75 x vol_288
in every prediction, most of a prediction's variance when early stopping keeps few rounds (the canary's
BTC 4h month: IC 0.001 against the ridge's 0.227). Early stopping watches the tail's IC (`stop_metric`).

Per coin, for horizon h:
1. Early stopping: the last `val_days` days of the coin's labelled rows are the validation tail; the
   rows before it whose label reaches into the tail are purged. LightGBM is fitted on the rest with
   early stopping on the tail; its best iteration is kept.
2. The booster is refitted on every labelled row with `best_iteration` rounds, the ridge on every
   labelled row (standardised on those rows). These are the models that predict month M.
3. Walk-forward OOS: the coin's time grid is cut into `n_wf_folds + 1` equal blocks; fold k trains
   (expanding) on blocks 0..k-1, purged, and predicts block k. Each fold's booster early-stops on its
   own purged tail (the last min(val_days, a quarter of its span) days of its training rows), so no
   choice is made with rows the fold predicts. Rows of blocks 1..n are the out-of-fold record `oof`
   (teacher_oof, ridge_oof): the student distils these, never an in-sample fit. Block 0 is never
   predicted and its rows carry nulls.
4. Purged k-fold OOS (`n_kfold` folds, 0 = skip): the same, with training on both sides of each fold.

Metrics (the validation and backtest code that exists, nothing rewritten): wf_/kfold_ ic, rank_ic,
icir, hit_rate (`signal_metrics`) against the label; wf_ic_low/high/p: whole-day bootstrap interval
(95%) and share of resamples <= 0 of the walk-forward IC (`day_bootstrap_ic`, Pearson: under a
martingale the rank IC of a volatility-like forecast is negative by construction, simple returns
being skewed); wf_turnover (traded notional per day over
capital), wf_pnl_after_cost (total return on capital), wf_sharpe, wf_max_drawdown from `run_backtest`
on the out-of-fold predictions. The same with a `ridge_` prefix. n_train (labelled rows), n_fit and
n_val (the early-stopping split), n_oof (walk-forward predicted rows).

Backtest assumptions (stated in `TeacherFit.notes`): sign sizing, one unit of `capital` per coin,
each entry held for the horizon's bars (`BacktestConfig.for_horizon`), trades at the frame's `close`
with the cost model's fees, slippage and square-root impact against `cost_depth_notional` (the
cost model's fallback depth where the frame has none), perpetual funding only when settlement events
are passed as `funding=`; only the walk-forward rows are traded (block 0 has no out-of-fold score).
Without a `close` column the backtest metrics are NaN.

Binning (no look-ahead): every LightGBM Dataset finds its bin edges on its own training rows only (a
seeded sample of at most `bin_sample_rows` of them); a validation tail is binned with its training
rows' edges, and the refit on the whole window with the early-stopping fit's edges (rows before the
tail).

Determinism: same frame, feature keys and config -> identical models, predictions and metrics
(LightGBM deterministic=True, force_row_wise, fixed seeds and num_threads), whatever `workers`.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm
import numpy as np
import polars as pl
import threadpoolctl

from quant_assets.ml.training_frame import STEP, TooLittleHistory
from quant_assets.universe import BARS_PER_DAY, HORIZONS
from quant_assets.validation.bootstrap import day_bootstrap_ic
from quant_assets.validation.intervals import LabelIntervals, purged_train_indices
from quant_assets.validation.metrics import information_coefficient, signal_metrics
from quant_assets.validation.splitters import PurgedKFold, WalkForward

DEPTH_COLUMN = "cost_depth_notional"
KINDS = ("teacher", "ridge")
_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class TeacherConfig:
    """LightGBM, ridge and validation settings of one teacher fit (JSON via dataclasses.asdict)."""

    num_leaves: int = 31
    learning_rate: float = 0.05
    n_estimators: int = 400  # the most boosting rounds early stopping may keep
    # Rounds without a better tail IC before stopping. 20, not 40: every early-stopped booster (ten per
    # coin and horizon) pays these rounds for nothing. Not isolated yet: the 10-coin partition's mean
    # walk-forward IC was 0.027 (1h) / 0.019 (4h) with 20, 0.031 / 0.023 in a run with 40 and bagging 0.5
    # (per-coin ICs are noisy; the planted-signal test fixes its own patience, 30).
    early_stopping_rounds: int = 20
    min_child_samples: int = 200
    feature_fraction: float = 0.8
    # 0.8, not 0.5: a half boosts ~25% faster (18 vs 23 ms a round, one coin 1h 420 days) but lowered the
    # planted-signal test's pooled OOS IC (0.036 vs 0.043 at 0.8, 0.040 before max_bin 63).
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    # 63 bins, not LightGBM's 255: histogram building and Dataset construction are most of a fit's cost
    # (measured, 117k rows x 131 features, 60 rounds: 2.9 s -> 1.8 s to build, 3.3 s -> 2.4 s to boost;
    # the tail's IC 0.109 -> 0.117, i.e. unchanged within its noise). Features are rolling statistics,
    # not fine-grained identifiers.
    max_bin: int = 63
    # Bin edges are searched on this many of a Dataset's rows (a seeded sample of its own training rows,
    # never other rows), not LightGBM's 200k: the search sorts every feature's sample and was most of a
    # Dataset's construction.
    bin_sample_rows: int = 50_000
    ridge_alpha: float = 10.0  # on standardised features: (Z'Z + alpha I) w = Z'(y - mean y)
    # Early-stopping tail of the training window, the same days at every horizon. Scaling it with the
    # horizon was measured, not adopted: on the canary's setup (val_days 2 at 1h) a 4h tail of 8 days
    # instead of 2 moved the pooled 4h OOS IC 0.047 -> 0.048 (paired diff +0.001, se 0.012, nine seeds
    # x two coins; at signal 0: -0.037 -> -0.031), i.e. nothing that tells from noise.
    val_days: int = 14
    n_wf_folds: int = 4  # walk-forward folds: the window is cut into n_wf_folds + 1 blocks
    n_kfold: int = 5  # purged k-fold splits; 0 skips the k-fold metrics
    seed: int = 0
    num_threads: int = 1
    # Models learn clip((label - offset) / scale_column, +-target_clip) and predict offset + scale_column x
    # that (module docstring, Target): the planted effects and the noise both scale with the coin's
    # volatility, and L2 on raw returns is dominated by its wildest days (measured on the simulator, 4
    # coins, 2 months fit, 2 months scored: LightGBM's 1h IC 0.021 on raw labels, 0.034-0.042 on vol_288-scaled clipped ones). None: raw labels.
    scale_column: str | None = "vol_288"
    target_clip: float = 5.0  # in units of the scale (sds of the horizon's return); 0 = no clip
    # The scale is scale_column x sqrt(horizon / 5m) (module docstring, Target); False: scale_column alone
    # (the rule before 2026-12-02, whose clip at 5 cut 49% of the 4h targets).
    horizon_scaled: bool = True
    # Early stopping on the tail's "l2" or "ic" (Pearson of prediction and target). With an IC near 0.1
    # the best model lowers the L2 by ~1% of the variance, about its sampling noise on a two-week tail of
    # one coin; either way the stop is noisy (best iterations 1 to 60 on the simulator, pooled OOS IC
    # 0.025-0.035 for both). "ic" is the default because it is the quantity the gates judge.
    stop_metric: str = "ic"

    def __post_init__(self):
        positive = ("num_leaves", "n_estimators", "early_stopping_rounds", "min_child_samples", "val_days",
                    "n_wf_folds", "num_threads", "max_bin", "bin_sample_rows")  # fmt: skip
        bad = [f"{k}={getattr(self, k)!r}" for k in positive if int(getattr(self, k)) < 1]
        if self.n_kfold == 1 or self.n_kfold < 0:
            bad.append(f"n_kfold={self.n_kfold!r} (0 to skip, else >= 2)")
        for k in ("learning_rate", "feature_fraction", "bagging_fraction"):
            if not 0 < getattr(self, k) <= 1:
                bad.append(f"{k}={getattr(self, k)!r} (in (0, 1])")
        if self.stop_metric not in ("l2", "ic"):
            bad.append(f"stop_metric={self.stop_metric!r} ('l2' or 'ic')")
        if self.target_clip < 0:
            bad.append(f"target_clip={self.target_clip} (>= 0)")
        if self.ridge_alpha < 0 or self.lambda_l2 < 0:
            bad.append(f"ridge_alpha={self.ridge_alpha}, lambda_l2={self.lambda_l2} (>= 0)")
        if bad:
            raise ValueError(f"TeacherConfig: invalid {', '.join(bad)}")

    def lgb_params(self) -> dict:
        return {
            "objective": "regression",
            "metric": "l2",
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            "bin_construct_sample_cnt": self.bin_sample_rows,
            "seed": self.seed,
            "bagging_seed": self.seed + 1,
            "feature_fraction_seed": self.seed + 2,
            "data_random_seed": self.seed + 3,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def rows_needed(self) -> int:
        """Labelled rows a coin needs: a validation tail of val_days and at least as much to fit on."""
        return 2 * self.val_days * BARS_PER_DAY


@dataclass(frozen=True)
class RidgeModel:
    """Ridge on features standardised with the training rows' mean and std; a missing value is the mean."""

    feature_keys: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, feature_keys: Sequence[str], alpha: float) -> RidgeModel:
        """One normal-equations solve in float64 on the standardised rows.

        Written out rather than nanmean/nanstd + nan_to_num + `z.T @ z`: those made five full-size
        temporaries and the transposed matmul took numpy's slow path (measured, 121k rows x 131
        features: 2.1 s a fit before, ~0.5 s now; ten fits per coin and horizon).
        """
        z = np.array(x, dtype=np.float64)  # the one working copy, standardised in place
        missing = ~np.isfinite(z)
        z[missing] = 0.0
        n_obs = z.shape[0] - missing.sum(axis=0)
        with np.errstate(all="ignore"):
            mean = z.sum(axis=0) / n_obs
        mean = np.where(np.isfinite(mean), mean, 0.0)
        z -= mean
        z[missing] = 0.0  # a missing value is the mean: 0 once centred
        with np.errstate(all="ignore"):
            std = np.sqrt(np.einsum("ij,ij->j", z, z) / n_obs)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)  # an all-missing or constant column weighs 0
        z /= std
        y_mean = float(y.mean())
        a = np.dot(z.T, z)
        a[np.diag_indices_from(a)] += alpha
        coef = np.linalg.solve(a, np.dot(z.T, y - y_mean))
        return cls(tuple(feature_keys), mean, std, coef, y_mean)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _standardise(x, self.mean, self.std) @ self.coef + self.intercept

    def to_dict(self) -> dict:
        return {"feature_keys": list(self.feature_keys), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> RidgeModel:
        arr = {k: np.asarray(d[k], dtype=np.float64) for k in ("mean", "std", "coef")}
        return cls(tuple(d["feature_keys"]), arr["mean"], arr["std"], arr["coef"], float(d["intercept"]))


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = np.array(x, dtype=np.float64)
    z -= mean
    z /= std
    z[~np.isfinite(z)] = 0.0  # a missing value is the mean
    return z


@dataclass
class TeacherFit:
    """One coin, one horizon: the models that predict month M and what validated them."""

    symbol: str
    horizon: str  # "1h" | "4h"
    booster: lightgbm.Booster  # refitted on the whole window with best_iteration rounds
    ridge: RidgeModel
    best_iteration: int
    oof: pl.DataFrame  # symbol, ts, horizon, label, teacher_oof, ridge_oof (walk-forward, nulls in block 0)
    metrics: dict[str, float]
    importance: pl.DataFrame  # feature, gain, split (of the refitted booster)
    notes: tuple[str, ...] = field(default=())  # what the backtest assumed for want of an input
    # The booster and ridge predict (label - label_offset) / scale, scale = scale_column x scale_multiplier;
    # predict() returns label_offset + scale x that, using scale_fill (the median training scale) where a
    # row's scale is missing.
    scale_column: str | None = None
    scale_fill: float = 1.0  # in units of the scale (scale_column x scale_multiplier)
    label_offset: float = 0.0  # `_Coin.offset` of the training rows (fits saved before it: 0)
    # The scale is scale_column x scale_multiplier (sqrt(horizon / 5m); 1 for fits saved before the rule)
    scale_multiplier: float = 1.0


@dataclass(frozen=True)
class _Coin:
    symbol: str
    ts: pl.Series
    x: np.ndarray  # float64 [rows, features], NaN = missing
    y: np.ndarray  # the label
    scale: np.ndarray  # scale_column (ones without one)
    clip: float  # target_clip (0: none)
    iv: LabelIntervals
    bars: pl.DataFrame  # ts, symbol, close?, depth? for the backtest

    def offset(self, rows: np.ndarray) -> float:
        """The label offset of a model fitted on `rows`: their mean label weighted by 1 / scale, so the
        unclipped target has mean 0 and no constant is left for the scale to multiply."""
        w = 1.0 / self.scale[rows]
        return float(np.dot(self.y[rows], w) / w.sum())

    def target(self, rows: np.ndarray, offset: float) -> np.ndarray:
        """What the models learn on `rows`: clip((y - offset) / scale)."""
        t = (self.y[rows] - offset) / self.scale[rows]
        return np.clip(t, -self.clip, self.clip) if self.clip else t


def scale_multiplier(horizon: str, cfg: TeacherConfig) -> float:
    """What scale_column is multiplied by to give the target's scale: sqrt(horizon / 5m), the sd of an
    h return in 5-minute sds (module docstring, Target); 1 without a scale column or horizon_scaled."""
    if not (cfg.scale_column and cfg.horizon_scaled):
        return 1.0
    return math.sqrt(HORIZONS[horizon] / STEP)


def label_column(horizon: str) -> str:
    if horizon not in HORIZONS:
        raise ValueError(f"teacher: horizon must be one of {list(HORIZONS)}, got {horizon!r}")
    return f"label_{horizon}"


def _features(frame: pl.DataFrame, feature_keys: Sequence[str]) -> np.ndarray:
    x = frame.select(pl.col(c).cast(pl.Float64).fill_null(float("nan")) for c in feature_keys).to_numpy()
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not x.flags.writeable:  # one float column comes zero-copy from polars, read-only
        x = x.copy()
    x[~np.isfinite(x)] = np.nan  # LightGBM's and the ridge's missing value
    return x


def _coins(frame: pl.DataFrame, feature_keys: Sequence[str], horizon: str, cfg: TeacherConfig) -> list[_Coin]:
    label = label_column(horizon)
    scale = [cfg.scale_column] if cfg.scale_column else []
    missing = [c for c in ("symbol", "ts", label, *feature_keys, *scale) if c not in frame.columns]
    if missing:
        raise ValueError(f"teacher: training frame lacks columns {missing} (has {len(frame.columns)})")
    if not feature_keys:
        raise ValueError("teacher: no feature keys")
    known = pl.col(label).is_not_null() & pl.col(label).is_finite()
    if scale:  # a row without a positive scale (a coin's first day for vol_288) has no target
        known &= pl.col(scale[0]).cast(pl.Float64).fill_nan(None).fill_null(0.0) > 0
        label = f"{label} and {scale[0]} > 0"
    # Counted first, then one coin's rows copied at a time: a sorted copy of the whole frame beside the
    # coins' feature arrays was ~1.3 GiB of the 10-coin partition's peak.
    needed = cfg.rows_needed()
    symbols = sorted(frame.get_column("symbol").unique().to_list())
    counts = dict(frame.lazy().filter(known).group_by("symbol").len().collect().iter_rows())
    short = [f"{s} has {counts.get(s, 0):,}" for s in symbols if counts.get(s, 0) < needed]
    if not symbols or short:
        raise TooLittleHistory(
            f"liquid teacher {horizon}: too little history: {'; '.join(short) or 'no coin has rows'} "
            f"rows with a known {label}; needs {needed:,} per coin (2 x val_days={cfg.val_days} days of "
            f"{BARS_PER_DAY} 5m bars: a validation tail and as much to fit on)"
        )
    extra = [c for c in ("close", DEPTH_COLUMN) if c in frame.columns]
    out = []
    for sym in symbols:
        g = frame.filter(known & (pl.col("symbol") == sym)).sort("ts")
        ts = g.get_column("ts")
        t0 = ts.cast(pl.Datetime("ns", "UTC"))
        iv = LabelIntervals.build(t0, t0 + (STEP + HORIZONS[horizon]))
        y = g.get_column(label_column(horizon)).cast(pl.Float64).to_numpy()
        sc = g.get_column(scale[0]).cast(pl.Float64).to_numpy() if scale else np.ones(len(y))
        sc = sc * scale_multiplier(horizon, cfg)
        out.append(
            _Coin(
                sym,
                ts,
                _features(g, feature_keys),
                y,
                sc,
                cfg.target_clip,
                iv,
                g.select("ts", "symbol", *extra),
            )  # fmt: skip
        )
    return out


def _tail_split(iv: LabelIntervals, rows: np.ndarray, days: float) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) rows out of `rows`: val = its last `days` days, fit = the rest purged against val."""
    last = iv.t0[rows].max()
    val_mask = iv.t0[rows] > last - int(days * _DAY_NS)
    val = rows[val_mask]
    test_steps = np.zeros(iv.n_steps, dtype=bool)
    test_steps[iv.pos[val]] = True
    train_steps = np.zeros(iv.n_steps, dtype=bool)
    train_steps[iv.pos[rows[~val_mask]]] = True
    fit = purged_train_indices(iv, test_steps, train_steps)
    return fit, val


def _dataset(x: np.ndarray, y: np.ndarray, names: list[str], reference=None) -> lightgbm.Dataset:
    return lightgbm.Dataset(x, label=y, feature_name=names, reference=reference, free_raw_data=True)


def _boost(c: _Coin, names, cfg: TeacherConfig, fit: np.ndarray, val: np.ndarray):
    """The booster early-stopped on `val` and its training Dataset (bins from the `fit` rows only);
    both targets are offset by the `fit` rows' label offset."""
    offset = c.offset(fit)
    train = _dataset(c.x[fit], c.target(fit, offset), names)
    valid = _dataset(c.x[val], c.target(val, offset), names, reference=train)
    params = cfg.lgb_params()
    feval = None
    if cfg.stop_metric == "ic":
        params["metric"] = "None"
        feval = _ic_eval
    booster = lightgbm.train(
        params,
        train,
        num_boost_round=cfg.n_estimators,
        valid_sets=[valid],
        feval=feval,
        callbacks=[lightgbm.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )
    return booster, train


def _ic_eval(preds: np.ndarray, data: lightgbm.Dataset) -> tuple[str, float, bool]:
    """Pearson IC of the tail's predictions (higher is better); 0 while the model is constant."""
    ic = information_coefficient(preds, data.get_label())
    return "ic", ic if math.isfinite(ic) else 0.0, True


def _fold_models(c: _Coin, names, cfg: TeacherConfig, train: np.ndarray):
    """A fold's booster (early-stopped on its own purged tail) and ridge, both fitted on `train` rows,
    and the label offset they predict around (`_Coin.offset` of `train`)."""
    span_days = (c.iv.t0[train].max() - c.iv.t0[train].min()) / _DAY_NS
    fit, val = _tail_split(c.iv, train, min(cfg.val_days, span_days / 4))
    if len(fit) < cfg.min_child_samples or len(val) == 0:
        raise TooLittleHistory(
            f"liquid teacher {c.symbol}: a validation fold has {len(fit)} rows to fit and {len(val)} to "
            f"stop on; raise the window or lower n_wf_folds/n_kfold (min_child_samples={cfg.min_child_samples})"
        )
    booster, _ = _boost(c, names, cfg, fit, val)
    offset = c.offset(train)
    ridge = RidgeModel.fit(c.x[train], c.target(train, offset), names, cfg.ridge_alpha)
    return booster, ridge, offset


def _oos(c: _Coin, names, cfg: TeacherConfig, splits) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-sample teacher and ridge predictions for each split's test rows (NaN where none)."""
    pred = {k: np.full(len(c.y), np.nan) for k in KINDS}
    for train, test in splits:
        booster, ridge, offset = _fold_models(c, names, cfg, train)
        pred["teacher"][test] = offset + c.scale[test] * booster.predict(
            c.x[test], num_iteration=booster.best_iteration, num_threads=cfg.num_threads
        )
        pred["ridge"][test] = offset + c.scale[test] * ridge.predict(c.x[test])
    return pred["teacher"], pred["ridge"]


def _signal(c: _Coin, pred: np.ndarray, prefix: str) -> dict[str, float]:
    df = pl.DataFrame({"symbol": c.symbol, "ts": c.ts, "p": pred, "y": c.y})
    row = signal_metrics(df, "p", "y").filter(pl.col("symbol") == c.symbol)
    if row.height == 0:
        return {f"{prefix}{k}": float("nan") for k in ("ic", "rank_ic", "icir", "hit_rate")}
    r = row.row(0, named=True)
    return {f"{prefix}{k}": float(r[k]) for k in ("ic", "rank_ic", "icir", "hit_rate")}


def _bootstrap(c: _Coin, pred: np.ndarray, prefix: str, seed: int) -> dict[str, float]:
    ok = np.isfinite(pred)
    days = c.ts.dt.date().to_numpy()[ok]
    try:
        b = day_bootstrap_ic(pred[ok], c.y[ok], days, method="pearson", seed=seed)
    except ValueError:  # fewer than 10 days or rows predicted: no interval
        return {f"{prefix}ic_{k}": float("nan") for k in ("low", "high", "p")}
    return {f"{prefix}ic_low": b.low, f"{prefix}ic_high": b.high, f"{prefix}ic_p": b.p_value}


def _backtest(c: _Coin, pred: np.ndarray, horizon: str, prefix: str, funding) -> tuple[dict, tuple]:
    keys = ("turnover", "pnl_after_cost", "sharpe", "max_drawdown")
    ok = np.isfinite(pred)
    if "close" not in c.bars.columns or not ok.any():
        note = "backtest: the training frame has no close column; after-cost metrics are NaN"
        return {f"{prefix}{k}": float("nan") for k in keys}, (note,) if "close" not in c.bars.columns else ()
    from quant_assets.backtest.config import BacktestConfig  # the engine only where a close exists
    from quant_assets.backtest.engine import run_backtest

    bars = c.bars.filter(pl.Series(ok)).with_columns(score=pl.Series(pred[ok]))
    bars = bars.filter(pl.col("close").is_not_null() & pl.col("close").is_finite())
    cfg = BacktestConfig.for_horizon(
        horizon, depth_column=DEPTH_COLUMN if DEPTH_COLUMN in bars.columns else None
    )
    res = run_backtest(
        bars, cfg, funding=funding.filter(pl.col("symbol") == c.symbol) if funding is not None else None
    )
    m = res.metrics
    return {
        f"{prefix}turnover": float(m["turnover_per_day"]),
        f"{prefix}pnl_after_cost": float(m["total_return"]),
        f"{prefix}sharpe": float(m["sharpe"]),
        f"{prefix}max_drawdown": float(m["max_drawdown"]),
    }, res.assumptions


def _fit_coin(c: _Coin, names: list[str], horizon: str, cfg: TeacherConfig, funding) -> TeacherFit:
    everything = np.arange(len(c.y))
    fit, val = _tail_split(c.iv, everything, cfg.val_days)
    if len(fit) < cfg.min_child_samples:
        raise TooLittleHistory(
            f"liquid teacher {c.symbol} {horizon}: {len(fit):,} rows before the {cfg.val_days}-day validation "
            f"tail (of {len(c.y):,}); needs {cfg.min_child_samples:,} (min_child_samples)"
        )
    stopped, stopped_rows = _boost(c, names, cfg, fit, val)
    best = max(1, int(stopped.best_iteration or cfg.n_estimators))
    # The refit reuses the early-stopping fit's bin edges (found on the rows before the tail): only
    # the rows are binned, no edges searched again (about a Dataset construction saved), and no edge
    # comes from the tail.
    offset = c.offset(everything)
    everything_ds = _dataset(c.x, c.target(everything, offset), names, reference=stopped_rows)
    final = lightgbm.train(cfg.lgb_params(), everything_ds, num_boost_round=best)
    ridge = RidgeModel.fit(c.x, c.target(everything, offset), names, cfg.ridge_alpha)

    # int nanoseconds, the unit of the intervals' axis
    embargo = int((STEP + HORIZONS[horizon]).total_seconds()) * 10**9
    n_steps = c.iv.n_steps
    block = n_steps // (cfg.n_wf_folds + 1)
    wf = WalkForward(test_size=block, train_size=block, expanding=True, embargo_td=embargo)
    wf_t, wf_r = _oos(c, names, cfg, wf.split(c.x, t0=c.iv.t0, t1=c.iv.t1))
    metrics: dict[str, float] = {"n_train": float(len(c.y)), "n_fit": float(len(fit)), "n_val": float(len(val)),
                                 "n_oof": float(np.isfinite(wf_t).sum()), "best_iteration": float(best)}  # fmt: skip
    notes: list[str] = []
    for kind, pred in (("teacher", wf_t), ("ridge", wf_r)):
        p = "" if kind == "teacher" else "ridge_"
        metrics |= _signal(c, pred, f"{p}wf_")
        metrics |= _bootstrap(c, pred, f"{p}wf_", cfg.seed)
        bt, assumed = _backtest(c, pred, horizon, f"{p}wf_", funding)
        metrics |= bt
        notes += [a for a in assumed if a not in notes]
    if cfg.n_kfold:
        kf = PurgedKFold(cfg.n_kfold, embargo_td=embargo)
        kf_t, kf_r = _oos(c, names, cfg, kf.split(c.x, t0=c.iv.t0, t1=c.iv.t1))
        metrics |= _signal(c, kf_t, "kfold_") | _signal(c, kf_r, "ridge_kfold_")

    oof = pl.DataFrame({"symbol": c.symbol, "ts": c.ts, "horizon": horizon, "label": c.y,
                        "teacher_oof": wf_t, "ridge_oof": wf_r}).with_columns(
        pl.col("teacher_oof", "ridge_oof").fill_nan(None)
    )  # fmt: skip
    importance = pl.DataFrame({
        "feature": names,
        "gain": final.feature_importance("gain").astype(np.float64),
        "split": final.feature_importance("split").astype(np.int64),
    }).sort("gain", "feature", descending=[True, False])  # fmt: skip
    scale_fill = float(np.median(c.scale))
    return TeacherFit(c.symbol, horizon, final, ridge, best, oof, metrics, importance, tuple(notes),
                      cfg.scale_column, scale_fill, offset, scale_multiplier=scale_multiplier(horizon, cfg))  # fmt: skip


def _fit_coin_pinned(c: _Coin, names: list[str], horizon: str, cfg: TeacherConfig, funding) -> TeacherFit:
    # BLAS (the ridge's Gram matrices) gets num_threads like LightGBM: OpenBLAS's own threads spin
    # against a busy second core (measured here under load: one 121k x 131 Gram 0.54 s CPU threaded,
    # 0.16 s on one thread).
    with threadpoolctl.threadpool_limits(cfg.num_threads, user_api="blas"):
        return _fit_coin(c, names, horizon, cfg, funding)


def fit_teacher(
    frame: pl.DataFrame,
    feature_keys: Sequence[str],
    horizon: str,
    cfg: TeacherConfig,
    *,
    funding: pl.DataFrame | None = None,
    workers: int = 1,
) -> dict[str, TeacherFit]:
    """One TeacherFit per coin of `frame` for `horizon` (module docstring); keyed by symbol.

    Raises TooLittleHistory, naming every short coin with its rows and the rows needed, before any
    model is trained. `funding`: optional settlement events (symbol, ts, funding_rate) the backtest of
    the out-of-fold predictions charges perpetual positions. `workers` > 1 fits coins in that many
    spawned processes (coins are independent; each fit is the same as in one process, so the result
    does not depend on `workers`): on this 2-core machine LightGBM's own threads barely scale (a
    ~1k-row leaf histogram is too small to split) while whole coins do.
    """
    names = list(feature_keys)
    coins = _coins(frame, names, horizon, cfg)
    if workers < 1:
        raise ValueError(f"fit_teacher: workers={workers!r} (>= 1)")
    if workers == 1 or len(coins) == 1:
        return {c.symbol: _fit_coin_pinned(c, names, horizon, cfg, funding) for c in coins}
    # spawn, not fork: polars' and OpenMP's thread pools are not fork-safe
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(coins)), mp_context=ctx) as pool:
        futures = [pool.submit(_fit_coin_pinned, c, names, horizon, cfg, funding) for c in coins]
        return {c.symbol: f.result() for c, f in zip(coins, futures, strict=True)}


def predict(fits: dict[str, TeacherFit], frame: pl.DataFrame) -> pl.DataFrame:
    """symbol, ts, horizon, prediction (LightGBM), baseline (ridge) for the rows of `frame` of each fitted coin.

    Predictions are in label units (the models' scaled output times the row's scale column). Features
    of a row are known at its close, so predicting rows at or after the cut-off is out of sample.
    """
    parts = []
    for sym, f in sorted(fits.items()):
        rows = frame.filter(pl.col("symbol") == sym).sort("ts")
        need = [*f.ridge.feature_keys, *([f.scale_column] if f.scale_column else [])]
        missing = [k for k in need if k not in rows.columns]
        if missing:
            raise ValueError(f"teacher predict {sym}: frame lacks columns {missing}")
        x = _features(rows, f.ridge.feature_keys)
        scale = np.ones(rows.height)
        if f.scale_column:
            scale = rows.get_column(f.scale_column).cast(pl.Float64).fill_nan(None).to_numpy()
            scale = np.where(np.isfinite(scale) & (scale > 0), scale * f.scale_multiplier, f.scale_fill)
        pred = base = np.empty(0)
        if rows.height:  # in label units: the offset plus the scaled output (module docstring, Target)
            pred = f.label_offset + scale * f.booster.predict(x, num_threads=1)
            base = f.label_offset + scale * f.ridge.predict(x)
        parts.append(
            pl.DataFrame(
                {
                    "symbol": pl.Series([sym] * rows.height, dtype=pl.String),
                    "ts": rows.get_column("ts"),
                    "horizon": pl.Series([f.horizon] * rows.height, dtype=pl.String),
                    "prediction": pred,
                    "baseline": base,
                }
            )
        )
    if not parts:
        return pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("ms", "UTC"), "horizon": pl.String,
                                    "prediction": pl.Float64, "baseline": pl.Float64})  # fmt: skip
    return pl.concat(parts)


# Safe formats only: LightGBM's text model, JSON, parquet. Never pickle.
MODEL_FILE, RIDGE_FILE, FIT_FILE, OOF_FILE, IMPORTANCE_FILE = (
    "model.txt", "ridge.json", "fit.json", "oof.parquet", "importance.parquet")  # fmt: skip


def _json_num(v: float):
    return v if math.isfinite(v) else None  # JSON has no NaN


def save_fit(fit: TeacherFit, directory: str | Path) -> list[Path]:
    """Write `fit` into `directory` (created): model.txt, ridge.json, fit.json, oof.parquet, importance.parquet."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / n for n in (MODEL_FILE, RIDGE_FILE, FIT_FILE, OOF_FILE, IMPORTANCE_FILE)]
    fit.booster.save_model(paths[0], num_iteration=-1)
    paths[1].write_text(json.dumps(fit.ridge.to_dict()))
    meta = {"symbol": fit.symbol, "horizon": fit.horizon, "best_iteration": fit.best_iteration,
            "metrics": {k: _json_num(float(v)) for k, v in fit.metrics.items()}, "notes": list(fit.notes),
            "scale_column": fit.scale_column, "scale_fill": fit.scale_fill,
            "label_offset": fit.label_offset, "scale_multiplier": fit.scale_multiplier}  # fmt: skip
    paths[2].write_text(json.dumps(meta, indent=1, sort_keys=True))
    fit.oof.write_parquet(paths[3])
    fit.importance.write_parquet(paths[4])
    return paths


def load_fit(directory: str | Path) -> TeacherFit:
    d = Path(directory)
    meta = json.loads((d / FIT_FILE).read_text())
    return TeacherFit(
        symbol=meta["symbol"],
        horizon=meta["horizon"],
        booster=lightgbm.Booster(model_file=str(d / MODEL_FILE)),
        ridge=RidgeModel.from_dict(json.loads((d / RIDGE_FILE).read_text())),
        best_iteration=int(meta["best_iteration"]),
        oof=pl.read_parquet(d / OOF_FILE),
        metrics={k: float("nan") if v is None else float(v) for k, v in meta["metrics"].items()},
        importance=pl.read_parquet(d / IMPORTANCE_FILE),
        notes=tuple(meta.get("notes", ())),
        scale_column=meta.get("scale_column"),
        scale_fill=float(meta.get("scale_fill", 1.0)),
        label_offset=float(meta.get("label_offset", 0.0)),
        # absent in fits saved before the horizon-aware scale: they were trained on vol_288 x 1
        scale_multiplier=float(meta.get("scale_multiplier", 1.0)),
    )


def config_dict(cfg: TeacherConfig) -> dict:
    """The config as JSON-ready params (for MLflow and the manifest)."""
    return asdict(cfg)
