"""Team caps: one budget shared by the members, in the same reservation as each member's caps,
exact under concurrency across processes; a member's refusal releases the team's hold."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from accounts.models import Team
from caps.errors import CapExceeded
from caps.rebuild import caps_rebuild
from caps.reservations import cap_reserve, cap_settle
from caps.services import cap_create, team_cap_set
from caps.status import cap_status, team_cap_status
from caps.windows import team_owner, window_keys
from costs.money import Usage
from tests.fixtures import servers
from tests.fixtures.calls import SONNET
from tests.fixtures.cap_store import REDIS_URL

SMALL = Usage(input_tokens=10, output_tokens=10)
N = 12


def wipe_redis_team(team_id: int) -> None:
    """Team ids are reused after a rollback: no counters of an earlier test's team."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"usage_cap:{{team_{team_id}}}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def team(db):
    team = Team.objects.create(name="Platform")
    wipe_redis_team(team.pk)
    yield team
    wipe_redis_team(team.pk)


def members(make_user, team, count=3):
    users = []
    for i in range(count):
        user = make_user(f"member{i}@example.com")
        user.team = team
        user.save(update_fields=["team"])
        users.append(user)
    return users


def an_hour_ago():
    """A cap set an hour ago blocks now (a new cap waits for the grace period)."""
    return datetime.now(UTC) - timedelta(hours=1)


def daily(store, owner, now):
    return store.read([window_keys(owner, now)[1]], now)[0]


@pytest.mark.django_db
def test_a_team_cap_is_shared_by_its_members(any_store, make_user, default_prices, team):
    users = members(make_user, team)
    team_cap_set(team_id=team.pk, cap_type="daily", max_requests=4, now=an_hour_ago())
    passed, refused = 0, []
    for call in range(9):
        try:
            reservation = cap_reserve(
                user_id=users[call % 3].pk, team_id=team.pk, model_id=SONNET, estimate=SMALL,
                store=any_store,
            )  # fmt: skip
        except CapExceeded as exc:
            refused.append(exc)
            continue
        cap_settle(reservation=reservation, actual=SMALL)
        passed += 1
    assert {(exc.cap_type, exc.set_by) for exc in refused} == {("daily", "team")}
    assert refused[0].message.startswith("Your team's daily usage cap exceeded: 4/4 requests")
    assert passed == 4
    now = datetime.now(UTC)
    assert daily(any_store, team_owner(team.pk), now)["requests"] == 4
    [status] = team_cap_status(team_id=team.pk, store=any_store)
    assert (status["set_by"], status["current_usage"]["requests"]) == ("team", 4)
    assert status["is_exceeded"] is True
    assert ("daily", "team") in {
        (s["cap_type"], s["set_by"]) for s in cap_status(user_id=users[0].pk, store=any_store)
    }


@pytest.mark.django_db
def test_a_members_refusal_releases_the_teams_hold(any_store, make_user, default_prices, team):
    [user] = members(make_user, team, count=1)
    team_cap_set(team_id=team.pk, cap_type="daily", max_requests=10, now=an_hour_ago())
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=1)
    first = cap_reserve(
        user_id=user.pk, team_id=team.pk, model_id=SONNET, estimate=SMALL, store=any_store
    )
    with pytest.raises(CapExceeded) as refused:
        cap_reserve(
            user_id=user.pk, team_id=team.pk, model_id=SONNET, estimate=SMALL, store=any_store
        )
    assert refused.value.set_by == "user"
    counters = daily(any_store, team_owner(team.pk), datetime.now(UTC))
    assert counters["if_requests"] == 1  # only the first call's hold
    cap_settle(reservation=first, actual=SMALL)
    counters = daily(any_store, team_owner(team.pk), datetime.now(UTC))
    assert (counters["requests"], counters["if_requests"]) == (1, 0)
    assert any_store.open_reservations(team_owner(team.pk)) == 0


