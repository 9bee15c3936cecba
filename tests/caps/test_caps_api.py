"""The cap management API: /api/usage/caps, /api/usage/caps/{id}, /api/usage/caps/status."""

import pytest
from rest_framework.test import APIClient

from caps.models import UserCapConfig
from caps.services import cap_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def caps_member(make_user):
    """member@example.com, made by the caps `make_user` (no cap policy, no Redis counters)."""
    return make_user("member@example.com")


@pytest.fixture
def caps_member_api(caps_member):
    """An API client authenticated as `caps_member`."""
    client = APIClient()
    client.force_authenticate(caps_member)
    return client


@pytest.fixture
def caps_admin_api(make_user):
    """An API client as admin@example.com (staff, superuser), made like `caps_member`."""
    admin = make_user("admin@example.com", is_staff=True, is_superuser=True)
    client = APIClient()
    client.force_authenticate(admin)
    return client


def test_user_creates_and_lists_their_own_cap(caps_member_api, caps_member):
    response = caps_member_api.post(
        "/api/usage/caps", {"cap_type": "daily", "max_requests": 100}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["set_by"] == "user"
    assert body["user"] == caps_member.pk
    assert body["max_requests"] == 100
    assert body["enforced"] is True
    listed = caps_member_api.get("/api/usage/caps").json()
    assert [c["id"] for c in listed["results"]] == [body["id"]]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"cap_type": "daily", "max_requests": -1}, "max_requests"),
        ({"cap_type": "daily", "max_tokens": 0}, "max_tokens"),
        ({"cap_type": "daily", "max_cost_cents": "lots"}, "max_cost_cents"),
        ({"cap_type": "weekly", "max_requests": 5}, "cap_type"),
        ({"max_requests": 5}, "cap_type"),
        ({"cap_type": "daily"}, "non_field_errors"),
        ({"cap_type": "daily", "max_requests": None}, "non_field_errors"),
    ],
)
def test_invalid_cap_input_is_a_400_naming_the_field(caps_member_api, payload, field):
    response = caps_member_api.post("/api/usage/caps", payload, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert isinstance(response.json()[field], list)


def test_a_second_cap_of_the_same_type_is_a_400(caps_member_api):
    caps_member_api.post("/api/usage/caps", {"cap_type": "daily", "max_requests": 5}, format="json")
    response = caps_member_api.post(
        "/api/usage/caps", {"cap_type": "daily", "max_tokens": 5}, format="json"
    )
    assert response.status_code == 400
    assert "cap_type" in response.json()


def test_admin_cap_and_users_own_cap_of_one_type_coexist(
    caps_admin_api, caps_member_api, caps_member
):
    made = caps_admin_api.post(
        "/api/usage/caps",
        {"cap_type": "daily", "max_requests": 50, "user": caps_member.pk},
        format="json",
    )
    assert made.status_code == 201
    assert made.json()["set_by"] == "admin"
    assert made.json()["enforced"] is False  # grace period for an existing user
    own = caps_member_api.post(
        "/api/usage/caps", {"cap_type": "daily", "max_requests": 10}, format="json"
    )
    assert own.status_code == 201
    assert {c["set_by"] for c in caps_member_api.get("/api/usage/caps").json()["results"]} == {
        "admin",
        "user",
    }


def test_user_cannot_edit_or_remove_an_admins_cap(caps_member_api, caps_member):
    cap = cap_create(user_id=caps_member.pk, cap_type="daily", set_by="admin", max_requests=10)
    assert (
        caps_member_api.put(f"/api/usage/caps/{cap.pk}", {"max_requests": 10_000}, format="json")
    ).status_code == 403
    assert caps_member_api.delete(f"/api/usage/caps/{cap.pk}").status_code == 403
    cap.refresh_from_db()
    assert cap.max_requests == 10


def test_user_cannot_set_a_cap_for_someone_else(caps_member_api, make_user):
    other = make_user("other@example.com")
    response = caps_member_api.post(
        "/api/usage/caps", {"cap_type": "daily", "max_requests": 1, "user": other.pk}, format="json"
    )
    assert response.status_code == 403
    assert "detail" in response.json()
    assert not UserCapConfig.objects.filter(user=other).exists()


@pytest.mark.parametrize("target", ["other", "self", 987654, "abc", None])
def test_it_refuses_a_user_field_from_a_non_admin_whatever_the_id(
    caps_member_api, caps_member, make_user, target
):
    other = make_user("other@example.com")
    user = {"other": other.pk, "self": caps_member.pk}.get(target, target)
    response = caps_member_api.post(
        "/api/usage/caps", {"cap_type": "daily", "max_requests": 1, "user": user}, format="json"
    )
    # The same 403 for an existing, a missing or a malformed id: nothing tells them apart.
    assert response.status_code == 403
    assert response.json() == {"detail": "Only administrators set caps for a user."}
    assert not UserCapConfig.objects.exists()


@pytest.mark.parametrize("target", ["other", "self", 987654, "abc", None])
def test_it_refuses_a_user_field_in_an_update_from_a_non_admin_whatever_the_id(
    caps_member_api, caps_member, make_user, target
):
    other = make_user("other@example.com")
    cap = cap_create(user_id=caps_member.pk, cap_type="hourly", set_by="user", max_requests=10)
    user = {"other": other.pk, "self": caps_member.pk}.get(target, target)
    response = caps_member_api.put(
        f"/api/usage/caps/{cap.pk}", {"max_requests": 5, "user": user}, format="json"
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "Only administrators set caps for a user."}
    cap.refresh_from_db()
    assert cap.max_requests == 10


def test_someone_elses_cap_is_a_404(caps_member_api, make_user):
    other = make_user("other@example.com")
    cap = cap_create(user_id=other.pk, cap_type="daily", set_by="user", max_requests=10)
    assert caps_member_api.delete(f"/api/usage/caps/{cap.pk}").status_code == 404


def test_user_updates_and_deletes_their_own_cap(caps_member_api, caps_member):
    cap = cap_create(user_id=caps_member.pk, cap_type="hourly", set_by="user", max_requests=10)
    response = caps_member_api.put(
        f"/api/usage/caps/{cap.pk}", {"max_requests": None, "max_tokens": 500}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["max_requests"], response.json()["max_tokens"]) == (None, 500)
    bad = caps_member_api.put(f"/api/usage/caps/{cap.pk}", {"max_tokens": None}, format="json")
    assert bad.status_code == 400
    assert list(bad.json()) == ["non_field_errors"]
    assert caps_member_api.delete(f"/api/usage/caps/{cap.pk}").status_code == 204
    assert not UserCapConfig.objects.filter(pk=cap.pk).exists()


def test_admin_edits_anyones_cap_and_filters_by_user(caps_admin_api, caps_member, make_user):
    other = make_user("other@example.com")
    cap = cap_create(user_id=caps_member.pk, cap_type="daily", set_by="user", max_requests=10)
    cap_create(user_id=other.pk, cap_type="daily", set_by="user", max_requests=10)
    response = caps_admin_api.put(f"/api/usage/caps/{cap.pk}", {"max_requests": 20}, format="json")
    assert response.status_code == 200
    listed = caps_admin_api.get(f"/api/usage/caps?user={caps_member.pk}").json()["results"]
    assert [c["id"] for c in listed] == [cap.pk]


def test_status_reports_usage_limits_percentage_and_reset(
    caps_member_api, caps_member, default_prices
):
    from caps.reservations import cap_reserve, cap_settle
    from costs.money import Usage

    cap_create(
        user_id=caps_member.pk, cap_type="daily", set_by="user", max_requests=4, max_cost_cents=100
    )
    reservation = cap_reserve(
        user_id=caps_member.pk,
        model_id="us.anthropic.claude-sonnet-4-6",
        estimate=Usage(input_tokens=1000, output_tokens=1000),
    )
    cap_settle(reservation=reservation, actual=Usage(input_tokens=1000, output_tokens=1000))
    response = caps_member_api.get("/api/usage/caps/status")
    assert response.status_code == 200
    body = response.json()
    assert body["spend_today_cents"] == 0  # nothing recorded: reservations are not spend
    [status] = body["caps"]
    assert status["cap_type"] == "daily"
    assert status["current_usage"] == {"requests": 1, "tokens": 2000, "cost_cents": 1.8}
    assert status["limits"] == {"max_requests": 4, "max_tokens": None, "max_cost_cents": 100}
    assert status["percentage_used"] == 25.0
    assert status["is_exceeded"] is False
    assert status["reset_time"].endswith("T00:00:00Z")


def test_anonymous_requests_are_refused(client):
    assert client.get("/api/usage/caps").status_code in (401, 403)
