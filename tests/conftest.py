import pytest

pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.emulator",
    "tests.fixtures.process_memory",
    "tests.fixtures.reference_data",
    "tests.fixtures.tls",
]


def pytest_collection_modifyitems(config, items):
    """Browser tests run last: Playwright's sync API keeps an event loop running in the main
    thread for the rest of the session, which tests that start their own loop cannot share."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session", autouse=True)
def _empty_counter_store():
    """A test session starts from an empty Redis database (the configured one only): counters
    and cached state left by an earlier run must not leak into this one."""
    from django.conf import settings

    if settings.GATEWAY.redis.url:
        import redis

        redis.Redis.from_url(settings.GATEWAY.redis.url).flushdb()


@pytest.fixture(autouse=True)
def _eager_celery(settings):
    """Tasks run in-process in tests, except where a test starts a real worker."""
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = settings.CELERY_TASK_ALWAYS_EAGER


@pytest.fixture
def backend_name() -> str:
    """Which counter store and cache this run uses: "redis" or "embedded"."""
    from django.conf import settings

    return "redis" if settings.GATEWAY.redis.url else "embedded"


@pytest.fixture(autouse=True)
def _fresh_credential_cache():
    """Ids are reused between tests: a principal cached by one test must not serve another."""
    from accounts.credential_cache import get_credential_cache

    get_credential_cache().clear()
