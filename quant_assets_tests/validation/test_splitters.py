"""Splitters: skfolio golden examples, de Prado's purge, and invariants under random label intervals."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_score

from quant_assets.validation.intervals import LabelIntervals, overlaps_any
from quant_assets.validation.splitters import CombinatorialPurgedCV, PurgedKFold, WalkForward

X12 = np.zeros((12, 2))
SKFOLIO_TESTS = [[[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 1, 2, 3], [8, 9, 10, 11]], [[4, 5, 6, 7], [8, 9, 10, 11]]]


def _groups(cv, X=X12):
    return [(train.tolist(), [t.tolist() for t in tests]) for train, tests in cv.split_test_groups(X)]


def test_cpcv_without_purge_reproduces_the_skfolio_docstring():
    out = _groups(CombinatorialPurgedCV(n_folds=3, n_test_folds=2))
    assert [tr for tr, _ in out] == [[8, 9, 10, 11], [4, 5, 6, 7], [0, 1, 2, 3]]
    assert [te for _, te in out] == SKFOLIO_TESTS


def test_cpcv_purged_size_one_drops_one_row_on_each_side_of_each_test_block_as_skfolio():
    out = _groups(CombinatorialPurgedCV(n_folds=3, n_test_folds=2, purged_size=1))
    assert [tr for tr, _ in out] == [[9, 10, 11], [5, 6], [0, 1, 2]]
    assert [te for _, te in out] == SKFOLIO_TESTS


def test_cpcv_embargo_size_one_drops_one_row_after_each_test_block_as_skfolio():
    out = _groups(CombinatorialPurgedCV(n_folds=3, n_test_folds=2, embargo_size=1))
    assert [tr for tr, _ in out] == [[9, 10, 11], [5, 6, 7], [0, 1, 2, 3]]
    assert [te for _, te in out] == SKFOLIO_TESTS


def test_cpcv_purge_and_embargo_add_up_after_a_test_block():
    out = _groups(
        CombinatorialPurgedCV(n_folds=3, n_test_folds=2, purged_size=1, embargo_size=1), np.zeros((15, 1))
    )
    # groups of 5: test {0,1} = rows 0-9 -> rows 10 (purge) and 11 (embargo) go
    assert out[0][0] == [12, 13, 14]
    # test {0,2}: purge row 5 after block 0-4 and row 9 before block 10-14, embargo row 6
    assert out[1][0] == [7, 8]


def test_cpcv_last_group_takes_the_remainder_like_skfolio():
    out = _groups(CombinatorialPurgedCV(n_folds=3, n_test_folds=2), np.zeros((14, 1)))
    assert out[2][1] == [[4, 5, 6, 7], [8, 9, 10, 11, 12, 13]]


def test_cpcv_split_is_sklearn_shaped_with_sorted_concatenated_test_rows():
    cv = CombinatorialPurgedCV(n_folds=3, n_test_folds=2, purged_size=1)
    splits = list(cv.split(X12))
    assert len(splits) == cv.get_n_splits() == 3
    assert splits[1][1].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert all(isinstance(a, np.ndarray) and a.dtype.kind == "i" for s in splits for a in s)


def test_cpcv_paths_follow_skfolio_numbering_and_count():
    cv = CombinatorialPurgedCV(n_folds=3, n_test_folds=2)
    assert cv.n_test_paths == 2
    assert cv.recombined_paths.tolist() == [[0, 1], [0, 2], [1, 2]]
    assert cv.get_path_ids().tolist() == [[0, 0], [1, 0], [1, 1]]
    big = CombinatorialPurgedCV(n_folds=6, n_test_folds=2)
    assert (big.n_splits, big.n_test_paths) == (15, 5)


def test_cpcv_each_path_tests_every_row_exactly_once_from_splits_that_tested_it():
    cv = CombinatorialPurgedCV(n_folds=6, n_test_folds=3)
    X = np.zeros((60, 1))
    splits = list(cv.split(X))
    # tag each out-of-sample value with its split so the path can be traced back
    values = [np.full(len(test), i, dtype=float) for i, (_, test) in enumerate(splits)]
    paths = cv.recombine(values, X)
    assert paths.shape == (math.comb(5, 2), 60)
    assert np.isfinite(paths).all()
    tested_by = [set(np.flatnonzero([r in set(test) for _, test in splits])) for r in range(60)]
    for p in range(cv.n_test_paths):
        for r in range(60):
            assert int(paths[p, r]) in tested_by[r]
    # different paths use different splits for the same row
    for r in range(60):
        assert len(set(paths[:, r].astype(int))) == cv.n_test_paths


def test_purged_kfold_drops_training_labels_that_overlap_the_test_fold_and_embargoes_after_the_purge():
    t0 = np.arange(12)
    t1 = t0 + 2  # each label spans three bars
    cv = PurgedKFold(n_splits=3, t0=t0, t1=t1, embargo_size=1)
    train, test = list(cv.split(X12))[1]
    assert test.tolist() == [4, 5, 6, 7]
    # rows 2, 3 end inside the test fold; rows 8, 9 start before its last label ends (9); row 10 is the embargo
    assert train.tolist() == [0, 1, 11]


def test_purged_kfold_time_embargo_extends_each_test_label_end():
    t0 = np.arange(12.0)
    cv = PurgedKFold(n_splits=3, t0=t0, t1=t0, embargo_td=2.0)
    train, _ = list(cv.split(X12))[1]
    assert train.tolist() == [0, 1, 2, 3, 10, 11]


def test_walk_forward_sliding_windows_respect_gap_and_step():
    cv = WalkForward(test_size=3, train_size=4, step=2, gap=1)
    splits = [(tr.tolist(), te.tolist()) for tr, te in cv.split(X12)]
    assert splits == [([0, 1, 2, 3], [5, 6, 7]), ([2, 3, 4, 5], [7, 8, 9]), ([4, 5, 6, 7], [9, 10, 11])]
    assert cv.get_n_splits(X12) == 3


def test_walk_forward_expanding_keeps_the_first_row_in_training():
    cv = WalkForward(test_size=4, train_size=4, expanding=True)
    splits = [(tr.tolist(), te.tolist()) for tr, te in cv.split(X12)]
    assert splits == [([0, 1, 2, 3], [4, 5, 6, 7]), ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11])]


def test_walk_forward_purges_training_labels_that_end_inside_the_test_window():
    t0 = np.arange(12)
    cv = WalkForward(test_size=4, train_size=6, t0=t0, t1=t0 + 3)
    train, test = next(cv.split(X12))
    assert test.tolist() == [6, 7, 8, 9]
    assert train.tolist() == [0, 1, 2]  # rows 3-5 end at 6-8, inside the test window


def test_panel_rows_sharing_a_timestamp_stay_in_one_fold():
    times = np.repeat(pd.date_range("2024-01-01", periods=20, freq="5min", tz="UTC").to_numpy(), 3)
    t0 = pd.Series(times)
    t1 = t0 + pd.Timedelta(minutes=10)
    cv = PurgedKFold(n_splits=4, t0=t0, t1=t1, embargo_td=dt.timedelta(minutes=5))
    X = np.zeros((60, 1))
    seen = np.zeros(60, dtype=int)
    for train, test in cv.split(X):
        seen[test] += 1
        assert set(t0.iloc[train]).isdisjoint(set(t0.iloc[test]))
        assert len(test) % 3 == 0
        # the embargo of 5 minutes after a label ending at t1 covers the next bar too
        last_test_end = t1.iloc[test].max()
        after = t0.iloc[train][t0.iloc[train] > last_test_end]
        if len(after):
            assert after.min() > last_test_end + pd.Timedelta(minutes=5)
    assert (seen == 1).all()


def test_t1_series_indexed_by_t0_is_de_prados_input_convention():
    idx = pd.date_range("2024-01-01", periods=12, freq="h")
    t1 = pd.Series(idx + pd.Timedelta(hours=2), index=idx)
    a = [tr.tolist() for tr, _ in PurgedKFold(3, t1=t1).split(X12)]
    b = [tr.tolist() for tr, _ in PurgedKFold(3, t0=np.arange(12), t1=np.arange(12) + 2).split(X12)]
    assert a == b


def test_polars_datetime_intervals_are_accepted():
    ts = pl.datetime_range(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 55), "5m", time_zone="UTC", eager=True
    )
    iv = LabelIntervals.build(ts, ts.dt.offset_by("10m"))
    assert iv.n_steps == 12 and iv.t0.dtype == np.int64
    assert (iv.t1 - iv.t0 == 600 * 10**9).all()


def test_interval_that_ends_before_it_starts_is_rejected_naming_the_row():
    with pytest.raises(ValueError, match="row 3 ends before it starts"):
        LabelIntervals.build(np.arange(5), np.array([0, 1, 2, 1, 4]))
    with pytest.raises(ValueError, match="5 intervals for 12 rows"):
        list(PurgedKFold(3, t0=np.arange(5), t1=np.arange(5)).split(X12))


def test_cpcv_rejects_a_purge_wider_than_a_group():
    with pytest.raises(ValueError, match="smaller than a group"):
        list(CombinatorialPurgedCV(3, 2, purged_size=2, embargo_size=1).split(X12))


def test_splitters_plug_into_sklearn_cross_val_score():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.1, size=120)
    t0 = np.arange(120)
    for cv in (
        PurgedKFold(4, t0=t0, t1=t0 + 5, embargo_size=2),
        CombinatorialPurgedCV(5, 2, t0=t0, t1=t0 + 5),
        WalkForward(20, 40, t0=t0, t1=t0 + 5),
    ):
        scores = cross_val_score(LinearRegression(), X, y, cv=cv)
        assert len(scores) == cv.get_n_splits(X) and (scores > 0.95).all()


def test_overlaps_any_treats_intervals_as_closed():
    hit = overlaps_any(np.array([0.0, 3.0, 6.0]), np.array([2.0, 4.0, 7.0]), np.array([2.0]), np.array([3.0]))
    assert hit.tolist() == [True, True, False]


@st.composite
def label_intervals(draw):
    n = draw(st.integers(min_value=12, max_value=60))
    steps = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))  # 0 = several rows at one time
    t0 = np.cumsum(steps).astype(float)
    lengths = np.array(draw(st.lists(st.floats(0, 8, allow_nan=False), min_size=n, max_size=n)))
    order = draw(st.permutations(range(n)))  # rows need not be sorted by time
    return t0[list(order)], (t0 + lengths)[list(order)]


def _assert_no_leak(t0, t1, train, test, embargo):
    hit = (t0[train][:, None] <= t1[test][None, :] + embargo) & (t1[train][:, None] >= t0[test][None, :])
    assert not hit.any()


@settings(max_examples=60, deadline=None)
@given(
    iv=label_intervals(),
    k=st.integers(2, 5),
    embargo=st.floats(0, 5, allow_nan=False),
    purged=st.integers(0, 1),
    emb_rows=st.integers(0, 2),
)
def test_purged_kfold_never_trains_on_a_label_overlapping_an_embargo_extended_test_label(
    iv, k, embargo, purged, emb_rows
):
    t0, t1 = iv
    if len(np.unique(t0)) < k:
        return
    cv = PurgedKFold(k, t0=t0, t1=t1, embargo_td=embargo, purged_size=purged, embargo_size=emb_rows)
    tested = np.zeros(len(t0), dtype=int)
    for train, test in cv.split(np.zeros((len(t0), 1))):
        tested[test] += 1
        assert not set(train) & set(test)
        _assert_no_leak(t0, t1, train, test, embargo)
        # the row embargo: the first `emb_rows` surviving times after each test block are gone
        if emb_rows and len(train):
            grid = np.unique(t0)
            test_steps = np.isin(grid, t0[test])
            blocks_end = np.flatnonzero(test_steps & ~np.append(test_steps[1:], False))
            train_steps = np.searchsorted(grid, t0[train])
            for e in blocks_end:
                later = train_steps[train_steps > e]
                if len(later):
                    nxt_test = np.flatnonzero(test_steps[e + 1 :])
                    limit = e + 1 + (nxt_test[0] if len(nxt_test) else len(grid))
                    assert later.min() > e + emb_rows or later.min() >= limit
    assert (tested == 1).all()


@settings(max_examples=40, deadline=None)
@given(iv=label_intervals(), embargo=st.floats(0, 5, allow_nan=False))
def test_cpcv_never_trains_on_a_label_overlapping_an_embargo_extended_test_label(iv, embargo):
    t0, t1 = iv
    if len(np.unique(t0)) < 8:
        return
    cv = CombinatorialPurgedCV(4, 2, t0=t0, t1=t1, embargo_td=embargo)
    tested = np.zeros(len(t0), dtype=int)
    for train, test in cv.split(np.zeros((len(t0), 1))):
        tested[test] += 1
        _assert_no_leak(t0, t1, train, test, embargo)
    assert (tested == cv.n_test_paths).all()
