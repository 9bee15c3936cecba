"""Issue 15: records purged past `usage.retention_days` once their summaries are written, the
summaries unchanged by a purge, rebuilds refused before the cut-off, and spend per team."""

import csv
import io
import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db.models import Sum
from rest_framework.test import APIClient

from accounts.models import Team
from config.conf import load_config
from costs.money import Usage
from tests.fixtures.personas import unique_user
from usage import services, tasks
from usage.models import UsageRecord, UsageSummary

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
RETENTION_DAYS = 30
CUTOFF = datetime(2026, 10, 26, tzinfo=UTC)  # midnight of NOW - 30 days
RANGE = "from=2026-09-01&to=2026-11-25"  # NOW's live hours included


@pytest.fixture(autouse=True)
def retention(settings):
    settings.GATEWAY = settings.GATEWAY.model_copy(
        update={"usage": settings.GATEWAY.usage.model_copy(update={"retention_days": 30})}
    )


def retention_off(settings) -> None:
    settings.GATEWAY = settings.GATEWAY.model_copy(
        update={"usage": settings.GATEWAY.usage.model_copy(update={"retention_days": None})}
    )


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def record_at(record, user, started_at, **overrides):
    with time_machine.travel(started_at, tick=False):
        return record(user, started_at=started_at, **overrides)


def record_past(record, user, started_at, **overrides):
    """A call persisted by the hourly job after its hour, as in production."""
    row = record_at(record, user, started_at, **overrides)
    with time_machine.travel(started_at + timedelta(hours=1), tick=False):
        services.summary_persist_hours()
    return row


def get(user, path: str):
    with time_machine.travel(NOW, tick=False):
        response = client_for(user).get(path)
    assert response.status_code == 200, response.content
    return response


def purge(**kwargs) -> int:
    with time_machine.travel(NOW, tick=False):
        return services.records_purge(**kwargs)


@pytest.fixture
def company(record):
    """Two teams and a user in none, with calls before the cut-off (September, October) and
    after it (late October, November); team `big` spends most. `mover` left `small` for `big`
    on October 10th: his calls count for the team he was in at the time."""
    big, small = Team.objects.create(name="Big"), Team.objects.create(name="Small")
    alice, mover, solo = unique_user(), unique_user(), unique_user()
    calls = [
        (alice, datetime(2026, 9, 3, 9, 15), big, 40_000),
        (alice, datetime(2026, 10, 20, 14, 5), big, 30_000),
        (alice, datetime(2026, 11, 2, 8, 45), big, 20_000),
        (mover, datetime(2026, 9, 30, 23, 50), small, 5_000),
        (mover, datetime(2026, 10, 25, 23, 10), big, 7_000),
        (mover, datetime(2026, 10, 26, 0, 20), big, 6_000),
        (solo, datetime(2026, 10, 1, 10, 0), None, 1_000),
        (solo, datetime(2026, 11, 20, 10, 0), None, 2_000),
    ]
    for user, started, team, tokens in calls:
        record_past(
            record,
            user,
            started.replace(tzinfo=UTC),
            team_id=team.id if team else None,
            usage=Usage(input_tokens=tokens, output_tokens=100),
        )
    # One call that is not persisted yet (live) and one in the current hour: edges of the range.
    record_at(record, alice, NOW - timedelta(hours=3), team_id=big.id)
    record_at(record, solo, NOW - timedelta(minutes=5))
    return {"big": big, "small": small, "alice": alice, "mover": mover, "solo": solo}


def snapshot(admin, people) -> dict:
    """Everything a purge must leave as it was (not the per-model/per-client breakdowns:
    those come from the records, see the README)."""
    base = "/api/admin/usage/summary"
    own = get(people["alice"], f"/api/usage/summary?{RANGE}&group_by=week").json()
    by_day = get(admin, f"{base}?{RANGE}&group_by=month").json()
    return {
        "by_user": get(admin, f"{base}?{RANGE}&group_by=user").json(),
        "by_team": get(admin, f"{base}?{RANGE}&group_by=team").json(),
        "by_month": (by_day["totals"], by_day["by_period"]),
        "own": (own["totals"], own["by_period"]),
        "chargeback": get(admin, f"/api/admin/usage/chargeback.csv?{RANGE}").content,
        "chargeback_teams": get(
            admin, f"/api/admin/usage/chargeback.csv?{RANGE}&group_by=team"
        ).content,
        "late_october_records": UsageRecord.objects.filter(started_at__gte=CUTOFF).count(),
    }


def test_a_purge_deletes_old_records_and_leaves_every_summary_as_it_was(admin, company):
    before = snapshot(admin, company)
    assert UsageRecord.objects.filter(started_at__lt=CUTOFF).count() == 5

    assert purge() == 5

    assert not UsageRecord.objects.filter(started_at__lt=CUTOFF).exists()
    assert snapshot(admin, company) == before
    # What the snapshot holds is right, not only unchanged: each team's calls at call time.
    teams = {row["name"]: row for row in before["by_team"]["by_team"]}
    assert teams["Big"]["requests"] == 6  # alice's four and mover's two after he moved
    assert teams["Small"]["requests"] == 1
    assert teams["(no team)"]["requests"] == 3
    assert teams["(no team)"]["team_id"] is None
    assert before["by_team"]["totals"] == before["by_user"]["totals"]
    assert before["by_user"]["totals"]["requests"] == 10


