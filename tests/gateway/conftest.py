"""The real stack for proxy tests: the emulator and the gateway, each its own server process."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from accounts.services import api_key_create, user_get_or_create
from emulator.certs import generate_self_signed
from tests.fixtures.servers import Server, start_gateway

# Small enough to test the 413 without megabytes of traffic.
MAX_BODY_BYTES = 200_000


@dataclass
class Stack:
    gateway: Server
    emulator_url: str


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory) -> tuple[str, str]:
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = generate_self_signed(folder / "cert.pem", folder / "key.pem")
    return str(cert), str(key)


GATEWAY_ENV = {
    "GATEWAY_SERVER__MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "GATEWAY_AWS__READ_TIMEOUT": "3",
    "GATEWAY_USAGE_CAPS__RESERVATION_LEASE_SECONDS": "60",
}


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker, emulator) -> Iterator[Stack]:
    """Gateway over HTTP in front of the shared emulator."""
    with start_gateway(upstream_url=emulator.url, env=GATEWAY_ENV) as server:
        yield Stack(gateway=server, emulator_url=emulator.url)


@pytest.fixture(scope="session")
def stack_tls(django_db_setup, django_db_blocker, emulator, tls_pair) -> Iterator[Stack]:
    """Gateway over HTTPS (botocore sends bearer tokens only to https)."""
    cert, key = tls_pair
    with start_gateway(
        upstream_url=emulator.url, env=GATEWAY_ENV, certfile=cert, keyfile=key
    ) as server:
        yield Stack(gateway=server, emulator_url=emulator.url)


def gateway_idle(server: Server, timeout: float = 10.0) -> bool:
    """Whether the gateway has finished recording every call (its `gateway_calls_recording`
    gauge is back to 0): answers do not wait for recording, so a test's last call may still be
    writing when the test ends."""

    def idle() -> bool:
        verify = ssl.create_default_context(cafile=server.ca_path) if server.ca_path else True
        text = httpx.get(f"{server.url}/metrics", verify=verify).text
        line = next(r for r in text.splitlines() if r.startswith("gateway_calls_recording "))
        return float(line.split()[-1]) == 0

    return bool(wait_for(idle, timeout=timeout))


@pytest.fixture
def reference_data(request, transactional_db) -> Iterator[None]:
    """Shipped model map and prices (a transactional test's flush removes migration data).

    After the test, waits until the shared gateways have recorded every call, so that the
    database flush never races a recording still in progress."""
    from costs.services import price_defaults_install
    from gateway.model_defaults import model_aliases_install_defaults

    model_aliases_install_defaults()
    price_defaults_install()
    yield
    for name in ("stack", "stack_tls"):
        if name in request.fixturenames:
            assert gateway_idle(request.getfixturevalue(name).gateway), "recording never ended"


@pytest.fixture
def alice_key(reference_data) -> str:
    """A user with no caps beyond the defaults, and a fresh API key (committed)."""
    user = user_get_or_create(email="alice@example.com")
    return api_key_create(user=user, name="tests").raw


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> object:
    """Poll until `predicate` returns something truthy (work another process finishes)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
