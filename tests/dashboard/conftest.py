"""Fixtures of the dashboard page tests: personas, real recorded calls, clean stores."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from accounts.credential_cache import get_credential_cache
from caps.store import _stores
from costs.money import Usage
from tests.fixtures.calls import SONNET, call_for
from tests.fixtures.personas import admin_user, owner, owner_key, stranger, teammate  # noqa: F401
from tests.fixtures.process_memory import forget_price_table
from usage.services import usage_record
from usage.store import RedisStore, get_store


def _clean_store() -> None:
    # Redis is not rolled back with the test database, and user ids are reused.
    store = get_store()
    if isinstance(store, RedisStore):
        redis = settings.GATEWAY.redis
        store.delete(store.scan(redis.usage_summary_prefix) + store.scan(redis.usage_cap_prefix))
    for cap_store in _stores.values():
        cap_store.caps_cache.clear()
    get_credential_cache().clear()
    forget_price_table()


@pytest.fixture(autouse=True)
def clean_stores():
    _clean_store()
    yield
    _clean_store()


# What the dashboard shows most: Claude Code's calls through /anthropic with an API key.
DASHBOARD_CALL = {
    "auth_kind": "api_key",
    "model_id": SONNET,
    "route": "anthropic.messages",
    "usage": Usage(input_tokens=1000, output_tokens=200),
    "latency_ms": 321,
}


@pytest.fixture
def record_claude_code_call(default_prices):
    """record_claude_code_call(user, **CallRecord fields) -> UsageRecord: a call of the shape
    above (DASHBOARD_CALL) recorded by the real service, with the shipped prices."""

    def _record(user, **overrides):
        return usage_record(call=call_for(user, **{**DASHBOARD_CALL, **overrides}))

    return _record


@pytest.fixture
def owner_client(owner) -> Client:  # noqa: F811 (the persona fixture)
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def csrf_client(owner) -> Client:  # noqa: F811 (the persona fixture)
    """Signed in, with CSRF checks on (as a browser is)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    return client


@pytest.fixture
def metered_call(record_claude_code_call):
    """metered_call(user): one call as the proxy makes it — reserve, record, settle."""
    from caps.reservations import cap_reserve, cap_settle

    def _call(user, usage: Usage | None = None):
        usage = usage or Usage(input_tokens=1000, output_tokens=200)
        reservation = cap_reserve(user_id=user.id, model_id=SONNET, estimate=usage)
        recorded = record_claude_code_call(user, usage=usage)
        cap_settle(reservation=reservation, actual=usage, cost_micros=recorded.cost_micros)
        return recorded

    return _call
