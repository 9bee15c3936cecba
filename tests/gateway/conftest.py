"""The real stack for proxy tests: the emulator and the gateway, each its own server process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from accounts.services import api_key_create, user_get_or_create
from tests.fixtures.gateways import GATEWAY_ENV
from tests.fixtures.servers import Server, start_gateway


@dataclass
class Stack:
    gateway: Server
    emulator_url: str


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker, emulator) -> Iterator[Stack]:
    """Gateway over HTTP in front of the shared emulator."""
    with start_gateway(upstream_url=emulator.url, env=GATEWAY_ENV) as server:
        yield Stack(gateway=server, emulator_url=emulator.url)


@pytest.fixture(scope="session")
def stack_tls(django_db_setup, django_db_blocker, emulator, tls_pair) -> Iterator[Stack]:
    """Gateway over HTTPS (botocore sends bearer tokens only to https)."""
    with start_gateway(
        upstream_url=emulator.url,
        env=GATEWAY_ENV,
        certfile=str(tls_pair.cert),
        keyfile=str(tls_pair.key),
    ) as server:
        yield Stack(gateway=server, emulator_url=emulator.url)


@pytest.fixture
def alice_key(reference_data) -> str:
    """A user with no caps beyond the defaults, and a fresh API key (committed)."""
    user = user_get_or_create(email="alice@example.com")
    return api_key_create(user=user, name="tests").raw
