"""Bad archive input: each case is a clear error (or a counted quarantine) and the lake is unchanged,
or a gap counted in the source report and the coverage audit; never silently wrong rows.

Most tests first load a clean day into a real Delta lake, then damage one file of the mirror
and attempt the same load + write. The lake's version and content must be what they were.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import zipfile
from pathlib import Path

import polars as pl
import pytest
from binance_fixtures import (
    KLINE_HEADER,
    METRICS_HEADER,
    LocalServer,
    RestReplay,
    build_mirror,
    csv_text,
    day_slice,
    kline_rows,
    metrics_rows,
    real_bars,
    rest_kline,
    spot_rel,
    um_rel,
    write_archive_file,
)

from quant_assets import coverage, lake
from quant_assets.schemas import RAW_TABLES
from quant_assets.sources.binance import BinanceSource
from quant_assets.sources.binance_archive import (
    ArchiveFormatError,
    ArchiveIntegrityError,
    ArchiveStore,
    BinanceArchive,
)

AUG4, AUG5 = dt.date(2025, 8, 4), dt.date(2025, 8, 5)
UNTIL = dt.datetime(2025, 8, 6, tzinfo=dt.UTC)
TABLES = ("market_bars", "funding_rates", "derivatives_metrics", "orderbook_l2")
SPOT5 = spot_rel("BTCUSDT", "5m", AUG4)
NAME5 = "BTCUSDT-5m-2025-08-04.csv"
WHERE5 = f"{SPOT5}:{NAME5}"  # errors name the zip and the CSV inside it


def load_and_write(root: Path, *, strict: bool = True) -> BinanceSource:
    src = BinanceSource(archive_root=str(root), use_rest=False, symbols=["BTCUSDT"], strict=strict)
    out = src.fetch(TABLES, AUG4, AUG5, UNTIL)
    for table, df in out.items():
        lake.write_window(table, df, AUG4, AUG5)
    return src


def lake_state() -> dict[str, tuple[int | None, pl.DataFrame]]:
    return {t: (lake.version(t), lake.read(t).sort(list(RAW_TABLES[t].key))) for t in TABLES}


@pytest.fixture
def mirror(tmp_path) -> Path:
    root = build_mirror(tmp_path / "mirror", symbols=["BTCUSDT"], days=[AUG4])
    load_and_write(root)
    return root


def lines_of(root: Path, rel: str) -> list[str]:
    with zipfile.ZipFile(io.BytesIO((root / rel).read_bytes())) as zf:
        return zf.read(zf.namelist()[0]).decode().splitlines()


def rewrite(root: Path, rel: str, lines: list[str]) -> None:
    write_archive_file(root, rel, "\n".join(lines) + "\n")


def set_field(root: Path, rel: str, row: int, col: int, value: str) -> None:
    lines = lines_of(root, rel)
    fields = lines[row - 1].split(",")
    fields[col] = value
    lines[row - 1] = ",".join(fields)
    rewrite(root, rel, lines)


def fails_and_lake_unchanged(root: Path, exc: type[Exception], match: str) -> None:
    before = lake_state()
    assert all(v is not None and df.height for v, df in before.values())
    with pytest.raises(exc, match=match):
        load_and_write(root)
    after = lake_state()
    for t in TABLES:
        assert after[t][0] == before[t][0], t
        assert after[t][1].equals(before[t][1]), t


def test_truncated_zip_is_an_error_naming_the_file(mirror):
    data = (mirror / SPOT5).read_bytes()
    cut = data[: len(data) // 2]
    write_archive_file(mirror, SPOT5, "", data=cut)  # its CHECKSUM describes the truncated bytes
    fails_and_lake_unchanged(mirror, ArchiveIntegrityError, rf"{SPOT5}: not a readable zip")


def test_checksum_mismatch_is_an_error_naming_the_file(mirror):
    text = "\n".join(lines_of(mirror, SPOT5)) + "\n"
    write_archive_file(mirror, SPOT5, text, checksum_of=b"the published bytes were different")
    fails_and_lake_unchanged(
        mirror, ArchiveIntegrityError, rf"{SPOT5}: sha256 [0-9a-f]{{64}} does not match its CHECKSUM"
    )


def test_missing_checksum_is_an_error_not_a_silent_pass(mirror):
    (mirror / (SPOT5 + ".CHECKSUM")).unlink()
    fails_and_lake_unchanged(mirror, ArchiveIntegrityError, "no BTCUSDT-5m-2025-08-04.zip.CHECKSUM beside it")


def test_wrong_column_count_names_file_and_row(mirror):
    lines = lines_of(mirror, SPOT5)
    lines[16] = ",".join(lines[16].split(",")[:11])
    rewrite(mirror, SPOT5, lines)
    fails_and_lake_unchanged(mirror, ArchiveFormatError, rf"^{WHERE5} row 17: 11 columns, expected 12")


def test_non_numeric_field_names_file_row_and_field(mirror):
    set_field(mirror, SPOT5, 17, 4, "abc")
    fails_and_lake_unchanged(
        mirror, ArchiveFormatError, rf"^{WHERE5} row 17 field 'close': 'abc' is not a number$"
    )


def test_duplicated_and_unsorted_rows_load_deduplicated_and_sorted(mirror):
    before = lake_state()
    lines = lines_of(mirror, SPOT5)
    shuffled = lines + lines[40:45]
    random.Random(7).shuffle(shuffled)
    rewrite(mirror, SPOT5, shuffled)
    src = load_and_write(mirror)
    after = lake_state()
    for t in TABLES:
        assert after[t][1].equals(before[t][1]), t  # same content as the clean load
    assert src.last_report["market_bars"]["duplicates_removed"] == 5


def test_conflicting_duplicate_rows_are_an_error(mirror):
    lines = lines_of(mirror, SPOT5)
    fields = lines[30].split(",")
    fields[4] = f"{float(fields[4]) * 1.0001:.8f}"  # same open time, another close
    rewrite(mirror, SPOT5, [*lines, ",".join(fields)])
    fails_and_lake_unchanged(
        mirror, ArchiveFormatError, rf"^{WHERE5} row 289 field 'close': .* contradicts row 31"
    )


def test_a_file_of_another_symbol_is_an_error(mirror, tmp_path):
    eth = build_mirror(tmp_path / "eth", symbols=["ETHUSDT"], days=[AUG4])
    eth_bytes = (eth / spot_rel("ETHUSDT", "5m", AUG4)).read_bytes()
    write_archive_file(mirror, SPOT5, "", data=eth_bytes)  # valid zip and checksum, wrong place
    fails_and_lake_unchanged(mirror, ArchiveIntegrityError, r"the zip holds 'ETHUSDT-5m-2025-08-04.csv', not")


def test_a_metrics_file_holding_another_symbol_is_an_error(mirror):
    rel = um_rel("metrics", "BTCUSDT", AUG4)
    set_field(mirror, rel, 10, 1, "ETHUSDT")
    fails_and_lake_unchanged(
        mirror,
        ArchiveFormatError,
        r"BTCUSDT-metrics-2025-08-04.zip:BTCUSDT-metrics-2025-08-04.csv row 10 field 'symbol': 'ETHUSDT' is not BTCUSDT",
    )


def test_a_price_of_zero_or_below_is_an_error_by_default(mirror):
    set_field(mirror, SPOT5, 17, 3, "0.00000000")
    fails_and_lake_unchanged(
        mirror, ArchiveFormatError, rf"^{WHERE5} row 17 field 'low': 0.0 is not a positive price"
    )


def test_high_below_low_is_an_error_by_default(mirror):
    low = float(lines_of(mirror, SPOT5)[16].split(",")[3])
    set_field(mirror, SPOT5, 17, 2, f"{low - 5:.8f}")
    fails_and_lake_unchanged(
        mirror, ArchiveFormatError, rf"^{WHERE5} row 17 field 'high': {low - 5} is below low {low}"
    )


@pytest.mark.parametrize(
    ("col", "value", "field", "reason"),
    [(3, "-1.00000000", "low", "is not a positive price"), (2, "1.00000000", "high", "is below low")],
)
def test_with_strict_off_an_implausible_bar_is_quarantined_and_counted(mirror, col, value, field, reason):
    before = lake_state()
    set_field(mirror, SPOT5, 17, col, value)
    src = load_and_write(mirror, strict=False)
    rep = src.last_report["market_bars"]
    assert rep["quarantined"] == 1
    assert rep["quarantine"] == [
        {"file": WHERE5, "row": 17, "field": field, "value": float(value), "reason": reason}
    ]
    bad_ts = dt.datetime(2025, 8, 4, 1, 20, tzinfo=dt.UTC)  # the 17th 5m bar of the day
    old, new = before["market_bars"][1], lake.read("market_bars").sort(list(RAW_TABLES["market_bars"].key))
    dropped = (pl.col("ts") == bad_ts) & (pl.col("market") == "spot") & (pl.col("timeframe") == "5m")
    assert new.equals(old.filter(~dropped))  # exactly that one bar is left out, nothing else moves


# -- empty files, rows of another day --------------------------------------------------------------


def spot5_day(day: dt.date) -> pl.DataFrame:
    bars = lake.read("market_bars")
    return bars.filter(
        pl.col("date") == day,
        pl.col("symbol") == "BTCUSDT",
        pl.col("market") == "spot",
        pl.col("timeframe") == "5m",
    )


@pytest.mark.parametrize("text", ["", KLINE_HEADER + "\n"], ids=["empty", "header-only"])
def test_an_empty_csv_in_a_valid_zip_is_a_reported_gap_the_audit_counts(mirror, text):
    assert spot5_day(AUG4).height == 288  # the clean load
    write_archive_file(mirror, SPOT5, text)  # verifies, unzips, holds no bar
    src = load_and_write(mirror)
    rep = src.last_report["market_bars"]
    assert rep["empty_files"] == [SPOT5]
    assert rep["gap_days"] == {"BTCUSDT spot 5m": ["2025-08-04"]}  # the only gap of the day
    assert any("empty_files" in n for n in rep["notes"])
    assert spot5_day(AUG4).height == 0
    # the coverage audit reads the lake and counts the same 288 missing 5m buckets
    start = dt.datetime.combine(AUG4, dt.time(), dt.UTC)
    as_of = start + dt.timedelta(days=1, minutes=5)  # the day's last bar has closed
    cov = coverage.table_coverage("market_bars", lake.scan("market_bars"), start, as_of)
    btc = cov.filter(pl.col("symbol") == "BTCUSDT").row(0, named=True)
    assert (btc["expected"], btc["present"]) == (288, 0)


def test_a_day_whose_file_is_empty_is_fetched_from_rest_like_a_missing_one(mirror):
    bars = real_bars("BTCUSDT", "5m").filter(pl.col("ts").dt.date() == AUG4)
    replay = RestReplay()
    replay.klines[("/api/v3/klines", "BTCUSDT", "5m")] = [rest_kline(r) for r in kline_rows(bars, "5m")]
    write_archive_file(mirror, SPOT5, "")
    with LocalServer(replay) as rest:
        src = BinanceSource(
            archive_root=str(mirror), rest_base_spot=rest.url, rest_base_futures=rest.url, symbols=["BTCUSDT"]
        )
        out = src.fetch(["market_bars"], AUG4, AUG5, UNTIL)["market_bars"]
    rep = src.last_report["market_bars"]
    assert rep["empty_files"] == [SPOT5] and rep["rest_days"] == 1 and rep["gap_days"] == {}
    spot5 = out.filter(pl.col("market") == "spot", pl.col("timeframe") == "5m")
    assert spot5.height == 288 and spot5["close"].to_list() == bars["close"].to_list()


def test_an_empty_monthly_file_falls_back_to_the_daily_files(tmp_path):
    july = [dt.date(2025, 7, d) for d in range(1, 32)]
    bars = real_bars("BTCUSDT", "1h").filter(pl.col("ts").dt.month() == 7)
    monthly = spot_rel("BTCUSDT", "1h", july[0], "monthly")
    write_archive_file(tmp_path, monthly, "")
    for day in july:
        write_archive_file(
            tmp_path, spot_rel("BTCUSDT", "1h", day), csv_text(kline_rows(day_slice(bars, day), "1h"))
        )
    store = ArchiveStore(str(tmp_path), cache_dir=str(tmp_path / "cache"))
    read = BinanceArchive(store).read("spot_klines", "BTCUSDT", july, dt.date(2025, 8, 1), "1h")
    assert read.empty_files == [monthly] and read.missing_days == set()
    assert read.frame.height == bars.height == 31 * 24


@pytest.mark.parametrize("own_file", [False, True], ids=["day-without-file", "day-with-file"])
def test_a_row_stamped_with_another_day_is_an_error_naming_file_row_and_field(tmp_path, own_file):
    """Before: a stray row filled a day without a file (hiding its gap) or, when that day had a
    file, failed later with 'duplicate keys after merging sources' naming no file."""
    stray_day = AUG5 if own_file else dt.date(2025, 8, 3)
    days = [AUG4, AUG5] if own_file else [AUG4]
    root = build_mirror(tmp_path / "mirror", symbols=["BTCUSDT"], days=days)
    stray = kline_rows(
        real_bars("BTCUSDT", "5m").filter(pl.col("ts") == dt.datetime.combine(stray_day, dt.time(9), dt.UTC)),
        "5m",
        micro=True,
    )
    lines = lines_of(root, SPOT5)
    rewrite(root, SPOT5, [*lines, ",".join(stray[0])])
    src = BinanceSource(archive_root=str(root), use_rest=False, symbols=["BTCUSDT"])
    with pytest.raises(
        ArchiveFormatError,
        match=rf"^{WHERE5} row 289 field 'open_time': '{stray[0][0]}' is {stray_day} 09:00:00 UTC, "
        "outside this file's period 2025-08-04",
    ):
        src.fetch(["market_bars"], min(days[0], stray_day), dt.date(2025, 8, 6), UNTIL)


def test_a_metrics_end_of_period_row_neither_clashes_with_nor_hides_the_next_day(tmp_path):
    """Until 2026-06-25 a metrics day ran 00:05 .. 00:00 next day, since then 00:00 .. 23:55: at
    the switch both files hold the 00:00 row. And the boundary row must not fill a missing day."""
    aug6 = dt.date(2025, 8, 6)
    root = build_mirror(tmp_path / "mirror", symbols=["BTCUSDT"], days=[AUG4, AUG5])
    bars = real_bars("BTCUSDT", "5m")
    midnight = dt.datetime.combine(AUG5, dt.time(), dt.UTC)
    # Aug 4 in the old convention: 00:05 .. 00:00 of Aug 5, that last row with other values
    old = metrics_rows(
        "BTCUSDT", day_slice(bars, AUG4).filter(pl.col("ts") > dt.datetime.combine(AUG4, dt.time(), dt.UTC))
    )
    last = metrics_rows("BTCUSDT", bars.filter(pl.col("ts") == midnight))[0]
    last[2] = "1.0000"
    write_archive_file(root, um_rel("metrics", "BTCUSDT", AUG4), csv_text([*old, last], METRICS_HEADER))
    src = BinanceSource(archive_root=str(root), use_rest=False, symbols=["BTCUSDT"])
    out = src.fetch(["derivatives_metrics"], AUG4, aug6, UNTIL)["derivatives_metrics"]
    rep = src.last_report["derivatives_metrics"]
    assert rep["conflicts_resolved"] == 1  # Aug 5's own 00:00 row (the later file) wins
    at_midnight = out.filter(pl.col("ts") == midnight)
    aug5_first = metrics_rows("BTCUSDT", day_slice(bars, AUG5))[0]  # the Aug 5 file's 00:00 row
    assert at_midnight.height == 1 and at_midnight["open_interest"].item() == float(aug5_first[2])
    assert out.height == 287 + 288  # Aug 4 from 00:05, Aug 5 whole

    (root / um_rel("metrics", "BTCUSDT", AUG5)).unlink()  # now the boundary row is Aug 5's only row
    src = BinanceSource(archive_root=str(root), use_rest=False, symbols=["BTCUSDT"])
    out = src.fetch(["derivatives_metrics"], AUG4, aug6, UNTIL)["derivatives_metrics"]
    assert src.last_report["derivatives_metrics"]["gap_days"] == {"BTCUSDT": ["2025-08-05"]}
    assert out.filter(pl.col("date") == AUG5).height == 1
