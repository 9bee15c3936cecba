"""The in-memory price table: hit, miss, invalidation (here and in another process), rollback,
and a failing cache backend falling back to the database."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from django.db import transaction

from costs import pricing
from costs.models import ModelPrice
from costs.money import Usage
from costs.pricing import call_cost_micros
from costs.services import PriceData, price_update
from tests.fixtures import servers

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 25, tzinfo=UTC)
MODEL = "test.cached-model"
MTOK = 1_000_000


def _create(input_usd: int = 1) -> ModelPrice:
    return ModelPrice.objects.create(
        model_id=MODEL,
        input_rate=input_usd * MTOK,
        output_rate=0,
        cache_write_5m_rate=0,
        cache_write_1h_rate=0,
        cache_read_rate=0,
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
    )


def _set_input(price: ModelPrice, input_usd: int) -> None:
    data = PriceData(
        model_id=price.model_id,
        effective_from=price.effective_from,
        input_rate=input_usd * MTOK,
        output_rate=0,
        cache_write_5m_rate=0,
        cache_write_1h_rate=0,
        cache_read_rate=0,
    )
    price_update(price=price, data=data)


def _cost(model_id: str = MODEL) -> int | None:
    return call_cost_micros(model_id=model_id, usage=Usage(input_tokens=MTOK), at=NOW)


@pytest.mark.django_db(transaction=True)
def test_warm_lookup_makes_no_queries(django_assert_num_queries):
    _create(input_usd=1)
    assert _cost() == MTOK
    with django_assert_num_queries(0):
        assert _cost() == MTOK
        assert _cost("us.anthropic.unknown-model") is None


@pytest.mark.django_db(transaction=True)
def test_cold_lookup_loads_the_table_once(django_assert_num_queries, backend_name):
    _create(input_usd=1)
    # Redis: the version token comes from the cache, one query loads the rows; embedded: one
    # more query reads the table's fingerprint.
    with django_assert_num_queries(1 if backend_name == "redis" else 2):
        assert _cost() == MTOK
        assert _cost() == MTOK


@pytest.mark.django_db(transaction=True)
def test_recheck_of_an_unchanged_table_loads_no_rows(
    django_assert_num_queries, backend_name, monkeypatch
):
    _create(input_usd=1)
    assert _cost() == MTOK
    monkeypatch.setattr(pricing, "RECHECK_SECONDS", 0)
    with django_assert_num_queries(0 if backend_name == "redis" else 1):
        assert _cost() == MTOK


@pytest.mark.django_db(transaction=True)
def test_committed_write_in_this_process_is_visible_at_once():
    price = _create(input_usd=1)
    assert _cost() == MTOK
    _set_input(price, 2)
    assert _cost() == 2 * MTOK
    price.delete()
    assert _cost() is None


def test_write_inside_a_transaction_is_visible_to_it_at_once():
    price = _create(input_usd=1)
    assert _cost() == MTOK
    _set_input(price, 3)
    assert _cost() == 3 * MTOK


def test_transaction_that_wrote_prices_keeps_its_own_table(django_assert_num_queries):
    # pytest-django runs this test inside a transaction that never commits
    price = _create(input_usd=1)
    assert _cost() == MTOK
    with django_assert_num_queries(0):
        assert _cost() == MTOK
    _set_input(price, 2)
    assert _cost() == 2 * MTOK


def test_rolled_back_savepoint_leaves_no_stale_price():
    price = _create(input_usd=1)
    assert _cost() == MTOK
    seen_inside = []

    def write_then_fail() -> None:
        with transaction.atomic():
            _set_input(price, 7)
            seen_inside.append(_cost())
            raise RuntimeError("roll back the savepoint")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert seen_inside == [7 * MTOK]
    assert _cost() == MTOK


def test_rolled_back_write_leaves_no_stale_price():
    assert _cost() is None
    seen_inside = []

    def write_then_fail() -> None:
        with transaction.atomic():
            _create(input_usd=5)
            seen_inside.append(_cost())
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert seen_inside == [5 * MTOK]
    assert _cost() is None


@pytest.mark.django_db(transaction=True)
def test_write_in_another_process_is_seen_within_the_recheck_interval():
    price = _create(input_usd=1)
    script = (
        "import sys, django\n"
        "django.setup()\n"
        "from datetime import UTC, datetime\n"
        "from costs.money import Usage\n"
        "from costs.pricing import call_cost_micros\n"
        "for _ in sys.stdin:\n"
        f"    print(call_cost_micros(model_id={MODEL!r}, usage=Usage(input_tokens={MTOK}),"
        " at=datetime(2026, 11, 25, tzinfo=UTC)), flush=True)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": servers.test_database_url(),
    }
    other = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=servers.BASE_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def ask() -> str:
        other.stdin.write("?\n")
        other.stdin.flush()
        return other.stdout.readline().strip()

    try:
        assert ask() == str(MTOK)  # the other process now holds the table in memory
        _set_input(price, 2)
        changed = time.monotonic()
        answers = [ask()]
        while answers[-1] != str(2 * MTOK) and time.monotonic() - changed < 5:
            time.sleep(0.05)  # polls the other process; the time it takes is the measure
            answers.append(ask())
        elapsed = time.monotonic() - changed
    finally:
        other.stdin.close()
        other.wait(timeout=10)
    assert answers[-1] == str(2 * MTOK)
    assert elapsed < pricing.RECHECK_SECONDS + 1.0


@pytest.fixture
def broken_cache(settings):
    """A real Redis cache backend pointed at a port nobody listens on."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{servers.free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }


@pytest.mark.django_db(transaction=True)
def test_cache_failure_falls_back_to_the_database(broken_cache, monkeypatch):
    price = _create(input_usd=1)
    assert _cost() == MTOK
    assert pricing.price_table().version[0] == "db"
    # a write while the cache is down is still seen (here at once; elsewhere at the next check)
    _set_input(price, 4)
    assert _cost() == 4 * MTOK
    # and another process's write is caught by the database fingerprint
    monkeypatch.setattr(pricing, "RECHECK_SECONDS", 0)
    ModelPrice.objects.filter(pk=price.pk).update(input_rate=6 * MTOK, updated_at=NOW)
    assert _cost() == 6 * MTOK
