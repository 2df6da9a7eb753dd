"""A month computed alone (with LOOKBACK before and LOOKAHEAD after) equals that month inside a longer run."""

from __future__ import annotations

import datetime as dt

import polars as pl
from features_rawdata import STEP, build_matrix, make_raw, window
from polars.testing import assert_frame_equal

from quant_assets.features.keys import LOOKBACK, REQUIRED_LOOKBACK

JAN, FEB, MAR, APR = (dt.datetime(2024, m, 1, tzinfo=dt.UTC) for m in (1, 2, 3, 4))


def test_month_alone_equals_month_inside_three_months():
    raw = make_raw(
        21, JAN, int((APR - JAN) / STEP), ("BTCUSDT", "ETHUSDT"), gap_fraction=0.02, events_per_day=30
    )
    # ETH goes dark for three weeks and comes back 4 hours before February: the month alone then starts
    # ETH's grid late, the long run has empty rows there; both must give February the same windows
    dark = (pl.col("symbol") == "ETHUSDT") & pl.col("ts").is_between(
        dt.datetime(2024, 1, 10, tzinfo=dt.UTC), FEB - dt.timedelta(hours=4), closed="left"
    )
    for name in ("market_bars", "prices"):
        raw[name] = raw[name].filter(~dark)
    in_feb = pl.col("ts").is_between(FEB, MAR, closed="left")
    long = build_matrix(raw).filter(in_feb)
    alone = build_matrix(window(raw, FEB, MAR)).filter(in_feb)
    assert long.height == 2 * int((MAR - FEB) / STEP)
    assert long["label_4h"].null_count() < long.height * 0.2  # labels reach into March in both runs
    # rolling sums/stds carry float rounding from earlier rows, so equality is to 1e-9, not bit-exact
    assert_frame_equal(long, alone, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)


def test_lookback_covers_every_window_the_features_read():
    assert LOOKBACK >= REQUIRED_LOOKBACK >= dt.timedelta(hours=289)  # 288 closed hours behind the last one
