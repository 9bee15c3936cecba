import pytest

from accounts.credential_cache import get_credential_cache
from tests.fixtures.oidc import oidc_provider, oidc_settings  # noqa: F401
from tests.fixtures.personas import admin_user, owner, owner_key, stranger, teammate  # noqa: F401


@pytest.fixture(autouse=True)
def _fresh_credentials(settings):
    """Database ids are reused between tests (and runs): cached credentials must not be."""
    settings.ACCOUNT_RATE_LIMITS = False
    get_credential_cache().clear()
    yield
    get_credential_cache().clear()


@pytest.fixture
async def thread_connections():
    """Async tests reach the ORM through sync_to_async's thread: close its connection after."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def auth_config(settings):
    """Change `settings.GATEWAY.auth` for one test: auth_config(admin_emails=[...])."""

    def change(**values):
        auth = settings.GATEWAY.auth.model_copy(update=values)
        settings.GATEWAY = settings.GATEWAY.model_copy(update={"auth": auth})

    return change


@pytest.fixture
def empty_django_cache():
    """The Django cache (the throttles' counters, among others) empty before and after the test."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
