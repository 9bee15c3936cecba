"""Browser tests: Debian's headless Chromium driven by Playwright against a live gateway.

The gateway runs as its own uvicorn process on the test database, in front of the Bedrock
emulator, with the local OpenID Connect provider configured through its environment, exactly
as an operator would configure a real one. Chromium's arguments and the async-safety switch
come from the `tests.fixtures.browser` plugin.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accounts.demo_idp import DemoIdP
from tests.fixtures.browser import ADMIN_EMAIL, Live
from tests.fixtures.servers import start_gateway


@pytest.fixture(scope="session")
def idp() -> Iterator[DemoIdP]:
    provider = DemoIdP(client_id="gateway-browser", client_secret="browser-secret").start()
    yield provider
    provider.stop()


@pytest.fixture(scope="session")
def live(django_db_setup, django_db_blocker, emulator, idp) -> Iterator[Live]:
    """The gateway with the local OIDC provider as its SSO ("Demo") and an admin e-mail."""
    env = {
        "GATEWAY_AUTH__OIDC__DEMO__CLIENT_ID": idp.client_id,
        "GATEWAY_AUTH__OIDC__DEMO__SECRET": idp.client_secret,
        "GATEWAY_AUTH__OIDC__DEMO__SERVER_URL": idp.url,
        "GATEWAY_AUTH__OIDC__DEMO__NAME": "Demo",
        "GATEWAY_AUTH__ADMIN_EMAILS": ADMIN_EMAIL,
        "GATEWAY_USAGE_CAPS__RESERVATION_LEASE_SECONDS": "60",
    }
    with start_gateway(upstream_url=emulator.url, env=env) as server:
        yield Live(gateway=server, idp=idp)
