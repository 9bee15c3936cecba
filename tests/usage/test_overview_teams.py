"""Issue #15: the admin overview's "Top teams" — spend this month per team (the team at call
time), dearest first, with the team cap's headroom."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

from accounts.models import Team
from caps.reservations import cap_reserve, cap_settle
from caps.services import team_cap_set
from costs.money import Usage
from costs.services import price_defaults_install
from tests.fixtures.personas import unique_user
from usage.overview import admin_overview
from usage.services import CallRecord, usage_record

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("forget_cap_caches")]

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
SONNET = "us.anthropic.claude-sonnet-4-6"  # $3 per million input tokens


def call(user, team, started_at, input_tokens):
    """A call as the proxy makes it: reserved under the caps (the team's too), recorded."""
    usage = Usage(input_tokens=input_tokens)
    with time_machine.travel(started_at, tick=False):
        reservation = cap_reserve(
            user_id=user.pk, model_id=SONNET, estimate=usage, team_id=team and team.pk
        )
        row = usage_record(
            call=CallRecord(
                call_id=uuid.uuid4(), user_id=user.pk, api_key_id=None, auth_kind="jwt",
                model_id=SONNET, route="anthropic", streaming=False, usage=usage,
                upstream_status=200, error_type=None, latency_ms=300, ttfb_ms=None,
                request_id="", started_at=started_at, client_family="claude-cli",
                session_id=None, team_id=team and team.pk,
            )
        )  # fmt: skip
        cap_settle(reservation=reservation, actual=usage, cost_micros=row.cost_micros)


@pytest.fixture
def teams(db):
    price_defaults_install()
    platform, data, idle = (Team.objects.create(name=n) for n in ("Platform", "Data", "Idle"))
    with time_machine.travel(NOW - timedelta(days=10), tick=False):
        team_cap_set(team_id=data.pk, cap_type="monthly", max_cost_cents=1000)  # $10.00
    alice, bob, carol = unique_user(), unique_user(), unique_user()
    call(alice, platform, NOW - timedelta(hours=2), 1_000_000)  # $3
    call(bob, data, NOW - timedelta(days=1), 2_000_000)  # $6
    call(carol, data, NOW - timedelta(hours=1), 500_000)  # $1.50
    call(carol, None, NOW - timedelta(hours=3), 4_000_000)  # no team at the time
    call(alice, platform, datetime(2026, 10, 31, 23, tzinfo=UTC), 4_000_000)  # last month
    return platform, data, idle


def test_top_teams_are_ordered_by_spend_this_month_with_cap_headroom(teams):
    _platform, _data, _ = teams
    overview = admin_overview(now=NOW)
    assert [(t.name, t.requests, t.cost_micros) for t in overview.top_teams] == [
        ("Data", 2, 7_500_000),
        ("Platform", 1, 3_000_000),
    ]
    headroom = overview.top_teams[0].tightest
    assert (headroom.used, headroom.limit, headroom.cap_type) == ("$7.50", "$10.00", "monthly")
    assert headroom.percentage_used == 75.0
    assert overview.top_teams[1].tightest is None


def test_the_admin_index_shows_top_teams(teams):
    admin = unique_user(admin=True)
    client = Client()
    client.force_login(admin)
    with time_machine.travel(NOW, tick=False):
        html = client.get("/admin/").content.decode()
    table = re.search(r'id="top-teams".*?</table>', html, flags=re.DOTALL).group(0)
    rows = re.findall(r"<tr data-team-id.*?</tr>", table, flags=re.DOTALL)
    assert len(rows) == 2
    assert ">Data<" in rows[0]
    assert "$7.5000" in rows[0]
    assert "$7.50 of $10.00 monthly" in rows[0]
    assert ">Platform<" in rows[1]
    assert "$3.0000" in rows[1]
    assert "no team cap" in rows[1]
    # The rest of the overview is still there.
    assert 'id="top-users"' in html
    assert 'id="near-cap"' in html


def test_a_deleted_team_keeps_its_spend_without_a_link(teams):
    platform, _, _ = teams
    platform_id = platform.pk
    platform.delete()
    overview = admin_overview(now=NOW)
    deleted = [t for t in overview.top_teams if t.team_id == platform_id]
    assert deleted[0].deleted
    assert deleted[0].cost_micros == 3_000_000
