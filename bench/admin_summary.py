"""The admin summary over a month of a large history: `GET /api/admin/usage/summary`.

    python -m bench.admin_summary [--records 5000000] [--users 200] [--teams 10] [--runs 9]
    make bench-summary

On PostgreSQL only (BENCH_SUMMARY_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/bench_summary; the database is created and migrated if
absent). Loads `--records` usage records (SQL generate_series, not the ORM) over the last ~410
days for `--users` users in `--teams` teams (one user in eleven in no team), writes the hourly
summaries in SQL (as the hourly job would), rolls up days, weeks and months with the product's
code, runs the retention purge (400 days: the oldest ~10 days go), then times the endpoint
in-process (DRF's test client, the whole view and serializer path) for the last full calendar
month by user and by team, and the default range (the last 30 days, live hours included).
Rows are reused between runs when the records are already there (`--reload` starts over).
Prints one table of medians; the target (issue #15) is 300 ms. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_summary"
SPAN_DAYS = 410
TARGET_MS = 300


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--reload", action="store_true", help="drop the records and load again")
    return parser.parse_args()


def _environment() -> dict[str, str]:
    url = os.environ.get("BENCH_SUMMARY_DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        sys.exit("bench.admin_summary runs on PostgreSQL only")
    env = {
        "DATABASE_URL": url,
        "GATEWAY_SERVER__SECRET_KEY": "bench-secret-key-0123456789-0123456789-0123456789",
        "GATEWAY_USAGE__RETENTION_DAYS": "400",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    # The embedded counter store in the same database: the bench measures the database.
    for name in ("REDIS_URL", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)
    os.environ.update(env)
    return env


def _database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    server = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(server, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ},
        check=True,
    )


def _people(users: int, teams: int) -> tuple[list[int], object]:
    """The bench's users (user i in team i % (teams + 1); the last remainder in none) and an
    administrator."""
    from accounts.models import Team, User

    team_rows = [Team.objects.get_or_create(name=f"bench-team-{i:02d}")[0] for i in range(teams)]
    ids = []
    for i in range(users):
        email = f"bench-user-{i:04d}@example.com"
        team = team_rows[i % (teams + 1)] if i % (teams + 1) < teams else None
        user, _ = User.objects.update_or_create(
            email=email, defaults={"username": email, "team": team}
        )
        ids.append(user.pk)
    admin, _ = User.objects.update_or_create(
        email="bench-admin@example.com",
        defaults={"username": "bench-admin@example.com", "is_staff": True, "is_superuser": True},
    )
    return ids, admin


def _load(*, user_ids: list[int], records: int, start: datetime) -> float:
    """Insert the records in one statement; each call's team is its user's team."""
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        # Secondary indexes are built once after the load, not row by row (~5x faster).
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_usagerecord'"
            " AND indexdef NOT LIKE 'CREATE UNIQUE%%'"
        )
        indexes = cursor.fetchall()
        for name, _definition in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute(
            """
            INSERT INTO usage_usagerecord (
                call_id, user_id, team_id, auth_kind, model_id, base_model_id, route,
                streaming, input_tokens, output_tokens, cache_write_5m_tokens,
                cache_write_1h_tokens, cache_read_tokens, cost_micros, upstream_status,
                latency_ms, request_id, client_family, started_at, created_at)
            SELECT gen_random_uuid(), u.id, u.team_id, 'api_key',
                'us.anthropic.claude-sonnet-4-6', 'anthropic.claude-sonnet-4-6',
                'bedrock.invoke', g %% 3 = 0, 1000 + (g %% 5000), 50 + (g %% 900), 0, 0,
                (g %% 7) * 1000,
                CASE WHEN g %% 100 = 0 THEN NULL ELSE 3000 + (g %% 40000) END,
                200, 400, '', 'claude-cli',
                %s::timestamptz + random() * (%s * interval '1 day'), now()
            FROM generate_series(1, %s) AS g
            JOIN accounts_user AS u ON u.id = (%s::bigint[])[1 + (g %% %s)]
            """,
            [start, SPAN_DAYS, records, user_ids, len(user_ids)],
        )
        for _name, definition in indexes:
            cursor.execute(definition)
        cursor.execute("ANALYZE usage_usagerecord")
    return time.perf_counter() - started


def _hours_sql() -> float:
    """The hourly rows, as the hourly job writes them (absolute totals per user and hour;
    the team of the hour's calls), in one statement rather than 400 days of jobs."""
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM usage_usagesummary")
        cursor.execute(
            """
            INSERT INTO usage_usagesummary (
                user_id, team_id, period, period_start, requests, input_tokens, output_tokens,
                cache_write_tokens, cache_read_tokens, cost_micros, unknown_cost_requests,
                updated_at)
            SELECT user_id, max(team_id), 'hourly', date_trunc('hour', started_at), count(*),
                sum(input_tokens), sum(output_tokens),
                sum(cache_write_5m_tokens + cache_write_1h_tokens), sum(cache_read_tokens),
                coalesce(sum(cost_micros), 0), count(*) FILTER (WHERE cost_micros IS NULL),
                now()
            FROM usage_usagerecord GROUP BY user_id, date_trunc('hour', started_at)
            """
        )
        cursor.execute("ANALYZE usage_usagesummary")
    return time.perf_counter() - started


def _rollups(*, start: datetime, end: datetime) -> float:
    """Daily, weekly and monthly rows with the product's rollup (from the hourly rows)."""
    from usage.services import _rollup_from_hours, _rollup_windows

    started = time.perf_counter()
    for period, window in _rollup_windows(start=start, end=end):
        _rollup_from_hours(period=period, start=window)
    return time.perf_counter() - started


def _timed(client, path: str, runs: int) -> tuple[float, int]:  # noqa: ANN001
    client.get(path)  # warm: the connection, the query plans, the imports
    samples = []
    rows = 0
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.content[:300]!r}")
        body = response.json()
        rows = len(body.get("by_user") or body.get("by_team") or body.get("by_period") or [])
    return statistics.median(samples), rows


