import datetime as dt
import os
import subprocess
import sys
import textwrap
import threading

import polars as pl
import pytest
from deltalake import DeltaTable

from quant_assets import lake


def days_frame(start: str, end: str, value: int) -> pl.DataFrame:
    days = pl.date_range(
        dt.date.fromisoformat(start), dt.date.fromisoformat(end), "1d", closed="left", eager=True
    )
    return pl.DataFrame({"date": days, "value": [value] * len(days)})


def test_window_overwrite_replaces_only_its_window():
    lake.write_window("t", days_frame("2021-01-01", "2021-04-01", 1), "2021-01-01", "2021-04-01")
    lake.write_window("t", days_frame("2021-02-01", "2021-03-01", 2), "2021-02-01", "2021-03-01")
    out = lake.read("t").sort("date")
    assert out.height == 90
    assert out.filter(pl.col("value") == 2).get_column("date").min() == dt.date(2021, 2, 1)
    assert out.filter(pl.col("value") == 2).height == 28
    assert lake.version("t") == 1


def test_rewriting_a_window_is_idempotent():
    df = days_frame("2021-01-01", "2021-02-01", 7)
    lake.write_window("t", df, "2021-01-01", "2021-02-01")
    first = lake.read("t").sort("date")
    lake.write_window("t", df, "2021-01-01", "2021-02-01")
    assert lake.read("t").sort("date").equals(first)


def test_streamed_frames_land_in_one_commit():
    frames = (days_frame(f"2021-{m:02d}-01", f"2021-{m + 1:02d}-01", m) for m in range(1, 7))
    assert lake.write_window("t", frames, "2021-01-01", "2021-07-01") == 181
    assert lake.version("t") == 0  # one commit for the whole window


def test_empty_window_write_deletes_the_window():
    lake.write_window("t", days_frame("2021-01-01", "2021-03-01", 1), "2021-01-01", "2021-03-01")
    lake.write_window("t", iter([]), "2021-02-01", "2021-03-01")
    assert lake.read("t").get_column("date").max() == dt.date(2021, 1, 31)


def test_rows_outside_the_window_are_refused_and_the_table_is_unchanged():
    lake.write_window("t", days_frame("2021-01-01", "2021-02-01", 1), "2021-01-01", "2021-02-01")
    with pytest.raises(ValueError, match=r"31 rows outside the window \[2021-02-01, 2021-03-01\)"):
        lake.write_window("t", days_frame("2021-01-01", "2021-02-01", 9), "2021-02-01", "2021-03-01")
    assert lake.version("t") == 0 and lake.read("t").get_column("value").unique().to_list() == [1]


def test_scan_prunes_to_the_date_range_and_old_versions_stay_readable():
    lake.write_window("t", days_frame("2021-01-01", "2021-12-31", 1), "2021-01-01", "2021-12-31")
    lake.write_window("t", days_frame("2021-06-01", "2021-07-01", 2), "2021-06-01", "2021-07-01")
    june = lake.scan("t", "2021-06-10", "2021-06-20").collect()
    assert june.height == 10 and set(june.get_column("value")) == {2}
    assert set(lake.read("t", "2021-06-10", "2021-06-20", version=0).get_column("value")) == {1}
    assert "month" not in june.columns


