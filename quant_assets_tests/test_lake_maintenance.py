"""Retention on real Delta tables: compaction, vacuum with a window, uncommitted files, pins."""

import datetime as dt
import os
import threading
import time

import polars as pl
import pytest

from quant_assets import lake


def days_frame(start: str, end: str, value: int) -> pl.DataFrame:
    days = pl.date_range(
        dt.date.fromisoformat(start), dt.date.fromisoformat(end), "1d", closed="left", eager=True
    )
    return pl.DataFrame({"date": days, "value": [value] * len(days)})


def data_files(table: str) -> set[str]:
    base = lake.uri(table)
    return {
        os.path.relpath(os.path.join(d, f), base)
        for d, _, files in os.walk(base)
        if "_delta_log" not in d
        for f in files
        if f.endswith(".parquet")
    }


def age(table: str, paths: set[str], hours: float) -> None:
    past = time.time() - hours * 3600
    for p in paths:
        os.utime(os.path.join(lake.uri(table), p), (past, past))


def three_versions() -> list[set[str]]:
    """Versions 0, 1, 2 of `t`, each rewriting Jan-Feb 2021 with its own value; their files."""
    files = []
    for v in range(3):
        lake.write_window("t", days_frame("2021-01-01", "2021-03-01", v), "2021-01-01", "2021-03-01")
        files.append(data_files("t") - set().union(*files))
    return files


def test_uncommitted_files_of_a_killed_run_go_once_older_than_the_window():
    lake.write_window("t", days_frame("2021-01-01", "2021-03-01", 1), "2021-01-01", "2021-03-01")
    committed = data_files("t")
    # A run killed before its commit: its files are written, the log never names them.
    killed = lake.WindowWriter("t", "2021-01-01", "2021-04-01")
    for m in (1, 2, 3):
        killed.add(days_frame(f"2021-{m:02d}-01", f"2021-{m + 1:02d}-01", 9))
    orphans = data_files("t") - committed
    assert len(orphans) == 3
    sizes = sum(os.path.getsize(os.path.join(lake.uri("t"), p)) for p in orphans)

    # Younger than the window: they may belong to a run still in flight, so they stay.
    fresh = lake.maintain("t", retention_hours=2, compact=False)
    assert fresh.uncommitted_files_removed == 0 and data_files("t") == committed | orphans

    age("t", orphans, hours=3)
    done = lake.maintain("t", retention_hours=2, compact=False)
    assert (done.uncommitted_files_removed, done.replaced_files_removed) == (3, 0)
    assert done.bytes_reclaimed == sizes
    assert data_files("t") == committed
    assert set(lake.read("t").get_column("value")) == {1} and lake.read("t").height == 59


def test_a_pinned_old_version_stays_readable_and_an_unpinned_one_past_the_window_is_gone():
    files = three_versions()
    lake.pin("t", 0, owner="model_a/2021-03")
    report = lake.maintain("t", retention_hours=0, keep=lake.pinned_versions()["t"], compact=False)
    assert report.kept_versions == (0,) and report.kept_versions_missing_files == 0
    assert report.replaced_files_removed == len(files[1]) == 2 and report.uncommitted_files_removed == 0
    assert data_files("t") == files[0] | files[2]
    assert set(lake.read("t", version=0).get_column("value")) == {0}
    assert lake.read("t", version=0).height == 59
    assert set(lake.read("t").get_column("value")) == {2}  # the current version, untouched
    assert len(lake.missing_files("t", 1)) == 2
    with pytest.raises(Exception, match=r"(?i)not found|no such file"):
        lake.read("t", version=1)
    with pytest.raises(ValueError, match=r"'t': cannot keep versions \[5\], it has 0\.\.\d+"):
        lake.maintain("t", retention_hours=0, keep=[0, 5])


def test_versions_replaced_within_the_window_stay_readable():
    three_versions()
    report = lake.maintain("t", retention_hours=1, compact=False)
    assert report.replaced_files_removed == 0 and report.bytes_reclaimed == 0
    assert [set(lake.read("t", version=v).get_column("value")) for v in range(3)] == [{0}, {1}, {2}]


def test_compaction_reduces_files_and_keeps_the_rows_identical():
    frames = (
        days_frame(f"2021-{m:02d}-{d:02d}", f"2021-{m:02d}-{d + 7:02d}", m * 10 + d)
        for m in range(1, 7)
        for d in (1, 8, 15)
    )
    lake.write_window("t", frames, "2021-01-01", "2021-07-01")
    before = lake.read("t").sort("date")
    version_before = lake.version("t")
    assert len(data_files("t")) == 18  # one file per frame

    report = lake.maintain("t", retention_hours=168)
    assert report.compaction == "compacted" and (report.files_before, report.files_after) == (18, 6)
    assert lake.read("t").sort("date").equals(before)
    assert lake.version("t") > version_before
    # The rewritten files are replaced, not deleted, inside the window: the old version still reads.
    assert lake.read("t", version=version_before).sort("date").equals(before)
    assert report.replaced_files_removed == 0

    again = lake.maintain("t", retention_hours=168)
    assert again.compaction == "nothing to compact" and again.files_after == 6


def test_a_version_whose_files_are_gone_cannot_be_pinned():
    three_versions()
    lake.maintain("t", retention_hours=0, compact=False)
    with pytest.raises(ValueError, match=r"'t': version 1 cannot be pinned, 2 of its files are already gone"):
        lake.pin("t", 1, owner="late_model")
    with pytest.raises(ValueError, match=r"'t': no version 7"):
        lake.pin("t", 7, owner="late_model")
    assert lake.pinned_versions() == {}


def test_pins_from_parallel_runs_all_land_and_unpin_releases_only_its_owner():
    three_versions()
    lake.write_window("u", days_frame("2021-01-01", "2021-02-01", 1), "2021-01-01", "2021-02-01")
    barrier = threading.Barrier(4)
    errors = []

    def pin(table, version, owner):
        barrier.wait()
        try:
            lake.pin(table, version, owner)
        except Exception as exc:
            errors.append(exc)

    jobs = [("t", 0, "a"), ("t", 1, "b"), ("t", 1, "c"), ("u", 0, "a")]
    threads = [threading.Thread(target=pin, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert lake.pinned_versions() == {"t": {0, 1}, "u": {0}}
    lake.unpin("b")
    assert lake.pinned_versions() == {"t": {0, 1}, "u": {0}}  # "c" still holds version 1
    lake.unpin("a", table="t")
    assert lake.pinned_versions() == {"t": {1}, "u": {0}}
    assert lake.tables() == ["t", "u"]  # the pins table is the lake's own, not listed
