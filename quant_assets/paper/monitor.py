"""What monitoring measures on a champion's paper predictions: drift, calibration, performance.

- `psi`: population stability index of a sample against a reference one, on the reference's quantile
  bins: sum((a - e) * ln(a / e)) over bins with shares e (reference) and a (sample), each floored at
  `PSI_FLOOR` so an empty bin is finite. 0 for identical distributions; the usual reading is < 0.1
  stable, 0.1-0.25 moderate, > 0.25 a shift.
- `ConfidenceMap`: P(sign correct) as a function of |prediction|, fitted on the model's OOS
  predictions (quantile buckets of |prediction|, the hit rate in each): how sure a prediction of that
  size was. `reliability` buckets new rows by the map's buckets and compares that confidence with
  their realised hit rate; `ece` is the gap weighted by rows.
- `performance`: IC and hit rate of predictions against realised returns (`validation.metrics`).

Time rule: every function takes what it is given; the caller passes only rows whose realised return is
known (label end <= the evaluation time) and reference samples from before the model's cut-off.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_assets.validation.metrics import hit_rate, information_coefficient

PSI_FLOOR = 1e-4
PSI_BINS = 10


def _finite(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a[np.isfinite(a)]


def psi(reference, sample, bins: int = PSI_BINS) -> float:
    """PSI of `sample` against `reference` on the reference's `bins` quantile bins (NaN: either empty)."""
    ref, cur = _finite(reference), _finite(sample)
    if len(ref) == 0 or len(cur) == 0:
        return math.nan
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # right-closed inner edges; values beyond the reference's range fall in the outer bins
    e = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    a = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    e, a = np.maximum(e, PSI_FLOOR), np.maximum(a, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class ConfidenceMap:
    """P(sign correct) by |prediction| bucket: `edges` are the inner bucket bounds of |prediction|."""

    edges: tuple[float, ...]
    hit_rates: tuple[float, ...]  # one per bucket (len(edges) + 1)
    counts: tuple[int, ...]

    @classmethod
    def fit(cls, prediction, realised, buckets: int = 5) -> ConfidenceMap:
        """Quantile buckets of |prediction| over rows where both are finite and the prediction is not 0;
        the share of rows whose sign matches the realised return's in each. An empty fit (no rows)
        gives one bucket of confidence 0.5 (a coin toss: nothing is known)."""
        p, r = np.asarray(prediction, dtype=np.float64), np.asarray(realised, dtype=np.float64)
        ok = np.isfinite(p) & np.isfinite(r) & (p != 0)
        p, r = p[ok], r[ok]
        if len(p) == 0:
            return cls((), (0.5,), (0,))
        mag = np.abs(p)
        edges = np.unique(np.quantile(mag, np.linspace(0, 1, buckets + 1)[1:-1]))
        b = np.searchsorted(edges, mag, side="right")
        correct = np.sign(p) == np.sign(r)
        n = np.bincount(b, minlength=len(edges) + 1)
        hits = np.bincount(b, weights=correct, minlength=len(edges) + 1)
        rates = np.where(n > 0, hits / np.maximum(n, 1), 0.5)
        return cls(tuple(float(x) for x in edges), tuple(float(x) for x in rates), tuple(int(x) for x in n))

    def bucket(self, prediction) -> np.ndarray:
        return np.searchsorted(
            np.asarray(self.edges), np.abs(np.asarray(prediction, dtype=np.float64)), "right"
        )

    def confidence(self, prediction) -> np.ndarray:
        """P(sign correct) of each prediction; NaN where the prediction is missing."""
        p = np.asarray(prediction, dtype=np.float64)
        out = np.asarray(self.hit_rates)[self.bucket(np.where(np.isfinite(p), p, 0.0))]
        return np.where(np.isfinite(p), out, np.nan)

    def to_json(self) -> str:
        return json.dumps({"edges": self.edges, "hit_rates": self.hit_rates, "counts": self.counts})


def reliability(cmap: ConfidenceMap, prediction, realised) -> pl.DataFrame:
    """Per |prediction| bucket of `cmap`: rows, mean confidence (the map's), realised hit rate."""
    p, r = np.asarray(prediction, dtype=np.float64), np.asarray(realised, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(r) & (p != 0)
    p, r = p[ok], r[ok]
    k = len(cmap.hit_rates)
    b = cmap.bucket(p)
    n = np.bincount(b, minlength=k)
    hits = np.bincount(b, weights=np.sign(p) == np.sign(r), minlength=k)
    lo = (0.0, *cmap.edges)
    hi = (*cmap.edges, math.inf)
    return pl.DataFrame(
        {
            "bucket": np.arange(k),
            "abs_pred_lo": lo,
            "abs_pred_hi": hi,
            "n": n,
            "confidence": cmap.hit_rates,
            "hit_rate": np.where(n > 0, hits / np.maximum(n, 1), np.nan),
        }
    )


def ece(curve: pl.DataFrame) -> float:
    """Expected calibration error: sum over buckets of n_b / N * |hit_rate_b - confidence_b| (NaN: no rows)."""
    c = curve.filter(pl.col("n") > 0)
    total = c["n"].sum()
    if not total:
        return math.nan
    return float(((c["hit_rate"] - c["confidence"]).abs() * c["n"]).sum() / total)


def performance(prediction, realised) -> dict[str, float]:
    """n, IC (Pearson) and hit rate of predictions against realised returns (rows where both are finite)."""
    p, r = np.asarray(prediction, dtype=np.float64), np.asarray(realised, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(r)
    return {"n": int(ok.sum()), "ic": information_coefficient(p, r), "hit_rate": hit_rate(p, r)}


def pnl_by_bucket(cmap: ConfidenceMap, marks: pl.DataFrame) -> pl.DataFrame:
    """Paper PnL (USD, after cost and funding) of the bars a position was held, by the |score| bucket of
    the signal that opened it (`entry_score`), in `cmap`'s buckets; bars flat are left out."""
    held = marks.filter(pl.col("entry_score").is_finite())
    k = len(cmap.hit_rates)
    b = cmap.bucket(held["entry_score"].to_numpy()) if held.height else np.empty(0, dtype=np.int64)
    frame = held.select("pnl").with_columns(bucket=pl.Series(b, dtype=pl.Int64))
    agg = frame.group_by("bucket").agg(bars=pl.len(), pnl=pl.col("pnl").sum())
    grid = pl.DataFrame({"bucket": np.arange(k, dtype=np.int64), "confidence": cmap.hit_rates})
    return (
        grid.join(agg, on="bucket", how="left")
        .with_columns(pl.col("bars").fill_null(0).cast(pl.Int64), pl.col("pnl").fill_null(0.0))
        .sort("bucket")
    )
