"""The cap policy: live for every user without rows, replaced per period by an administrator's
cap, tightened only by the user's own, set from the configuration or in admin."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from caps.errors import CapExceeded
from caps.models import CapPolicy, UserCapConfig
from caps.policy import POLICY_OWNER, policy_rows, policy_update
from caps.reservations import cap_reserve, cap_settle
from caps.services import cap_create
from caps.status import cap_status
from config.conf import load_config
from costs.money import Usage
from tests.fixtures.calls import SONNET
from tests.fixtures.personas import policy_clear

pytestmark = pytest.mark.django_db

SMALL = Usage(input_tokens=10, output_tokens=10)
NOW = datetime(2031, 3, 14, 10, 0, tzinfo=UTC)


def calls(user, store, count: int, now=NOW) -> int:
    """How many of `count` calls are let through (each settled at its estimate)."""
    passed = 0
    for _ in range(count):
        try:
            reservation = cap_reserve(
                user_id=user.pk, model_id=SONNET, estimate=SMALL, store=store, now=now
            )
        except CapExceeded:
            continue
        cap_settle(reservation=reservation, actual=SMALL, now=now)
        passed += 1
    return passed


@pytest.fixture
def policy(make_user):
    """An empty policy (no limit anywhere), for the test to set."""
    make_user("first@example.com")  # clears the policy
    return policy_update


def test_the_policy_applies_to_a_user_without_any_cap_row(
    any_store, make_user, default_prices, policy
):
    policy(cap_type="daily", max_requests=3, now=NOW - timedelta(hours=1))
    user = make_user("new@example.com", defaults=True)
    assert calls(user, any_store, 5) == 3
    assert not UserCapConfig.objects.filter(user=user).exists()
    [status] = cap_status(user_id=user.pk, store=any_store, now=NOW)
    assert (status["set_by"], status["limits"]["max_requests"]) == ("policy", 3)
    assert status["is_exceeded"] is True


def test_a_change_reaches_existing_users_at_once(any_store, make_user, default_prices, policy):
    policy(cap_type="daily", max_requests=2, now=NOW - timedelta(hours=1))
    users = [make_user(f"dev{i}@example.com", defaults=True) for i in range(3)]
    for user in users:
        assert calls(user, any_store, 3) == 2  # their caps are cached now
    policy(cap_type="daily", max_requests=4, now=NOW)  # loosening: at once, no per-user rows
    for user in users:
        assert calls(user, any_store, 3) == 2
    assert UserCapConfig.objects.count() == 0


def test_tightening_blocks_only_after_the_grace_period(
    any_store, make_user, default_prices, policy
):
    policy(cap_type="daily", max_requests=10, now=NOW - timedelta(hours=1))
    user = make_user("dev@example.com", defaults=True)
    assert calls(user, any_store, 2) == 2
    policy(cap_type="daily", max_requests=2, now=NOW)
    row = CapPolicy.objects.get(cap_type="daily")
    assert row.enforce_from == NOW + timedelta(minutes=5)
    assert row.prior_limits["max_requests"] == 10
    assert calls(user, any_store, 1) == 1  # still under the old limit during the grace
    later = NOW + timedelta(minutes=6)
    assert calls(user, any_store, 1, now=later) == 0


def test_an_administrator_cap_replaces_the_policy_for_its_period(
    any_store, make_user, default_prices, policy
):
    policy(cap_type="daily", max_requests=2, now=NOW - timedelta(hours=1))
    policy(cap_type="monthly", max_requests=100, now=NOW - timedelta(hours=1))
    looser = make_user("a@example.com", defaults=True)
    stricter = make_user("b@example.com", defaults=True)
    cap_create(user_id=looser.pk, cap_type="daily", set_by="admin", max_requests=5, now=NOW)
    cap_create(user_id=stricter.pk, cap_type="daily", set_by="admin", max_requests=1, now=NOW)
    assert calls(looser, any_store, 7) == 5  # loosening applies at once
    later = NOW + timedelta(minutes=6)  # a tightening after the grace period
    assert calls(stricter, any_store, 3, now=later) == 1
    sets = {(s["cap_type"], s["set_by"]) for s in cap_status(user_id=looser.pk, now=NOW)}
    assert sets == {("daily", "admin"), ("monthly", "policy")}


def test_a_first_administrator_cap_keeps_the_policy_limit_during_its_grace(
    any_store, make_user, default_prices, policy
):
    policy(cap_type="daily", max_requests=3, now=NOW - timedelta(hours=1))
    user = make_user("dev@example.com", defaults=True)
    cap_create(user_id=user.pk, cap_type="daily", set_by="admin", max_requests=1, now=NOW)
    assert calls(user, any_store, 5) == 3  # the policy's 3, not unlimited, until enforce_from


def test_a_users_own_cap_only_tightens(any_store, make_user, default_prices, policy):
    policy(cap_type="daily", max_requests=3, now=NOW - timedelta(hours=1))
    loose = make_user("a@example.com", defaults=True)
    tight = make_user("b@example.com", defaults=True)
    cap_create(user_id=loose.pk, cap_type="daily", set_by="user", max_requests=50, now=NOW)
    cap_create(user_id=tight.pk, cap_type="daily", set_by="user", max_requests=1, now=NOW)
    assert calls(loose, any_store, 5) == 3
    assert calls(tight, any_store, 5) == 1


def test_another_process_sees_the_change_within_a_second(
    redis_store, make_user, default_prices, policy
):
    policy(cap_type="daily", max_requests=1, now=NOW - timedelta(hours=1))
    user = make_user("dev@example.com", defaults=True)
    assert calls(user, redis_store, 2) == 1
    old_policy, _ = redis_store.caps_cache[POLICY_OWNER]
    # Another process changes the policy: the database row and the published version only.
    row = CapPolicy.objects.get(cap_type="daily")
    row.max_requests = 3
    row.save()
    redis_store.set_version(POLICY_OWNER)
    assert calls(user, redis_store, 1) == 0  # checked less than a second ago: cached
    redis_store.caps_cache[POLICY_OWNER] = (old_policy, 0.0)  # a second has passed
    assert calls(user, redis_store, 3) == 2


def test_a_limit_set_in_the_configuration_wins_and_cannot_be_edited(make_user, settings, policy):
    caps = settings.GATEWAY.usage_caps.model_copy(update={"default_daily_requests": 40})
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})
    assert "default_daily_requests" in settings.GATEWAY.usage_caps.model_fields_set
    policy_rows(now=NOW)  # the configured value is applied (a tightening: after the grace)
    row = CapPolicy.objects.get(cap_type="daily")
    assert (row.max_requests, row.enforce_from) == (40, NOW + timedelta(minutes=5))
    with pytest.raises(ValidationError, match=r"usage_caps\.default_daily_requests"):
        policy_update(cap_type="daily", max_requests=41)
    policy_update(cap_type="daily", max_cost_cents=900)  # not set in the configuration
    assert CapPolicy.objects.get(cap_type="daily").max_cost_cents == 900


def test_none_unsets_a_policy_limit_from_the_environment():
    config = load_config(
        {
            "GATEWAY_USAGE_CAPS__DEFAULT_DAILY_COST_CENTS": "none",
            "GATEWAY_USAGE_CAPS__DEFAULT_MONTHLY_COST_CENTS": "",
            "GATEWAY_USAGE_CAPS__DEFAULT_HOURLY_REQUESTS": "120",
        }
    )
    caps = config.usage_caps
    assert caps.default_daily_cost_cents is None
    assert caps.default_monthly_cost_cents is None
    assert caps.default_hourly_requests == 120
    assert {"default_daily_cost_cents", "default_hourly_requests"} <= caps.model_fields_set


def test_the_builtin_policy_limits_cost_not_tokens(db):
    policy_clear_not_called = {row.cap_type: row for row in policy_rows(now=NOW).values()}
    daily = policy_clear_not_called["daily"]
    assert daily.max_tokens is None
    assert daily.max_cost_cents == 5000
    assert policy_clear_not_called["monthly"].max_cost_cents == 50000
    assert policy_clear_not_called["hourly"].max_cost_cents == 2000


def test_policy_values_are_checked(policy):
    with pytest.raises(ValidationError):
        policy_update(cap_type="daily", max_requests=0)
    with pytest.raises(ValidationError):
        policy_update(cap_type="session", max_tokens=10)
    with pytest.raises(ValidationError):
        policy_update(cap_type="weekly", max_requests=1)
    policy_clear()
    assert not CapPolicy.objects.exclude(
        max_requests=None, max_tokens=None, max_cost_cents=None
    ).exists()


def test_admins_edit_the_policy_in_admin_except_what_the_configuration_sets(
    admin_client, settings, policy
):
    caps = settings.GATEWAY.usage_caps.model_copy(update={"default_monthly_cost_cents": 70000})
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})
    listing = admin_client.get("/admin/caps/cappolicy/")
    assert listing.status_code == 200
    assert CapPolicy.objects.count() == 4
    daily = CapPolicy.objects.get(cap_type="daily")
    page = admin_client.get(f"/admin/caps/cappolicy/{daily.pk}/change/")
    assert 'name="max_requests"' in page.content.decode()
    saved = admin_client.post(
        f"/admin/caps/cappolicy/{daily.pk}/change/",
        {"max_requests": "700", "max_tokens": "", "max_cost_cents": "2500"},
    )
    assert saved.status_code == 302
    daily.refresh_from_db()
    assert (daily.max_requests, daily.max_cost_cents) == (700, 2500)
    monthly = CapPolicy.objects.get(cap_type="monthly")
    assert monthly.max_cost_cents == 70000
    page = admin_client.get(f"/admin/caps/cappolicy/{monthly.pk}/change/").content.decode()
    assert 'name="max_cost_cents"' not in page  # read-only: set by the configuration
    assert 'name="max_requests"' in page
