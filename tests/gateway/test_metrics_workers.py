"""/metrics under gunicorn with two workers: every scrape counts every worker's calls."""

from __future__ import annotations

import httpx
import pytest

from accounts.services import api_key_create, user_get_or_create
from tests.fixtures import servers
from tests.fixtures.gateways import GATEWAY_ENV
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CALLS = 20


def requests_total(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_requests_total{")
    )


@pytest.fixture
def two_workers(emulator, django_db_setup, tmp_path):
    env = {**GATEWAY_ENV, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with servers.start_gunicorn(upstream_url=emulator.url, workers=2, env=env) as server:
        yield server


def test_every_scrape_adds_up_the_calls_of_both_workers(two_workers, reference_data, tmp_path):
    key = api_key_create(user=user_get_or_create(email="metrics@example.com"), name="m").raw
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    for _ in range(CALLS):
        # A new connection each time (httpx.post), so that both workers take calls.
        response = httpx.post(
            f"{two_workers.url}/anthropic/v1/messages", headers=headers, json=body
        )
        assert response.status_code == 200
    # Both workers served some of them (each wrote its own counter file).
    assert len(list((tmp_path / "metrics").glob("counter_*.db"))) == 2

    def scrape() -> float:
        return requests_total(httpx.get(f"{two_workers.url}/metrics").text)

    assert wait_for(lambda: scrape() == CALLS, timeout=10)  # recording is asynchronous
    # Whichever worker answers the scrape, it reports both workers' calls.
    assert [scrape() for _ in range(8)] == [CALLS] * 8
