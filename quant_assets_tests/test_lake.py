import datetime as dt
import os
import subprocess
import sys
import textwrap

import polars as pl
import pytest

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
