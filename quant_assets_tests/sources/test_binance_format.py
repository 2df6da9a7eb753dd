"""Properties of the Binance row converters: order, duplicates, time units, complete-hour aggregation."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
from binance_fixtures import csv_text, day_slice, kline_rows, real_bars
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_assets.sources.binance_format import (
    ParseNotes,
    StringRows,
    aggregate_klines,
    is_number,
    klines_frame,
)

DAY = dt.date(2025, 8, 4)
ROWS = kline_rows(day_slice(real_bars("ETHUSDT", "5m"), DAY), "5m")
CLEAN = klines_frame(
    StringRows.from_csv(csv_text(ROWS).encode(), "f.csv", 12, is_number),
    "ETHUSDT",
    "spot",
    "5m",
    ParseNotes(),
)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dup=st.lists(st.integers(0, len(ROWS) - 1), max_size=20))
def test_any_shuffle_with_exact_duplicates_parses_to_the_clean_day(seed, dup):
    rows = ROWS + [ROWS[i] for i in dup]
    random.Random(seed).shuffle(rows)
    notes = ParseNotes()
    got = klines_frame(
        StringRows.from_csv(csv_text(rows).encode(), "f.csv", 12, is_number), "ETHUSDT", "spot", "5m", notes
    )
    assert got.equals(CLEAN)
    assert notes.duplicates == len(dup)


@settings(max_examples=50, deadline=None)
@given(minutes=st.integers(0, (2100 - 2017) * 365 * 24 * 12))
def test_milliseconds_and_microseconds_give_the_same_time(minutes):
    t = dt.datetime(2017, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=5 * minutes)
    ms = int(t.timestamp() * 1000)
    src = StringRows.from_json([[ms], [ms * 1000]], "t", 1)
    got = src.epoch(0, "open_time").to_list()
    assert got == [t, t]


@settings(max_examples=25, deadline=None)
@given(drop=st.sets(st.integers(0, 287), max_size=30))
def test_an_hour_is_aggregated_only_when_all_twelve_5m_bars_exist(drop):
    bars = CLEAN.with_row_index("_i").filter(~pl.col("_i").is_in(sorted(drop))).drop("_i")
    hours = aggregate_klines(bars)
    incomplete = {i // 12 for i in drop}
    assert hours.height == 24 - len(incomplete)
    expected_hours = [dt.datetime.combine(DAY, dt.time(h), dt.UTC) for h in range(24) if h not in incomplete]
    assert hours["ts"].to_list() == expected_hours
    assert (
        hours["trades"]
        == CLEAN.group_by_dynamic("ts", every="1h")
        .agg(pl.col("trades").sum())
        .filter(pl.col("ts").is_in(expected_hours))["trades"]
    ).all()
