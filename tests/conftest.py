import os

import pytest

pytest_plugins = ["tests.fixtures.emulator"]


@pytest.fixture(autouse=True)
def _eager_celery(settings):
    """Tasks run in-process in tests, except where a test starts a real worker."""
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = settings.CELERY_TASK_ALWAYS_EAGER


@pytest.fixture
def backend_name() -> str:
    return "redis" if os.environ.get("REDIS_URL") else "embedded"
