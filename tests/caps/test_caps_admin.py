"""Django admin for caps: list and filter, bulk activate / deactivate, edits with grace."""

import pytest

from caps.models import UserCapConfig
from caps.services import cap_create

pytestmark = pytest.mark.django_db


def test_admin_lists_and_filters_caps(admin_client, make_user):
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    cap_create(user_id=alice.pk, cap_type="daily", set_by="user", max_requests=5)
    cap_create(user_id=bob.pk, cap_type="hourly", set_by="admin", max_tokens=5)
    page = admin_client.get("/admin/caps/usercapconfig/?cap_type=hourly")
    assert page.status_code == 200
    assert b"bob@example.com" in page.content
    assert b"alice@example.com" not in page.content


def test_admin_bulk_deactivates_and_reactivates_with_grace(admin_client, make_user):
    user = make_user()
    caps = [
        cap_create(user_id=user.pk, cap_type=t, set_by="admin", max_requests=5)
        for t in ("hourly", "daily")
    ]
    ids = [str(c.pk) for c in caps]
    url = "/admin/caps/usercapconfig/"
    admin_client.post(url, {"action": "deactivate", "_selected_action": ids})
    assert not UserCapConfig.objects.filter(is_active=True).exists()
    admin_client.post(url, {"action": "activate", "_selected_action": ids})
    reactivated = UserCapConfig.objects.filter(is_active=True)
    assert reactivated.count() == 2
    # Switching an administrator's cap back on is a tightening: it warns before it blocks.
    assert all(c.enforce_from is not None for c in reactivated)


def test_admin_form_refuses_a_zero_limit(admin_client, make_user):
    user = make_user()
    response = admin_client.post(
        "/admin/caps/usercapconfig/add/",
        {"user": user.pk, "cap_type": "daily", "set_by": "admin", "max_requests": 0,
         "is_active": "on"},
    )  # fmt: skip
    assert response.status_code == 200  # the form again, with the error
    assert not UserCapConfig.objects.exists()


# --- Bulk actions on the user list (issue #15) ---------------------------------------------------

USERS_URL = "/admin/accounts/user/"


def test_apply_cap_action_first_shows_its_form(admin_client, make_user):
    alice = make_user("alice@example.com")
    page = admin_client.post(USERS_URL, {"action": "apply_cap", "_selected_action": [alice.pk]})
    assert page.status_code == 200
    assert b'name="max_cost_usd"' in page.content
    assert b"alice@example.com" in page.content
    assert not UserCapConfig.objects.exists()


def test_apply_cap_action_creates_and_updates_administrator_caps(admin_client, make_user):
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    old = cap_create(user_id=bob.pk, cap_type="daily", set_by="admin", max_requests=5)
    own = cap_create(user_id=bob.pk, cap_type="daily", set_by="user", max_requests=3)
    response = admin_client.post(
        USERS_URL,
        {"action": "apply_cap", "_selected_action": [alice.pk, bob.pk], "apply": "1",
         "period": "daily", "max_requests": "", "max_tokens": "200000",
         "max_cost_usd": "12.50"},
        follow=True,
    )  # fmt: skip
    assert b"1 created, 1 updated, 0 unchanged" in response.content
    caps = {c.user_id: c for c in UserCapConfig.objects.filter(set_by="admin", cap_type="daily")}
    assert set(caps) == {alice.pk, bob.pk}
    for cap in caps.values():
        assert (cap.max_requests, cap.max_tokens, cap.max_cost_cents) == (None, 200_000, 1250)
        assert cap.enforce_from is not None  # through the services: a tightening has grace
    assert caps[bob.pk].pk == old.pk
    own.refresh_from_db()
    assert own.max_requests == 3  # the user's own cap is theirs


def test_apply_cap_action_shows_errors_and_changes_nothing(admin_client, make_user):
    alice = make_user("alice@example.com")
    base = {"action": "apply_cap", "_selected_action": [alice.pk], "apply": "1"}
    no_limit = admin_client.post(USERS_URL, {**base, "period": "daily"})
    assert no_limit.status_code == 200
    assert b"set at least one limit" in no_limit.content
    session = admin_client.post(USERS_URL, {**base, "period": "session", "max_requests": "10"})
    assert b"a session cap limits cost only" in session.content
    negative = admin_client.post(USERS_URL, {**base, "period": "daily", "max_cost_usd": "-1"})
    assert b"greater than or equal to 0.01" in negative.content
    assert not UserCapConfig.objects.exists()


def test_session_cap_applies_to_selected_users(admin_client, make_user):
    alice = make_user("alice@example.com")
    admin_client.post(
        USERS_URL,
        {"action": "apply_cap", "_selected_action": [alice.pk], "apply": "1",
         "period": "session", "max_cost_usd": "5"},
    )  # fmt: skip
    cap = UserCapConfig.objects.get(user=alice)
    assert (cap.cap_type, cap.set_by, cap.max_cost_cents) == ("session", "admin", 500)


def test_move_to_team_action_moves_users_and_back_out(admin_client, make_user):
    from accounts.models import Team, User

    team = Team.objects.create(name="Platform")
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    carol = make_user("carol@example.com")
    form = admin_client.post(
        USERS_URL, {"action": "move_to_team", "_selected_action": [alice.pk, bob.pk]}
    )
    assert b"Platform" in form.content
    response = admin_client.post(
        USERS_URL,
        {"action": "move_to_team", "_selected_action": [alice.pk, bob.pk], "apply": "1",
         "team": team.pk},
        follow=True,
    )  # fmt: skip
    assert b"Moved 2 user(s) to team Platform" in response.content
    assert set(User.objects.filter(team=team).values_list("email", flat=True)) == {
        "alice@example.com",
        "bob@example.com",
    }
    assert User.objects.get(pk=carol.pk).team is None
    listing = admin_client.get(f"{USERS_URL}?team__id__exact={team.pk}")
    assert b"alice@example.com" in listing.content
    assert b"carol@example.com" not in listing.content
    admin_client.post(
        USERS_URL,
        {"action": "move_to_team", "_selected_action": [alice.pk], "apply": "1", "team": ""},
    )
    assert User.objects.get(pk=alice.pk).team is None
    assert User.objects.get(pk=bob.pk).team_id == team.pk