def test_process_killed_mid_write_leaves_previous_version_complete(isolated_lake):
    lake.write_window("t", days_frame("2021-01-01", "2021-07-01", 1), "2021-01-01", "2021-07-01")
    before = lake.read("t").sort("date")
    # The child streams a rewrite of the same window and SIGKILLs itself after three
    # months' files have been written, before the commit.
    child = textwrap.dedent(
        """
        import os, signal, datetime as dt, polars as pl
        from quant_assets import lake
        def frames():
            for m in range(1, 7):
                if m == 4:
                    os.kill(os.getpid(), signal.SIGKILL)
                days = pl.date_range(dt.date(2021, m, 1), dt.date(2021, m + 1, 1), "1d", closed="left", eager=True)
                yield pl.DataFrame({"date": days, "value": [99] * len(days)})
        lake.write_window("t", frames(), "2021-01-01", "2021-07-01")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", child], env={**os.environ, "QUANT_ASSETS_LAKE": str(isolated_lake)}
    )
    assert proc.returncode == -9
    assert lake.version("t") == 0
    assert lake.read("t").sort("date").equals(before)


def test_a_window_inside_a_month_keeps_the_rest_of_that_month():
    lake.write_window("t", days_frame("2021-02-01", "2021-03-01", 1), "2021-02-01", "2021-03-01")
    lake.write_window("t", days_frame("2021-02-10", "2021-02-20", 2), "2021-02-10", "2021-02-20")
    out = lake.read("t").sort("date")
    assert out.height == 28
    assert out.filter(pl.col("value") == 2).get_column("date").to_list() == [
        dt.date(2021, 2, d) for d in range(10, 20)
    ]
    lake.write_window("t", iter([]), "2021-02-15", "2021-02-17")
    assert lake.read("t").height == 26 and lake.version("t") == 2


def _race(writers: list[lake.WindowWriter]) -> list[lake.Commit]:
    """Commit `writers` from one thread each, released together."""
    barrier = threading.Barrier(len(writers))
    results: list = [None] * len(writers)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = writers[i].commit()
        except Exception as exc:  # surfaced by the assertion below, with the writer's index
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, lake.Commit) for r in results), results
    return results


def _writer(table: str, start: str, end: str, value: int) -> lake.WindowWriter:
    writer = lake.WindowWriter(table, start, end)
    writer.add(days_frame(start, end, value))
    return writer


@pytest.mark.parametrize("trial", range(6))
def test_two_runs_creating_a_missing_table_with_disjoint_windows_both_land(trial):
    table = f"race_{trial}"
    commits = _race(
        [_writer(table, "2021-01-01", "2021-02-01", 1), _writer(table, "2021-02-01", "2021-03-01", 2)]
    )
    out = lake.read(table).sort("date")
    assert out.group_by("value").len().sort("value").rows() == [(1, 31), (2, 28)]
    assert sorted(c.version for c in commits) == [0, 1] and lake.version(table) == 1


@pytest.mark.parametrize("trial", range(6))
def test_two_runs_creating_a_missing_table_with_the_same_window_leave_one_whole(trial):
    table = f"race_{trial}"
    commits = _race(
        [_writer(table, "2021-01-01", "2021-02-01", 1), _writer(table, "2021-01-01", "2021-02-01", 2)]
    )
    out = lake.read(table)
    later = 1 + max(range(2), key=lambda i: commits[i].version)  # the value the later commit wrote
    assert out.height == 31 and set(out.get_column("value")) == {later}
    assert sorted(c.version for c in commits) == [0, 1]


def test_a_table_created_after_a_writer_looked_is_committed_into_not_replaced():
    # The interleaving of the race, made certain: `late` saw no table, then `early` created it.
    late = _writer("t", "2021-02-01", "2021-03-01", 2)
    early = _writer("t", "2021-01-01", "2021-02-01", 1)
    assert early.commit() == lake.Commit(31, 0)
    assert late._try_commit(None) is None  # creation refused: the table exists now
    assert lake.version("t") == 0 and lake.read("t").height == 31
    assert late.commit() == lake.Commit(28, 1)
    assert lake.read("t").group_by("value").len().sort("value").rows() == [(1, 31), (2, 28)]


def test_two_runs_filling_the_same_new_month_of_a_table_never_both_land():
    # delta-rs's own conflict check lets two overwrites of a month without files both commit
    # (62 rows for a 31-day month); the lake's commit must be refused and redone instead.
    lake.write_window("t", days_frame("2021-01-01", "2021-02-01", 0), "2021-01-01", "2021-02-01")
    a, b = _writer("t", "2021-03-01", "2021-04-01", 1), _writer("t", "2021-03-01", "2021-04-01", 2)
    seen_by_a, seen_by_b = lake._table_or_none("t"), lake._table_or_none("t")
    assert a._try_commit(seen_by_a) == 1
    assert b._try_commit(seen_by_b) is None
    assert b.commit() == lake.Commit(31, 2)
    march = lake.read("t", "2021-03-01", "2021-04-01")
    assert march.height == 31 and set(march.get_column("value")) == {2}
    assert lake.read("t", "2021-01-01", "2021-02-01").height == 31


def test_a_partial_month_redone_after_a_conflict_keeps_the_other_writers_days():
    # `b` rewrites 10-20 Feb; `a` rewrote all of February after `b` read the table: `b`'s redo
    # must keep the rest of February as `a` left it, not as `b` first saw it.
    lake.write_window("t", days_frame("2021-02-01", "2021-03-01", 0), "2021-02-01", "2021-03-01")
    b = _writer("t", "2021-02-10", "2021-02-20", 2)
    seen_by_b = lake._table_or_none("t")
    lake.write_window("t", days_frame("2021-02-01", "2021-03-01", 1), "2021-02-01", "2021-03-01")
    assert b._try_commit(seen_by_b) is None
    b.commit()
    out = lake.read("t").sort("date")
    assert out.height == 28
    assert out.group_by("value").len().sort("value").rows() == [(1, 18), (2, 10)]


def test_commit_returns_the_version_it_created_and_tags_it_with_the_build():
    assert lake.WindowWriter("t", "2021-01-01", "2021-02-01").commit() == lake.Commit(0, None)
    for expected in range(3):
        writer = lake.WindowWriter("t", "2021-01-01", "2021-02-01", build_id=f"build-{expected}")
        writer.add(days_frame("2021-01-01", "2021-02-01", expected))
        assert writer.commit() == lake.Commit(31, expected)
    [last] = DeltaTable(lake.uri("t")).history(1)
    assert last["version"] == 2 and last["quant_assets.build_id"] == "build-2"
    assert set(lake.read("t", version=1).get_column("value")) == {1}
