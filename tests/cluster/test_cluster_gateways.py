"""Two gateway processes on one Redis Cluster and one database, as two replicas behind a load
balancer: caps stay exact across them, every admitted call is recorded once and counted, live
summaries of users on different masters are right, a revocation in one is seen by the other,
and the Django-cache users (model map, betas, count_tokens limit) share state through it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from accounts.models import ApiKey
from accounts.services import api_key_create, user_get_or_create
from caps.services import cap_create
from caps.windows import user_tag
from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord
from usage.windows import summary_key

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = {
    "model": "claude-haiku-4-5",  # an alias: resolved through the model map
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "count me"}],
}


def post(url: str, key: str, body=MESSAGE, path="/anthropic/v1/messages") -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=30, headers={"x-api-key": key})


def tokens(record: UsageRecord) -> int:
    return (
        record.input_tokens
        + record.output_tokens
        + record.cache_write_5m_tokens
        + record.cache_write_1h_tokens
    )


def test_a_request_cap_is_exact_across_two_gateways_and_counters_match_the_records(
    cluster_gateways, reference_data
):
    n = 6
    user = user_get_or_create(email="cluster-capped@example.com")
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=n)
    key = api_key_create(user=user, name="cluster").raw
    urls = cluster_gateways.urls * (5 * n // 2)
    with ThreadPoolExecutor(max_workers=5 * n) as pool:
        replies = list(pool.map(lambda url: post(url, key), urls))
    assert sorted(r.status_code for r in replies) == [200] * n + [429] * (4 * n)
    # Both processes admitted and refused calls (the load really was split).
    by_gateway = {url: [r.status_code for r, u in zip(replies, urls, strict=True) if u == url]
                  for url in cluster_gateways.urls}  # fmt: skip
    assert all(429 in codes for codes in by_gateway.values())

    # Every 200 has exactly one record, and nothing else was recorded.
    assert wait_for(lambda: UsageRecord.objects.filter(user=user).count() == n, timeout=10)
    records = list(UsageRecord.objects.filter(user=user))
    assert len(records) == n
    ok_ids = sorted(r.json()["id"] for r in replies if r.status_code == 200)
    assert len(set(ok_ids)) == n

    # The cap counters (read back through either gateway) equal the records' sums.
    def caps_settled():
        status = httpx.get(
            f"{cluster_gateways.second.url}/api/usage/caps/status",
            headers={"x-api-key": key},
            timeout=10,
        ).json()["caps"]
        daily = next(s for s in status if s["cap_type"] == "daily" and s["set_by"] == "user")
        return daily if daily["in_flight"]["requests"] == 0 else None

    daily = wait_for(caps_settled, timeout=10)
    assert daily, "reservations still in flight"
    assert daily["current_usage"]["requests"] == n
    assert daily["current_usage"]["tokens"] == sum(tokens(r) for r in records)
    cost_cents = Decimal(sum(r.cost_micros or 0 for r in records)) / 10_000
    assert Decimal(str(daily["current_usage"]["cost_cents"])) == cost_cents.quantize(
        Decimal("0.0001")
    )
    assert daily["is_exceeded"] is True


def test_live_summaries_of_users_on_different_masters(
    cluster_gateways, reference_data, redis_cluster
):
    from django.utils import timezone

    # Users until their summary keys (and cap keys) sit on at least two masters.
    users, masters = [], set()
    for i in range(12):
        user = user_get_or_create(email=f"cluster-summary-{i}@example.com")
        users.append(user)
        masters.add(redis_cluster.node_of(summary_key(user.pk, timezone.now())))
        if len(users) >= 3 and len(masters) >= 2:
            break
    assert len(masters) >= 2
    keys = {u.pk: api_key_create(user=u, name="summary").raw for u in users}
    calls = [(u.pk, url) for i, u in enumerate(users) for url in cluster_gateways.urls[: 1 + i % 2]]
    calls *= 2
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda c: post(c[1], keys[c[0]]), calls))
    assert all(r.status_code == 200 for r in replies)
    assert wait_for(
        lambda: UsageRecord.objects.filter(user__in=users).count() == len(calls), timeout=10
    )
    for user in users:
        records = list(UsageRecord.objects.filter(user=user))

        def summary(user=user, records=records):
            totals = httpx.get(
                f"{cluster_gateways.first.url}/api/usage/summary",
                headers={"x-api-key": keys[user.pk]},
                timeout=10,
            ).json()["totals"]
            return totals if totals["requests"] == len(records) else None

        totals = wait_for(summary, timeout=10)
        assert totals, f"user {user.pk}: live summary never reached {len(records)} requests"
        assert totals["input_tokens"] == sum(r.input_tokens for r in records)
        assert totals["output_tokens"] == sum(r.output_tokens for r in records)
        assert totals["cost_micros"] == sum(r.cost_micros or 0 for r in records)
        # The live counters are in the cluster, on the master of the user's slot.
        key = summary_key(user.pk, timezone.now())
        node = redis_cluster.node(redis_cluster.node_of(key))
        assert int(node.hget(key, "requests") or 0) == len(records)
        assert node.exists(f"{user_tag(user.pk)}:sentinel")


def test_a_key_revoked_in_one_gateway_is_refused_by_the_other_at_once(
    cluster_gateways, reference_data
):
    user = user_get_or_create(email="cluster-revoke@example.com")
    created = api_key_create(user=user, name="revoke-me")
    first, second = cluster_gateways.first.url, cluster_gateways.second.url
    # Both gateways have the key in the shared credential cache (warm).
    assert post(first, created.raw).status_code == 200
    assert post(second, created.raw).status_code == 200
    key_id = ApiKey.objects.get(user=user, name="revoke-me").pk
    other = api_key_create(user=user, name="admin-of-self").raw
    revoked = httpx.delete(f"{first}/api/keys/{key_id}", headers={"x-api-key": other}, timeout=10)
    assert revoked.status_code in (200, 204), revoked.text
    refused = post(second, created.raw)
    assert refused.status_code == 401
    assert post(first, created.raw).status_code == 401
    assert post(second, other).status_code == 200


def test_the_count_tokens_limit_is_shared_by_both_gateways(cluster_gateways, reference_data):
    """The per-minute count_tokens limit lives in Django's cache, on the cluster."""
    if time.time() % 60 > 50:  # the calls below must fall in one UTC minute: the next one
        time.sleep(61 - time.time() % 60)
    user = user_get_or_create(email="cluster-count@example.com")
    key = api_key_create(user=user, name="count").raw
    path = "/anthropic/v1/messages/count_tokens"
    body = {"model": "claude-haiku-4-5", "messages": MESSAGE["messages"]}
    limit = COUNT_TOKENS_PER_MINUTE
    codes = [
        post(cluster_gateways.urls[i % 2], key, body, path).status_code for i in range(limit + 2)
    ]
    assert codes == [200] * limit + [429, 429]