@pytest.mark.django_db
def test_headroom_is_the_tighter_of_user_and_team(any_store, make_user, default_prices, team):
    [user] = members(make_user, team, count=1)
    team_cap_set(team_id=team.pk, cap_type="daily", max_requests=3, now=an_hour_ago())
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=10)
    reservation = cap_reserve(
        user_id=user.pk, team_id=team.pk, model_id=SONNET, estimate=SMALL, store=any_store
    )
    [daily_room] = [room for room in reservation.headroom if room.cap_type == "daily"]
    assert daily_room.requests_remaining == 2
    cap_settle(reservation=reservation, actual=SMALL)


@pytest.mark.django_db
def test_tightening_a_team_cap_waits_for_the_grace_period(
    any_store, make_user, default_prices, team
):
    [user] = members(make_user, team, count=1)
    now = datetime(2031, 5, 2, 9, 0, tzinfo=UTC)
    team_cap_set(team_id=team.pk, cap_type="daily", max_requests=100, now=now - timedelta(hours=1))
    cap = team_cap_set(team_id=team.pk, cap_type="daily", max_requests=1, now=now)
    assert cap.enforce_from == now + timedelta(minutes=5)
    assert cap.prior_limits["max_requests"] == 100
    for at in (now, now):
        reservation = cap_reserve(
            user_id=user.pk, team_id=team.pk, model_id=SONNET, estimate=SMALL, store=any_store,
            now=at,
        )  # fmt: skip
        cap_settle(reservation=reservation, actual=SMALL, now=at)
    with pytest.raises(CapExceeded):
        cap_reserve(
            user_id=user.pk, team_id=team.pk, model_id=SONNET, estimate=SMALL, store=any_store,
            now=now + timedelta(minutes=6),
        )  # fmt: skip


@pytest.mark.django_db
def test_lost_team_counters_are_rebuilt_from_the_records(
    redis_store, make_user, default_prices, team
):
    import uuid

    from usage.services import CallRecord, usage_record

    [user] = members(make_user, team, count=1)
    other = make_user("outsider@example.com")
    now = datetime.now(UTC)
    for owner, team_id in ((user, team.pk), (user, team.pk), (other, None)):
        usage_record(
            call=CallRecord(
                call_id=uuid.uuid4(), user_id=owner.pk, api_key_id=None, auth_kind="jwt",
                model_id=SONNET, route="anthropic", streaming=False, usage=SMALL,
                upstream_status=200, error_type=None, latency_ms=5, ttfb_ms=None,
                request_id="", started_at=now, client_family="other", session_id=None,
                team_id=team_id,
            )
        )  # fmt: skip
    wipe_redis_team(team.pk)
    team_cap_set(team_id=team.pk, cap_type="daily", max_requests=3, now=an_hour_ago())
    reservation = cap_reserve(
        user_id=user.pk, team_id=team.pk, model_id=SONNET, estimate=SMALL, store=redis_store
    )  # the team's sentinel is gone: its counters are rebuilt first (2 calls), then 1 more fits
    with pytest.raises(CapExceeded):
        cap_reserve(
            user_id=user.pk, team_id=team.pk, model_id=SONNET, estimate=SMALL, store=redis_store
        )
    cap_settle(reservation=reservation, actual=SMALL)
    assert daily(redis_store, team_owner(team.pk), now)["requests"] == 3
    assert caps_rebuild(store=redis_store, user_id=team_owner(team.pk)) == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["redis", "embedded"])
def test_team_cap_is_exact_under_5n_calls_from_two_processes(make_user, default_prices, where):
    team = Team.objects.create(name="Data")
    wipe_redis_team(team.pk)
    users = members(make_user, team, count=4)
    team_cap_set(team_id=team.pk, cap_type="daily", max_requests=N, now=an_hour_ago())
    start = time.time() + 4.0  # both processes have set Django up by then
    args = [
        REDIS_URL if where == "redis" else "embedded",
        ",".join(str(user.pk) for user in users),
        str(5 * N // 2),
        str(start),
        str(team.pk),
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, str(servers.BASE_DIR / "tests" / "caps" / "reserve_worker.py"), *args],
            env={**os.environ, "DATABASE_URL": servers.test_database_url()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=servers.BASE_DIR,
        )
        for _ in range(2)
    ]
    counts = []
    for process in processes:
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err.decode()[-2000:]
        counts.append(int(out.decode().split()[-1]))
    assert sum(counts) == N
