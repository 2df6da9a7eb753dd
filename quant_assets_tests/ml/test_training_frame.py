"""Training frames keep exactly the rows whose label is known before the cut-off, no more and no fewer."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from quant_assets.features.keys import LIQUID_FEATURE_KEYS, LIQUID_FULL_FEATURE_KEYS
from quant_assets.ml import training_frame as tf_module
from quant_assets.ml.training_frame import (
    FastWindow,
    ProductionWindow,
    TooLittleHistory,
    training_frame,
    window_from_dict,
)

STEP = dt.timedelta(minutes=5)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
FEATURES = ("ret_1", "vol_12")
HOURS = {"1h": dt.timedelta(hours=1), "4h": dt.timedelta(hours=4)}


def make_matrix(rows_by_symbol: dict[str, list[dt.datetime]], null_every: int = 0) -> pl.DataFrame:
    """A frame shaped like feature_matrix_main; label values encode (symbol, row) so rows can be traced."""
    recs = []
    for k, (sym, times) in enumerate(sorted(rows_by_symbol.items())):
        for i, t in enumerate(times):
            null = null_every and i % null_every == 0
            recs.append(
                {
                    "symbol": sym,
                    "ts": t,
                    "ret_1": float(i),
                    "vol_12": float(k),
                    "label_1h": None if null else 1000.0 * k + i,
                    "label_4h": -1000.0 * k - i,
                    "close": 1.0,
                }
            )
    schema = {"symbol": pl.String, "ts": pl.Datetime("ms", "UTC"), "ret_1": pl.Float64, "vol_12": pl.Float64,
              "label_1h": pl.Float64, "label_4h": pl.Float64, "close": pl.Float64}  # fmt: skip
    return pl.DataFrame(recs, schema=schema)


def expected_rows(matrix: pl.DataFrame, cutoff, window, horizons) -> dict[tuple, dict]:
    """The rule written out row by row in plain Python: (symbol, ts) -> {label_h: value or None}."""
    hs = sorted(horizons, key=HOURS.get)
    out = {}
    for r in matrix.iter_rows(named=True):
        ts = r["ts"]
        ends = {h: ts + STEP + HOURS[h] for h in hs}  # close of the bar h after ts's bar
        if isinstance(window, ProductionWindow):
            lo, hi = (
                (cutoff - dt.timedelta(days=window.lookback_days), cutoff)
                if window.start is None
                else (window.start, window.end)
            )
            if not lo <= ts < hi:
                continue
        if not ends[hs[0]] < cutoff:
            continue
        out[(r["symbol"], ts)] = {f"label_{h}": r[f"label_{h}"] if ends[h] < cutoff else None for h in hs}
    if isinstance(window, FastWindow):
        by_sym: dict[str, list] = {}
        for key in sorted(out):
            by_sym.setdefault(key[0], []).append(key)
        keep = {k for keys in by_sym.values() for k in keys[-window.rows_per_coin :]}
        out = {k: v for k, v in out.items() if k in keep}
    return out


def check_exact(matrix, cutoff, window, horizons, result) -> None:
    """No kept label ends at or after the cut-off, and every row (and label) the rule allows is kept."""
    got = {
        (r["symbol"], r["ts"]): {k: r[k] for k in r if k.startswith("label_")}
        for r in result.frame.iter_rows(named=True)
    }
    for (sym, ts), labels in got.items():
        for col, v in labels.items():
            if v is not None:
                assert ts + STEP + HOURS[col.removeprefix("label_")] < cutoff, f"leak: {sym} {ts} {col}"
    want = expected_rows(matrix, cutoff, window, horizons)
    assert set(got) == set(want), (
        f"rows kept but not allowed: {sorted(set(got) - set(want))[:3]}; "
        f"allowed but dropped: {sorted(set(want) - set(got))[:3]}"
    )
    assert got == want


@st.composite
def cases(draw):
    n_coins = draw(st.integers(1, 3))
    rows = {}
    for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT")[:n_coins]:
        start = T0 + STEP * draw(st.integers(0, 200))
        n = draw(st.integers(0, 300))
        gaps = draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=20))
        rows[sym] = [start + STEP * i for i in range(n) if i not in gaps]
    # Mostly on the 5m grid, so rows whose label ends exactly at the cut-off exist; sometimes off it.
    offset = draw(st.sampled_from([dt.timedelta(0), dt.timedelta(0), dt.timedelta(minutes=2, seconds=30),
                                   dt.timedelta(milliseconds=1)]))  # fmt: skip
    cutoff = T0 + STEP * draw(st.integers(0, 600)) + offset
    kind = draw(st.sampled_from(["lookback", "explicit", "fast"]))
    if kind == "lookback":
        window = ProductionWindow(lookback_days=draw(st.integers(1, 3)))
    elif kind == "explicit":
        start = T0 + STEP * draw(st.integers(0, 400))
        end = min(start + STEP * draw(st.integers(1, 400)), cutoff)
        if end <= start:
            window = ProductionWindow()
        else:
            window = ProductionWindow(start=start, end=end)
    else:
        window = FastWindow(rows_per_coin=draw(st.integers(1, 120)))
    horizons = draw(st.sampled_from([("1h",), ("4h",), ("1h", "4h"), ("4h", "1h")]))
    null_every = draw(st.sampled_from([0, 7]))
    return make_matrix(rows, null_every), cutoff, window, horizons


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), lazy=st.booleans())
def test_training_frame_keeps_exactly_the_rows_whose_label_ends_before_the_cutoff(case, lazy):
    matrix, cutoff, window, horizons = case
    result = training_frame(matrix.lazy() if lazy else matrix, cutoff, window, FEATURES, horizons,
                            min_labelled_rows=0)  # fmt: skip
    check_exact(matrix, cutoff, window, horizons, result)
    assert result.frame.columns == ["symbol", "ts", *FEATURES, *(f"label_{h}" for h in sorted(horizons))]
    assert result.manifest.rows == result.frame.height


# Deliberately wrong variants of the purge: each moves the boundary by one bar. The property must
# catch both: the first leaks the row whose label ends at the cut-off, the second drops a knowable row.
@pytest.mark.parametrize(
    "wrong_step", [dt.timedelta(0), 2 * STEP], ids=["forgets_bar_close", "one_bar_early"]
)
def test_the_exactness_property_catches_an_off_by_one_purge(monkeypatch, wrong_step):
    monkeypatch.setattr(tf_module, "STEP", wrong_step)
    matrix = make_matrix({"BTCUSDT": [T0 + STEP * i for i in range(200)]})
    cutoff = T0 + STEP * 150
    result = training_frame(matrix, cutoff, ProductionWindow(), FEATURES, ("1h", "4h"), min_labelled_rows=0)
    with pytest.raises(AssertionError, match="leak|allowed but dropped: \\[\\('BTC"):
        check_exact(matrix, cutoff, ProductionWindow(), ("1h", "4h"), result)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
              phases=[Phase.generate])  # fmt: skip
    @given(case=cases())
    def prop(case):
        m, c, w, hs = case
        check_exact(m, c, w, hs, training_frame(m, c, w, FEATURES, hs, min_labelled_rows=0))

    with pytest.raises(AssertionError):
        prop()


def test_boundary_rows_for_a_month_cutoff():
    """Cut-off 2024-02-01 00:00: last 4h label at 19:50 (ends 23:55), last 1h label at 22:50."""
    cutoff = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    times = [cutoff - dt.timedelta(days=1) + STEP * i for i in range(2 * 288)]
    matrix = make_matrix({"BTCUSDT": times})
    result = training_frame(matrix, cutoff, ProductionWindow(), FEATURES)
    f = result.frame
    assert f["ts"].max() == dt.datetime(2024, 1, 31, 22, 50, tzinfo=dt.UTC)
    assert f.drop_nulls("label_4h")["ts"].max() == dt.datetime(2024, 1, 31, 19, 50, tzinfo=dt.UTC)
    m = result.manifest
    # 13 rows from 22:55 to 23:55 lose their 1h label; 49 rows from 19:55 lose their 4h label
    assert m.purged == {"1h": 13, "4h": 49}
    assert m.rows == 288 - 13
    assert m.coins["BTCUSDT"].labelled == {"1h": 288 - 13, "4h": 288 - 49}
    assert m.coins["BTCUSDT"].first_ts == cutoff - dt.timedelta(days=1)
    assert m.to_dict()["cutoff"] == "2024-02-01T00:00:00+00:00"


def test_fast_window_keeps_the_most_recent_rows_per_coin():
    cutoff = T0 + STEP * 400
    matrix = make_matrix({"BTCUSDT": [T0 + STEP * i for i in range(500)],
                          "ETHUSDT": [T0 + STEP * i for i in range(0, 300, 2)]})  # fmt: skip
    f = training_frame(matrix, cutoff, FastWindow(rows_per_coin=50), FEATURES, ("4h",)).frame
    btc = f.filter(pl.col("symbol") == "BTCUSDT")["ts"]
    assert btc.len() == 50 and btc.max() == cutoff - STEP - HOURS["4h"] - STEP
    assert f.filter(pl.col("symbol") == "ETHUSDT")["ts"].to_list() == [
        T0 + STEP * i for i in range(200, 300, 2)
    ]


def test_too_little_history_says_how_many_rows_and_how_many_are_needed():
    cutoff = T0 + STEP * 300
    matrix = make_matrix({"BTCUSDT": [T0 + STEP * i for i in range(300)],
                          "ETHUSDT": [T0 + STEP * i for i in range(250, 300)]})  # fmt: skip
    with pytest.raises(
        TooLittleHistory,
        match=r"ETHUSDT has 37 rows with a known label_1h; ETHUSDT has 1 rows with a known label_4h; needs 100",
    ):
        training_frame(matrix, cutoff, ProductionWindow(), FEATURES, min_labelled_rows=100)
    with pytest.raises(TooLittleHistory, match=r"SOLUSDT has 0 rows with a known label_1h"):
        training_frame(matrix, cutoff, ProductionWindow(), FEATURES, symbols=("BTCUSDT", "SOLUSDT"))
    with pytest.raises(TooLittleHistory, match=r"0 rows before the cut-off, needs 5"):
        training_frame(matrix, T0, ProductionWindow(), FEATURES, min_labelled_rows=5)
    # BTC alone: 300 rows, 300 - 13 with a 1h label, 300 - 49 with a 4h label
    ok = training_frame(
        matrix, cutoff, ProductionWindow(), FEATURES, symbols=("BTCUSDT",), min_labelled_rows=251
    )
    assert ok.manifest.coins["BTCUSDT"].labelled == {"1h": 287, "4h": 251}


def test_bad_inputs_fail_with_a_message_naming_the_problem():
    matrix = make_matrix({"BTCUSDT": [T0 + STEP * i for i in range(100)]})
    cutoff = T0 + STEP * 90
    with pytest.raises(ValueError, match=r"missing columns \['social_post_count_6h'\]"):
        training_frame(matrix, cutoff, ProductionWindow(), (*FEATURES, "social_post_count_6h"))
    with pytest.raises(ValueError, match="cut-off must be a UTC datetime"):
        training_frame(matrix, cutoff.replace(tzinfo=None), ProductionWindow(), FEATURES)
    with pytest.raises(ValueError, match="is after the cut-off"):
        training_frame(matrix, cutoff, ProductionWindow(start=T0, end=cutoff + STEP), FEATURES)
    with pytest.raises(ValueError, match="both start and end"):
        ProductionWindow(start=T0)
    with pytest.raises(ValueError, match="kind must be"):
        window_from_dict({"kind": "slow"})


def test_window_config_round_trips_through_json_dicts():
    w = ProductionWindow(start=T0, end=T0 + dt.timedelta(days=3))
    assert window_from_dict({"kind": "production", "start": T0.isoformat(), "end": w.end.isoformat()}) == w
    assert window_from_dict({"kind": "fast", "rows_per_coin": 7}) == FastWindow(7)
    assert window_from_dict({}) == ProductionWindow(lookback_days=420)


def test_feature_contracts_select_their_columns():
    """The student's and the teacher's contracts pick their keys; the text keys only in the full one."""
    n = 400
    times = [T0 + STEP * i for i in range(n)]
    cols = {k: [0.5] * n for k in LIQUID_FULL_FEATURE_KEYS}
    matrix = pl.DataFrame({"symbol": ["BTCUSDT"] * n, "ts": times, **cols, "label_1h": [0.1] * n,
                           "label_4h": [0.2] * n}).with_columns(pl.col("ts").dt.cast_time_unit("ms"))  # fmt: skip
    cutoff = T0 + STEP * n
    student = training_frame(matrix, cutoff, ProductionWindow(), LIQUID_FEATURE_KEYS)
    teacher = training_frame(matrix, cutoff, ProductionWindow(), LIQUID_FULL_FEATURE_KEYS)
    assert student.frame.columns[2:-2] == list(LIQUID_FEATURE_KEYS)
    assert teacher.frame.columns[2:-2] == list(LIQUID_FULL_FEATURE_KEYS)
    assert student.manifest.feature_keys_sha256 != teacher.manifest.feature_keys_sha256
    assert student.frame.height == teacher.frame.height == n - 13
