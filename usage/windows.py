"""Time windows (UTC) and the counter keys named after them.

A call counts in the window where it started. Hours are labelled `YYYY-MM-DDTHH`, weeks start
on Monday, months on the 1st; keys carry the user as a Redis Cluster hash tag:
`usage_summary:{user_42}:hourly:2026-11-25T10`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.conf import settings

HOUR = timedelta(hours=1)
PERIODS = ("hourly", "daily", "weekly", "monthly")


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive one is taken as UTC (the one rule of caps' and usage's
    windows)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour holding `moment` (a naive `moment` is taken as UTC)."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    """The first hour boundary at or after `moment`."""
    floor = floor_hour(moment)
    exact = not (moment.minute or moment.second or moment.microsecond)
    return floor if exact else floor + HOUR


def period_start(period: str, moment: datetime) -> datetime:
    """The start of the `period` window (hourly/daily/weekly/monthly) holding `moment`."""
    hour = floor_hour(moment)
    if period == "hourly":
        return hour
    day = hour.replace(hour=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}")


def period_end(period: str, start: datetime) -> datetime:
    """The end (exclusive) of the `period` window starting at `start`."""
    if period == "hourly":
        return start + HOUR
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    if period == "monthly":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    raise ValueError(f"unknown period {period!r}")


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Every hour start in [start, end); both ends are hour-aligned."""
    hours = []
    hour = start
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return hours


def hour_label(hour: datetime) -> str:
    return hour.astimezone(UTC).strftime("%Y-%m-%dT%H")


def summary_key(user_id: int, hour: datetime) -> str:
    """The live hourly summary's key for this user and hour."""
    prefix = settings.GATEWAY.redis.usage_summary_prefix
    return f"{prefix}{{user_{user_id}}}:hourly:{hour_label(hour)}"


_KEY_TAIL = re.compile(r"^\{user_(\d+)\}:hourly:(\d{4}-\d\d-\d\dT\d\d)$")


def summary_key_parse(key: str) -> tuple[int, datetime] | None:
    """(user id, hour) of a live hourly summary key, or None for any other key."""
    prefix = settings.GATEWAY.redis.usage_summary_prefix
    if not key.startswith(prefix):
        return None
    match = _KEY_TAIL.match(key[len(prefix) :])
    if not match:
        return None
    hour = datetime.strptime(match.group(2), "%Y-%m-%dT%H").replace(tzinfo=UTC)
    return int(match.group(1)), hour


def live_window_start(now: datetime) -> datetime:
    """The oldest hour whose live key can still exist (keys live `hourly_summary_ttl`)."""
    ttl = settings.GATEWAY.redis.hourly_summary_ttl
    return floor_hour(now - timedelta(seconds=ttl)) - HOUR
