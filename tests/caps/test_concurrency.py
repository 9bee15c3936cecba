"""Exactness under concurrency: coroutines, threads and two processes sharing one store."""

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection

from caps.errors import CapExceeded
from caps.reservations import acap_reserve, acap_settle, cap_reserve, cap_settle
from caps.services import cap_create
from caps.store import DatabaseCapStore
from caps.windows import window_keys
from costs.money import Usage
from tests.fixtures import servers
from tests.fixtures.calls import SONNET
from tests.fixtures.cap_store import REDIS_URL

pytestmark = pytest.mark.django_db(transaction=True)

N = 20
SMALL = Usage(input_tokens=10, output_tokens=10)


def daily(store, user):
    from django.utils import timezone

    now = timezone.now()
    return store.read([window_keys(user.pk, now)[1]], now)[0]


async def _attempt(store, user, estimate=SMALL, actual=None, hold=0.0):
    try:
        reservation = await acap_reserve(
            user_id=user.pk, model_id=SONNET, estimate=estimate, store=store
        )
    except CapExceeded:
        return False
    await asyncio.sleep(hold)  # the call's duration, before it settles
    await acap_settle(reservation=reservation, actual=actual or estimate)
    return True


def test_exactly_n_of_5n_concurrent_reservations_pass(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=N)

    async def main():
        return await asyncio.gather(*[_attempt(any_store, user, hold=0.01) for _ in range(5 * N)])

    results = asyncio.run(main())
    assert sum(results) == N
    counters = daily(any_store, user)
    assert counters["requests"] == N
    assert counters["if_requests"] == 0
    assert any_store.open_reservations(user.pk) == 0


def test_exactly_n_of_5n_reservations_from_threads_pass(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="hourly", set_by="user", max_requests=N)
    passed = []
    start = threading.Barrier(10)

    def worker():
        start.wait()
        try:
            for _ in range(N // 2):
                try:
                    reservation = cap_reserve(
                        user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store
                    )
                except CapExceeded:
                    continue
                passed.append(1)
                cap_settle(reservation=reservation, actual=SMALL)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(passed) == N
    assert daily(any_store, user)["requests"] == N


@pytest.mark.parametrize("where", ["redis", "embedded"])
def test_two_processes_sharing_one_store_stay_exact(make_user, default_prices, where):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=N)
    start = time.time() + 4.0  # both processes have set Django up by then
    env = {"DATABASE_URL": servers.test_database_url()}
    args = [REDIS_URL if where == "redis" else "embedded", str(user.pk), str(2 * N), str(start)]
    processes = [
        subprocess.Popen(
            [sys.executable, str(servers.BASE_DIR / "tests" / "caps" / "reserve_worker.py"), *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=servers.BASE_DIR,
        )
        for _ in range(2)
    ]
    counts = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()[-2000:]
        counts.append(int(out.decode().split()[-1]))
    assert sum(counts) == N


def test_token_cap_with_upper_bound_estimates_is_never_exceeded(
    any_store, make_user, default_prices
):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_tokens=1000)
    estimate = Usage(input_tokens=60, output_tokens=40)

    async def main():
        # The actual use is at most the estimate (the tests' case): the cap is exact.
        actuals = [Usage(input_tokens=60, output_tokens=40 - i % 7) for i in range(60)]
        return await asyncio.gather(
            *[_attempt(any_store, user, estimate, actual, hold=0.01) for actual in actuals]
        )

    results = asyncio.run(main())
    counters = daily(any_store, user)
    assert sum(results) == 10  # 10 x 100 estimated tokens fill the cap
    assert counters["tokens"] <= 1000


def test_token_cap_overshoot_is_bounded_by_the_estimate_errors_in_flight(
    any_store, make_user, default_prices
):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_tokens=1000)
    estimate = Usage(input_tokens=60, output_tokens=40)
    actual = Usage(input_tokens=60, output_tokens=52)  # each call under-estimated by 12

    async def sequential():
        for _ in range(20):
            await _attempt(any_store, user, estimate, actual)

    asyncio.run(sequential())
    # One call at a time: at most one call's estimate error over the cap.
    assert daily(any_store, user)["tokens"] == 9 * 112  # 896 + 100 fit, then 1008
    assert 1000 < 9 * 112 <= 1000 + 12

    other = make_user()
    cap_create(user_id=other.pk, cap_type="daily", set_by="user", max_tokens=1000)

    async def concurrent():
        return await asyncio.gather(
            *[_attempt(any_store, other, estimate, actual, hold=0.5) for _ in range(40)]
        )

    admitted = sum(asyncio.run(concurrent()))
    # All admitted calls were in flight together: the overshoot is their summed error.
    assert 1 <= admitted <= 10
    assert daily(any_store, other)["tokens"] <= 1000 + admitted * 12


def test_postgres_or_sqlite_reservations_serialize_per_user(db_store, make_user, default_prices):
    """The embedded store's lock (SQLite's write lock, PostgreSQL's advisory lock) holds
    across connections: a reservation waits for another's transaction."""
    assert isinstance(db_store, DatabaseCapStore)
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=1)
    results = []

    def worker():
        try:
            cap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=db_store)
            results.append("ok")
        except CapExceeded:
            results.append("429")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["429"] * 7 + ["ok"]
