"""Caps count in the usage summaries' calendar: the same UTC windows, the same rule for a
naive time (taken as UTC), month and leap-year ends included."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from caps.windows import CAP_TYPES, reset_time, window_key, window_keys
from usage.windows import period_end, period_start


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# A cap window starts where the summaries' period_start says (caps call it directly); the
# starts and ends are spelled out so that a change to that calendar shows here too.
@pytest.mark.parametrize(
    ("cap_type", "at", "start", "end"),
    [
        ("hourly", utc(2026, 12, 31, 23, 59, 59), utc(2026, 12, 31, 23), utc(2027, 1, 1)),
        ("daily", utc(2026, 12, 31, 23, 59, 59), utc(2026, 12, 31), utc(2027, 1, 1)),
        ("monthly", utc(2026, 12, 31, 23, 59, 59), utc(2026, 12, 1), utc(2027, 1, 1)),
        ("hourly", utc(2028, 2, 29, 12), utc(2028, 2, 29, 12), utc(2028, 2, 29, 13)),
        ("daily", utc(2028, 2, 29, 12), utc(2028, 2, 29), utc(2028, 3, 1)),
        ("monthly", utc(2028, 2, 29, 12), utc(2028, 2, 1), utc(2028, 3, 1)),
        ("hourly", utc(2027, 3, 1), utc(2027, 3, 1), utc(2027, 3, 1, 1)),
        ("daily", utc(2027, 3, 1), utc(2027, 3, 1), utc(2027, 3, 2)),
        ("monthly", utc(2027, 3, 1), utc(2027, 3, 1), utc(2027, 4, 1)),
    ],
)
def test_a_cap_window_is_the_summaries_window(cap_type, at, start, end):
    assert period_start(cap_type, at) == start
    assert reset_time(cap_type, at) == period_end(cap_type, start) == end
    assert start <= at < reset_time(cap_type, at)


def test_a_naive_time_is_taken_as_utc_and_an_offset_is_converted():
    aware = datetime(2028, 2, 29, 23, 30, tzinfo=UTC)
    naive = aware.replace(tzinfo=None)
    ahead = aware.astimezone(timezone(timedelta(hours=5)))  # 1 March, 04:30 there
    for at in (naive, ahead):
        assert window_key(7, "daily", at) == window_key(7, "daily", aware)
        assert window_key(7, "daily", at).endswith(":daily:2028-02-29")
        assert reset_time("monthly", at) == datetime(2028, 3, 1, tzinfo=UTC)


def test_the_three_keys_of_a_moment_are_its_windows_keys():
    at = utc(2028, 2, 29, 23, 30)
    assert window_keys(7, at) == tuple(window_key(7, cap_type, at) for cap_type in CAP_TYPES)
    assert [key.split("}", 1)[1] for key in window_keys(7, at)] == [
        ":hourly:2028-02-29T23",
        ":daily:2028-02-29",
        ":monthly:2028-02",
    ]
