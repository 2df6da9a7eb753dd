"""The event (VC) model: is a news event a funding round or an M&A deal? A linear teacher distilled into a tiny MLP.

Five numbers per news event (the `events` table, types funding / product / mna / regulatory / market;
social items are not news and are left out):

| feature | definition |
|---|---|
| `type_value` | the event type's position in NEWS_TYPES scaled to [0, 1] (funding 0, product 0.25, mna 0.5, regulatory 0.75, market 1): one ordinal number, not a one-hot, so a linear score cannot single out funding and M&A exactly |
| `tier` | source_tier / 5 (1 = most reliable source) |
| `confidence` | confidence_score as published |
| `recency_decay` | exp(-gap / 24h), gap = time since the previous news event about the same primary entity became available |
| `recency_norm` | min(gap, 7 days) / 7 days |

The primary entity is the event's link (`event_links`) of highest relevance (ties: entity_id); its
type comes from `entities`. An event with no link is its own story (gap = 7 days). Label: 1 for
funding and mna events (`POSITIVE_TYPES`), 0 otherwise.

Time rule. An event is known at its `available_at`. Its features use only news events that became
available before it (strictly earlier, or at the same instant with a smaller event_id), so they are
known at its own `available_at`. A model with cut-off C learns from events with available_at < C
(`training_events`: all of them, or the `max_events` most recent for a fast run) and is scored on the
events of [C, end) - changing or adding any event available at or after C changes nothing it learnt.

Model (nanoGPT-style: config dataclass, one model, one training loop read top to bottom):
- teacher: least squares of the label on [1, features] (one `lstsq`, no iterations), its score
  clipped to [0.001, 0.999] as a probability;
- student: `TinyVC`, an MLP of `n_layers` hidden layers of `hidden` units, trained with AdamW on
  (1 - distill_weight) * BCE(label) + distill_weight * BCE(teacher probability).
OOS report: AUC (Mann-Whitney, ties counted half) and calibration (expected calibration error over
`n_bins` equal-width bins of the predicted probability, and the reliability table behind it).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from scipy.stats import rankdata
from torch import nn

NEWS_TYPES = ("funding", "product", "mna", "regulatory", "market")
POSITIVE_TYPES = ("funding", "mna")
TYPE_VALUE = {t: i / (len(NEWS_TYPES) - 1) for i, t in enumerate(NEWS_TYPES)}
FEATURES = ("type_value", "tier", "confidence", "recency_decay", "recency_norm")
RECENCY_TAU = dt.timedelta(hours=24)
RECENCY_MAX = dt.timedelta(days=7)
UNLINKED = "unlinked"
PROB_CLIP = 1e-3


# ------------------------------------------------------------------------------------------- features
def event_features(events, event_links=None, entities=None) -> pl.DataFrame:
    """One row per news event: event_id, ts, available_at, event_type, entity_id, entity_type, label, FEATURES.

    `events`, `event_links`, `entities` are frames (or lazy frames) shaped like the raw tables; the
    links and entities may be None (every event is then its own story). Sorted by (available_at, event_id).
    """
    ev = (
        events.lazy()
        .filter(pl.col("event_type").is_in(NEWS_TYPES))
        .select("event_id", "ts", "available_at", "event_type", "source_tier", "confidence_score")
    )
    if event_links is not None:
        primary = (
            event_links.lazy()
            .select("event_id", "entity_id", "relevance")
            .sort("event_id", "relevance", "entity_id", descending=[False, True, False])
            .group_by("event_id", maintain_order=True)
            .first()
            .select("event_id", "entity_id")
        )
        ev = ev.join(primary, on="event_id", how="left")
    else:
        ev = ev.with_columns(entity_id=pl.lit(None, pl.String))
    if entities is not None:
        kinds = entities.lazy().select("entity_id", "entity_type").unique("entity_id", keep="first")
        ev = ev.join(kinds, on="entity_id", how="left")
    else:
        ev = ev.with_columns(entity_type=pl.lit(None, pl.String))
    df = ev.collect().sort("available_at", "event_id")
    bad = df.filter(pl.col("available_at").is_null() | pl.col("source_tier").is_null()
                    | pl.col("confidence_score").is_null())  # fmt: skip
    if bad.height:
        raise ValueError(f"events: {bad.height} news rows lack available_at, source_tier or confidence_score "
                         f"(first event_id {bad['event_id'][0]!r})")  # fmt: skip
    # The previous news event about the same entity, in availability order (ties: event_id); unlinked
    # events have no story to continue.
    linked = pl.col("entity_id").is_not_null()
    prev = (
        pl.col("available_at")
        .shift(1)
        .over(pl.col("entity_id").fill_null(UNLINKED), order_by=["available_at", "event_id"])
    )
    gap_h = pl.when(linked & prev.is_not_null()).then(
        (pl.col("available_at") - prev).dt.total_milliseconds() / 3.6e6
    )
    max_h = RECENCY_MAX.total_seconds() / 3600
    return df.with_columns(gap_h=gap_h.fill_null(max_h).clip(0.0, max_h)).select(
        "event_id",
        "ts",
        "available_at",
        "event_type",
        pl.col("entity_id").fill_null(UNLINKED),
        "entity_type",
        pl.col("event_type").is_in(POSITIVE_TYPES).cast(pl.Int8).alias("label"),
        pl.col("event_type").replace_strict(TYPE_VALUE, return_dtype=pl.Float64).alias("type_value"),
        (pl.col("source_tier").cast(pl.Float64) / 5.0).alias("tier"),
        pl.col("confidence_score").cast(pl.Float64).alias("confidence"),
        (-pl.col("gap_h") / (RECENCY_TAU.total_seconds() / 3600)).exp().alias("recency_decay"),
        (pl.col("gap_h") / max_h).alias("recency_norm"),
    )


def training_events(
    features: pl.DataFrame, cutoff: dt.datetime, max_events: int | None = None
) -> pl.DataFrame:
    """Events a model with cut-off `cutoff` may learn from: available_at < cutoff; the `max_events` most
    recent of them when a cap is given (fast runs), all of them otherwise (production)."""
    rows = features.filter(pl.col("available_at") < cutoff)
    if max_events is not None:
        rows = rows.sort("available_at", "event_id").tail(max_events)
    return rows


def scoring_events(features: pl.DataFrame, cutoff: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """The out-of-sample events of a cut-off: available in [cutoff, end)."""
    return features.filter((pl.col("available_at") >= cutoff) & (pl.col("available_at") < end))


def arrays(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return rows.select(FEATURES).to_numpy().astype(np.float64), rows["label"].to_numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class VCConfig:
    hidden: int = 16
    n_layers: int = 2
    steps: int = 600
    batch: int = 1024  # events per step (the whole set when smaller)
    lr: float = 3e-2
    weight_decay: float = 1e-4
    # share of the loss on the teacher's probabilities: the linear teacher is poorly calibrated (OOS ECE
    # ~0.2 on simulated events), so at 0.5 the student inherited ECE ~0.1-0.12; at 0.3 it was 0.06-0.07
    distill_weight: float = 0.3
    seed: int = 0
    threads: int = 1


class TinyVC(nn.Module):
    def __init__(self, cfg: VCConfig, n_features: int = len(FEATURES)):
        super().__init__()
        layers, width = [], n_features
        for _ in range(cfg.n_layers):
            layers += [nn.Linear(width, cfg.hidden), nn.GELU()]
            width = cfg.hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # logits


def fit_teacher(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of y on [1, x]: the coefficients (intercept first), one closed-form solve."""
    design = np.column_stack([np.ones(len(x)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef


def teacher_prob(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.clip(coef[0] + x @ coef[1:], PROB_CLIP, 1 - PROB_CLIP)


@dataclass
class VCFit:
    config: VCConfig
    teacher_coef: np.ndarray
    model: TinyVC
    loss: list[tuple[int, float]]
    train_events: int
    train_positive_rate: float

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Student and teacher probabilities of label 1."""
        with torch.no_grad():
            p = torch.sigmoid(self.model(torch.as_tensor(x, dtype=torch.float32))).numpy().astype(np.float64)
        return {"student": p, "teacher": teacher_prob(self.teacher_coef, x)}

    def save(self, directory: Path) -> None:
        """state_dict (read back with weights_only=True) and a JSON manifest: safe formats only."""
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), directory / "student.pt")
        (directory / "vc_model.json").write_text(json.dumps({
            "config": asdict(self.config), "features": list(FEATURES), "teacher_coef": self.teacher_coef.tolist(),
            "train_events": self.train_events, "train_positive_rate": self.train_positive_rate,
            "loss": self.loss}, indent=1))  # fmt: skip

    @classmethod
    def load(cls, directory: Path) -> VCFit:
        m = json.loads((directory / "vc_model.json").read_text())
        cfg = VCConfig(**m["config"])
        model = TinyVC(cfg)
        model.load_state_dict(torch.load(directory / "student.pt", weights_only=True))
        model.eval()
        return cls(cfg, np.asarray(m["teacher_coef"]), model, [tuple(v) for v in m["loss"]],
                   m["train_events"], m["train_positive_rate"])  # fmt: skip


def train(x: np.ndarray, y: np.ndarray, cfg: VCConfig = VCConfig()) -> VCFit:
    """Fit the teacher in closed form, then distil it (and the labels) into the MLP. Deterministic."""
    if len(y) < 10 or len(np.unique(y)) < 2:
        raise ValueError(f"tiny_vc.train: need at least 10 events of both labels, got {len(y)} "
                         f"with labels {sorted(set(y.tolist()))}")  # fmt: skip
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    coef = fit_teacher(x, y)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    soft = torch.as_tensor(teacher_prob(coef, x), dtype=torch.float32)
    model = TinyVC(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    bce = nn.functional.binary_cross_entropy_with_logits
    losses = []
    for step in range(1, cfg.steps + 1):
        idx = (
            torch.randint(len(y), (min(cfg.batch, len(y)),), generator=gen)
            if cfg.batch < len(y)
            else slice(None)
        )
        logits = model(xt[idx])
        loss = (1 - cfg.distill_weight) * bce(logits, yt[idx]) + cfg.distill_weight * bce(logits, soft[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == cfg.steps:
            losses.append((step, float(loss.item())))
    model.eval()
    return VCFit(cfg, coef, model, losses, len(y), float(y.mean()))


# -------------------------------------------------------------------------------------------- metrics
def auc(score: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg), ties half); NaN without both labels."""
    y = np.asarray(y) > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reliability(prob: np.ndarray, y: np.ndarray, n_bins: int = 10) -> pl.DataFrame:
    """Per equal-width bin of the predicted probability: rows, mean prediction, observed positive rate."""
    b = np.minimum((np.asarray(prob) * n_bins).astype(np.int64), n_bins - 1)
    return (
        pl.DataFrame({"bin": b, "prob": prob, "label": np.asarray(y, dtype=np.float64)})
        .group_by("bin")
        .agg(
            pl.len().alias("n"),
            pl.col("prob").mean().alias("mean_prob"),
            pl.col("label").mean().alias("positive_rate"),
        )
        .sort("bin")
        .with_columns(lo=pl.col("bin") / n_bins, hi=(pl.col("bin") + 1) / n_bins)
    )


def ece(prob: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (rows share) x |mean prediction - positive rate|."""
    if len(prob) == 0:
        return math.nan
    t = reliability(prob, y, n_bins)
    return float((t["n"] / len(prob) * (t["mean_prob"] - t["positive_rate"]).abs()).sum())


def evaluate(fit: VCFit, x: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """OOS AUC, ECE and Brier score of the student and the teacher, with the event count and base rate."""
    p = fit.predict(x)
    out: dict[str, float] = {"n": float(len(y)), "positive_rate": float(np.mean(y)) if len(y) else math.nan}
    for who, prob in p.items():
        out[f"auc_{who}"] = auc(prob, y)
        out[f"ece_{who}"] = ece(prob, y, n_bins)
        out[f"brier_{who}"] = float(np.mean((prob - y) ** 2)) if len(y) else math.nan
    return out
