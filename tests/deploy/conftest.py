"""Deployment tests: the gateway behind a real TLS-terminating proxy.

Debian's nginx terminates TLS with a self-signed pair and proxies to gunicorn with uvicorn
workers, the production server (`tests.fixtures.nginx`). The gateway learns the client's
scheme only from Django's settings (server.public_url), as behind a load balancer on another
machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accounts.demo_idp import DemoIdP
from tests.fixtures.nginx import deploy


@pytest.fixture(scope="session")
def sso() -> Iterator[DemoIdP]:
    """The local OpenID Connect provider, as the company's SSO."""
    provider = DemoIdP(client_id="gateway-deploy", client_secret="deploy-secret").start()
    yield provider
    provider.stop()


def _gateway_env(emulator, sso: DemoIdP) -> dict[str, str]:
    return {
        "GATEWAY_AWS__ENDPOINT_URL": emulator.url,
        "GATEWAY_AUTH__OIDC__DEMO__CLIENT_ID": sso.client_id,
        "GATEWAY_AUTH__OIDC__DEMO__SECRET": sso.client_secret,
        "GATEWAY_AUTH__OIDC__DEMO__SERVER_URL": sso.url,
        "GATEWAY_AUTH__OIDC__DEMO__NAME": "Demo",
    }


@pytest.fixture(scope="session")
def behind_proxy(django_db_setup, django_db_blocker, emulator, sso, tls_pair):
    """The gateway behind nginx, configured with its public URL."""
    with deploy(_gateway_env(emulator, sso), public_url=True, tls=tls_pair) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def behind_proxy_unconfigured(django_db_setup, django_db_blocker, emulator, sso, tls_pair):
    """The same, as an operator who has not set server.public_url yet would run it."""
    with deploy(_gateway_env(emulator, sso), public_url=False, tls=tls_pair) as deployment:
        yield deployment
