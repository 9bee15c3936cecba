"""Caps count in the usage summaries' calendar: the same UTC windows, the same rule for a
naive time (taken as UTC), month and leap-year ends included."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from caps.windows import reset_time, window_key, window_start
from usage.windows import period_end, period_start


@pytest.mark.parametrize("cap_type", ["hourly", "daily", "monthly"])
@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2028, 2, 29, 12, 0, tzinfo=UTC),
        datetime(2027, 3, 1, 0, 0, tzinfo=UTC),
    ],
)
def test_a_cap_window_is_the_summaries_window(cap_type, at):
    start = period_start(cap_type, at)
    assert window_start(cap_type, at) == start
    assert reset_time(cap_type, at) == period_end(cap_type, start)
    assert start <= at < reset_time(cap_type, at)


def test_a_naive_time_is_taken_as_utc_and_an_offset_is_converted():
    aware = datetime(2028, 2, 29, 23, 30, tzinfo=UTC)
    naive = aware.replace(tzinfo=None)
    ahead = aware.astimezone(timezone(timedelta(hours=5)))  # 1 March, 04:30 there
    for at in (naive, ahead):
        assert window_key(7, "daily", at) == window_key(7, "daily", aware)
        assert window_key(7, "daily", at).endswith(":daily:2028-02-29")
        assert reset_time("monthly", at) == datetime(2028, 3, 1, tzinfo=UTC)