def beta_retries(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    line = next(row for row in text.splitlines() if row.startswith("gateway_beta_retries_total"))
    return float(line.split()[-1])


def test_a_beta_learned_by_one_gateway_is_dropped_by_the_other(cluster_gateways, reference_data):
    """The rejected-beta memory is shared through Django's cache on the cluster."""
    user = user_get_or_create(email="cluster-betas@example.com")
    key = api_key_create(user=user, name="betas").raw
    invoke = "/bedrock/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "anthropic_beta": ["claude-code-20250219", "cluster-only-beta-2099-02-02"],
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"authorization": f"Bearer {key}"}
    first, second = cluster_gateways.first.url, cluster_gateways.second.url
    before_first, before_second = beta_retries(first), beta_retries(second)
    assert httpx.post(f"{first}{invoke}", json=body, headers=headers, timeout=10).status_code == 200
    assert beta_retries(first) == before_first + 1  # learned here, with one retry
    # The other process picks the shared memory up (it reads it at most every 5 s). Not a wait
    # to poll: a call to it before then would learn the beta by itself, with a retry.
    time.sleep(5.2)
    assert (
        httpx.post(f"{second}{invoke}", json=body, headers=headers, timeout=10).status_code == 200
    )
    assert beta_retries(second) == before_second  # dropped before sending: no retry


COUNT_TOKENS_PER_MINUTE = 4
