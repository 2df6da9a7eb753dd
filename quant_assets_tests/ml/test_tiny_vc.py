"""The event (VC) model: features, the cut-off time rule, distillation and the OOS metrics.

Events come from the market simulator (January-March 2024; cut-off March 1st): news of five types from sources of tiers
1-4, linked to coins and exchanges/projects/regulators.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import roc_auc_score

from quant_assets.ml import tiny_vc as vc
from quant_assets.sources.synthetic import MarketSimulator

FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
CUTOFF = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
END = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
CFG = vc.VCConfig()


@cache
def raw() -> dict[str, pl.DataFrame]:
    sim = MarketSimulator(seed=5, signal_strength=0.0)
    return sim.fetch(["events", "event_links", "entities"], dt.date(2024, 1, 1), dt.date(2024, 4, 1), FAR)


@cache
def features() -> pl.DataFrame:
    r = raw()
    return vc.event_features(r["events"], r["event_links"], r["entities"])


def test_the_model_ranks_funding_and_mna_events_clearly_above_the_rest_out_of_sample():
    f = features()
    train, oos = vc.training_events(f, CUTOFF), vc.scoring_events(f, CUTOFF, END)
    assert train.height > 300 and oos.height > 100
    x, y = vc.arrays(train)
    fit = vc.train(x, y, CFG)
    xo, yo = vc.arrays(oos)
    m = vc.evaluate(fit, xo, yo)
    # the ordinal type value lets the linear teacher rank only partly (funding 0, mna 0.5 in the middle);
    # the MLP learns the non-monotone rule from the labels
    assert m["auc_teacher"] > 0.7 and m["auc_student"] > 0.95, m
    assert m["ece_student"] < 0.1 and m["ece_student"] < m["ece_teacher"], m
    assert m["auc_student"] == pytest.approx(roc_auc_score(yo, fit.predict(xo)["student"]), abs=1e-12)
    # uninformative labels (shuffled): nothing to learn, AUC near one half
    rng = np.random.default_rng(0)
    null = vc.train(x, rng.permutation(y), CFG)
    m0 = vc.evaluate(null, xo, rng.permutation(yo))
    assert abs(m0["auc_student"] - 0.5) < 0.08 and abs(m0["auc_teacher"] - 0.5) < 0.08, m0


def test_the_training_set_ignores_every_event_available_at_or_after_the_cutoff():
    r = raw()
    events = r["events"]
    later = pl.col("available_at") >= CUTOFF
    # rewrite the future: every later event becomes a tier-1 funding round, half of them are deleted,
    # and a burst of new ones about the same entities appears
    changed = events.filter(~later | (pl.col("event_id").str.slice(-1).is_in(["0", "2", "4", "6", "8"]))).with_columns(
        event_type=pl.when(later).then(pl.lit("funding")).otherwise(pl.col("event_type")),
        source_tier=pl.when(later).then(pl.lit(1, pl.Int8)).otherwise(pl.col("source_tier")),
    )  # fmt: skip
    extra = events.filter(later).head(50).with_columns(pl.col("event_id") + "-new")
    extra_links = r["event_links"].join(extra.select(pl.col("event_id").str.strip_suffix("-new").alias("event_id")),
                                        on="event_id").with_columns(pl.col("event_id") + "-new")  # fmt: skip
    f0 = features()
    f1 = vc.event_features(
        pl.concat([changed, extra]), pl.concat([r["event_links"], extra_links]), r["entities"]
    )
    t0, t1 = vc.training_events(f0, CUTOFF), vc.training_events(f1, CUTOFF)
    assert_frame_equal(t0, t1)
    assert t0["available_at"].max() < CUTOFF
    a, b = vc.train(*vc.arrays(t0), CFG), vc.train(*vc.arrays(t1), CFG)
    assert np.array_equal(a.teacher_coef, b.teacher_coef)
    assert all(torch_equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))
    # the month after the cut-off did change, and one earlier event changed does move the training set
    assert not vc.scoring_events(f0, CUTOFF, END).equals(vc.scoring_events(f1, CUTOFF, END))
    first = events.filter(~later & pl.col("event_type").is_in(vc.NEWS_TYPES))["event_id"][5]
    earlier = vc.event_features(events.with_columns(
        confidence_score=pl.when(pl.col("event_id") == first).then(0.01).otherwise(pl.col("confidence_score"))),
        r["event_links"], r["entities"])  # fmt: skip
    assert not vc.training_events(earlier, CUTOFF).equals(t0)


def torch_equal(p, q) -> bool:
    return bool((p == q).all())


def test_fast_mode_keeps_the_most_recent_events_and_production_keeps_all():
    f = features()
    every = vc.training_events(f, CUTOFF)
    capped = vc.training_events(f, CUTOFF, max_events=100)
    assert capped.height == 100 and every.height > 100
    assert_frame_equal(capped, every.tail(100))


def test_features_follow_their_definitions_on_a_hand_made_story():
    t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    events = pl.DataFrame({
        "event_id": ["a", "b", "c", "d", "s"],
        "ts": [t, t + dt.timedelta(hours=5), t + dt.timedelta(hours=9), t + dt.timedelta(days=9), t],
        "available_at": [t + dt.timedelta(hours=1), t + dt.timedelta(hours=6), t + dt.timedelta(hours=10),
                         t + dt.timedelta(days=9), t],
        "event_type": ["funding", "market", "mna", "regulatory", "social_post"],
        "source_tier": pl.Series([1, 3, 2, 4, 5], dtype=pl.Int8),
        "confidence_score": [0.9, 0.6, 0.8, 0.5, 0.2],
    })  # fmt: skip
    links = pl.DataFrame({"event_id": ["a", "a", "b", "c"], "entity_id": ["coin:BTC", "project:aave", "coin:BTC", "coin:ETH"],
                          "relevance": [0.9, 0.8, 0.95, 0.7]})  # fmt: skip
    f = vc.event_features(events, links).sort("event_id")
    assert f["event_id"].to_list() == ["a", "b", "c", "d"]  # social items are not news
    assert f["label"].to_list() == [1, 0, 1, 0]
    assert f["type_value"].to_list() == [0.0, 1.0, 0.5, 0.75]
    assert f["tier"].to_list() == pytest.approx([0.2, 0.6, 0.4, 0.8])
    # b continues a's BTC story after 5 hours; a, c (first ETH item) and unlinked d start stories
    assert f["recency_decay"].to_list() == pytest.approx(
        [np.exp(-7), np.exp(-5 / 24), np.exp(-7), np.exp(-7)]
    )
    assert f["recency_norm"].to_list() == pytest.approx([1.0, 5 / 168, 1.0, 1.0])


def test_auc_and_calibration_match_their_definitions():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.2, 0.9])
    assert vc.auc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(vc.auc(s, np.zeros(8)))
    # a perfectly calibrated forecaster: in each bin the positive rate equals the prediction
    p = np.repeat([0.25, 0.75], 4)
    assert vc.ece(p, np.array([1, 0, 0, 0, 1, 1, 1, 0])) == pytest.approx(0.0)
    # always 0.9 on events that are positive half the time: off by 0.4 everywhere
    assert vc.ece(np.full(8, 0.9), y) == pytest.approx(0.4)


def test_a_fit_saves_in_safe_formats_and_loads_back_to_the_same_predictions(tmp_path):
    x, y = vc.arrays(vc.training_events(features(), CUTOFF))
    fit = vc.train(x, y, vc.VCConfig(steps=50))
    fit.save(tmp_path / "m")
    back = vc.VCFit.load(tmp_path / "m")
    for k, v in fit.predict(x).items():
        assert np.array_equal(back.predict(x)[k], v)
    with pytest.raises(ValueError, match="both labels"):
        vc.train(x, np.zeros(len(x)), CFG)
