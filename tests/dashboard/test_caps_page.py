"""The caps page: bars with percentages and states, own caps' forms, admin caps read-only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from caps.models import UserCapConfig
from caps.services import cap_create
from tests.fixtures.web import csrf_token

pytestmark = pytest.mark.django_db


def own_cap(user, **limits) -> UserCapConfig:
    return cap_create(user_id=user.pk, cap_type="hourly", set_by="user", **limits)


def card(response, cap: UserCapConfig) -> dict:
    return next(c for c in response.context["cards"] if c["id"] == cap.pk)


def test_caps_page_shows_usage_bars_with_percentages(owner, owner_client, metered_call):
    cap = own_cap(owner, max_requests=10, max_tokens=100_000)
    metered_call(owner)
    metered_call(owner)
    response = owner_client.get("/caps")
    shown = card(response, cap)
    requests, tokens = shown["meters"]
    assert (requests["kind"], requests["used"], requests["limit"]) == ("Requests", "2", "10")
    assert requests["percent"] == 20.0
    assert tokens["used"] == "2,400"  # 2 x (1000 input + 200 output)
    assert shown["state"] == "ok"
    html = response.content.decode()
    assert '<progress class="bar" max="100" value="20.0"' in html
    assert "20.0%" in html
    assert "data-countdown=" in html  # the countdown to the reset


def test_a_cap_warns_from_80_percent(owner, owner_client, metered_call):
    cap = own_cap(owner, max_requests=5)
    for _ in range(4):
        metered_call(owner)
    response = owner_client.get("/caps")
    assert card(response, cap)["state"] == "warning"
    assert b"Almost there:" in response.content
    assert b"meter-warning" in response.content


def test_an_exceeded_cap_explains_when_calls_resume(owner, owner_client, metered_call):
    cap = own_cap(owner, max_requests=2)
    metered_call(owner)
    metered_call(owner)
    response = owner_client.get("/caps")
    shown = card(response, cap)
    assert shown["state"] == "exceeded"
    html = response.content.decode()
    assert "Cap reached." in html
    reset = shown["reset_time"]
    assert f"until it resets at {reset:%H:%M} UTC" in html
    assert reset - timezone.now() <= timedelta(hours=1)


def test_admin_caps_are_read_only_and_labelled(owner, owner_client):
    admin_cap = cap_create(user_id=owner.pk, cap_type="daily", set_by="admin", max_requests=50)
    response = owner_client.get("/caps")
    assert card(response, admin_cap)["by_admin"]
    html = response.content.decode()
    assert "Set by an administrator · read-only" in html
    assert f"/caps/{admin_cap.pk}/edit" not in html
    # Trying anyway changes nothing.
    assert owner_client.post(f"/caps/{admin_cap.pk}/edit", {"cap_type": "daily"}).status_code == 302
    assert owner_client.post(f"/caps/{admin_cap.pk}/delete").status_code == 302
    admin_cap.refresh_from_db()
    assert admin_cap.max_requests == 50


def test_grace_period_is_shown_until_an_admin_cap_blocks(owner, owner_client, settings):
    settings.GATEWAY.usage_caps.grace_period_minutes = 5
    cap = cap_create(user_id=owner.pk, cap_type="monthly", set_by="admin", max_requests=9)
    response = owner_client.get("/caps")
    assert not card(response, cap)["enforced"]
    assert b"Grace period:" in response.content


def test_creating_editing_and_deleting_an_own_cap(owner, owner_client):
    created = owner_client.post(
        "/caps", {"cap_type": "daily", "max_cost_usd": "12.50", "is_active": "on"}, follow=True
    )
    assert b"Cap created." in created.content
    cap = UserCapConfig.objects.get(user=owner, set_by="user")
    assert (cap.cap_type, cap.max_cost_cents, cap.max_requests) == ("daily", 1250, None)

    edit = owner_client.get(f"/caps/{cap.pk}/edit")
    assert edit.context["form"].initial["max_cost_usd"] == pytest.approx(12.5)
    owner_client.post(
        f"/caps/{cap.pk}/edit", {"cap_type": "daily", "max_requests": "300", "is_active": "on"}
    )
    cap.refresh_from_db()
    assert (cap.max_requests, cap.max_cost_cents) == (300, None)

    confirm = owner_client.get(f"/caps/{cap.pk}/delete")
    assert b"Delete cap" in confirm.content
    assert UserCapConfig.objects.filter(pk=cap.pk).exists()
    owner_client.post(f"/caps/{cap.pk}/delete")
    assert not UserCapConfig.objects.filter(pk=cap.pk).exists()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"cap_type": "daily"}, None, "Set at least one limit"),
        ({"cap_type": "yearly", "max_requests": "1"}, "cap_type", "Select a valid choice."),
        ({"cap_type": "daily", "max_requests": "0"}, "max_requests", "greater than or equal to 1"),
        ({"cap_type": "daily", "max_tokens": "lots"}, "max_tokens", "Enter a whole number."),
        ({"cap_type": "daily", "max_cost_usd": "0.001"}, "max_cost_usd", "decimal place"),
    ],
)
def test_cap_form_shows_field_errors(owner, owner_client, data, field, message):
    response = owner_client.post("/caps", data)
    assert response.status_code == 400
    form = response.context["form"]
    errors = form.non_field_errors() if field is None else form.errors[field]
    assert message in " ".join(errors)
    assert not UserCapConfig.objects.filter(user=owner, set_by="user").exists()


def test_a_second_own_cap_of_the_same_period_is_refused_on_the_form(owner, owner_client):
    own_cap(owner, max_requests=5)
    response = owner_client.post("/caps", {"cap_type": "hourly", "max_requests": "7"})
    assert response.status_code == 400
    assert "already exists" in " ".join(response.context["form"].errors["cap_type"])


def test_another_users_caps_are_invisible_and_untouchable(owner_client, stranger):
    theirs = own_cap(stranger, max_requests=77)
    response = owner_client.get("/caps")
    assert theirs.pk not in [c["id"] for c in response.context["cards"]]
    assert owner_client.get(f"/caps/{theirs.pk}/edit").status_code == 404
    assert owner_client.post(f"/caps/{theirs.pk}/delete").status_code == 404
    assert UserCapConfig.objects.filter(pk=theirs.pk).exists()


def test_cap_forms_need_the_csrf_token(owner, csrf_client):
    assert csrf_client.post("/caps", {"cap_type": "daily", "max_requests": "5"}).status_code == 403
    cap = own_cap(owner, max_requests=5)
    assert csrf_client.post(f"/caps/{cap.pk}/delete").status_code == 403
    token = csrf_token(csrf_client, "/caps")
    response = csrf_client.post(f"/caps/{cap.pk}/delete", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert not UserCapConfig.objects.filter(pk=cap.pk).exists()


def test_a_session_cap_is_shown_in_words(owner, owner_client):
    cap = cap_create(user_id=owner.pk, cap_type="session", set_by="user", max_cost_cents=250)
    response = owner_client.get("/caps")
    assert card(response, cap)["session_limit"] == "$2.50"
    html = response.content.decode()
    assert "Each Claude Code session may cost at most <strong>$2.50</strong>" in html


def test_policy_and_team_caps_show_read_only_with_their_source(owner, owner_client):
    from accounts.models import Team
    from caps.services import team_cap_set

    team = Team.objects.create(name="Research")
    owner.team = team
    owner.save(update_fields=["team"])
    team_cap_set(team_id=team.pk, cap_type="monthly", max_cost_cents=90000)
    html = owner_client.get("/caps").content.decode()
    assert "Your team&#x27;s cap, shared · read-only" in html or "Your team's cap" in html
    assert "Policy for everyone · read-only" in html  # the built-in policy: $50.00 a day
    assert "/edit" not in html  # none of them is the user's to edit