def test_a_purge_twice_deletes_nothing_more_and_keeps_the_records_inside_the_retention(
    admin, company
):
    assert purge() == 5
    kept = UsageRecord.objects.count()
    assert purge() == 0
    assert UsageRecord.objects.count() == kept == 5
    assert UsageRecord.objects.filter(started_at__lt=CUTOFF).count() == 0


def test_a_purge_writes_missing_rollups_before_deleting_in_batches(admin, record):
    """The beat jobs never ran (no summary at all): the purge writes the hours, days, weeks and
    months of the old records first, in batches of 2, and the totals stay."""
    user = unique_user()
    starts = [datetime(2026, 9, 28, h, 10, tzinfo=UTC) for h in (1, 1, 2, 23)]
    starts.append(datetime(2026, 10, 6, 5, tzinfo=UTC))  # another day, week and month
    for started in starts:
        record_at(record, user, started, usage=Usage(input_tokens=1000, output_tokens=10))
    assert not UsageSummary.objects.exists()
    expected = UsageRecord.objects.aggregate(cost=Sum("cost_micros"), tokens=Sum("input_tokens"))

    assert purge(batch=2) == 5

    assert not UsageRecord.objects.exists()
    for period, count in (("hourly", 4), ("daily", 2), ("weekly", 2), ("monthly", 2)):
        rows = UsageSummary.objects.filter(user=user, period=period)
        assert rows.count() == count, period
        sums = rows.aggregate(n=Sum("requests"), cost=Sum("cost_micros"), t=Sum("input_tokens"))
        assert sums == {"n": 5, "cost": expected["cost"], "t": expected["tokens"]}, period
    body = get(admin, f"/api/admin/usage/summary?{RANGE}&group_by=user").json()
    assert body["totals"]["requests"] == 5
    assert body["totals"]["cost_micros"] == expected["cost"]


def test_a_purge_keeps_records_whose_rollups_are_not_written(admin, record, monkeypatch, caplog):
    """If the summaries cannot be written (here: the writers do nothing), nothing is deleted."""
    user = unique_user()
    record_at(record, user, datetime(2026, 9, 10, 8, tzinfo=UTC))
    record_at(record, user, datetime(2026, 10, 3, 8, tzinfo=UTC))
    monkeypatch.setattr(services, "summary_hours_write", lambda **kwargs: 0)
    monkeypatch.setattr(services, "_rollup_from_hours", lambda **kwargs: 0)

    with caplog.at_level(logging.ERROR, logger="usage.services"):
        assert purge() == 0

    assert UsageRecord.objects.count() == 2
    assert "do not cover its records" in caplog.text


def test_a_purge_keeps_records_whose_weekly_row_is_missing(admin, record, monkeypatch):
    """The check looks at every level: hours and days written, the week not."""
    user = unique_user()
    record_past(record, user, datetime(2026, 9, 10, 8, tzinfo=UTC))
    real = services._rollup_from_hours

    def no_weeks(*, period, start):
        return 0 if period == "weekly" else real(period=period, start=start)

    monkeypatch.setattr(services, "_rollup_from_hours", no_weeks)
    assert purge() == 0
    assert UsageRecord.objects.count() == 1


def test_retention_none_keeps_every_record(admin, company, settings):
    retention_off(settings)
    assert purge() == 0
    assert UsageRecord.objects.count() == 10
    assert services.retention_cutoff(now=NOW) is None
    # And rebuilding any period is allowed.
    with time_machine.travel(NOW, tick=False):
        services.usage_rebuild(start=datetime(2026, 9, 1, tzinfo=UTC), end=CUTOFF)


def test_the_scheduled_task_purges(company):
    with time_machine.travel(NOW, tick=False):
        assert tasks.purge_records.apply().get() == 5
    assert not UsageRecord.objects.filter(started_at__lt=CUTOFF).exists()


def test_the_retention_setting(monkeypatch):
    assert load_config({}).usage.retention_days == 400
    assert load_config({"GATEWAY_USAGE__RETENTION_DAYS": "none"}).usage.retention_days is None
    assert load_config({"GATEWAY_USAGE__RETENTION_DAYS": "90"}).usage.retention_days == 90
    with pytest.raises(Exception, match="retention_days"):
        load_config({"GATEWAY_USAGE__RETENTION_DAYS": "0"})


# --- Rebuilds past the retention ------------------------------------------------------------


