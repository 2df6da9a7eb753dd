"""No look-ahead: rows at or before t do not change whatever happens to raw rows after t."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from features_rawdata import STEP, build_matrix, make_raw, splice
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quant_assets.features.keys import LIQUID_FULL_FEATURE_KEYS, SENTIMENT_KEYS

START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
FEATURES = ["symbol", "ts", *LIQUID_FULL_FEATURE_KEYS]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed_a=st.integers(0, 10_000),
    seed_b=st.integers(0, 10_000),
    n_bars=st.integers(150, 420),
    n_coins=st.integers(1, 3),
    t_frac=st.floats(0.05, 0.95),
    gap_fraction=st.sampled_from([0.0, 0.03, 0.2]),
    drop_future=st.booleans(),
)
def test_feature_at_t_ignores_rows_after_t(
    seed_a, seed_b, n_bars, n_coins, t_frac, gap_fraction, drop_future
):
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")[:n_coins]
    t = START + STEP * int(t_frac * n_bars)
    end = START + STEP * n_bars  # the clock's extent is the caller's window, not the data's
    a = make_raw(seed_a, START, n_bars, symbols, gap_fraction=gap_fraction)
    b = make_raw(seed_b + 10_001, START, n_bars, symbols, gap_fraction=gap_fraction)
    if drop_future:  # delete every row after t
        b = {name: df.clear() for name, df in b.items()}
    # b's rows after t replace a's: values changed, rows added (b's gaps differ) and deleted
    spliced = splice(a, b, t)
    before = build_matrix(a, end=end).filter(pl.col("ts") <= t).select(FEATURES)
    after = build_matrix(spliced, end=end).filter(pl.col("ts") <= t).select(FEATURES)
    assert before.height > 0
    # Same rows, same nulls, same flags; floats equal to 1e-12. Polars' incremental rolling kernels may
    # round the last bit differently depending on how the frame is laid out in memory, which depends on
    # the whole input; a leak moves a value by far more (see the test below).
    assert_frame_equal(before, after, check_exact=False, rel_tol=1e-12, abs_tol=1e-15)


def test_the_property_test_can_fail_on_a_leaky_feature():
    """The same comparison flags a feature that peeks one bar ahead (guards the test itself)."""
    n_bars, t = 200, START + STEP * 120
    a = make_raw(1, START, n_bars)
    spliced = splice(a, make_raw(2, START, n_bars), t)

    def leaky(tables):
        m = build_matrix(tables, end=START + STEP * n_bars)
        return (
            m.with_columns(pl.col("ret_1").shift(-1).over("symbol"))
            .filter(pl.col("ts") <= t)
            .select(FEATURES)
        )

    with pytest.raises(AssertionError, match="ret_1"):
        assert_frame_equal(leaky(a), leaky(spliced), check_exact=False, rel_tol=1e-12, abs_tol=1e-15)


def _events_after(
    tables: dict[str, pl.DataFrame], other: dict[str, pl.DataFrame], t: dt.datetime, shift: bool
):
    """`tables` with every event published after t replaced by `other`'s (scores, texts, times, links).

    shift=True also moves the kept events' ts an hour later, which must change nothing: only
    available_at says when an item may be read.
    """
    ev, links = tables["events"], tables["event_links"]
    seen = ev.filter(pl.col("available_at") <= t)
    if shift:
        seen = seen.with_columns(pl.col("ts") + dt.timedelta(hours=1))
    late = other["events"].filter(pl.col("available_at") > t)
    events = pl.concat([seen, late])
    all_links = pl.concat([links, other["event_links"]]).unique(maintain_order=True)
    return {
        **tables,
        "events": events,
        "event_links": all_links.filter(pl.col("event_id").is_in(events["event_id"].implode())),
    }


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed_b=st.integers(0, 10_000), t_frac=st.floats(0.1, 0.95), shift=st.booleans())
def test_events_published_after_t_change_no_feature_at_or_before_t(seed_b, t_frac, shift):
    n_bars = 400
    t = START + STEP * int(t_frac * n_bars)
    a = make_raw(5, START, n_bars, events_per_day=300.0)
    b = make_raw(seed_b + 10_001, START, n_bars, events_per_day=300.0)
    before = build_matrix(a, end=START + STEP * n_bars).filter(pl.col("ts") <= t).select(FEATURES)
    after = build_matrix(_events_after(a, b, t, shift), end=START + STEP * n_bars)
    after = after.filter(pl.col("ts") <= t).select(FEATURES)
    assert_frame_equal(before, after, check_exact=False, rel_tol=1e-12, abs_tol=1e-15)


def test_the_event_property_test_can_fail_on_news_read_before_publication():
    """A pipeline that takes `ts` for the publication time reads items before they were published."""
    n_bars, t = 400, START + STEP * 200
    a = make_raw(5, START, n_bars, events_per_day=300.0)
    changed = _events_after(a, make_raw(6, START, n_bars, events_per_day=300.0), t, shift=False)

    def leaky(tables):
        early = tables["events"].with_columns(available_at=pl.col("ts"))
        m = build_matrix({**tables, "events": early}, end=START + STEP * n_bars)
        return m.filter(pl.col("ts") <= t).select("symbol", "ts", *SENTIMENT_KEYS)  # the new columns alone

    with pytest.raises(AssertionError, match="_sentiment_"):
        assert_frame_equal(leaky(a), leaky(changed), check_exact=False, rel_tol=1e-12, abs_tol=1e-15)
