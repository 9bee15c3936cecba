"""Calls in flight, on both stores: uncovered calls (max_tokens beyond what is left under a
token or cost cap) at most `max_uncovered_in_flight` at once, all calls at most
`max_in_flight_per_user`, both decided inside the atomic reserve; leases renewed by live calls.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from caps.errors import CallsInFlight, CapExceeded
from caps.estimates import Estimate, estimate_usage
from caps.reservations import (
    acap_renew,
    acap_reserve,
    acap_settle,
    cap_renew,
    cap_reserve,
    cap_settle,
)
from caps.services import cap_create
from caps.store import run_in_db_thread
from caps.windows import window_keys
from costs.money import Usage
from tests.fixtures.calls import SONNET

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
# Reserves 100 + 8,192 (the output ceiling) tokens; can really count 100 + 30,000.
BIG = Estimate(input_tokens=100, output_tokens=8192, max_output_tokens=30_000)
WORST = Usage(input_tokens=100, output_tokens=30_000)
SMALL = Usage(input_tokens=10, output_tokens=10)


def configure(settings, **changes):
    caps = settings.GATEWAY.usage_caps.model_copy(update=changes)
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})


def daily(store, user, now):
    return store.read([window_keys(user.pk, now)[1]], now)[0]


async def _try(store, user, estimate, hold=0.05):
    """(reservation or the refusal); the reservation is left open (the caller settles)."""
    try:
        reservation = await acap_reserve(
            user_id=user.pk, model_id=SONNET, estimate=estimate, store=store
        )
    except (CallsInFlight, CapExceeded) as exc:
        return exc
    await asyncio.sleep(hold)  # the call's duration: reservations overlap
    return reservation


def run_concurrently(store, user, estimate, n):
    async def main():
        return await asyncio.gather(*[_try(store, user, estimate) for _ in range(n)])

    return asyncio.run(main())


def settle_all(results, actual):
    async def main():
        for result in results:
            if not isinstance(result, Exception):
                await acap_settle(reservation=result, actual=actual)

    asyncio.run(main())


def test_the_estimate_knows_the_requests_max_tokens(settings):
    body = {"max_tokens": 30_000, "messages": [{"role": "user", "content": "hi"}]}
    estimate = estimate_usage(user_id=1, model_id=SONNET, body=body)
    assert estimate.output_tokens == 8192
    assert estimate.max_output_tokens == 30_000


def test_only_one_uncovered_call_runs_at_once_and_the_cap_is_overshot_by_one_call(
    any_store, make_user, default_prices
):
    # The case: a 20,000-token cap, calls asking for 30,000 tokens each. Each estimate
    # (8,292) fits, two of them fit at once, but no call's worst case fits: at most one runs.
    user = make_user()
    limit = 20_000
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_tokens=limit)
    results = run_concurrently(any_store, user, BIG, 10)
    passed = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(passed) == 1
    assert passed[0].uncovered
    assert all(isinstance(r, CallsInFlight) and r.reason == "uncovered" for r in refused)
    assert any_store.uncovered_reservations(user.pk) == 1
    settle_all(passed, WORST)  # it really produced its max_tokens
    assert any_store.uncovered_reservations(user.pk) == 0
    counters = daily(any_store, user, passed[0].started_at)
    assert counters["tokens"] == WORST.cap_tokens  # limit + one call's overshoot, not three
    assert counters["if_tokens"] == counters["if_worst_tokens"] == 0
    with pytest.raises(CapExceeded):  # over the cap now: nothing more
        cap_reserve(user_id=user.pk, model_id=SONNET, estimate=BIG, store=any_store)


def test_covered_calls_run_together_and_one_uncovered_call_at_most_joins_them(
    any_store, make_user, default_prices
):
    # 100,000 tokens: three worst cases (30,100 each) fit side by side, the fourth call is
    # uncovered (allowed: the first), the rest wait. Final use overshoots by less than a call.
    user = make_user()
    limit = 100_000
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_tokens=limit)
    results = run_concurrently(any_store, user, BIG, 10)
    passed = [r for r in results if not isinstance(r, Exception)]
    assert len(passed) == 4
    assert sum(r.uncovered for r in passed) == 1
    assert all(isinstance(r, CallsInFlight) for r in results if isinstance(r, Exception))
    settle_all(passed, WORST)
    used = daily(any_store, user, passed[0].started_at)["tokens"]
    assert limit < used <= limit + WORST.cap_tokens


def test_a_cost_cap_decides_uncovered_too(any_store, make_user, default_prices):
    # Sonnet: 30,000 output tokens cost 45 cents (+ input): one worst case fits 50 cents.
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_cost_cents=50)
    results = run_concurrently(any_store, user, BIG, 6)
    passed = [r for r in results if not isinstance(r, Exception)]
    assert len(passed) == 2
    assert sorted(r.uncovered for r in passed) == [False, True]
    settle_all(passed, SMALL)


def test_the_uncovered_limit_is_a_setting(any_store, make_user, default_prices, settings):
    configure(settings, max_uncovered_in_flight=2)
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_tokens=20_000)
    results = run_concurrently(any_store, user, BIG, 8)
    passed = [r for r in results if not isinstance(r, Exception)]
    assert len(passed) == 2
    settle_all(passed, SMALL)


def test_calls_within_their_estimate_never_count_as_uncovered(any_store, make_user, default_prices):
    # max_tokens under the ceiling: the estimate is the worst case; the caps alone decide.
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_tokens=1000)
    estimate = Estimate(input_tokens=10, output_tokens=90, max_output_tokens=90)
    results = run_concurrently(any_store, user, estimate, 30)
    passed = [r for r in results if not isinstance(r, Exception)]
    assert len(passed) == 10
    assert not any(r.uncovered for r in passed)
    assert all(isinstance(r, CapExceeded) for r in results if isinstance(r, Exception))
    settle_all(passed, estimate)


def test_a_settled_uncovered_call_makes_room_for_the_next(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_tokens=20_000)
    first = cap_reserve(user_id=user.pk, model_id=SONNET, estimate=BIG, store=any_store)
    assert first.uncovered
    with pytest.raises(CallsInFlight):
        cap_reserve(user_id=user.pk, model_id=SONNET, estimate=BIG, store=any_store)
    cap_settle(reservation=first, actual=SMALL)
    second = cap_reserve(user_id=user.pk, model_id=SONNET, estimate=BIG, store=any_store)
    assert second.uncovered
    cap_settle(reservation=second, actual=SMALL)
    covered = Estimate(input_tokens=100, output_tokens=8192, max_output_tokens=8192)
    assert not cap_reserve(
        user_id=user.pk, model_id=SONNET, estimate=covered, store=any_store
    ).uncovered


def test_an_expired_uncovered_reservation_stops_counting(any_store, make_user, default_prices):
    # A dead worker's uncovered call: once its lease ran out, the next uncovered call runs.
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_tokens=20_000)
    with time_machine.travel(T0, tick=False):
        cap_reserve(user_id=user.pk, model_id=SONNET, estimate=BIG, store=any_store, now=T0)
        with pytest.raises(CallsInFlight):
            cap_reserve(user_id=user.pk, model_id=SONNET, estimate=BIG, store=any_store, now=T0)
        later = T0 + timedelta(seconds=901)
        reservation = cap_reserve(
            user_id=user.pk, model_id=SONNET, estimate=BIG, store=any_store, now=later
        )
        assert reservation.uncovered
        assert any_store.open_reservations(user.pk) == 1
        counters = daily(any_store, user, later)
        assert counters["if_tokens"] == BIG.cap_tokens
        assert counters["if_worst_tokens"] == WORST.cap_tokens
        cap_settle(reservation=reservation, actual=None, now=later)


def test_at_most_max_in_flight_calls_of_a_user_run_at_once(
    any_store, make_user, default_prices, settings
):
    configure(settings, max_in_flight_per_user=3)
    user = make_user()  # no caps at all: the in-flight limit still holds
    results = run_concurrently(any_store, user, SMALL, 12)
    passed = [r for r in results if not isinstance(r, Exception)]
    assert len(passed) == 3
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, CallsInFlight) and r.reason == "in_flight" for r in refused)
    assert "at most 3 at once" in refused[0].message
    settle_all(passed, SMALL)
    assert any_store.open_reservations(user.pk) == 0
    again = run_concurrently(any_store, user, SMALL, 3)
    assert not any(isinstance(r, Exception) for r in again)
    settle_all(again, SMALL)


def test_the_default_in_flight_limit_is_32(any_store, make_user, default_prices, settings):
    assert settings.GATEWAY.usage_caps.max_in_flight_per_user == 32
    assert settings.GATEWAY.usage_caps.max_uncovered_in_flight == 1
    user = make_user()
    results = run_concurrently(any_store, user, SMALL, 40)
    assert sum(not isinstance(r, Exception) for r in results) == 32
    settle_all(results, SMALL)


def test_a_cap_refusal_comes_before_the_in_flight_limit(
    any_store, make_user, default_prices, settings
):
    configure(settings, max_in_flight_per_user=1)
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=1)
    held = cap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store)
    with pytest.raises(CapExceeded):  # the cap names when a retry can succeed
        cap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store)
    cap_settle(reservation=held, actual=None)


def test_a_renewed_lease_outlives_its_first_expiry_and_an_unrenewed_one_does_not(
    any_store, make_user, default_prices, settings
):
    configure(settings, reservation_lease_seconds=2)
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=100)
    with time_machine.travel(T0, tick=False) as traveller:
        live = cap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store)
        dead = cap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store)
        # A 60-second call renewing about every lease/3 keeps its reservation all along.
        for _ in range(100):
            traveller.shift(timedelta(seconds=0.6))
            assert cap_renew(reservation=live)
            probe = cap_reserve(
                user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store
            )  # releases whatever expired, then holds one more
            cap_settle(reservation=probe, actual=None)
        assert live.lease_expires_at == T0 + timedelta(seconds=62)
        assert any_store.open_reservations(user.pk) == 1  # the live one; the dead one is gone
        counters = daily(any_store, user, T0)
        assert counters["if_requests"] == 1
        assert not cap_renew(reservation=dead) or pytest.fail("a released lease was revived")
        cap_settle(reservation=live, actual=SMALL)
        assert not cap_renew(reservation=live)  # settled: nothing to renew
        assert any_store.open_reservations(user.pk) == 0
        assert daily(any_store, user, T0)["requests"] == 1


def test_renewal_with_real_seconds_and_the_async_entry_point(
    any_store, make_user, default_prices, settings
):
    configure(settings, reservation_lease_seconds=1)
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=2)

    async def main():
        live = await acap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store)
        dead = await acap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store)
        for _ in range(5):
            await asyncio.sleep(0.4)  # real seconds pass between renewals (lease 1 s)
            assert await acap_renew(reservation=live)
        # 2 s later: the dead one expired, the live one did not; the cap has room for one.
        extra = await acap_reserve(
            user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store
        )
        with pytest.raises(CapExceeded):
            await acap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store)
        assert await run_in_db_thread(any_store.open_reservations, user.pk) == 2
        await acap_settle(reservation=live, actual=SMALL)
        await acap_settle(reservation=extra, actual=SMALL)
        return dead

    dead = asyncio.run(main())
    assert any_store.open_reservations(user.pk) == 0
    assert not cap_renew(reservation=dead)


def test_a_live_call_renews_its_lease_and_a_dropped_or_finished_one_stops(
    any_store, make_user, default_prices, settings
):
    # The proxy's heartbeat (gateway.services.ProxyCall): a timer every third of the lease,
    # holding the call weakly.
    import gc

    from accounts.services import Principal
    from gateway.services import ProxyCall

    configure(settings, reservation_lease_seconds=1)
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=10)
    principal = Principal(
        user_id=user.pk, email="", is_admin=False, api_key_id=None, auth_kind="jwt"
    )

    def call() -> ProxyCall:
        return ProxyCall(principal, SONNET, "bedrock.invoke", False, "", None)

    async def main():
        live, dropped, finished = call(), call(), call()
        for each in (live, dropped, finished):
            each.reservation = await acap_reserve(
                user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store
            )
            each.start_heartbeat()
        await asyncio.sleep(0.5)
        await finished.finish(SMALL, reached=True)  # settled: its timer is cancelled
        del dropped  # a call dropped without finish (a bug) must not be renewed forever
        gc.collect()
        await asyncio.sleep(2.0)  # two leases: only a renewed reservation is still open
        # A reservation sweeps the user's expired leases first.
        extra = await acap_reserve(
            user_id=user.pk, model_id=SONNET, estimate=SMALL, store=any_store
        )
        open_now = await run_in_db_thread(any_store.open_reservations, user.pk)
        await live.finish(SMALL, reached=True)
        await acap_settle(reservation=extra, actual=SMALL)
        return open_now

    assert asyncio.run(main()) == 2  # the live call's and the extra one
    assert any_store.open_reservations(user.pk) == 0