def test_a_rebuild_before_the_cut_off_is_refused_and_changes_nothing(admin, company):
    assert purge() == 5
    before = snapshot(admin, company)
    rows = sorted(UsageSummary.objects.values_list("id", "requests", "cost_micros"))

    with time_machine.travel(NOW, tick=False), pytest.raises(services.RetentionError) as error:
        services.usage_rebuild(start=datetime(2026, 9, 1, tzinfo=UTC), end=NOW)
    assert "retention" in str(error.value)
    assert "2026-10-26" in str(error.value)

    with time_machine.travel(NOW, tick=False), pytest.raises(CommandError, match="retention"):
        call_command("rebuildusage", "--from", "2026-10-25", "--to", "2026-11-01")

    assert sorted(UsageSummary.objects.values_list("id", "requests", "cost_micros")) == rows
    assert snapshot(admin, company) == before


def test_a_rebuild_from_the_cut_off_on_is_allowed(admin, company):
    assert purge() == 5
    before = snapshot(admin, company)
    out = io.StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("rebuildusage", "--from", "2026-10-26", "--to", "2026-11-25", stdout=out)
    assert "rebuilt" in out.getvalue()
    assert snapshot(admin, company) == before


# --- Spend per team -------------------------------------------------------------------------


def test_spend_per_team_has_a_row_per_team_and_one_for_no_team_dearest_first(admin, record):
    red, blue = Team.objects.create(name="Red"), Team.objects.create(name="Blue")
    ann, bob, cid = unique_user(), unique_user(), unique_user()
    day = datetime(2026, 11, 20, tzinfo=UTC)
    for user, hour, team, tokens in [
        (ann, 9, red, 5000),
        (bob, 10, blue, 90_000),
        (bob, 11, blue, 1000),
        (cid, 12, None, 20_000),
    ]:
        record_past(
            record,
            user,
            day + timedelta(hours=hour),
            team_id=team.id if team else None,
            usage=Usage(input_tokens=tokens, output_tokens=10),
        )
    # Ann's team when called, not now: she moved to Blue after her call.
    ann.team = blue
    ann.save()

    path = "/api/admin/usage/summary?from=2026-11-20&to=2026-11-20&group_by=team"
    body = get(admin, path).json()

    rows = body["by_team"]
    assert [(row["team_id"], row["name"]) for row in rows] == [
        (blue.id, "Blue"),
        (None, "(no team)"),
        (red.id, "Red"),
    ]
    for row in rows:
        records = UsageRecord.objects.filter(team_id=row["team_id"])
        assert row["requests"] == records.count()
        assert row["cost_micros"] == records.aggregate(c=Sum("cost_micros"))["c"]
        assert row["cost_cents"] == f"{row['cost_micros'] / 10_000:.4f}"
    assert body["group_by"] == "team"
    assert body["totals"]["requests"] == 4
    assert [row["cost_micros"] for row in rows] == sorted(
        (row["cost_micros"] for row in rows), reverse=True
    )


def test_spend_per_team_counts_live_hours_by_the_records_team(admin, record):
    team = Team.objects.create(name="Live")
    user = unique_user()
    record_at(record, user, NOW - timedelta(minutes=10), team_id=team.id)
    record_at(record, unique_user(), NOW - timedelta(minutes=5))
    rows = get(admin, "/api/admin/usage/summary?group_by=team").json()["by_team"]
    assert sorted((row["team_id"] or 0, row["requests"]) for row in rows) == [
        (0, 1),
        (team.id, 1),
    ]


def test_team_grouping_is_for_admins_and_only_the_known_groupings(unique_owner, admin):
    with time_machine.travel(NOW, tick=False):
        own = client_for(unique_owner).get("/api/usage/summary?group_by=team")
        other = client_for(unique_owner).get("/api/admin/usage/summary?group_by=team")
        bad = client_for(admin).get("/api/admin/usage/summary?group_by=teams")
        bad_csv = client_for(admin).get("/api/admin/usage/chargeback.csv?group_by=day")
    assert (own.status_code, list(own.json())) == (400, ["group_by"])
    assert other.status_code == 403
    assert (bad.status_code, list(bad.json())) == (400, ["group_by"])
    assert (bad_csv.status_code, list(bad_csv.json())) == (400, ["group_by"])


def test_the_chargeback_names_the_team_at_call_time_and_groups_by_team(admin, company):
    rows = list(csv.DictReader(io.StringIO(snapshot(admin, company)["chargeback"].decode())))
    mover = [
        (row["month"], row["team"], row["requests"])
        for row in rows
        if row["user_id"] == str(company["mover"].id)
    ]
    assert mover == [("2026-09", "Small", "1"), ("2026-10", "Big", "2")]
    assert {row["team"] for row in rows if row["user_id"] == str(company["solo"].id)} == {
        "(no team)"
    }

    teams = get(admin, f"/api/admin/usage/chargeback.csv?{RANGE}&group_by=team").content
    team_rows = list(csv.DictReader(io.StringIO(teams.decode())))
    assert list(team_rows[0])[:3] == ["month", "team_id", "team"]
    october = {row["team"]: int(row["requests"]) for row in team_rows if row["month"] == "2026-10"}
    assert october == {"Big": 3, "(no team)": 1}
