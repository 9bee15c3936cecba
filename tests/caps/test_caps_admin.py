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
