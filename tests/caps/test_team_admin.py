"""Issue #15: teams in Django admin — the list (members, spend this month, caps), the change
page with the team's caps saved through the services and its members, and "Set a team cap…"."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from accounts.models import Team
from accounts.services import user_team_set
from caps.models import TeamCapConfig
from caps.services import team_cap_set
from costs.money import Usage
from tests.fixtures.calls import SONNET
from usage.services import CallRecord, usage_record

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
TEAMS_URL = "/admin/accounts/team/"


def record(user, team, started_at, tokens=1_000_000):
    """One priced call ($3.00 per million input tokens) made while `user` was in `team`."""
    return usage_record(
        call=CallRecord(
            call_id=uuid.uuid4(), user_id=user.pk, api_key_id=None, auth_kind="jwt",
            model_id=SONNET, route="anthropic", streaming=False,
            usage=Usage(input_tokens=tokens), upstream_status=200, error_type=None,
            latency_ms=300, ttfb_ms=None, request_id="", started_at=started_at,
            client_family="claude-cli", session_id=None, team_id=team.pk,
        ),
        now=started_at,
    )  # fmt: skip


def inline_data(*rows, initial=0):
    """The change form's POST: the team's name and its caps inline (prefix "caps")."""
    data = {
        "caps-TOTAL_FORMS": str(len(rows)),
        "caps-INITIAL_FORMS": str(initial),
        "caps-MIN_NUM_FORMS": "0",
        "caps-MAX_NUM_FORMS": "1000",
    }
    for n, row in enumerate(rows):
        for name, value in row.items():
            data[f"caps-{n}-{name}"] = value
    return data


def test_team_list_shows_members_spend_this_month_and_caps(admin_client, make_user, default_prices):
    platform = Team.objects.create(name="Platform")
    Team.objects.create(name="Data")
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    for user in (alice, bob):
        user_team_set(user=user, team=platform)
    with time_machine.travel(NOW, tick=False):
        record(alice, platform, NOW - timedelta(hours=1))
        record(bob, platform, NOW - timedelta(days=3))
        record(bob, platform, datetime(2026, 10, 30, tzinfo=UTC))  # last month: not counted
        team_cap_set(team_id=platform.pk, cap_type="monthly", max_cost_cents=100_000)
        page = admin_client.get(TEAMS_URL)
    html = page.content.decode()
    row = html[html.index(">Platform<") :].split("</tr>")[0]
    assert ">2<" in row  # members
    assert "$6.0000" in row  # two calls this month at $3.00
    assert "monthly $1,000.00" in row
    data_row = html[html.index(">Data<") :].split("</tr>")[0]
    assert "$0.0000" in data_row
    assert "none" in data_row


def test_team_page_lists_members_with_links(admin_client, make_user):
    team = Team.objects.create(name="Platform")
    alice = make_user("alice@example.com")
    make_user("bob@example.com")
    user_team_set(user=alice, team=team)
    page = admin_client.get(f"{TEAMS_URL}{team.pk}/change/")
    assert f'href="/admin/accounts/user/{alice.pk}/change/"'.encode() in page.content
    assert b"bob@example.com" not in page.content


def test_team_caps_inline_saves_through_the_services(admin_client):
    team = Team.objects.create(name="Platform")
    url = f"{TEAMS_URL}{team.pk}/change/"
    with time_machine.travel(NOW, tick=False):
        response = admin_client.post(
            url,
            {"name": "Platform", **inline_data(
                {"cap_type": "monthly", "max_cost_usd": "1000.00", "is_active": "on",
                 "team": team.pk},
            )},
        )  # fmt: skip
    assert response.status_code == 302, response.content
    cap = TeamCapConfig.objects.get(team=team)
    assert (cap.cap_type, cap.max_cost_cents, cap.max_requests) == ("monthly", 100_000, None)
    assert cap.enforce_from > NOW  # a new cap warns before it blocks: the grace period

    # After the grace period, loosening applies at once; the page shows the cost in dollars.
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        assert b'value="1000.00"' in admin_client.get(url).content
        admin_client.post(
            url,
            {"name": "Platform", **inline_data(
                {"id": cap.pk, "team": team.pk, "cap_type": "monthly",
                 "max_cost_usd": "2000.00", "is_active": "on"},
                initial=1,
            )},
        )  # fmt: skip
    cap.refresh_from_db()
    assert cap.max_cost_cents == 200_000
    assert cap.enforce_from is None

    admin_client.post(
        url,
        {"name": "Platform", **inline_data(
            {"id": cap.pk, "team": team.pk, "cap_type": "monthly", "max_cost_usd": "2000.00",
             "is_active": "on", "DELETE": "on"},
            initial=1,
        )},
    )  # fmt: skip
    assert not TeamCapConfig.objects.exists()


def test_team_caps_inline_refuses_a_cap_without_limits(admin_client):
    team = Team.objects.create(name="Platform")
    response = admin_client.post(
        f"{TEAMS_URL}{team.pk}/change/",
        {"name": "Platform", **inline_data({"cap_type": "daily", "is_active": "on",
                                            "team": team.pk})},
    )  # fmt: skip
    assert response.status_code == 200
    assert b"set at least one limit" in response.content
    assert not TeamCapConfig.objects.exists()


def test_set_team_cap_action_sets_each_selected_team(admin_client):
    platform, data, other = (Team.objects.create(name=n) for n in ("Platform", "Data", "Other"))
    team_cap_set(team_id=data.pk, cap_type="daily", max_requests=10)
    form = admin_client.post(
        TEAMS_URL, {"action": "set_team_cap", "_selected_action": [platform.pk, data.pk]}
    )
    assert b'value="session"' not in form.content  # a team cap is per calendar window
    response = admin_client.post(
        TEAMS_URL,
        {"action": "set_team_cap", "_selected_action": [platform.pk, data.pk], "apply": "1",
         "period": "daily", "max_requests": "500", "max_cost_usd": "250"},
        follow=True,
    )  # fmt: skip
    assert b"Team caps: 1 created, 1 updated, 0 unchanged" in response.content
    caps = TeamCapConfig.objects.filter(cap_type="daily").order_by("team__name")
    assert [(c.team.name, c.max_requests, c.max_cost_cents) for c in caps] == [
        ("Data", 500, 25_000),
        ("Platform", 500, 25_000),
    ]
    assert not TeamCapConfig.objects.filter(team=other).exists()


def test_set_team_cap_action_shows_errors(admin_client):
    team = Team.objects.create(name="Platform")
    response = admin_client.post(
        TEAMS_URL,
        {"action": "set_team_cap", "_selected_action": [team.pk], "apply": "1",
         "period": "session", "max_cost_usd": "5"},
    )  # fmt: skip
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content
    assert not TeamCapConfig.objects.exists()
