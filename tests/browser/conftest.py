"""Browser tests: Debian's headless Chromium driven by Playwright against a live gateway.

The gateway runs as its own uvicorn process on the test database, in front of the Bedrock
emulator, with the local OpenID Connect provider configured through its environment, exactly
as an operator would configure a real one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from accounts.demo_idp import DemoIdP
from tests.fixtures.servers import Server, start_gateway

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# between browser steps are ordinary blocking calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
ADMIN_EMAIL = "admin@example.com"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`, "
            "or `make chromium`) to run the browser tests"
        )
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def idp() -> Iterator[DemoIdP]:
    provider = DemoIdP(client_id="gateway-browser", client_secret="browser-secret").start()
    yield provider
    provider.stop()


@dataclass
class Live:
    gateway: Server
    idp: DemoIdP

    @property
    def url(self) -> str:
        return self.gateway.url


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


@pytest.fixture
def reference_data(transactional_db) -> None:
    """What migrations install and a transactional test's flush removes: site, models, prices."""
    from django.contrib.sites.models import Site

    from costs.services import price_defaults_install
    from gateway.model_defaults import model_aliases_install_defaults

    Site.objects.update_or_create(pk=1, defaults={"domain": "127.0.0.1", "name": "gateway"})
    model_aliases_install_defaults()
    price_defaults_install()
