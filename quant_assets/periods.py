"""Calendar months, the one place that steps through them (pure Python, no Dagster).

The lake partitions by month, raw checks and feature builds work month by month, the
history audit reports per month: all of them slice windows with `months`, so a month
boundary means the same day everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator


def next_month(day: dt.date) -> dt.date:
    """The first day of the month after `day`'s."""
    return (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def months(start: dt.date, end: dt.date) -> Iterator[tuple[dt.date, dt.date]]:
    """Consecutive calendar-month slices [m0, m1) covering [start, end); the first and last may be partial."""
    m0 = start
    while m0 < end:
        m1 = next_month(m0)
        yield m0, min(m1, end)
        m0 = m1


def month_keys(start: dt.date, end: dt.date) -> list[str]:
    """The "YYYY-MM" names of the months [start, end) touches (the lake's partition values)."""
    return [m0.strftime("%Y-%m") for m0, _ in months(start, end)]
