"""Fixtures for the caps tests: users, both cap stores (Redis and the database)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from caps import estimates
from caps.store import _stores, cap_store, close_db_thread_connections
from tests.fixtures.cap_store import REDIS_URL, wipe_redis_user
from tests.fixtures.personas import policy_clear
from tests.fixtures.process_memory import forget_price_table


@pytest.fixture(autouse=True)
def _fresh_caches():
    """No caps cached in memory from an earlier test (user ids are reused after rollbacks)."""
    for store in _stores.values():
        store.caps_cache.clear()
        store.rebuild_pending.clear()
    estimates._local.clear()
    forget_price_table()
    yield
    for store in _stores.values():
        store.caps_cache.clear()
    forget_price_table()


@pytest.fixture(scope="session", autouse=True)
def _close_cap_pool_connections(django_db_setup, django_db_blocker):
    """Threads hold connections: the caps pool's and asgiref's (price lookups from async
    code); close them before the test database is dropped."""
    yield
    with django_db_blocker.unblock():
        close_db_thread_connections()
        asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture
def redis_store():
    return cap_store(url=REDIS_URL)


@pytest.fixture
def db_store():
    return cap_store(embedded=True)


@pytest.fixture(params=["redis", "database"])
def any_store(request):
    """Each test using it runs on both stores, whatever the configuration."""
    if request.param == "redis":
        return cap_store(url=REDIS_URL)
    return cap_store(embedded=True)


@pytest.fixture
def make_user(django_user_model):
    created = []

    def make(email: str = "", *, defaults: bool = False, **extra):
        email = email or f"user{len(created)}@example.com"
        user = django_user_model.objects.create_user(
            username=email, email=email, password="x-unused-x", **extra
        )
        wipe_redis_user(user.pk)
        if not defaults:
            policy_clear()  # only the test's own caps apply
        created.append(user)
        return user

    yield make
    for user in created:
        wipe_redis_user(user.pk)