def main() -> None:
    args = _args()
    env = _environment()
    _database(env["DATABASE_URL"])
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from rest_framework.test import APIClient

    from config import clock
    from usage.models import UsageRecord, UsageSummary
    from usage.services import records_purge
    from usage.windows import period_start

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    now = clock.now()
    today = period_start("daily", now)
    first = today - timedelta(days=SPAN_DAYS)
    lines = [f"{'step':<66} {'value':>14}", f"{'-' * 66} {'-' * 14}"]
    user_ids, admin = _people(args.users, args.teams)
    have = UsageRecord.objects.count()
    if args.reload or have < args.records * 0.9:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE usage_usagerecord, usage_usagesummary")
        seconds = _load(user_ids=user_ids, records=args.records, start=first)
        lines.append(f"{'load records (s)':<66} {seconds:>14.1f}")
        lines.append(f"{'hourly summaries in SQL (s)':<66} {_hours_sql():>14.1f}")
        lines.append(
            f"{'daily/weekly/monthly rollups, product code (s)':<66} "
            f"{_rollups(start=first, end=today):>14.1f}"
        )
    else:
        lines.append(f"{'records reused':<66} {have:>14,}")
    started = time.perf_counter()
    purged = records_purge(now=now)
    lines.append(f"{'purge past 400 days (s)':<66} {time.perf_counter() - started:>14.1f}")
    lines.append(f"{'records purged':<66} {purged:>14,}")
    lines.append(f"{'records kept':<66} {UsageRecord.objects.count():>14,}")
    lines.append(
        f"{'hourly summary rows':<66} {UsageSummary.objects.filter(period='hourly').count():>14,}"
    )
    client = APIClient()
    client.force_authenticate(admin)
    month_end = period_start("monthly", now)
    month = period_start("monthly", month_end - timedelta(days=1))
    last_day = (month_end - timedelta(days=1)).date()
    span = f"from={month.date()}&to={last_day}"
    base = "/api/admin/usage/summary"
    for label, path in [
        (f"{month:%Y-%m} group_by=user", f"{base}?{span}&group_by=user"),
        (f"{month:%Y-%m} group_by=team", f"{base}?{span}&group_by=team"),
        (f"{month:%Y-%m} group_by=day", f"{base}?{span}&group_by=day"),
        ("last 30 days group_by=user (live hours too)", f"{base}?group_by=user"),
    ]:
        median, rows = _timed(client, path, args.runs)
        verdict = "ok" if median <= TARGET_MS else "SLOW"
        lines.append(f"{label + f' ({rows} rows) median ms':<66} {median:>10.1f} {verdict:>3}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
